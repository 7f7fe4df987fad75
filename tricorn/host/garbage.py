"""Python's cyclic garbage collector, set for a server.

A worker keeps each request's objects alive for as long as the request is in flight: with 1,000
requests waiting 50 ms each (examples.tuning:io_asgi at 20,000 req/s), tens of thousands of young
objects outlive every collection that Python's default threshold (700 new objects) triggers.
Each collection walks them, promotes them, and soon a full collection walks the whole heap: on one
core that worker spent a third of its CPU in collections, up to 150 ms at a time, and served
18,000 req/s where 10,000 new objects per collection let it serve 24,000 (docs/benchmarks.md).
Ray Serve's proxy uses the same threshold. The cost: cyclic garbage waits longer to be freed (an
app leaving 1 KB in a cycle per request held 11 MB more at its peak).

The app's own objects (modules, routes, settings) live as long as the process: once it has
loaded they are frozen (gc.freeze), so full collections skip them; with --preload, before the
fork, which also keeps their pages shared with the workers (a collection writes to every object
it walks). An app that sets its own thresholds when imported keeps them.
"""

from __future__ import annotations

import gc


def configure(threshold: int) -> None:
    """Before the app is imported: the first generation's threshold (0: Python's default)."""
    if threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)


def app_loaded(threshold: int) -> None:
    """The app has loaded: what exists now lives as long as the process."""
    if threshold:
        gc.freeze()
