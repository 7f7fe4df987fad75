"""The event loop a worker or a load generator runs on: uvloop where it is installed."""

from __future__ import annotations

import asyncio


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
