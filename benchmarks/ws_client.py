#!/usr/bin/env python3
"""Issue 22's load generator for WebSocket: `tricorn bench ws://` beside a client written with the
`websockets` library (what issue 4 measured with, and found to be the bottleneck), each from one core
(CPU 1) against the same tricorn echo server (CPU 0), interleaved, 64 connections, 32-byte messages,
one in flight per connection: round trips per second, and the client's CPU.

Run by hand (never in CI):  python benchmarks/ws_client.py --rounds 3 --duration 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import free_port, running

WEBSOCKETS_CLIENT = r"""
import asyncio, sys, time
from websockets.asyncio.client import connect

async def user(url, stop, counts):
    async with connect(url, compression=None) as ws:
        message = b"x" * 32
        while time.perf_counter() < stop:
            await ws.send(message)
            await ws.recv()
            counts[0] += 1

async def main(url, connections, duration):
    for _ in range(100):  # the server may still be starting
        try:
            async with connect(url):
                break
        except OSError:
            await asyncio.sleep(0.1)
    counts = [0]
    stop = time.perf_counter() + duration
    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(user(url, stop, counts) for _ in range(connections)))
    wall = time.perf_counter() - began
    print(counts[0] / wall, (time.process_time() - cpu) / wall)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def tricorn_bench(url: str, duration: float) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["taskset", "-c", "1", sys.executable, "-m", "tricorn", "bench", url, "-c", "64", "-d",
                        f"{duration}s", "--message-size", "32", "-q", "--json", out.name], check=True,
                       capture_output=True)
        result = json.loads(Path(out.name).read_text())
    return result["throughput_rps"], result["generator_cpu"]


def websockets_client(url: str, duration: float) -> tuple[float, float]:
    done = subprocess.run(["taskset", "-c", "1", sys.executable, "-c", WEBSOCKETS_CLIENT, url, "64", str(duration)],
                          check=True, capture_output=True, text=True)
    rate, cpu = done.stdout.split()
    return float(rate), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    port = free_port()
    argv = ["taskset", "-c", "0", sys.executable, "-m", "tricorn", "benchmarks.apps:ws_echo", "-w", "1", "--port",
            str(port), "--no-access-log"]
    url = f"ws://127.0.0.1:{port}/"
    results: dict[str, list[tuple[float, float]]] = {"tricorn bench": [], "websockets client": []}
    with running(argv):
        websockets_client(url, 0.5)  # until the server answers (its first connections retry)
        for number in range(args.rounds):
            order = [("tricorn bench", tricorn_bench), ("websockets client", websockets_client)]
            for name, client in order if number % 2 == 0 else order[::-1]:
                results[name].append(client(url, args.duration))
    for name, runs in results.items():
        rates = [rate for rate, _ in runs]
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"{name:18} {statistics.median(rates):10,.0f} round trips/s (runs {shown}); "
              f"client CPU {statistics.median(cpu for _, cpu in runs):.0%} of its core")
    ratios = [a[0] / b[0] for a, b in zip(results["tricorn bench"], results["websockets client"], strict=True)]
    print(f"tricorn bench / websockets client: {statistics.median(ratios):.2f}x "
          f"(per round {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
