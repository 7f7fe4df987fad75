#!/usr/bin/env python3
"""Issue 4's benchmarks, tricorn beside uvicorn, interleaved, server on CPU 0, load on CPU 1:

  ws-echo  64 WebSocket clients (the websockets asyncio client on uvloop, one process) each sending a
           32-byte text message and awaiting its echo, round after round for --duration seconds;
           uvicorn runs `--ws websockets-sansio`, the same protocol library as tricorn
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import free_port, running

ECHO_APP = "benchmarks.apps:ws_echo"


def server(kind: str, app: str, port: int, *extra: str) -> list[str]:
    if kind == "tricorn":
        argv = [sys.executable, "-m", "tricorn", app, "-w", "1", "--port", str(port), "--no-access-log", *extra]
    else:
        argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--no-access-log", "--loop", "uvloop",
                "--http", "httptools", "--ws", "websockets-sansio",
                *[a.replace("--certfile", "--ssl-certfile").replace("--keyfile", "--ssl-keyfile") for a in extra]]
    return ["taskset", "-c", "0", *argv]


CLIENT = r'''
import asyncio, sys, time, uvloop
from websockets.asyncio.client import connect
async def main(url, clients, duration):
    conns = [await connect(url, compression=None) for _ in range(clients)]
    count = 0
    deadline = time.perf_counter() + duration
    async def loop(ws):
        nonlocal count
        while time.perf_counter() < deadline:
            await ws.send("x" * 32)
            await ws.recv()
            count += 1
    started = time.perf_counter()
    await asyncio.gather(*(loop(ws) for ws in conns))
    print(count / (time.perf_counter() - started))
    for ws in conns:
        await ws.close()
uvloop.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
'''


def ws_round(kind: str, duration: int) -> float:
    port = free_port()
    with running(server(kind, ECHO_APP, port)):
        time.sleep(1.5)
        out = subprocess.run(["taskset", "-c", "1", sys.executable, "-c", CLIENT, f"ws://127.0.0.1:{port}/", "64",
                              str(duration)], capture_output=True, text=True, check=True).stdout
        return float(out.strip())


def https_round(kind: str, duration: int, cert: str, key: str) -> float:
    port = free_port()
    with running(server(kind, "benchmarks.apps:asgi_hello", port, "--certfile", cert, "--keyfile", key)):
        time.sleep(1.5)
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration}s",
                              f"https://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]


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
    results: dict[str, list[float]] = {"tricorn": [], "uvicorn": []}
    for _ in range(args.rounds):
        for kind in results:
            results[kind].append(ws_round(kind, args.duration))
    report("WebSocket echo round trips, 64 clients", results)
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
