"""The command line: `tricorn [serve] APP`, `tricorn check APP`. Flags come from config.SETTINGS.

A user error ends as one stderr line and an exit code: 2 usage or config, 4 app load
(gunicorn's APP_LOAD_ERROR), 1 a listener that cannot be opened, 3 a failed startup.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, loader
from .config import SETTINGS, Config, default_text, describe, env_name, load
from .errors import UserError
from .host.sockets import parse_bind
from .serve import serve

COMMANDS = ("serve", "check", "bench", "tune", "ctl")


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
        usage="tricorn [serve|check] APP [options] | tricorn bench URL [options] | tricorn tune APP [options] "
        "| tricorn ctl COMMAND",
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
    parser.add_argument("--version", action="version", version=f"tricorn {__version__} ({build()})")
    return parser


def build() -> str:
    """Which build runs the request path: the default Python source or the opt-in mypyc one (setup.py).
    Found, not imported: every start asks (the parser's --version), and most never serve a request."""
    spec = importlib.util.find_spec(".server.h1", __package__)
    return "pure Python" if spec is None or str(spec.origin).endswith(".py") else "compiled with mypyc"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "serve"
    if command == "bench":
        from .bench.command import main as bench

        return bench(args)
    if command == "tune":
        from .tune.command import main as tune

        return tune(args)
    if command == "ctl":
        from .ctl import main as ctl

        return ctl(args)
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
