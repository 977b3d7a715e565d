"""`upload-portal`: serve, worker, db upgrade, convert, push, watch, settings, check-omero."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from app.core import config as portal_config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert"]:  # the converters and the client own their arguments
        try:
            from converters.cli import main as convert_main
        except ModuleNotFoundError as e:
            return _server_missing("convert", e)
        return convert_main(argv[1:])
    if argv[:1] in (["push"], ["watch"]):
        from app.client import push, watch

        return (push if argv[0] == "push" else watch).main(argv[1:])
    parser = argparse.ArgumentParser(prog="upload-portal", description="The OMERO Upload Portal")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the web app (and, by default, a worker)")
    serve.add_argument("--no-worker", action="store_true", help="web only (workers run elsewhere)")
    serve.add_argument("--processes", type=int, default=1, help="web processes (each with PORTAL_WEB_THREADS threads)")
    worker = commands.add_parser("worker", help="run a job worker")
    worker.add_argument("--beat", action="store_true", help="also send the scheduled tasks (retention reminders); run one per site")
    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    commands.add_parser("convert", help="convert files to OME-TIFF as the portal would (see `convert --help`)")
    commands.add_parser("push", help="send files or folders to a portal and wait for the results (see `push --help`)")
    commands.add_parser("watch", help="send each new file in a folder to a portal (see `watch --help`)")
    commands.add_parser("settings", help="print the table of settings (PORTAL_* environment variables)")
    check = commands.add_parser("check-omero", help="check the configured OMERO backend end to end (exit 1 on a failure)")
    check.add_argument("--json", action="store_true", help="one JSON object {check, ok, detail} per line")
    check.add_argument("--key", help="run as the user of this OMERO session key ('-': read it from stdin) "
                                     "instead of the configured admin account")
    check.add_argument("--group", help="the OMERO group to check in (default: the account's default group)")
    args = parser.parse_args(argv)

    try:
        if args.command == "settings":
            print(portal_config.settings_table())
        elif args.command == "db":
            _upgrade()
        elif args.command == "worker":
            _worker(args.beat)
        elif args.command == "serve":
            _serve(args.no_worker, args.processes)
        elif args.command == "check-omero":
            return _check_omero(args.key, args.group, args.json)
    except portal_config.ConfigError as e:
        print(f"upload-portal: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        return _server_missing(args.command, e)
    return 0


def _server_missing(command: str, error: ModuleNotFoundError) -> int:
    """A client-only install (no extras) runs push and watch; the rest needs the server's packages."""
    print(f"upload-portal {command}: this install is the client only ({error.name} is missing); "
          "install the server with: pip install 'omero-upload-portal[server]'", file=sys.stderr)
    return 2


def _check_omero(key: str | None, group: str | None, as_json: bool) -> int:
    import json

    from app.core.omero import make_gateway
    from app.core.omero.check import SelfCheck

    config = portal_config.load()
    if key == "-":
        key = sys.stdin.readline().strip()  # keeps the key out of the process list and shell history
    admin = config["OMERO_ADMIN_USER"] or ("upload-portal-check" if config["OMERO_BACKEND"] == "embedded" else "")
    passed = True
    for result in SelfCheck(make_gateway(config), key=key, admin_user=admin, group=group).results():
        passed &= result.ok
        print(json.dumps(result.json()) if as_json else result.line(), flush=True)
    return 0 if passed else 1


def _upgrade() -> None:
    from app.core.db import Database

    config = portal_config.load()
    db = Database(config["DATABASE_URL"])
    db.upgrade()
    db.dispose()
    print("database schema is up to date")


def _worker(beat: bool) -> None:
    portal_config.load()  # a setting with a hole is said here, before the worker starts
    # the worker is its own program (workers/), handed the core's services, not this app
    os.execv(sys.executable, [sys.executable, "-m", "workers", *(["--beat"] if beat else [])])


def _serve(no_worker: bool, processes: int) -> None:
    from gunicorn.app.base import BaseApplication

    from app.slow_clients import PortalWorker

    config = portal_config.load()
    if config["EMBEDDED"]:
        _upgrade()  # a fresh embedded install has no schema yet
    worker = None
    if not no_worker:
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--beat"])

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{config['HOST']}:{config['PORT']}")
            self.cfg.set("workers", processes)
            self.cfg.set("worker_class", PortalWorker)  # gthread, with a deadline on request heads
            self.cfg.set("threads", config["WEB_THREADS"])  # each open event stream holds a thread
            self.cfg.set("timeout", 120)
            self.cfg.set("graceful_timeout", 5)  # event streams never end by themselves
            self.cfg.set("accesslog", "-")
            # gunicorn 27's control socket is one path per user (~/.gunicorn/gunicorn.ctl): two portals,
            # or a portal and its tests, on one host would remove each other's. The portal uses none.
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("when_ready", lambda _server: print(
                f"\n  OMERO Upload Portal ({config['MODE']} mode): http://{config['HOST']}:{config['PORT']}/\n",
                flush=True))

        def load(self):
            from app.factory import create_app

            return create_app()

    try:
        Server().run()
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


if __name__ == "__main__":
    sys.exit(main())
