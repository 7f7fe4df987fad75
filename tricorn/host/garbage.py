"""Python's cyclic garbage collector, set for a server.

A worker keeps each request's objects alive for as long as the request is in flight: with many
requests in flight, tens of thousands of young objects outlive every collection that Python's
default threshold (700 new objects) triggers. Each collection walks them, promotes them, and soon
a full collection walks the whole heap. 10,000 new objects per collection (Ray Serve's proxy uses
the same threshold) makes those collections rare; the cost is cyclic garbage freed later. What
each costs, measured: docs/benchmarks.md, "The garbage collector".

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
