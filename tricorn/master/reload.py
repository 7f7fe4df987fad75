"""--reload (development): serve from a child process and start a new one when watched files change.

The parent binds the listeners and never imports the app, so each child imports fresh code. An app
that fails to import (a syntax error mid-edit) only ends that child: the parent prints its error and
waits for the next change. The child gets the configuration as JSON and the listeners as fd://N,
and serves with one worker unless --workers says otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fnmatch
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..config import DEFAULTS, Config
from ..errors import ConfigError

logger = logging.getLogger("tricorn.error")
PR_SET_PDEATHSIG = 1
CHILD_ENV = "TRICORN_RELOADER_CHILD"  # the child's configuration and listeners, as JSON


class ChangeFilter:
    """*.py and --reload-include globs, minus --reload-exclude globs and what watchfiles always skips
    (.git, __pycache__, editor swap files)."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        from watchfiles import DefaultFilter

        self.default = DefaultFilter()
        self.include = ("*.py", *include)
        self.exclude = exclude

    @staticmethod
    def _matches(path: str, globs: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatch(Path(path).name, g) or Path(path).match(g) for g in globs)

    def __call__(self, change: Any, path: str) -> bool:
        return (self.default(change, path) and self._matches(path, self.include)
                and not self._matches(path, self.exclude))


class Reloader:
    def __init__(self, config: Config, listeners: list[socket.socket]) -> None:
        self.config = config
        self.listeners = listeners
        self.stop = threading.Event()
        self.restart = threading.Event()  # SIGHUP: restart the child as if a file had changed
        self.child: subprocess.Popen[bytes] | None = None
        self.reported = False  # the current child's failure has been shown

    def run(self) -> int:
        try:
            import watchfiles
        except ImportError:
            raise ConfigError("--reload needs watchfiles: pip install 'tricorn[reload]'") from None
        dirs = [str(Path(d).resolve()) for d in self.config.reload_dir or (".",)]
        for d in dirs:
            if not Path(d).is_dir():
                raise ConfigError(f"--reload-dir {d} is not a directory")
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.restart.set())
        logger.info("Reloader (pid %d) watching %s", os.getpid(), ", ".join(dirs))
        try:
            self._start()
            changes_seen = watchfiles.watch(
                *dirs, watch_filter=ChangeFilter(self.config.reload_include, self.config.reload_exclude),
                stop_event=self.stop, yield_on_timeout=True, rust_timeout=500, raise_interrupt=False,
            )
            for changes in changes_seen:
                if changes or self.restart.is_set():
                    names = sorted({os.path.relpath(path) for _, path in changes})
                    logger.warning("%s: restarting", f"Changes in {', '.join(names[:5])}" if names else "SIGHUP")
                    self.restart.clear()
                    self._stop_child()
                    self._start()
                else:
                    self._watch_child()
        finally:
            self._stop_child()
        return 0

    def _start(self) -> None:
        fds = [sock.fileno() for sock in self.listeners]
        config = dataclasses.replace(self.config, reload=False, pid=None, bind=tuple(f"fd://{fd}" for fd in fds))
        payload = {"config": dataclasses.asdict(config), "parent": os.getpid()}
        env = {**os.environ, CHILD_ENV: json.dumps(payload)}
        self.child = subprocess.Popen([sys.executable, "-m", "tricorn.serve"], env=env, pass_fds=fds)
        self.reported = False

    def _watch_child(self) -> None:
        if self.child is None or self.reported or self.child.poll() is None:
            return
        self.reported = True
        logger.error("The server exited (code %d); waiting for a change to restart it", self.child.returncode)

    def _stop_child(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        self.child.terminate()
        try:
            self.child.wait(self.config.graceful_timeout + 1)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


def child_config() -> Config | None:
    """In a serving child (serve.py): the configuration its reloader handed over, or None when this
    process is no reloader's child. A child dies with its reloader."""
    if CHILD_ENV not in os.environ:
        return None
    payload = json.loads(os.environ.pop(CHILD_ENV))
    _die_with_parent(payload["parent"])
    fields = payload["config"]
    values: dict[str, Any] = {
        name: tuple(v) if isinstance(DEFAULTS.get(name), tuple) else v for name, v in fields.items()
    }
    config = Config(**values)
    if config.workers is None:
        config = dataclasses.replace(config, workers=1)
    return config


def _die_with_parent(parent: int) -> None:
    """A reloader killed with -9 must not leave its child serving on the port: ask Linux for a
    SIGTERM when the parent dies (PR_SET_PDEATHSIG), and check it did not die already."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(0)
