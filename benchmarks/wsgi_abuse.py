#!/usr/bin/env python3
"""Fresh requests while other clients misbehave, against a two-worker WSGI server.

Each scenario opens its misbehaving connections, then makes 100 fresh requests (a new connection
each, 10 at a time, 5 s timeout) and reports their latency and failures:

  idle      1,000 keep-alive connections that made one request and stay open
  silent    1,000 connections that never send a byte
  partial   3,000 connections each holding a partial request head
  trickle   32 connections trickling a request body, a byte every 100 ms
  slow      50 clients each reading a 10 MiB streamed response at 64 KiB/s (RSS of the workers too)

Run by hand (never in CI):  python benchmarks/wsgi_abuse.py [--server tricorn|gunicorn] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import free_port, running, wait_ready

from tricorn.host.resources import raise_open_files_limit

PY = sys.executable
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def server_argv(kind: str, port: int) -> list[str]:
    if kind == "tricorn":
        return [PY, "-m", "tricorn", "apps:wsgi_stream", "--app-dir", "benchmarks", "-w", "2", "--threads", "6",
                "--port", str(port), "--no-access-log"]
    return [PY, "-m", "gunicorn", "--chdir", "benchmarks", "-k", "gthread", "-w", "2", "--threads", "6",
            "-b", f"127.0.0.1:{port}", "apps:wsgi_stream"]


def fresh(port: int) -> float | None:
    began = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return time.perf_counter() - began if data.startswith(b"HTTP/1.1 200") else None
    except OSError:
        return None


def probe(port: int) -> str:
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: fresh(port), range(100)))
    times = sorted(t * 1000 for t in results if t is not None)
    failed = len(results) - len(times)
    if not times:
        return f"all {failed} failed"
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return f"p50 {statistics.median(times):.1f} ms  p99 {p99:.1f} ms  max {times[-1]:.1f} ms  failed {failed}"


def connect(port: int, count: int, first: bytes = b"", read: bool = False) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first:
            sock.sendall(first)
        if read:
            sock.recv(65536)
        socks.append(sock)
    return socks


def rss_mib(pid: int) -> float:
    total = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def scenario(name: str, port: int, pid: int) -> str:
    stop = threading.Event()
    threads: list[threading.Thread] = []
    socks: list[socket.socket] = []
    extra = ""
    try:
        if name == "idle":
            socks = connect(port, 1000, REQUEST, read=True)
        elif name == "silent":
            socks = connect(port, 1000)
        elif name == "partial":
            socks = connect(port, 3000, b"GET / HTTP/1.1\r\nHost: x\r\n")
        elif name == "trickle":
            socks = connect(port, 32, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")

            def trickle() -> None:
                while not stop.wait(0.1):
                    for sock in socks:
                        with contextlib.suppress(OSError):
                            sock.send(b"x")
            threads.append(threading.Thread(target=trickle))
        elif name == "slow":
            before = rss_mib(pid)
            for _ in range(50):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /?10 HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(sock)

            def read_slowly(sock: socket.socket) -> None:
                while not stop.wait(0.25):
                    try:
                        if not sock.recv(16384):
                            return
                    except OSError:
                        return
            threads += [threading.Thread(target=read_slowly, args=(sock,)) for sock in socks]
        for thread in threads:
            thread.start()
        if name == "slow":
            time.sleep(2)  # every slow reader's response is under way
        result = probe(port)
        if name == "slow":
            extra = f"  workers' RSS {before:.0f} -> {rss_mib(pid):.0f} MiB"
        return result + extra
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in socks:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=["idle", "silent", "partial", "trickle", "slow"])
    parser.add_argument("--server", action="append", choices=["tricorn", "gunicorn"])
    args = parser.parse_args()
    raise_open_files_limit()
    for kind in args.server or ["tricorn"]:
        for name in args.scenarios:
            port = free_port()
            with running(server_argv(kind, port), cwd=Path(__file__).resolve().parent.parent) as proc:
                wait_ready(port)
                print(f"{kind:9} {name:8} {scenario(name, port, proc.pid)}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
