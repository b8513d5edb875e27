"""HAProxy's access log, masked, in a file under the data folder.

Ray's HAProxy template logs every request with ``option httplog`` to one target,
``RAY_SERVE_HAPROXY_LOG_TARGET`` (UDP syslog on 127.0.0.1:514 unless told otherwise), request
line included. ``callmesh up`` points that target at a unix datagram socket in its private
HAProxy folder, and :class:`AccessLogRelay`, a thread of ``callmesh up``, reads it, cleans
each line (:func:`mask_access_line`) and appends it to ``<data_dir>/logs/haproxy-access.log``.
Nothing else listens there: while the relay does not run, HAProxy's datagrams are dropped and
nothing reaches syslog.

Phone numbers no longer travel in URLs (lookups by phone are POST bodies), so a request line
keeps only what an operator reads it for: method, path, the names of the query parameters,
version. Query values are dropped, not masked: the deprecated GET lookups and free-text
searches are all that still put personal data in a URL, and dropping is exact where masking
guesses. The path is still masked: a call id is the caller's choice (a LiveKit SIP room name
carries the caller's number).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

from deployments.logmask import mask_text

log = logging.getLogger("callmesh")

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3  # at most (1 + BACKUPS) * MAX_BYTES on disk
# HAProxy sends at most `len` bytes per line (1024 unless the log line says otherwise).
DATAGRAM_MAX = 65536
JOIN_SECONDS = 5.0
BATCH_MAX = 256
WRITE_CHUNK_BYTES = 64 * 1024

# The syslog priority HAProxy puts first (<134>: local0.info).
_PRIORITY = re.compile(r"^<\d{1,3}>")
# httplog: `client:port [accept date] frontend backend/server timers status bytes cookies
# state counters queues "request line"`. Everything before the request line is HAProxy's own
# (Ray's template captures no headers or cookies); the request line is the client's.
_HTTPLOG = re.compile(
    r'^(?P<head>[^"]*\[\d{2}/[A-Za-z]{3}/\d{4}:[\d:.]+\][^"]*)(?P<request>".*)$', re.DOTALL
)
# The token a truncated line ends in: part of a path segment or of a query value.
_PARTIAL_TAIL = re.compile(r"[^?&;=/\s]*$")
TRUNCATED = "[truncated]"


def mask_access_line(datagram: bytes) -> str:
    """One HAProxy log datagram as one line, without its syslog priority.

    An httplog line keeps HAProxy's fields as they are (masking them would take a status
    code and a byte count for a phone number); its request line keeps the method, the masked
    path, the query parameters' names and the version (:func:`_request_line`). Any other line
    (a server going down, a health check) is masked whole."""
    text = datagram.decode("utf-8", errors="replace").rstrip("\x00\r\n")
    text = _PRIORITY.sub("", text, count=1)
    # One datagram, one line: a newline inside cannot forge a second entry.
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    match = _HTTPLOG.match(text)
    if match is None:
        return mask_text(text)
    return match["head"] + _request_line(match["request"])


def _request_line(request: str) -> str:
    """``"GET /a/b?x=1&y=2 HTTP/1.1"`` as ``"GET /a/b?x&y HTTP/1.1"``, the path masked; a
    line HAProxy cut at its length limit (no closing quote) loses the token it was cut in."""
    complete = len(request) >= 2 and request.endswith('"')
    method, _, rest = request[1 : -1 if complete else None].partition(" ")
    target, space, version = rest.partition(" ")
    if not complete and not space:
        target = _PARTIAL_TAIL.sub(TRUNCATED, target, count=1)
    path, question, query = target.partition("?")
    names = "&".join(part.partition("=")[0] for part in query.split("&") if part)
    line = f'"{method} {mask_text(path)}{question}{mask_text(names)}{space}{version}'
    return line + '"' if complete else line


class AccessLogRelay:
    """Reads HAProxy's log datagrams from ``socket_path`` and appends them, masked, to
    ``log_path`` (rotated at ``max_bytes``, ``backups`` old files kept).

    ``start`` binds the socket (mode 0600: HAProxy runs as this user) and starts a daemon
    thread; ``stop`` writes what is already queued, then closes and removes the socket."""

    def __init__(
        self,
        socket_path: Path,
        log_path: Path,
        *,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
    ) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self._max_bytes = max_bytes
        self._backups = backups
        self._socket: socket.socket | None = None
        self._handler: RotatingFileHandler | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            self.log_path,
            maxBytes=self._max_bytes,
            backupCount=self._backups,
            encoding="utf-8",
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
        except OSError:
            sock.close()
            handler.close()
            raise
        self._socket, self._handler = sock, handler
        self._thread = threading.Thread(
            target=self._run, args=(sock, handler), name="haproxy-access-log", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        # Datagrams arrive in order: the empty one wakes the reader after everything queued.
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as waker:
                waker.sendto(b"", str(self.socket_path))
        except OSError:
            pass
        self._thread.join(JOIN_SECONDS)
        if self._socket is not None:
            self._socket.close()
        if self._handler is not None:
            self._handler.close()
        self.socket_path.unlink(missing_ok=True)
        self._thread = self._socket = self._handler = None

    def __enter__(self) -> AccessLogRelay:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, sock: socket.socket, handler: RotatingFileHandler) -> None:
        while True:
            try:
                batch = [sock.recv(DATAGRAM_MAX)]
            except OSError:
                return  # closed under us
            # Empty the socket's queue before the slower masking: the kernel queues only a
            # few datagrams (net.unix.max_dgram_qlen, often 10) and HAProxy drops a line it
            # cannot hand over rather than wait.
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(sock.recv(DATAGRAM_MAX, socket.MSG_DONTWAIT))
                except OSError:  # BlockingIOError: the queue is empty
                    break
            lines: list[str] = []
            stopping = False
            for data in batch:
                if not data:
                    stopping = stopping or self._stopping.is_set()
                    continue
                try:
                    lines.append(mask_access_line(data))
                except Exception:  # one bad datagram must not end the access log
                    log.exception("could not mask an HAProxy access log line")
            try:
                self._write(handler, lines)
            except Exception:
                log.exception("could not write HAProxy access log lines")
            if stopping:
                return

    def _write(self, handler: RotatingFileHandler, lines: list[str]) -> None:
        """One write (and one rotation check) per chunk of lines, not per line: at a few
        thousand requests a second the per-line flush was most of the relay's CPU. A chunk
        stays under the file's size cap, so rotation still keeps every file under it."""
        limit = min(WRITE_CHUNK_BYTES, self._max_bytes)
        chunk: list[str] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) + 1 > limit:
                handler.handle(_record("\n".join(chunk)))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line) + 1
        if chunk:
            handler.handle(_record("\n".join(chunk)))


def _record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": logging.INFO})
