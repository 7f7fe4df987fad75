"""The command line: `tricorn [serve] APP`, `tricorn check APP`. Flags come from config.SETTINGS.

A user error ends as one stderr line and an exit code: 2 usage or config, 4 app load
(gunicorn's APP_LOAD_ERROR), 1 a listener that cannot be opened, 3 a failed startup.
"""

from __future__ import annotations

import argparse
import difflib
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__, collector, loader, logs, tls
from .config import SETTINGS, Config, default_text, describe, env_name, load
from .errors import UserError
from .process import PidFile, resolve_identity, set_title, switch_to
from .sockets import open_listeners, parse_bind

COMMANDS = ("serve", "check", "bench", "tune")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            flags = [f for a in self._actions for f in a.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1)
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tricorn",
        usage="tricorn [serve|check] APP [options] | tricorn bench URL [options] | tricorn tune APP [options]",
        description="Serve a WSGI or ASGI application (detected automatically). "
        "`tricorn check APP` imports the app and validates the configuration without serving.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("app", nargs="?", metavar="APP", help=SETTINGS["app"].help)
    for name, meta in SETTINGS.items():
        if not meta.flags:
            continue
        text = f"{meta.help} [{env_name(name)}; default: {default_text(name)}]".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "help": text}
        if meta.is_bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.repeatable:
            kwargs["action"] = "append"
        if meta.choices:
            kwargs["choices"] = meta.choices
        if meta.metavar and not meta.is_bool:
            kwargs["metavar"] = meta.metavar
        parser.add_argument(*meta.flags, **kwargs)
    parser.add_argument("--print-config", action="store_true", default=False,
                        help="print the merged configuration and where each value came from, then exit")
    parser.add_argument("--version", action="version", version=f"tricorn {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "serve"
    if command == "bench":
        from .bench.command import main as bench

        return bench(args)
    if command == "tune":
        from .tune.command import main as tune

        return tune(args)
    namespace = vars(build_parser().parse_args(args))
    print_config = namespace.pop("print_config")
    try:
        config, sources = load(namespace)
        if print_config:
            print(describe(config, sources))
            return 0
        if not config.app:
            raise UserError("missing APP: give the application as module:attribute, e.g. tricorn examples.hello:app")
        if command == "check":
            return check(config)
        return serve(config, lambda: load(namespace)[0])
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code


def check(config: Config) -> int:
    for address in config.listeners():
        parse_bind(address)
    assert config.app is not None
    _, interface = loader.load_configured(config)
    print(f"OK: {config.app} is a {interface} application and the configuration is valid")
    return 0


def load_app(config: Config) -> tuple[Callable[..., Any], str]:
    """The app, for serving: what its import made lives as long as the process (collector.py)."""
    loaded = loader.load_configured(config)
    collector.app_loaded(config.gc_threshold)
    return loaded


def serve(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Serve: in this process with -w 1, else as the master of forked workers (--reload: as the
    parent of a serving child that is replaced when code changes).

    `reload_config` re-reads the configuration for SIGHUP (the listeners stay as they are)."""
    assert config.app is not None
    loader.parse_spec(config.app)  # a malformed APP fails here, not in every worker
    os.umask(config.umask)
    access_log = logs.setup(config)
    from .supervisor import Heartbeat, ServeWorker, Supervisor
    from .worker import Worker

    identity = resolve_identity(config.user, config.group)
    ssl_context = tls.context(config)
    pidfile = PidFile(config.pid) if config.pid else None
    listeners: list[socket.socket] = []
    try:
        listeners.extend(open_listeners(config))
        if pidfile is not None:
            pidfile.write()
        if config.reload:
            from .reload import Reloader

            return Reloader(config, listeners).run()
        collector.configure(config.gc_threshold)
        preloaded = load_app(config) if config.preload else None
        if config.workers == 1:
            if identity is not None:
                switch_to(identity)
            set_title(f"tricorn: worker [{config.app}]")
            app, interface = preloaded or load_app(config)
            return Worker(config, app, interface, listeners, access_log, ssl_context=ssl_context).run()

        def worker_for(config: Config) -> ServeWorker:
            context = tls.context(config)  # on HUP, a bad new certificate fails here: the old workers stay

            def serve_worker(number: int, master_pid: int, heartbeat: Heartbeat) -> int:
                assert config.app is not None
                set_title(f"tricorn: worker {number} [{config.app}]")
                if identity is not None:
                    switch_to(identity)
                try:
                    app, interface = preloaded or load_app(config)
                except UserError as exc:
                    print(f"Error: {exc}", file=sys.stderr)
                    return exc.exit_code
                return Worker(config, app, interface, listeners, access_log, master_pid, heartbeat, context).run()

            return serve_worker

        def reload() -> tuple[Config, ServeWorker]:
            fresh = reload_config() if reload_config is not None else config
            if preloaded is not None:
                logs.logger.warning("SIGHUP with --preload: new workers run the app the master loaded at start; "
                                    "restart the master to load new code")
            return fresh, worker_for(fresh)

        return Supervisor(config, listeners, worker_for(config), reload, lambda: logs.reopen(access_log)).run()
    finally:
        for sock in listeners:
            sock.close()
        if pidfile is not None:
            pidfile.remove()

