"""Raw ASGI WebSocket apps for the tests."""

import asyncio
import json
import os
import time

RECORD = os.environ.get("TEST_RECORD_FILE")


def _record(line):
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(line + "\n")


async def echo(scope, receive, send):
    """Echoes; picks the subprotocol "chat" when offered; the text "close" closes with 4000 "bye";
    "scope" answers with the scope as JSON."""
    if scope["type"] != "websocket":
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"plain http"})
        return
    message = await receive()
    assert message["type"] == "websocket.connect"
    subprotocol = "chat" if "chat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": [(b"x-extra", b"yes")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _record(f"disconnect-{message['code']}")
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
            return
        if message.get("text") == "scope":
            shown = {k: v for k, v in scope.items() if k in ("type", "scheme", "path", "query_string", "subprotocols",
                                                             "root_path", "http_version")}
            shown["query_string"] = shown["query_string"].decode()
            await send({"type": "websocket.send", "text": json.dumps(shown)})
            continue
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def deny(scope, receive, send):
    """Denies the handshake with a real HTTP response."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
    await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"entry"})


async def deny_loosely(scope, receive, send):
    """The denial with more_body as 1 and 0: truthy and falsy values, as http.response.body takes."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
    await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": 1})
    await send({"type": "websocket.http.response.body", "body": b"entry", "more_body": 0})


async def deny_with_text(scope, receive, send):
    """A denial whose body is a str: the app broke the contract, and the log says how."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
    await send({"type": "websocket.http.response.body", "body": "no entry"})


async def refuse(scope, receive, send):
    """Closes before accepting: a 403."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.close"})


async def crash(scope, receive, send):
    """Fails before accepting on /before (a 500), after accepting otherwise (a 1011)."""
    if scope["type"] != "websocket":
        return
    await receive()
    if scope["path"] == "/before":
        raise RuntimeError("crashed before accepting")
    await send({"type": "websocket.accept"})
    await receive()
    raise RuntimeError("crashed after accepting")


MISUSES = {
    "/close-code-str": {"type": "websocket.close", "code": "4000"},
    "/close-code-reserved": {"type": "websocket.close", "code": 1006},
    "/close-reason-bytes": {"type": "websocket.close", "code": 4000, "reason": b"bye"},
    "/close-reason-long": {"type": "websocket.close", "code": 4000, "reason": "é" * 62},  # 124 UTF-8 bytes
    "/send-bytes-int": {"type": "websocket.send", "bytes": 5},
    "/send-text-bytes": {"type": "websocket.send", "text": b"hi"},
    "/send-nothing": {"type": "websocket.send"},
}


async def misuse(scope, receive, send):
    """Accepts, then sends the message MISUSES names for its path: one that breaks the ASGI spec."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send(MISUSES[scope["path"]])
    await receive()


async def flood(scope, receive, send):
    """Sends 1 MiB messages as fast as send() lets it, recording each one sent: with a client that
    does not read, send() must block long before all 200 are out."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    for i in range(200):
        await send({"type": "websocket.send", "bytes": b"x" * 2**20})
        _record(f"sent {i}")
    await asyncio.sleep(30)


async def hold(scope, receive, send):
    """Stays open until the peer or the server closes, answering nothing; records each text message
    and the disconnect code."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] != "websocket.disconnect":
        _record(f"received-{message.get('text')}")
    _record(f"disconnect-{message['code']}")


PAGE = b"""<!doctype html>
<html><body><p id="result">waiting</p>
<script>
const result = document.getElementById("result");
const ws = new WebSocket("ws://" + location.host + "/ws", ["chat"]);
ws.binaryType = "arraybuffer";
const got = [];
ws.onopen = () => { ws.send("hello from the browser"); ws.send(new Uint8Array([1, 2, 3])); };
ws.onmessage = (event) => {
  got.push(typeof event.data === "string" ? event.data : Array.from(new Uint8Array(event.data)).join(","));
  if (got.length === 2) {
    result.textContent = "OK " + ws.protocol + " | " + got.join(" | ") + " | " + ws.extensions;
    ws.close(1000);
  }
};
ws.onerror = () => { result.textContent = "ERROR"; };
</script></body></html>"""


async def page(scope, receive, send):
    """An HTML page whose script talks to the echo WebSocket at /ws."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": PAGE})
    elif scope["type"] == "websocket":
        await echo(scope, receive, send)


_echoed = 0


async def stall(scope, receive, send):
    """Echoes; its 200th message over all connections holds the whole loop for half a second."""
    global _echoed
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        _echoed += 1
        if _echoed == 200:
            time.sleep(0.5)
        await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
