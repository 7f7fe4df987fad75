#!/usr/bin/env python3
"""Instructions per request, counted by valgrind (callgrind): a measure this noisy VM cannot move.

Hello requests go through HttpConnection and the ASGI or WSGI adapter in one process (a transport
that drops what it is given, no sockets; WSGI's app runs on a pool thread), 1,000 and then 5,000 of
them; the difference over 4,000 is what one request costs in user-space instructions. Kernel work
(epoll, recv, send) is not counted, so a real request's relative change is smaller than this one's.

Run by hand (never in CI):  apt-get install valgrind
    python benchmarks/instructions.py                           # this checkout, metrics off and on
    python benchmarks/instructions.py --baseline /tmp/before    # and tricorn from another checkout
    python benchmarks/instructions.py --interface wsgi          # the same for a WSGI app
    python benchmarks/instructions.py --churn                   # a new connection per request
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def _hello(scope: dict, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def _wsgi_hello(environ: dict, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


class _Sink(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = asyncio.Event()
        self.closing = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.written.set()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self._lost)

    def _lost(self) -> None:
        self.protocol.connection_lost(None)
        self.protocol = None  # as asyncio's and uvloop's transports let go of their protocol


async def _serve(interface: str, count: int, metrics: bool, churn: bool) -> None:
    from tricorn.config import load
    from tricorn.server.asgi import ASGIAdapter
    from tricorn.server.connection import HttpConnection
    from tricorn.server.state import ServerState
    from tricorn.server.wsgi import WSGIAdapter

    given = {"app": "x:y", "access_log": False, **({"metrics_bind": "127.0.0.1:0"} if metrics else {})}
    config = load(given)[0]
    state = ServerState(config, asyncio.get_running_loop(), None)
    if interface == "wsgi":
        state.adapter = WSGIAdapter(_wsgi_hello, config, 1)
    else:
        state.adapter = ASGIAdapter(_hello, config, {})
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n\r\n" if churn else b"\r\n")
    sink = _Sink()
    for number in range(count):
        if number == 0 or churn:
            sink = _Sink()
            sink.protocol = conn = HttpConnection(state)
            conn.connection_made(sink)
        sink.written.clear()
        conn.data_received(request)
        if interface == "wsgi":
            await sink.written.wait()  # the response, whole in one write, from the pool thread
        await asyncio.sleep(0)  # the app's task runs (ASGI), the cycle ends
        await asyncio.sleep(0)
    assert sink.writes >= (1 if churn else count)
    if interface == "wsgi":
        state.adapter.close(5.0)


def _instructions(checkout: Path, interface: str, loop: str, count: int, metrics: bool, churn: bool) -> int:
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": "0"}
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
            "--interface", interface, "--loop", loop, "--run", str(count)] + (["--metrics"] if metrics else []) + (
                ["--churn"] if churn else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stderr
    return int(re.search(r"Collected : (\d+)", out)[1])


def per_request(checkout: Path, interface: str, loop: str, metrics: bool, churn: bool) -> int:
    many, few = (_instructions(checkout, interface, loop, count, metrics, churn) for count in (5000, 1000))
    return (many - few) // 4000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="tricorn from this checkout too (metrics off)")
    parser.add_argument("--interface", choices=("asgi", "wsgi"), default="asgi", help="the hello app's kind")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the event loop, as tricorn's --loop (uvloop: what a worker runs where installed)")
    parser.add_argument("--churn", action="store_true",
                        help="each request on a new connection (Connection: close): what a connection costs")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the measured child
    parser.add_argument("--metrics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        from tricorn.host.eventloop import new_event_loop

        loop = new_event_loop(args.loop)
        loop.run_until_complete(_serve(args.interface, args.run, args.metrics, args.churn))
        loop.close()
        return
    rows = [("metrics off", ROOT, False), ("metrics on", ROOT, True)]
    if args.baseline:
        rows.insert(0, (f"tricorn at {args.baseline}", args.baseline, False))
    first = None
    for name, checkout, metrics in rows:
        count = per_request(checkout, args.interface, args.loop, metrics, args.churn)
        first = first or count
        print(f"{name:30} {count:9,} instructions/request  {count / first:6.3f}x", flush=True)


if __name__ == "__main__":
    main()
