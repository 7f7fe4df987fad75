"""Ctrl-C held off while this process starts a child: a KeyboardInterrupt raised as fork()
returns, before the child's pid is stored, leaves a child nobody ends."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def held_interrupts() -> Iterator[None]:
    """SIGINT held until the block ends: its KeyboardInterrupt comes after the block, never inside.
    A child forked inside inherits the hold; one that should see Ctrl-C calls `release_interrupts`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        release_interrupts()


def release_interrupts() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
