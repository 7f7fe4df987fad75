"""WebSockets with the `websockets` client (and raw sockets for what a client library will not do)
against raw ASGI, Starlette and FastAPI apps."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import select
import signal
import socket
import struct
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from .conftest import exchange

HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def ws_url(server, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def test_echo_text_bytes_subprotocol_and_close_code(serve) -> None:
    server = serve("ws_apps:echo")

    async def talk() -> None:
        async with connect(ws_url(server, "/ws?x=1"), subprotocols=["other", "chat"], max_size=None) as ws:
            assert ws.subprotocol == "chat" and ws.response.headers["x-extra"] == "yes"
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
            await ws.send("scope")
            scope = __import__("json").loads(await ws.recv())
            assert scope == {"type": "websocket", "http_version": "1.1", "scheme": "ws", "root_path": "",
                             "path": "/ws", "query_string": "x=1", "subprotocols": ["other", "chat"]}
            await ws.send(["frag", "mented"])  # a fragmented message arrives whole
            assert await ws.recv() == "fragmented"
            await ws.send("close")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4000 and ws.close_reason == "bye"

    run(talk())
    assert httpx.get(server.url + "/").text == "plain http"  # plain HTTP still served beside
    assert '"GET /ws?x=1 HTTP/1.1" 101' in server.stdout


@pytest.mark.parametrize("deflate", [True, False])
def test_permessage_deflate_on_and_off(serve, deflate: bool) -> None:
    server = serve("ws_apps:echo", *([] if deflate else ["--no-ws-per-message-deflate"]))

    async def talk() -> str | None:
        async with connect(ws_url(server)) as ws:
            await ws.send("z" * 100_000)
            assert await ws.recv() == "z" * 100_000
            return ws.response.headers.get("sec-websocket-extensions")

    extensions = run(talk())
    assert (extensions or "").startswith("permessage-deflate") if deflate else extensions is None


@pytest.mark.parametrize(("size", "closed_with"), [(10 * 2**20, None), (10 * 2**20 + 1, 1009)])
def test_max_size(serve, size: int, closed_with: int | None) -> None:
    server = serve("ws_apps:echo", "--ws-max-size", str(10 * 2**20))

    async def talk() -> int | None:
        ws = await connect(ws_url(server), max_size=None, compression=None)
        try:
            await ws.send(os.urandom(size))
            assert len(await ws.recv()) == size
        except websockets.ConnectionClosed:
            return ws.close_code
        finally:
            with contextlib.suppress(Exception):  # the library's close() trips on a connection already gone
                await ws.close()
        return None

    assert run(talk()) == closed_with


def test_a_message_over_the_limit_closes_1009_without_a_reset(serve) -> None:
    """The server answers 1009 as the frame's head arrives, reads the rest of the frame and the
    client's close frame, and only then ends the TCP connection: the client's own close() works
    (it crashed in websockets 17.4 when the server half-closed while the client was still sending)."""
    server = serve("ws_apps:echo")  # --ws-max-size 16 MiB

    async def talk() -> tuple[int | None, int | None]:
        ws = await connect(ws_url(server), max_size=None, compression=None)
        with pytest.raises(websockets.ConnectionClosedError):
            await ws.send(os.urandom(17 * 2**20))
            await ws.recv()
        await ws.close()  # raised AttributeError from the transport before
        return ws.close_code, ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None

    assert run(talk()) == (1009, 1009)
    server.wait_for(lambda: "disconnect-1009" in server.records(), what="the app told of the 1009")


def test_after_a_1009_the_rest_of_the_frame_is_read_and_the_closing_handshake_kept(serve) -> None:
    server = serve("ws_apps:echo", "--ws-max-size", "1000")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(HANDSHAKE)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        big = frame(0x2, b"b" * 300_000)
        for at in range(0, len(big), 7_000):  # the rest of the frame keeps coming after the 1009
            sock.sendall(big[at:at + 7_000])
        while b"\x88" not in received.split(b"\r\n\r\n", 1)[1]:
            received += sock.recv(65536)
        assert close_code_in(received) == 1009
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # the server waits for our close frame (it sent EOF at once before)
            received += sock.recv(65536)
        sock.settimeout(10)
        sock.sendall(frame(0x8, struct.pack("!H", 1009)))  # the client's answer ends the handshake
        while chunk := sock.recv(65536):  # then the server closes: EOF, not a reset
            received += chunk
    server.wait_for(lambda: "disconnect-1009" in server.records(), what="the app told of the 1009")


def test_denial_response_refusal_and_app_errors(serve) -> None:
    async def status_of(server, path: str = "/ws") -> tuple[int, bytes]:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(ws_url(server, path)):
                pass
        return info.value.response.status_code, bytes(info.value.response.body or b"")

    deny = serve("ws_apps:deny")
    assert run(status_of(deny)) == (401, b"no entry")
    assert run(status_of(serve("ws_apps:deny_loosely"))) == (401, b"no entry")
    text = serve("ws_apps:deny_with_text")  # a str body after the head: the connection closes, logged
    responses, closed = exchange(text.port, HANDSHAKE, half_close=False)
    assert closed and responses[0].status == 401 and not responses[0].complete
    text.stop()
    assert "'websocket.http.response.body' body must be bytes, got str" in text.stderr
    refuse = serve("ws_apps:refuse")
    assert run(status_of(refuse))[0] == 403
    crash = serve("ws_apps:crash")
    assert run(status_of(crash, "/before"))[0] == 500
    assert "RuntimeError: crashed before accepting" in crash.stderr

    async def crash_after() -> int | None:
        async with connect(ws_url(crash)) as ws:
            await ws.send("boom")
            with pytest.raises(websockets.ConnectionClosedError):
                await ws.recv()
            return ws.close_code

    assert run(crash_after()) == 1011
    crash.wait_for(lambda: "crashed after accepting" in crash.stderr, what="the traceback")


@pytest.mark.parametrize(("path", "error"), [
    ("/close-code-str", "'websocket.close' code must be an int, got '4000'"),
    ("/close-code-reserved", "'websocket.close' code 1006 with reason '' cannot be sent: invalid status code"),
    ("/close-reason-bytes", "'websocket.close' reason must be a str, got bytes"),
    ("/close-reason-long", "'websocket.close' code 4000 with reason '" + "é" * 62 + "' cannot be sent: control frame"),
    ("/send-bytes-int", "'websocket.send' bytes must be bytes, got int"),
    ("/send-text-bytes", "'websocket.send' text must be str, got bytes"),
    ("/send-nothing", "'websocket.send' needs 'bytes' or 'text'"),
])
def test_a_message_that_breaks_the_spec_closes_1011_and_says_why(serve, path: str, error: str) -> None:
    """The same one line on both builds (a value the compiled build's types would refuse with a bare
    TypeError), and nothing of the bad message sent: no five NUL bytes for `bytes: 5`."""
    server = serve("ws_apps:misuse")

    async def talk() -> tuple[int | None, list[str | bytes]]:
        received = []
        async with connect(ws_url(server, path)) as ws:
            with pytest.raises(websockets.ConnectionClosedError):
                while True:
                    received.append(await ws.recv())
            return ws.close_code, received

    assert run(talk()) == (1011, [])
    server.wait_for(lambda: f"ASGI app broke the protocol (WebSocket {path}): {error}" in server.stderr,
                    what="the app's error")


def raw_exchange(port: int, request: bytes, then: bytes = b"", timeout: float = 10, head_only: bool = False) -> bytes:
    """Send `request`, read the response head, send `then`, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
        if head_only:
            return received
        if then:
            sock.sendall(then)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return received


def frame(opcode: int, payload: bytes, mask: bool = True, fin: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    key = b"\x01\x02\x03\x04"
    length, masked = len(payload), 0x80 if mask else 0
    if length < 126:
        head += bytes([masked | length])
    elif length < 1 << 16:
        head += bytes([masked | 126]) + struct.pack("!H", length)
    else:
        head += bytes([masked | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole frames at the start of `data` (opcode, payload), and what is left; each is checked
    to be final and unmasked, as a server's frames must be."""
    frames, at = [], 0
    while len(data) - at >= 2:
        first, second = data[at], data[at + 1]
        assert first & 0xF0 == 0x80 and second & 0x80 == 0, data[at:at + 16]
        length, head = second & 0x7F, 2
        if length == 126:
            length, head = struct.unpack("!H", data[at + 2:at + 4])[0], 4
        elif length == 127:
            length, head = struct.unpack("!Q", data[at + 2:at + 10])[0], 10
        if len(data) - at < head + length:
            break
        frames.append((first & 0x0F, data[at + head:at + head + length]))
        at += head + length
    return frames, data[at:]


def close_code_in(data: bytes) -> int:
    """The code of the server's close frame in what followed the 101."""
    body = data.split(b"\r\n\r\n", 1)[1]
    index = body.find(b"\x88")
    assert index >= 0, data
    return int(struct.unpack("!H", body[index + 2:index + 4])[0])


@pytest.mark.parametrize(("bad", "code"), [
    (frame(0x1, b"PAYLOAD unmasked", mask=False), 1002),
    (frame(0x1, b"PAYLOAD \xff\xfe"), 1007),  # invalid UTF-8
    (frame(0x1, b"PAYLOAD \xed\xa0\x80"), 1007),  # a UTF-16 surrogate, invalid in UTF-8
    (frame(0x3, b"PAYLOAD"), 1002),  # a reserved opcode
    (frame(0x8, struct.pack("!H", 1005) + b"PAYLOAD"), 1002),  # a close code that must not be sent
    (frame(0x1, b"PAYLOAD", fin=False) + frame(0x2, b"PAYLOAD"), 1002),  # a new message amid a fragmented one
    (frame(0x1, b"PAYLOAD", rsv=4), 1002),  # compressed, but no extension was negotiated
    (frame(0x2, b"PAYLOAD" * 200), 1009),  # over --ws-max-size
])
def test_bad_frames_close_with_the_right_code_and_never_reach_the_app(serve, bad: bytes, code: int) -> None:
    server = serve("ws_apps:echo", "--no-ws-per-message-deflate", "--ws-max-size", "1000")
    received = raw_exchange(server.port, HANDSHAKE, then=bad)
    assert received.startswith(b"HTTP/1.1 101")
    assert close_code_in(received) == code
    assert b"PAYLOAD" not in received  # the echo app never saw it as data...
    server.wait_for(lambda: server.records() == [f"disconnect-{code}"], what="...only as a disconnect")


def test_a_good_message_then_a_bad_one_in_one_write(serve) -> None:
    server = serve("ws_apps:hold", "--no-ws-per-message-deflate")
    received = raw_exchange(server.port, HANDSHAKE, then=frame(0x1, b"fine") + frame(0x1, b"PAYLOAD \xff"))
    assert close_code_in(received) == 1007
    server.wait_for(lambda: server.records() == ["received-fine", "disconnect-1007"], what="one message, then 1007")


def test_messages_of_every_length_pipelined_amid_control_frames_and_fragments(serve) -> None:
    """Plain messages take a direct path and the rest the protocol library's: interleaved in one
    write, every message comes back whole and in order, and the ping gets its pong."""
    server = serve("ws_apps:echo")
    sizes = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]
    messages = [(0x1 if i % 2 else 0x2, bytes((i + n) % 128 for n in range(size))) for i, size in enumerate(sizes)]
    stream = b"".join(frame(opcode, payload) for opcode, payload in messages[:5])
    stream += frame(0x9, b"ping!") + frame(0x1, b"frag", fin=False) + frame(0x9, b"") + frame(0x0, b"mented")
    stream += b"".join(frame(opcode, payload) for opcode, payload in messages[5:])
    expected = [*messages[:5], (0x1, b"fragmented"), *messages[5:]]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(HANDSHAKE)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 101")
        pending = received.split(b"\r\n\r\n", 1)[1]
        sock.sendall(stream[:7])  # a frame cut in two...
        sock.sendall(stream[7:])  # ...then all the rest at once
        data: list[tuple[int, bytes]] = []
        control: list[tuple[int, bytes]] = []
        while len(data) < len(expected):
            chunk = sock.recv(1 << 20)
            assert chunk, (len(data), control)
            frames, pending = server_frames(pending + chunk)
            data += [f for f in frames if f[0] < 0x8]
            control += [f for f in frames if f[0] >= 0x8]
        assert data == expected
        assert control == [(0xA, b"ping!"), (0xA, b"")]
        sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        rest = pending
        while chunk := sock.recv(65536):
            rest += chunk
    assert server_frames(rest)[0] == [(0x8, struct.pack("!H", 1000))]
    server.wait_for(lambda: server.records() == ["disconnect-1000"], what="the app told of the close")


@pytest.mark.parametrize(("handshake", "expect"), [
    (HANDSHAKE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), b"HTTP/1.1 400"),
    (HANDSHAKE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), b"HTTP/1.1 400"),
    (HANDSHAKE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short"), b"HTTP/1.1 400"),
])
def test_invalid_handshakes_are_refused_without_calling_the_app(serve, handshake: bytes, expect: bytes) -> None:
    server = serve("ws_apps:hold")
    assert raw_exchange(server.port, handshake).startswith(expect)
    assert server.records() == []


def test_ping_timeout_closes_a_silent_peer(serve) -> None:
    server = serve("ws_apps:hold", "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(HANDSHAKE)
        received = b""
        while True:  # read pings and never answer them, until the server gives up
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"\x89\x00")  # a ping
    assert close_code_in(received) == 1011
    server.wait_for(lambda: "disconnect-1011" in server.records(), what="the app told")

    answered = serve("ws_apps:echo", "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3")

    async def patient() -> str:  # a client that answers pings stays connected
        async with connect(ws_url(answered)) as ws:
            await asyncio.sleep(1.5)
            await ws.send("still here")
            return await ws.recv()

    assert run(patient()) == "still here"


def test_a_slow_reader_holds_the_sender(serve) -> None:
    server = serve("ws_apps:flood", "--no-ws-per-message-deflate")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(HANDSHAKE)
        sock.recv(200)
        server.wait_for(lambda: len(server.records()) >= 1, what="the first message sent")
        __import__("time").sleep(1.0)  # give the app every chance to run ahead
        sent = len(server.records())
        assert sent < 20, sent  # 200 MiB would be queued without backpressure; socket buffers hold a few
        assert server.rss_peak_kib() < 200 * 1024


def test_a_peer_that_pings_and_never_reads_is_no_longer_read(serve) -> None:
    """Every ping is answered with a pong: a peer that never reads them must not grow the server's
    memory with pongs; once our writes back up, we stop reading its pings."""
    server = serve("ws_apps:hold")
    pings = frame(0x9, b"p" * 125) * 300_000  # 39 MB (51 MB of pongs kept before): past the kernel's buffers
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(HANDSHAKE)
        assert sock.recv(200).startswith(b"HTTP/1.1 101")
        idle = server.rss_peak_kib()
        sock.setblocking(False)
        sent = 0
        total = len(pings)
        while sent < total:
            _, writable, _ = select.select([], [sock], [], 2.0)
            if not writable:
                break  # the server stopped reading
            sent += sock.send(pings[sent:sent + 65536])
        assert sent < total, "the server read every ping while none of its pongs were read"
        assert server.rss_peak_kib() - idle < 16 * 1024


def test_shutdown_closes_open_websockets_with_1001(serve) -> None:
    server = serve("ws_apps:hold")

    async def talk() -> int | None:
        async with connect(ws_url(server)) as ws:
            server.proc.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert run(talk()) == 1001
    assert server.wait() == 0
    assert server.records() == ["disconnect-1001"]


def test_wsgi_apps_get_upgrade_requests_as_plain_http(serve) -> None:
    server = serve("wsgi_apps:app")
    received = raw_exchange(server.port, HANDSHAKE.replace(b"/ws", b"/"), head_only=True)
    assert received.startswith(b"HTTP/1.1 200")
    none = serve("ws_apps:echo", "--ws", "none")
    assert raw_exchange(none.port, HANDSHAKE, head_only=True).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("app", ["starlette_app:app", "fastapi_app:app"])
def test_framework_websockets(serve, app: str) -> None:
    server = serve(app)

    async def talk() -> None:
        async with connect(ws_url(server, "/ws")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo: hi"
            await ws.send(b"\x01")
            assert await ws.recv() == b"\x01"

    run(talk())


def test_sec_websocket_accept_is_right(serve) -> None:
    import hashlib

    server = serve("ws_apps:hold")
    received = raw_exchange(server.port, HANDSHAKE, head_only=True)
    expected = base64.b64encode(hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                .digest())
    assert b"Sec-WebSocket-Accept: " + expected in received


def test_a_real_browser(serve, tmp_path) -> None:
    """Headless Chromium loads a page from tricorn whose script exchanges messages over a WebSocket."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        assert not os.environ.get("CI"), "CI must have Chromium: .ci/run installs it"
        pytest.skip("Chromium is not installed (apt-get install chromium); CI runs this test")
    server = serve("ws_apps:page")
    # --dump-dom fires when the virtual-time budget is spent, and virtual time does not wait for
    # WebSocket traffic: on a busy machine the DOM can be dumped before the exchange ends. A page
    # still "waiting" is loaded again (at most 3 times); any other text fails at once.
    for attempt in range(3):
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / f'profile{attempt}'}", "--virtual-time-budget=10000", "--dump-dom",
             server.url + "/"],
            capture_output=True, text=True, timeout=90,
        )
        if '<p id="result">waiting</p>' not in result.stdout:
            break
    assert ('<p id="result">OK chat | hello from the browser | 1,2,3 | permessage-deflate'
            in result.stdout), result.stdout[-2000:] + result.stderr[-2000:]
