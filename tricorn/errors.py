"""The exception tree. A user error carries its fix in the message and the exit code it ends with.

    TricornError                 anything tricorn raises on purpose
    ├── UserError                the user can fix it: one stderr line, exit code
    │   ├── ConfigError          a bad setting, flag, env var or config file key (exit 2)
    │   ├── AppLoadError         APP cannot be imported or is not an app (exit 4, gunicorn's "app load error")
    │   └── BindError            a listener cannot be opened: port taken, bad address (exit 1)
    └── ProtocolError            a client broke HTTP; carries the status to answer with (server/h1.py)
    ClientDisconnected (OSError) the client went away while the app read or wrote (WSGI, WebSocket)

A worker's exit code tells the master whether to replace it: gunicorn's 3 (the worker could not
boot: an ASGI lifespan startup failed) and 4 (the app could not be imported) stop the master
instead of a restart loop.
"""

from __future__ import annotations

EXIT_BOOT_FAILURE = 3  # gunicorn's WORKER_BOOT_ERROR
EXIT_APP_LOAD_FAILURE = 4  # gunicorn's APP_LOAD_ERROR (AppLoadError.exit_code)


class TricornError(Exception):
    """Base of every error tricorn raises on purpose."""


class UserError(TricornError):
    """An error the user causes and can fix; the CLI prints it as one line."""

    exit_code = 1


class ConfigError(UserError):
    exit_code = 2


class AppLoadError(UserError):
    exit_code = EXIT_APP_LOAD_FAILURE


class BindError(UserError):
    exit_code = 1


class ProtocolError(TricornError):
    """The client sent something that is not valid HTTP/1.1; answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientDisconnected(OSError):
    """The client went away while the app was reading the body or writing the response."""
