"""``callmesh``: start, inspect and stop the mesh on this machine.

``callmesh up`` owns everything it starts: the embedded stores (only when it had to start
them), Ray (always a new local cluster, never one it finds running) and Serve. It records them
in ``<data_dir>/mesh.json`` and stays in the foreground; Ctrl-C, or ``callmesh down`` from
another terminal, stops exactly those and nothing else. Every listener Ray lets it place binds
to ``--host`` (127.0.0.1 unless told otherwise). HAProxy's files and sockets live in a folder
of its own, mode 0700, removed on the way out; HAProxy's access log goes, masked, to
``<data_dir>/logs/haproxy-access.log`` (see :func:`deployments.haproxy_files.private_haproxy`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from deployments.mesh_commands import down_command, status_command, up_command
from services.settings import get_settings

DEFAULT_CONFIG = "serve_config.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="callmesh", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stores, Ray and Serve; stay in the foreground")
    up.add_argument("--config", default=DEFAULT_CONFIG, help="Serve config file")
    up.add_argument(
        "--host", default=None, help="address to listen on (default: CALLMESH_API_HOST)"
    )
    up.add_argument("--port", type=int, default=None, help="API port (default: CALLMESH_API_PORT)")
    up.add_argument("--no-demo", action="store_true", help="do not load demo data")
    commands.add_parser("down", help="stop what `callmesh up` started")
    commands.add_parser("status", help="show applications, deployments and replicas")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One line per health poll is noise; warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = get_settings()
    except ValidationError as exc:
        sys.exit(settings_refused(exc))
    if args.command == "up":
        sys.exit(up_command(settings, args))
    if args.command == "down":
        sys.exit(down_command(settings))
    sys.exit(status_command(settings))


def settings_refused(exc: ValidationError) -> int:
    """Print why the settings were refused, one line each, and the exit status (2)."""
    print("callmesh: the settings are not valid:", file=sys.stderr)
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        print(f"  {where + ': ' if where else ''}{message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    main()
