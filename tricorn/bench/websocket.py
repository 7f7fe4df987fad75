"""WebSocket load, for ws:// and wss:// targets: each connection upgrades once (RFC 6455), then each
request is one message, a masked binary frame of --message-size bytes, answered by the server's
echo of it: a round trip. The frames are encoded ahead of time, each with its own mask.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from typing import TYPE_CHECKING

from .engine import Connection
from .scenario import Request, Scenario, Target, Task

if TYPE_CHECKING:
    from .engine import Engine, Slot

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FRAMES = 256  # message variants encoded ahead of time, each with its own mask and payload
ECHOED = 101  # the status an echo counts under: the connection's, Switching Protocols
CLOSE, PING, PONG = 8, 9, 10
NORMAL_CLOSURE = struct.pack("!H", 1000)


def scenario(size: int) -> Scenario:
    """Messages of `size` random bytes, as a one-request scenario."""
    variants = [frame(2, os.urandom(size), os.urandom(4)) for _ in range(FRAMES)]
    return Scenario([Task("message", 1, [Request("message", "WS", variants)])])


def frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A final client frame: masked, as a client must send."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return head + mask + masked


class WebSocketConnection(Connection):
    """A Connection that upgrades first, then frames messages out and echoes back."""

    def __init__(self, engine: Engine, slot: Slot) -> None:
        super().__init__(engine, slot)
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        target: Target = engine.target
        self.handshake = (
            f"GET {target.path} HTTP/1.1\r\nHost: {target.authority}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            "User-Agent: tricorn-bench\r\n\r\n").encode("latin-1")
        self.buffer = bytearray()
        self.upgraded = False
        self.waiting = b""  # the first message, sent once the upgrade is answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(self.handshake)

    def send(self, request: Request, started: int, counted: bool, data: bytes | None = None) -> None:
        self.request, self.started, self.counted = request, started, counted
        self.busy, self.received = True, 0
        if self.upgraded:
            assert self.transport is not None
            self.transport.write(request.next())
        else:
            self.waiting = request.next()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.buffer += data
        if not self.upgraded and not self._upgrade():
            return
        self._frames()

    def _upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[:end + 4]
        fields = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        accept = {k.strip().lower(): v.strip() for k, v in fields.items()}.get("sec-websocket-accept", "")
        if head[0].split(" ")[1:2] != ["101"] or accept.encode() != self.accept:
            self._fail(f"handshake {head[0].split(' ')[1] if ' ' in head[0] else '?'}")
            return False
        self.upgraded = True
        if self.waiting:
            assert self.transport is not None
            self.transport.write(self.waiting)
            self.waiting = b""
        return True

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start:start + length])
            final = buffer[0] & 0x80
            del buffer[:start + length]
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.engine.closed_with(code)
                self._fail("closed")
                return
            if opcode == PING:
                assert self.transport is not None
                self.transport.write(frame(PONG, payload, os.urandom(4)))
            elif opcode != PONG and final and self.busy:
                self._complete(ECHOED)

    def close(self) -> None:
        """An upgraded connection closes as a client that leaves does: a close frame (1000) first,
        then the TCP connection once it is written; the server sees a normal closure, not 1006."""
        transport = self.transport
        if self.upgraded and not self.dead and transport is not None and not transport.is_closing():
            self.dead = True
            transport.write(frame(CLOSE, NORMAL_CLOSURE, os.urandom(4)))
            transport.close()
            return
        super().close()

    def _lost(self, exc: Exception | None) -> None:
        self.dead = True
        if self.busy:
            self._fail("reset" if isinstance(exc, ConnectionResetError) else "closed")
        if self.transport is not None:
            self.transport.close()
