"""Raw ASGI apps for the tests; each path of `app` exercises one behaviour."""

import asyncio
import json
import os

RECORD = os.environ.get("TEST_RECORD_FILE")  # a file where lifespan events are appended


def _record(line: str) -> None:
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(line + "\n")


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _respond(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"x-app", b"called"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def echo(scope, receive, send):
    """Answers with what it received, as JSON: the corpus and scope tests read it back."""
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    body = await _read_body(receive)
    if body is None:
        return
    view = {
        "method": scope["method"], "path": scope["path"], "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"), "http_version": scope["http_version"],
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "body": body.decode("latin-1"), "scheme": scope["scheme"], "root_path": scope["root_path"],
        "client": list(scope["client"]) if scope["client"] else None,
        "server": list(scope["server"]) if scope["server"] else None,
        "state": sorted(scope.get("state", {})), "asgi": scope["asgi"], "type": scope["type"],
    }
    await _respond(send, 200, json.dumps(view).encode())


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["started"] = True
            _record("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            _record("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"called")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path.startswith("/status/"):
        await _respond(send, int(path.rsplit("/", 1)[1]), b"some body")
    elif path == "/raise-before":
        raise RuntimeError("boom before the response")
    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after the response started")
    elif path == "/body-before-start":
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/str-status":
        await send({"type": "http.response.start", "status": "200", "headers": []})
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/none-status":
        await send({"type": "http.response.start", "headers": []})
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/str-header-name":
        await send({"type": "http.response.start", "status": 200, "headers": [("x-a", b"b")]})
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/str-header-value":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", "b")]})
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/headers-not-pairs":
        await send({"type": "http.response.start", "status": 200, "headers": 5})
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/not-a-dict":
        await send([("type", "http.response.start")])
    elif path == "/str-body":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": "not bytes"})
    elif path == "/no-response":
        return
    elif path == "/incomplete":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
    elif path == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-evil", b"a\r\nInjected: yes")]})
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/too-long":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"toolong"})
    elif path == "/short":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"short"})
    elif path == "/sleep":
        seconds = float(scope["query_string"] or b"1")
        _record("sleeping")  # the tests' sign that the request is inside the app
        await asyncio.sleep(seconds)
        await _respond(send, 200, b"slept")
    elif path == "/count-upload":
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await _respond(send, 200, str(total).encode())
    elif path == "/download":
        size = int(scope["query_string"])
        block = b"x" * 65536
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode())]})
        sent = 0
        while sent < size:
            piece = block[: min(65536, size - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})
    elif path == "/wait-disconnect":
        message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        _record("disconnected")
    elif path == "/ignore-body":
        await _respond(send, 200, b"ignored")
    elif path == "/rss":
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        await _respond(send, 200, fields["VmHWM"].split()[0].encode())
    else:
        await echo(scope, receive, send)


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await echo(scope, receive, send)


async def failing_startup_with_an_exception(scope, receive, send):
    """The failure's message given as an exception, not the str the spec asks for."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": ConnectionError("database unreachable")})
        return
    await echo(scope, receive, send)


async def raising_lifespan(scope, receive, send):
    """An app that does not speak lifespan: 'auto' must carry on, 'on' must fail."""
    if scope["type"] == "lifespan":
        raise ValueError("no lifespan here")
    await echo(scope, receive, send)


class ASGI2:
    """An ASGI 2 app: class instantiated with the scope."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            return
        await _respond(send, 200, b"asgi2")


def factory():
    return echo


def broken_factory():
    raise RuntimeError("factory exploded")



async def pid(scope, receive, send):
    """Answers with the serving process's pid."""
    if scope["type"] == "http":
        await _respond(send, 200, str(os.getpid()).encode())


def block_the_loop_forever():
    import time

    time.sleep(60)  # the event loop is blocked: what the hung-worker kill must name


async def hangs(scope, receive, send):
    """/block blocks the event loop; anything else answers with the pid."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        block_the_loop_forever()
    await _respond(send, 200, str(os.getpid()).encode())


async def dies_at_startup(scope, receive, send):
    """Crashes hard during lifespan startup: the crash-loop guard's case."""
    if scope["type"] == "lifespan":
        await receive()
        os._exit(1)


async def own_task_factory(scope, receive, send):
    """Installs a task factory at startup (as aiomonitor or eager tasks do); answers with the name
    of the task its request runs in."""
    if scope["type"] == "lifespan":
        await receive()

        def factory(loop, coro, **kwargs):
            return asyncio.Task(coro, loop=loop, name="made by the app's factory", **kwargs)

        asyncio.get_running_loop().set_task_factory(factory)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _respond(send, 200, asyncio.current_task().get_name().encode())
