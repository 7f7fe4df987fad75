#!/usr/bin/env python3
"""Issue 4's benchmarks, tricorn beside uvicorn, interleaved, server on CPU 0, load on CPU 1:

  ws-echo  64 WebSocket clients (raw pre-masked frames on uvloop, one process: cheap enough that the
           server is the limit) each sending a 32-byte text message and awaiting its echo (round
           trips/s), then each keeping 16 in flight (messages/s); uvicorn runs
           `--ws websockets-sansio`, the same protocol library as tricorn
  ws-libs  the choice of library: uvicorn on websockets-sansio vs on wsproto (same client), and each
           library's server side alone, in process (parse a frame, emit its echo)
  https    hello world over HTTPS with one self-signed certificate (trustme), wrk -t1 -c64

Run by hand (never in CI):  python benchmarks/ws_tls.py --rounds 3 --duration 5
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import free_port, running

ECHO_APP = "benchmarks.apps:ws_echo"


def server(kind: str, app: str, port: int, *extra: str, ws: str = "websockets-sansio") -> list[str]:
    if kind == "tricorn":
        argv = [sys.executable, "-m", "tricorn", app, "-w", "1", "--port", str(port), "--no-access-log", *extra]
    else:
        argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--no-access-log", "--loop", "uvloop",
                "--http", "httptools", "--ws", ws,
                *[a.replace("--certfile", "--ssl-certfile").replace("--keyfile", "--ssl-keyfile") for a in extra]]
    return ["taskset", "-c", "0", *argv]


CLIENT = r"""
# A WebSocket load generator cheap enough not to be the bottleneck: raw frames, pre-encoded and
# masked once (a fixed mask: the server must unmask, it cannot tell), server frames only counted.
import asyncio, base64, os, sys, time, uvloop

PAYLOAD = b"x" * 32
MASK = b"\x01\x02\x03\x04"
FRAME = bytes([0x81, 0x80 | len(PAYLOAD)]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))
REPLY = 2 + len(PAYLOAD)  # an unmasked server text frame of the same payload

class Client(asyncio.Protocol):
    def __init__(self, window, counter, ready):
        self.window, self.counter, self.ready = window, counter, ready
        self.buffer, self.upgraded = b"", False
    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    def data_received(self, data):
        if not self.upgraded:
            self.buffer += data
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            assert head.startswith(b"HTTP/1.1 101"), head
            self.upgraded, self.buffer = True, b""
            self.ready.set_result(self) if not self.ready.done() else None
            data = rest
        total = len(self.buffer) + len(data)
        frames, left = divmod(total, REPLY)
        self.buffer = b"" if not left else (self.buffer + data)[-left:]
        if frames:
            self.counter[0] += frames
            if self.counter[1]:
                self.transport.write(FRAME * frames)
    def start(self):
        self.transport.write(FRAME * self.window)

async def main(port, clients, window, duration):
    loop = asyncio.get_running_loop()
    counter = [0, True]
    conns = []
    for _ in range(clients):
        ready = loop.create_future()
        await loop.create_connection(lambda: Client(window, counter, ready), "127.0.0.1", port)
        conns.append(await ready)
    for c in conns:
        c.start()
    await asyncio.sleep(1)  # warm up
    first, began = counter[0], time.perf_counter()
    await asyncio.sleep(duration)
    done, elapsed = counter[0] - first, time.perf_counter() - began
    counter[1] = False
    print(done / elapsed)
    for c in conns:
        c.transport.close()

uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
"""


def ws_round(kind: str, duration: int, window: int = 1, ws: str = "websockets-sansio") -> float:
    """Echoed messages per second, 64 clients each keeping `window` messages in flight (1: round trips)."""
    port = free_port()
    with running(server(kind, ECHO_APP, port, ws=ws)):
        time.sleep(1.5)
        out = subprocess.run(["taskset", "-c", "1", sys.executable, "-c", CLIENT, str(port), "64", str(window),
                              str(duration)], capture_output=True, text=True, check=True).stdout
        return float(out.strip())


def https_round(kind: str, duration: int, cert: str, key: str) -> float:
    port = free_port()
    with running(server(kind, "benchmarks.apps:asgi_hello", port, "--certfile", cert, "--keyfile", key)):
        time.sleep(1.5)
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration}s",
                              f"https://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]


def protocol_only(messages: int = 200_000) -> None:
    """Each library's server side alone, in this process: parse a masked 32-byte text frame, emit
    the echo frame, `messages` times. What the server pays per message, without the server."""
    import wsproto
    import wsproto.events
    from websockets.server import ServerProtocol

    payload = b"x" * 32
    mask = b"\x01\x02\x03\x04"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    handshake = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def with_websockets() -> None:
        protocol = ServerProtocol()
        protocol.receive_data(handshake)
        request = protocol.events_received()[0]
        protocol.send_response(protocol.accept(request))
        protocol.data_to_send()
        for _ in range(messages):
            protocol.receive_data(frame)
            for event in protocol.events_received():
                protocol.send_text(event.data)
            protocol.data_to_send()

    def with_wsproto() -> None:
        connection = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        connection.receive_data(handshake)
        for event in connection.events():
            if isinstance(event, wsproto.events.Request):
                connection.send(wsproto.events.AcceptConnection())
        for _ in range(messages):
            connection.receive_data(frame)
            for event in connection.events():
                connection.send(wsproto.events.TextMessage(data=event.data))

    for name, run in (("websockets", with_websockets), ("wsproto", with_wsproto)):
        best = min(_timed(run) for _ in range(3))
        print(f"protocol only, {name}: {messages / best:,.0f} messages/s", flush=True)


def _timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def report(name: str, results: dict[str, list[float]]) -> None:
    ratios = [a / b for a, b in zip(results["tricorn"], results["uvicorn"], strict=True)]
    print(f"{name}: tricorn {statistics.median(results['tricorn']):,.0f}/s, uvicorn "
          f"{statistics.median(results['uvicorn']):,.0f}/s, ratio {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    for window, name in ((1, "WebSocket echo round trips, 64 clients"),
                         (16, "WebSocket echoed messages, 64 clients x 16 in flight")):
        results: dict[str, list[float]] = {"tricorn": [], "uvicorn": []}
        for _ in range(args.rounds):
            for kind in results:
                results[kind].append(ws_round(kind, args.duration, window))
        report(name, results)
    # The library choice: the same server (uvicorn) on each sans-I/O library, and each library alone.
    libraries: dict[str, list[float]] = {"websockets-sansio": [], "wsproto": []}
    for _ in range(args.rounds):
        for ws in libraries:
            libraries[ws].append(ws_round("uvicorn", args.duration, 16, ws=ws))
    medians = {ws: statistics.median(values) for ws, values in libraries.items()}
    print(f"uvicorn echoed messages/s, 64 x 16: websockets-sansio {medians['websockets-sansio']:,.0f}, "
          f"wsproto {medians['wsproto']:,.0f}", flush=True)
    protocol_only()
    import trustme

    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(f"{tmp}/cert.pem")
        cert.private_key_pem.write_to_path(f"{tmp}/key.pem")
        results = {"tricorn": [], "uvicorn": []}
        for _ in range(args.rounds):
            for kind in results:
                results[kind].append(https_round(kind, args.duration, f"{tmp}/cert.pem", f"{tmp}/key.pem"))
        report("HTTPS hello world, wrk -c64", results)


if __name__ == "__main__":
    main()
