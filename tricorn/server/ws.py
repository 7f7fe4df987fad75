"""ASGI WebSocket over the `websockets` package's sans-I/O protocol.

An upgrade request is checked (version, key) before the app is called: a bad one gets the 400 the
protocol library writes, and the app never runs. Then the app gets `websocket.connect` and answers
with `websocket.accept` (subprotocol, extra headers), `websocket.close` (a 403 before accepting) or
a denial response (`websocket.http.response.start` / `.body`). Frames are parsed, unmasked, checked
(UTF-8, opcodes, close codes, --ws-max-size across fragments) and answered (pings, the closing
handshake) by the protocol object, except the plain ones that make up most traffic (whole,
uncompressed text and binary messages up to 64 KiB), which this module reads and writes directly.
It reassembles fragmented messages, queues them for `receive()` (pausing the socket when the app
falls behind), waits for the socket to drain in `send()`, pings idle peers, and closes with 1001
on shutdown and 1011 when the app fails.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.exceptions import ProtocolError as FrameError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request as HandshakeRequest
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # a build without the C extension
    from websockets.utils import apply_mask

from ..errors import ClientDisconnected
from .asgi import ASGI_VERSION, ASGIProtocolError, as_bytes, decode_path

if TYPE_CHECKING:
    from ..config import Config
    from .connection import HttpConnection
    from .h1 import Request

logger = logging.getLogger("tricorn.error")

FAST_MAX = 0xFFFF  # the largest payload the direct path takes (a 2-byte length), both ways
QUEUE_HIGH = 16  # messages waiting for the app's receive(): beyond, stop reading the socket
CLOSE_TIMEOUT = 10.0  # seconds to wait for the peer's close frame after ours


class WebSocketAdapter:
    """What every WebSocket of this worker shares: the app, the settings, lifespan state."""

    def __init__(self, app: Any, config: Config, state: dict[str, Any]) -> None:
        self.app = app
        self.root_path = config.root_path
        self.max_size = config.ws_max_size or None
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.deflate = config.ws_per_message_deflate
        self.state = state

    def start(self, conn: HttpConnection, request: Request) -> WebSocketSession:
        session = WebSocketSession(self, conn, request)
        conn.upgrade(session)
        session.begin()
        return session


class WebSocketSession:
    """One upgraded connection: the handshake, the app's task, and the frames both ways."""

    def __init__(self, adapter: WebSocketAdapter, conn: HttpConnection, request: Request) -> None:
        self.adapter = adapter
        self.conn = conn
        self.request = request
        self.chosen_subprotocol: str | None = None
        self.protocol = ServerProtocol(
            extensions=[ServerPerMessageDeflateFactory()] if adapter.deflate else None,
            select_subprotocol=lambda _, offered: Subprotocol(self.chosen_subprotocol) if self.chosen_subprotocol
            else None,
            max_size=adapter.max_size,
        )
        # The protocol object reads the handshake itself before it reads frames: replay the head
        # that h1 already parsed (and validated), and take its reading of it.
        head = b"".join(b"%s: %s\r\n" % pair for pair in request.headers)
        self.protocol.receive_data(b"GET %s HTTP/1.1\r\n%s\r\n" % (request.target, head))
        parsed = [event for event in self.protocol.events_received() if isinstance(event, HandshakeRequest)]
        self.handshake = parsed[0] if parsed else HandshakeRequest(request.target.decode("latin-1"), Headers())
        self.messages: collections.deque[dict[str, Any]] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.fragments: list[bytes] = []
        self.fragment_text = False
        self.accepted = False
        self.denied = False  # a denial response is under way
        self.closed = False  # no more messages in either direction
        self.reading_paused = False
        self.task: asyncio.Task[None] | None = None
        self.ping_handle: asyncio.TimerHandle | None = None
        self.pong_deadline = 0.0
        self.close_handle: asyncio.TimerHandle | None = None
        self.early = b""  # bytes that came before our 101: frames from an impatient client
        self.skip = 0  # bytes still to come of a frame refused for its size (1009), dropped unread

    # the cycle protocol HttpConnection speaks -----------------------------------------------

    def feed_body(self, data: bytes) -> None:  # an upgrade request has no body (h1 refuses one)
        pass

    def end_body(self) -> None:
        pass

    def disconnect(self) -> None:
        self._disconnected(1006)

    def client_eof(self) -> None:
        self._disconnected(1006)

    def writable_changed(self) -> None:
        pass

    # the handshake ---------------------------------------------------------------------------

    def begin(self) -> None:
        response = self.protocol.accept(self.handshake)
        if response.status_code != 101:  # a bad handshake: the library's 400, and no app
            self._end_http()
            self.conn.send_start(response.status_code, [(b"content-type", b"text/plain; charset=utf-8")],
                                 bytes(response.body), False)
            return
        request = self.request
        root = self.adapter.root_path
        raw_path = request.path
        offered = self.handshake.headers.get_all("Sec-WebSocket-Protocol")
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "scheme": "wss" if request.scheme == "https" else "ws",
            "server": self.conn.sockname,
            "client": request.client,
            "root_path": root,
            "path": root + decode_path(raw_path) if root else decode_path(raw_path),
            "raw_path": root.encode() + raw_path if root else raw_path,
            "query_string": request.query,
            "headers": request.headers,
            "subprotocols": [p.strip() for value in offered for p in value.split(",") if p.strip()],
            "state": self.adapter.state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        if self.conn.tls is not None:
            scope["extensions"]["tls"] = self.conn.tls
        self.messages.append({"type": "websocket.connect"})
        self.task = self.conn.loop.create_task(self._run(scope))

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.adapter.app(scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, ASGIProtocolError):
                logger.error("ASGI app broke the protocol (WebSocket %s): %s", scope["path"], exc, exc_info=exc)
            elif not (isinstance(exc, ClientDisconnected) and self.closed):
                logger.error("Exception in ASGI application (WebSocket %s)", scope["path"], exc_info=exc)
            if not self.accepted and not self.denied:
                self._deny_plain(500, b"Internal Server Error")
            elif self.accepted:
                self._close(1011, "")
            elif not self.closed:  # a denial response begun and never finished: the client must not wait
                self.conn.abort()
            return
        if not self.accepted and not self.denied:
            self._deny_plain(403, b"Forbidden")  # the app returned without accepting
        elif self.accepted and not self.closed:
            self._close(1000, "")
        elif not self.closed:
            self.conn.abort()

    # the app's side ---------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while not self.messages:
            if self.closed:
                code, reason = self._close_status()
                return {"type": "websocket.disconnect", "code": code, "reason": reason}
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        message = self.messages.popleft()
        if self.reading_paused and len(self.messages) < QUEUE_HIGH // 2:
            self.reading_paused = False
            self.conn.body_paused(False)
        return message

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept" and not self.accepted and not self.denied and not self.closed:
            self._accept(message)
        elif kind == "websocket.send" and self.accepted:
            if self.closed:
                raise ClientDisconnected("the WebSocket is closed")
            payload, opcode = _payload(message)
            if len(payload) <= FAST_MAX and not self.protocol.extensions and self.protocol.state is State.OPEN:
                # A plain unmasked frame the library would write the same, without its per-frame cost.
                size = len(payload)
                head = struct.pack("!BB", opcode, size) if size < 126 else struct.pack("!BBH", opcode, 126, size)
                if not self.conn.transport.is_closing():
                    self.conn.transport.write(head + payload)
            else:
                (self.protocol.send_text if opcode == 0x81 else self.protocol.send_binary)(payload)
                self._flush()
            await self.conn.drain()  # a slow reader holds the sender here, not in our memory
        elif kind == "websocket.close":
            if self.accepted:
                code, reason = _close_status(message)
                if not self.closed:
                    self._close(code, reason)
            elif not self.denied:
                self._deny_plain(403, b"Forbidden")
        elif kind == "websocket.http.response.start" and not self.accepted and not self.denied:
            self.denied = True
            if self.conn.response is not None:
                self.conn.response.keep_alive = False
            self.conn.send_start(message["status"], message.get("headers", []), b"", True)
        elif kind == "websocket.http.response.body" and self.denied and not self.closed:
            body = message.get("body", b"")
            if body.__class__ is not bytes:
                body = as_bytes(body, "'websocket.http.response.body' body")
            more = bool(message.get("more_body", False))  # any truthy value, as for http.response.body
            if not more:
                self._end_http()
            self.conn.send_body(body, more)
            if more:
                await self.conn.drain()
        elif self.closed and kind in ("websocket.send", "websocket.accept"):
            raise ClientDisconnected("the WebSocket is closed")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in this WebSocket state")

    def _accept(self, message: dict[str, Any]) -> None:
        self.chosen_subprotocol = message.get("subprotocol")
        response = self.protocol.accept(self.handshake)
        for name, value in message.get("headers", []):
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        self.protocol.send_response(response)
        self.accepted = response.status_code == 101
        self._flush()
        if not self.accepted:  # e.g. a subprotocol the client did not offer: the library answered
            self._end_http()
            self.conn.end_cycle()
            return
        if self.conn.response is not None:
            self.conn.response.status = 101  # for the access log
        self.conn.deadline = 0.0
        if self.adapter.ping_interval:
            self.ping_handle = self.conn.loop.call_later(self.adapter.ping_interval, self._ping)
        if self.early:
            early, self.early = self.early, b""
            self.data_received(early)

    def _deny_plain(self, status: int, body: bytes) -> None:
        self.denied = True
        self._end_http()
        self.conn.send_start(status, [(b"content-type", b"text/plain; charset=utf-8")], body, False)

    def _end_http(self) -> None:
        """A handshake answered with plain HTTP ends the connection: before the last piece of that
        response goes out (which ends the cycle), so that it says `connection: close`."""
        self.closed = True
        self.conn.refuse_upgrade()

    # frames from the peer ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self.accepted:
            if not self.closed and len(self.early) < (self.adapter.max_size or 1 << 20):
                self.early += data  # kept for after the handshake (RFC 6455 says to wait for it)
            return
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
            if not data:
                return
        elif self._direct_in():
            data = self._receive_direct(data)
            if not data:
                return
        self.protocol.receive_data(data)
        self._process()

    def _direct_in(self) -> bool:
        """Whether the next frame may bypass the protocol library: it holds no partial frame, no
        fragmented message is under way, and the connection is open."""
        return (not self.fragments and not self.protocol.reader.buffer and not self.closed
                and self.protocol.state is State.OPEN)

    def _receive_direct(self, data: bytes) -> bytes:
        """Queue the plain messages at the head of `data` without the protocol library (which
        costs more per frame than the rest of a round trip through tricorn): whole, masked,
        unfragmented text or binary frames without RSV bits (so not compressed), up to FAST_MAX
        and --ws-max-size, text that is valid UTF-8. What is left, from the first other frame on
        (a control frame, a fragment, anything the library must check or refuse), goes to it."""
        at, end = 0, len(data)
        max_size = self.adapter.max_size
        limit = min(FAST_MAX, max_size or FAST_MAX)
        while end - at >= 6:
            first, second = data[at], data[at + 1]
            if (first != 0x81 and first != 0x82) or second < 0x80:  # FIN + text/binary; masked
                break
            length, head = second & 0x7F, 6
            if length == 126:
                length, head = int.from_bytes(data[at + 2:at + 4], "big"), 8
            elif length == 127:
                break
            if length > limit or end - at < head + length:
                break
            payload = apply_mask(data[at + head:at + head + length], data[at + head - 4:at + head])
            if first == 0x81:
                try:
                    self._queue({"type": "websocket.receive", "text": payload.decode("utf-8")})
                except UnicodeDecodeError:
                    break
            else:
                self._queue({"type": "websocket.receive", "bytes": payload})
            at += head + length
        if max_size is not None and end - at >= 2 and data[at] & 0x0F in (0x1, 0x2):
            return self._refuse_oversized(data, at, max_size)
        return data[at:] if at else data

    def _refuse_oversized(self, data: bytes, at: int, max_size: int) -> bytes:
        """A text or binary frame whose head declares more than --ws-max-size: close with 1009 at
        once, and drop the frame's payload here as it arrives instead of letting the protocol
        library fail the connection (which ends TCP while the client may still be sending the
        frame). What follows the frame goes to the library, which is then in its closing
        handshake: the client's close frame completes it, and the connection ends cleanly.
        Returns the bytes to give the library now: from `at` on when the frame is within the limit,
        unmasked (the library answers 1002) or its head is not whole yet, else what follows it."""
        second = data[at + 1]
        length, head = second & 0x7F, 6
        if length == 126:
            length, head = int.from_bytes(data[at + 2:at + 4], "big"), 8
        elif length == 127:
            length, head = int.from_bytes(data[at + 2:at + 10], "big"), 14
        if not second & 0x80 or len(data) - at < head or length <= max_size:
            return data[at:]
        self.protocol.send_close(1009, f"frame with {length} bytes exceeds limit of {max_size} bytes")
        self._flush()
        self._disconnected(1009)
        frame_end = at + head + length
        self.skip = max(0, frame_end - len(data))
        return data[frame_end:]

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._process()

    def _process(self) -> None:
        for frame in self.protocol.events_received():
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self.fragment_text = opcode is Opcode.TEXT
                self.fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT:
                self.fragments.append(bytes(frame.data))
            elif opcode is Opcode.PONG:
                self.pong_deadline = 0.0
                continue
            else:  # PING is answered and CLOSE echoed by the protocol itself
                continue
            if frame.fin:
                data = b"".join(self.fragments)
                self.fragments = []
                if not self.fragment_text:
                    self._queue({"type": "websocket.receive", "bytes": data})
                    continue
                try:
                    self._queue({"type": "websocket.receive", "text": data.decode("utf-8")})
                except UnicodeDecodeError:
                    self.protocol.fail(1007, "invalid UTF-8 in a text message")
                    break
        self._flush()
        if self.protocol.state is State.CLOSING or self.protocol.state is State.CLOSED:
            self._disconnected(self._close_status()[0])

    def _queue(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if len(self.messages) >= QUEUE_HIGH and not self.reading_paused:
            self.reading_paused = True
            self.conn.body_paused(True)

    # frames to the peer -------------------------------------------------------------------

    def _flush(self) -> None:
        transport = self.conn.transport
        for data in self.protocol.data_to_send():
            if transport.is_closing():
                return
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()  # the protocol's signal that the closing handshake is over
            else:
                transport.close()  # TLS has no half-close
        if self.protocol.close_expected() and self.close_handle is None:
            # We sent or echoed a close: the peer closes the TCP connection; make sure it ends.
            self.close_handle = self.conn.loop.call_later(CLOSE_TIMEOUT, transport.close)

    def _close(self, code: int, reason: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        self._disconnected(code, notify=False)

    def _ping(self) -> None:
        self.ping_handle = None
        if self.closed or self.protocol.state is not State.OPEN:
            return
        loop = self.conn.loop
        if self.pong_deadline and loop.time() >= self.pong_deadline:
            logger.info("WebSocket peer %s did not answer a ping within %gs: closing", self.request.client,
                        self.adapter.ping_timeout)
            self.protocol.fail(1011, "keepalive ping timeout")
            self._flush()
            self.conn.transport.close()
            self._disconnected(1011)
            return
        if not self.pong_deadline:
            self.protocol.send_ping(b"")
            self._flush()
            self.pong_deadline = loop.time() + (self.adapter.ping_timeout or float("inf"))
        wait = min(self.adapter.ping_interval, max(0.0, self.pong_deadline - loop.time()))
        self.ping_handle = loop.call_later(max(0.05, wait), self._ping)

    # endings -------------------------------------------------------------------------------

    def _close_status(self) -> tuple[int, str]:
        """The close the app hears of: the peer's, else ours (a protocol error we closed for)."""
        close = self.protocol.close_rcvd or self.protocol.close_sent
        return (close.code, close.reason) if close is not None else (1006, "")

    def _disconnected(self, code: int, notify: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ping_handle is not None:
            self.ping_handle.cancel()
        if notify:
            self._queue({"type": "websocket.disconnect", "code": code, "reason": self._close_status()[1]})
        self._when_app_done(self._finish)

    def _when_app_done(self, callback: Any) -> None:
        if self.task is None or self.task.done():
            callback()
        else:
            self.task.add_done_callback(lambda _: callback())

    def _finish(self) -> None:
        """The app is done. The peer ends the TCP connection after the closing handshake (or our
        EOF); a timer makes sure it ends anyway."""
        conn = self.conn
        if self.close_handle is None and not conn.transport.is_closing():
            self.close_handle = conn.loop.call_later(CLOSE_TIMEOUT, conn.transport.close)
        if conn.cycle is self:
            conn.end_cycle(linger=True)

    def shutdown(self) -> None:
        """The server is stopping: close with 1001 (going away); the peer answers with its close."""
        if self.accepted and not self.closed:
            self._close(1001, "server shutting down")
            self._queue({"type": "websocket.disconnect", "code": 1001, "reason": ""})


def _payload(message: dict[str, Any]) -> tuple[bytes, int]:
    """A `websocket.send` message's payload and its frame's opcode, or the error that says why not."""
    data = message.get("bytes")
    if data is not None:
        return (data if data.__class__ is bytes else as_bytes(data, "'websocket.send' bytes")), 0x82
    text = message.get("text")
    if isinstance(text, str):
        return text.encode("utf-8"), 0x81
    if text is None:
        raise ASGIProtocolError("'websocket.send' needs 'bytes' or 'text'")
    raise ASGIProtocolError(f"'websocket.send' text must be str, got {type(text).__name__}")


def _close_status(message: dict[str, Any]) -> tuple[int, str]:
    """A `websocket.close` message's code (1000 if none) and reason, or the error that says why they
    cannot be sent: the library's own rules (the codes an endpoint may send, 125 bytes a frame)."""
    code = message.get("code")
    code = 1000 if code is None else code
    reason = message.get("reason") or ""
    if code.__class__ is not int:
        raise ASGIProtocolError(f"'websocket.close' code must be an int, got {code!r}")
    if not isinstance(reason, str):
        raise ASGIProtocolError(f"'websocket.close' reason must be a str, got {type(reason).__name__}")
    try:
        Frame(Opcode.CLOSE, Close(code, reason).serialize()).check()
    except FrameError as exc:
        raise ASGIProtocolError(f"'websocket.close' code {code} with reason {reason!r} cannot be sent: {exc}") from None
    return code, reason
