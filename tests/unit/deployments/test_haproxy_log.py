"""HAProxy's access log: each datagram masked, written under the data folder, nowhere else."""

from __future__ import annotations

import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.haproxy_log import TRUNCATED, AccessLogRelay, mask_access_line

pytestmark = pytest.mark.unit

# As Ray's HAProxy sends them (`log <unix socket> local0 info`, `option httplog`): captured
# from the bundled HAProxy 2.8 with a request for /scheduling/customers?phone=...
HEAD = (
    "<134>Dec  1 06:16:14 haproxy[10841]: 127.0.0.1:34952 [01/Dec/2026:06:16:14.881] "
    "http_frontend scheduling/replica_1 0/0/0/5/5 200 1234 - - ---- 1/1/0/0/0 0/0 "
)
PHONE_REQUEST = '"GET /scheduling/customers?phone=%2B15551234567 HTTP/1.1"'


def _datagram(request: str) -> bytes:
    return (HEAD + request + "\n").encode()


def test_a_request_line_loses_its_query_values_and_haproxy_fields_are_kept():
    line = mask_access_line(_datagram(PHONE_REQUEST))
    assert "15551234567" not in line
    assert line.endswith('"GET /scheduling/customers?phone HTTP/1.1"')
    # The syslog priority goes; HAProxy's fields stay as they were (5 200 1234 is not a phone).
    assert line.startswith("Dec  1 06:16:14 haproxy[10841]: 127.0.0.1:34952 ")
    assert " 0/0/0/5/5 200 1234 - - ---- " in line


@pytest.mark.parametrize(
    ("request_line", "hidden", "kept"),
    [
        # Every query value goes, whatever it is named and however it is encoded.
        ('"GET /calls?q=call%20%2B1%20555%20123%204567 HTTP/1.1"', "555", '"GET /calls?q HTTP'),
        (
            '"GET /inventory/units?query=john.smith%40gmail.com&limit=5 HTTP/1.1"',
            "john",
            "?query&limit ",
        ),
        ('"GET /scheduling/appointments?phone=5551234567 HTTP/1.1"', "5551234567", "?phone "),
        ('"GET /x?email=jane%40x.org&&flag HTTP/1.1"', "jane", "?email&flag "),
        # A call id is the caller's choice (a SIP room name holds the number): masked by shape.
        ('"GET /calls/call-_%2B15551234567_xyz HTTP/1.1"', "15551234567", "/calls/call-_***67"),
        ('"GET /x?5551234567=1 HTTP/1.1"', "5551234567", "?***67 "),
    ],
)
def test_query_values_are_dropped_and_paths_masked(request_line: str, hidden: str, kept: str):
    line = mask_access_line(_datagram(request_line))
    assert hidden not in line
    assert kept in line


def test_paths_without_personal_data_are_written_as_sent():
    request = (
        '"DELETE /inventory/holds/GEN-701.0123456789abcdef01234567 HTTP/1.1"',
        '"POST /scheduling/customers/lookup HTTP/1.1"',
        '"GET /healthz HTTP/1.1"',
    )
    for request_line in request:
        assert mask_access_line(_datagram(request_line)) == (HEAD + request_line)[5:]
    slots = '"GET /scheduling/slots?date=2026-11-23&service_type=oil_change HTTP/1.1"'
    assert mask_access_line(_datagram(slots)).endswith(
        '"GET /scheduling/slots?date&service_type HTTP/1.1"'
    )


def test_a_line_cut_at_haproxys_length_limit_loses_the_token_it_was_cut_in():
    # No closing quote: HAProxy cut the line, here inside a path segment, or a query value.
    line = mask_access_line(_datagram('"GET /calls/room-%2B155512'))
    assert "155512" not in line
    assert line.endswith(f'"GET /calls/{TRUNCATED}')
    line = mask_access_line(_datagram('"GET /calls?q=%2B155512'))
    assert "155512" not in line
    assert line.endswith('"GET /calls?q')


def test_other_lines_are_masked_whole_and_stay_one_line():
    line = mask_access_line(b"<133>Dec  1 06:16:14 haproxy[1]: odd 5551234567\nforged line\n")
    assert "5551234567" not in line
    assert "\n" not in line
    assert line.endswith("odd ***67\\nforged line")


# -- the relay, over a real unix datagram socket ------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="cmlt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _send(path: Path, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        for datagram in datagrams:
            sender.sendto(datagram, str(path))


def test_the_relay_writes_masked_lines_to_its_file(short_dir: Path, tmp_path: Path):
    socket_path = short_dir / "access.sock"
    log_path = tmp_path / "logs" / "haproxy-access.log"
    relay = AccessLogRelay(socket_path, log_path)
    relay.start()
    try:
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        _send(
            socket_path,
            _datagram(PHONE_REQUEST),
            _datagram('"GET /calls?q=jane.doe%40example.com HTTP/1.1"'),
        )
    finally:
        relay.stop()  # writes what was already sent, then closes
    lines = log_path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith('"GET /scheduling/customers?phone HTTP/1.1"')
    assert lines[1].endswith('"GET /calls?q HTTP/1.1"')
    text = log_path.read_text()
    assert "15551234567" not in text
    assert "jane.doe" not in text


def test_without_the_relay_haproxys_datagrams_have_nowhere_to_go(short_dir: Path, tmp_path: Path):
    socket_path = short_dir / "access.sock"
    with AccessLogRelay(socket_path, tmp_path / "access.log"):
        pass
    assert not socket_path.exists()
    with pytest.raises(FileNotFoundError):
        _send(socket_path, _datagram(PHONE_REQUEST))


def test_the_log_file_is_size_capped(short_dir: Path, tmp_path: Path):
    log_path = tmp_path / "access.log"
    with AccessLogRelay(short_dir / "access.sock", log_path, max_bytes=1000, backups=2):
        _send(short_dir / "access.sock", *[_datagram(PHONE_REQUEST)] * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["access.log", "access.log.1", "access.log.2"]
    assert all((tmp_path / name).stat().st_size <= 1000 for name in files)
