"""Logging: the error log (stderr or --error-logfile), and reopening log files on SIGUSR1."""

from __future__ import annotations

import logging
import sys
from typing import IO, TYPE_CHECKING, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

logger = logging.getLogger("tricorn.error")
ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def setup(config: Config) -> None:
    """Configure the error log (the access log is server/access_log.py's)."""
    error = logging.getLogger("tricorn.error")
    error.handlers.clear()
    handler = _ErrorLogHandler(config.error_logfile)
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    error.addHandler(handler)
    error.setLevel(config.log_level.upper())
    error.propagate = False


class Reopenable(Protocol):
    def reopen(self) -> None: ...


def reopen(*others: Reopenable | None) -> None:
    """SIGUSR1: reopen the log files by name, after logrotate moved them: the error log's and
    `others` (the access log)."""
    error = logging.getLogger("tricorn.error")
    try:
        for handler in error.handlers:
            if isinstance(handler, _ErrorLogHandler):
                handler.reopen()
        for other in others:
            if other is not None:
                other.reopen()
    except ConfigError as exc:
        error.error("SIGUSR1: %s", exc)


def open_log(destination: str, default: IO[str]) -> IO[str]:
    if destination in ("-", ""):
        return default
    try:
        return open(destination, "a", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot open the log file {destination}: {exc.strerror}; check its directory "
                          "and permissions, or log to - (the terminal)") from None


class _ErrorLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, destination: str) -> None:
        super().__init__(open_log(destination, sys.stderr))
        self.destination = destination

    def reopen(self) -> None:
        old = self.setStream(open_log(self.destination, sys.stderr))
        if old is not None and old is not sys.stderr:
            old.close()
