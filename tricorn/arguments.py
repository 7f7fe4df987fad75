"""argparse pieces the load commands (bench, tune) share: one-line errors, typed values."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message}; see {self.prog} --help\n")


def typed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of config's parsers (duration, size): its ValueError says what was expected."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected {exc}") from None

    return convert
