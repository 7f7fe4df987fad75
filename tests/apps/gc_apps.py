"""Reports the serving process's garbage-collector settings: tricorn's collector.py at work."""

import gc
import json
import os

if os.environ.get("GC_APP_THRESHOLD"):  # an app that chooses its own, when imported
    gc.set_threshold(int(os.environ["GC_APP_THRESHOLD"]), 10, 10)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    # Frozen objects sit in the permanent generation, which get_objects() does not list.
    app_frozen = not any(obj is app for obj in gc.get_objects())
    body = json.dumps({"pid": os.getpid(), "threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count(),
                       "app_frozen": app_frozen}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


if os.environ.get("GC_APP_DISABLE"):  # only reference counting frees anything: cycles stay
    gc.disable()


async def live(scope, receive, send):
    """How many of the server's per-connection objects are alive (the asking one included)."""
    if scope["type"] != "http":
        return
    names = ("HttpConnection", "RequestParser", "HttpCycle", "Request")
    counts = dict.fromkeys(names, 0)
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in counts and type(obj).__module__.startswith("tricorn."):
            counts[name] += 1
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(counts).encode()})
