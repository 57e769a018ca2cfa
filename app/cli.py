"""The ``modelport`` command: run the embedded stack, migrate, manage API keys."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from domain.config import get_settings
from domain.db import make_engine, make_sessionmaker, session_scope
from domain.migrate import upgrade


def cmd_run(args: argparse.Namespace) -> int:
    from app.local import LocalStack, load_or_create_api_key

    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("PORT", "8000"))
    if not port_is_free(port):
        print(
            f"[run] port {port} is already in use on 127.0.0.1: stop what listens there, or choose another "
            f"with PORT=<port> make run (then export MODELPORT_URL=http://127.0.0.1:<port> for the client)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    env = dict(os.environ)
    key = env.get("MODELPORT_API_KEY") or load_or_create_api_key(data_dir)
    env["MODELPORT_API_KEY"] = key
    stack = LocalStack(data_dir=data_dir, port=port, env=env)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        print(f"[run] starting: data in {data_dir}", flush=True)
        database = env.get("DATABASE_URL") or f"SQLite in {data_dir}"
        stack.start()
        print(
            f"\n  ModelPort is running at http://127.0.0.1:{port}  (API docs: http://127.0.0.1:{port}/docs)\n"
            f"  Web page:  http://127.0.0.1:{port}/   sign in with the API key: {key}\n"
            f"  Authenticate with:  Authorization: Bearer {key}\n"
            f"  e.g.  export KEY={key}\n"
            f"        export MODELPORT_URL=http://127.0.0.1:{port} MODELPORT_API_KEY=$KEY   # for modelport convert\n"
            f'        curl -H "Authorization: Bearer $KEY" http://127.0.0.1:{port}/v1/jobs\n'
            f"  Broker: {env['REDIS_URL']}   Database: {database}\n"
            "  Ctrl-C stops everything this command started.\n",
            flush=True,
        )
        while not stopping:
            problem = stack.check_alive()
            if problem:
                print(f"[run] {problem}; stopping", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("[run] stopping", flush=True)
        stack.stop()


def port_is_free(port: int) -> bool:
    """Whether the API could listen on 127.0.0.1:``port`` (checked before anything starts, so a
    taken port is one clear line instead of workers started and stopped again)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_migrate(args: argparse.Namespace) -> int:
    upgrade(get_settings().database_url)
    print("migrations: at head")
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    from app.services import keys

    settings = get_settings()
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(sessions) as session:
        key, secret = keys.create_key(session, args.tenant, is_admin=args.admin, label=args.label)
        print(f"id={key.id} tenant={key.tenant} admin={key.is_admin}\nkey={secret}  (shown once)")
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from app.services import keys
    from domain.models import ApiKey

    settings = get_settings()
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(sessions) as session:
        key = session.get(ApiKey, args.id)
        if key is None:
            print(f"no key {args.id}", file=sys.stderr)
            return 1
        keys.revoke(session, key)
    print(f"revoked {args.id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelport")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the API, a private Redis and one worker per queue").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="upgrade the database to the latest schema").set_defaults(func=cmd_migrate)
    create = sub.add_parser("create-key", help="create an API key for a tenant")
    create.add_argument("tenant")
    create.add_argument("--admin", action="store_true")
    create.add_argument("--label")
    create.set_defaults(func=cmd_key_create)
    revoke = sub.add_parser("revoke-key", help="revoke an API key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_key_revoke)
    args = parser.parse_args(argv)
    return int(args.func(args))


SERVER_COMMANDS = ("run", "migrate", "create-key", "revoke-key")


def entry(argv: list[str] | None = None) -> int:
    """The ``modelport`` console script of the server install: the server's own commands
    here, every other command (convert, jobs, status…) to the client's CLI (``modelport.cli``).
    The client-only install (``clients/python``) points its script at ``modelport.cli`` alone."""
    args = list(sys.argv[1:] if argv is None else argv)
    from modelport.cli import _first_command
    from modelport.cli import main as client_main

    if _first_command(args) in SERVER_COMMANDS:
        return main(args)
    return client_main(args)


if __name__ == "__main__":
    sys.exit(entry())
