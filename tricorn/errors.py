"""The exception tree. A user error carries its fix in the message and the exit code it ends with.

    TricornError                 anything tricorn raises on purpose
    ├── UserError                the user can fix it: one stderr line, exit code
    │   ├── ConfigError          a bad setting, flag, env var or config file key (exit 2)
    │   ├── AppLoadError         APP cannot be imported or is not an app (exit 4, gunicorn's "app load error")
    │   └── BindError            a listener cannot be opened: port taken, bad address (exit 1)
    └── ProtocolError            a client broke HTTP; carries the status to answer with (h1.py)
"""

from __future__ import annotations


class TricornError(Exception):
    """Base of every error tricorn raises on purpose."""


class UserError(TricornError):
    """An error the user causes and can fix; the CLI prints it as one line."""

    exit_code = 1


class ConfigError(UserError):
    exit_code = 2


class AppLoadError(UserError):
    exit_code = 4


class BindError(UserError):
    exit_code = 1


class ProtocolError(TricornError):
    """The client sent something that is not valid HTTP/1.1; answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
