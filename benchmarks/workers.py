#!/usr/bin/env python3
"""The supervisor's costs and gains, tricorn beside uvicorn and gunicorn, interleaved:

  startup   time from exec to the first 200, with 1 and 4 workers
  memory    idle RSS and PSS of the master and of each worker, a Flask app, with and without --preload
  2workers  req/s with 2 workers: tricorn -w 2 vs uvicorn --workers 2 (ASGI hello world) and vs
            gunicorn -k gthread -w 2 (WSGI hello world). Nothing is pinned: on a 2-core machine wrk
            shares the cores with the servers, so read the ratio, not the absolute numbers.
  scaling   req/s with 1, 2, 4… workers (up to half the cores), the server pinned to as many cores
            as workers and wrk to the other half: for a machine with many cores (not the default)
  one-core  req/s of an async app that waits 50 ms (examples.tuning:io_asgi) with 1 to 4 workers,
            all pinned to one core, wrk on another: do event loops gain from sharing a core?
            (`tricorn tune` tries more workers than CPUs for async apps because they do)
  balance   a WSGI app that waits 50 ms (examples.tuning:io_wsgi), 4 workers x 8 threads on one
            core, wrk -c32 (one connection per thread) on another: tricorn vs gunicorn gthread. With
            the connections spread evenly it answers 640 req/s at p99 ~50 ms; a worker that takes
            more than 8 of them queues their requests behind its busy threads

Run by hand (never in CI):  python benchmarks/workers.py [startup memory 2workers scaling one-core balance] --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import free_port, running, wait_ready

PY = sys.executable
UVICORN = [PY, "-m", "uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log"]


def tricorn(app: str, workers: int, port: int, *extra: str) -> list[str]:
    return [PY, "-m", "tricorn", app, "-w", str(workers), "--port", str(port), "--no-access-log", *extra]


def uvicorn(app: str, workers: int, port: int, *extra: str) -> list[str]:
    return [*UVICORN, "--workers", str(workers), "--port", str(port), *extra, app]


def gunicorn(app: str, workers: int, port: int, *extra: str) -> list[str]:
    return [PY, "-m", "gunicorn", "-k", "gthread", "--threads", "2", "-w", str(workers), "-b", f"127.0.0.1:{port}",
            *extra, app]


SERVERS = {"tricorn": tricorn, "uvicorn": uvicorn, "gunicorn": gunicorn}


def first_200(argv: list[str], port: int) -> float:
    started = time.perf_counter()
    with running(argv):
        wait_ready(port, timeout=30)
        return time.perf_counter() - started


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def memory_kib(pid: int) -> tuple[int, int]:
    """RSS and PSS (shared pages divided among the processes sharing them)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0])
    return fields["Rss"], fields["Pss"]


def wrk_against(server: list[str], port: int, wrk: list[str]) -> str:
    """wrk's output (`wrk` is its argv, with taskset if pinned) against `server` once it answers."""
    with running(server):
        wait_ready(port, timeout=30)
        time.sleep(1.0)
        return subprocess.run([*wrk, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout


def server_and_load_cores() -> tuple[str, str]:
    """The server's CPU and the load generator's, for the one-core parts."""
    cores = sorted(os.sched_getaffinity(0))
    return str(cores[0]), str(cores[1])


def wrk_one_core(server: list[str], port: int, wrk: list[str]) -> str:
    """wrk_against with the server pinned to the first CPU and wrk to the second."""
    server_core, load_core = server_and_load_cores()
    return wrk_against(["taskset", "-c", server_core, *server], port, ["taskset", "-c", load_core, *wrk])


def requests_per_s(out: str) -> float:
    return float(out.split("Requests/sec:")[1].split()[0])


def rate_and_p99(out: str) -> tuple[float, float]:
    """req/s and p99 latency (ms) from `wrk --latency`."""
    p99 = out.split(" 99%")[1].split()[0]  # 850.00us, 50.12ms, 1.02s
    number = p99.rstrip("ums")
    return requests_per_s(out), float(number) * WRK_UNIT_MS[p99[len(number):]]


WRK_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def startup(rounds: int) -> None:
    print("start to first 200 (s), median of", rounds, "interleaved rounds")
    for workers in (1, 4):
        times: dict[str, list[float]] = {name: [] for name in SERVERS}
        for _ in range(rounds):
            for name, command in SERVERS.items():
                app = "benchmarks.apps:wsgi_hello" if name == "gunicorn" else "benchmarks.apps:asgi_hello"
                port = free_port()
                times[name].append(first_200(command(app, workers, port), port))
        row = "  ".join(f"{name} {statistics.median(t):.3f}" for name, t in times.items())
        print(f"  -w {workers}: {row}")


def memory(rounds: int) -> None:
    print("idle memory, Flask app, 4 workers (MiB): master RSS; worker RSS and PSS (mean); total PSS")
    app = "benchmarks.frameworks:flask_json"
    for name, preload in (("tricorn", ()), ("tricorn", ("--preload",)), ("gunicorn", ()), ("gunicorn", ("--preload",))):
        port = free_port()
        with running(SERVERS[name](app, 4, port, *preload)) as proc:
            wait_ready(port, timeout=30)
            time.sleep(2.0)  # every worker booted
            for _ in range(40):  # touch the workers
                wait_ready(port)
            master = memory_kib(proc.pid)
            workers = [memory_kib(pid) for pid in children(proc.pid)]
        rss = statistics.mean(w[0] for w in workers) / 1024
        pss = statistics.mean(w[1] for w in workers) / 1024
        total = (master[1] + sum(w[1] for w in workers)) / 1024
        print(f"  {name:8} {' '.join(preload) or '':9}  master {master[0] / 1024:5.1f}  worker RSS {rss:5.1f}  "
              f"PSS {pss:5.1f}  total PSS {total:6.1f}  ({len(workers)} workers)")


def two_workers(rounds: int, duration: int) -> None:
    print(f"2 workers, wrk -t1 -c64 -d{duration}s, unpinned; median of per-round ratios (min-max)")
    cases = (("benchmarks.apps:asgi_hello", "uvicorn"), ("benchmarks.apps:wsgi_hello", "gunicorn"))
    for app, peer in cases:
        ratios, ours, theirs = [], [], []
        for _ in range(rounds):
            pair = []
            for name in ("tricorn", peer):
                port = free_port()
                pair.append(requests_per_s(wrk_against(SERVERS[name](app, 2, port), port,
                                                       ["wrk", "-t1", "-c64", f"-d{duration}s"])))
            ours.append(pair[0])
            theirs.append(pair[1])
            ratios.append(pair[0] / pair[1])
        name = app.split(":")[1]
        print(f"  {name:10} tricorn {statistics.median(ours):8,.0f}  {peer} {statistics.median(theirs):8,.0f}"
              f"  ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


def scaling(rounds: int, duration: int) -> None:
    """req/s against the worker count, each server on as many cores as it has workers, wrk on
    the other half of the machine; tricorn vs uvicorn (ASGI) and vs gunicorn gthread (WSGI)."""
    cores = sorted(os.sched_getaffinity(0))
    half = len(cores) // 2
    counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= half]
    load = ",".join(map(str, cores[half:]))
    print(f"scaling: server on CPUs {cores[:max(counts)]} (as many as workers), wrk -t{len(cores) - half} on "
          f"{load}; {rounds} interleaved rounds of {duration}s, medians")
    cases = (("benchmarks.apps:asgi_hello", "uvicorn"), ("benchmarks.apps:wsgi_hello", "gunicorn"))
    for app, peer in cases:
        for workers in counts:
            pin = ["taskset", "-c", ",".join(map(str, cores[:workers]))]
            results: dict[str, list[float]] = {"tricorn": [], peer: []}
            for _ in range(rounds):
                for name, values in results.items():
                    port = free_port()
                    wrk = ["taskset", "-c", load, "wrk", f"-t{len(cores) - half}", f"-c{64 * workers}",
                           f"-d{duration}s"]
                    values.append(requests_per_s(wrk_against([*pin, *SERVERS[name](app, workers, port)], port, wrk)))
            ours, theirs = (statistics.median(v) for v in results.values())
            print(f"  {app.split(':')[1]:10} -w {workers:2}  tricorn {ours:9,.0f}  {peer} {theirs:9,.0f}  "
                  f"ratio {ours / theirs:.2f}", flush=True)


def one_core(rounds: int, duration: int) -> None:
    """An async app on one core with 1 to 4 workers, tricorn vs uvicorn, wrk on another core."""
    server, load = server_and_load_cores()
    print(f"one-core: examples.tuning:io_asgi, server on CPU {server}, wrk -t1 -c1500 on {load}; "
          f"{rounds} interleaved rounds of {duration}s, medians (ranges), ratio to 1 worker")
    app = "examples.tuning:io_asgi"
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for workers in (1, 2, 3, 4):
            for name in ("tricorn", "uvicorn"):
                port = free_port()
                out = wrk_one_core(SERVERS[name](app, workers, port), port, ["wrk", "-t1", "-c1500", f"-d{duration}s"])
                results.setdefault((name, workers), []).append(requests_per_s(out))
    for name in ("tricorn", "uvicorn"):
        alone = statistics.median(results[name, 1])
        cells = [f"-w {w}: {statistics.median(v):,.0f} ({min(v):,.0f} to {max(v):,.0f}) "
                 f"ratio {statistics.median(v) / alone:.2f}" for (n, w), v in results.items() if n == name]
        print(f"  {name:8} " + "  ".join(cells), flush=True)


def balance(rounds: int, duration: int) -> None:
    server, load = server_and_load_cores()
    print(f"balance: examples.tuning:io_wsgi, -w 4 --threads 8 on CPU {server}, wrk -t1 -c32 --latency on {load}; "
          f"{rounds} interleaved rounds of {duration}s, medians (ranges)")
    app = "examples.tuning:io_wsgi"
    results: dict[str, list[tuple[float, float]]] = {"tricorn": [], "gunicorn": []}
    for _ in range(rounds):
        for name, values in results.items():
            port = free_port()
            out = wrk_one_core(SERVERS[name](app, 4, port, "--threads", "8"), port,
                               ["wrk", "-t1", "-c32", f"-d{duration}s", "--latency"])
            values.append(rate_and_p99(out))
    for name, values in results.items():
        rates, p99s = [v[0] for v in values], [v[1] for v in values]
        print(f"  {name:8} {statistics.median(rates):6,.0f} req/s ({min(rates):,.0f} to {max(rates):,.0f})  "
              f"p99 {statistics.median(p99s):6.1f} ms ({min(p99s):.1f} to {max(p99s):.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["startup", "memory", "2workers"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    args = parser.parse_args()
    for part in args.parts:
        if part == "startup":
            startup(args.rounds)
        elif part == "memory":
            memory(args.rounds)
        elif part == "2workers":
            two_workers(args.rounds, args.duration)
        elif part == "scaling":
            scaling(args.rounds, args.duration)
        elif part == "one-core":
            one_core(args.rounds, args.duration)
        elif part == "balance":
            balance(args.rounds, args.duration)
        else:
            parser.error(f"unknown part {part!r}")


if __name__ == "__main__":
    main()
