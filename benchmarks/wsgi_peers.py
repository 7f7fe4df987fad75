#!/usr/bin/env python3
"""WSGI servers side by side: tricorn, granian --interface wsgi and gunicorn gthread, interleaved.

Each case runs every server in turn, the order rotated each round (A B C, B C A, …); one worker
pinned to CPU 0 and wrk to CPU 1,
except the `-2w` cases: two workers, nothing pinned (wrk shares the cores). Reports the median of
the rounds for req/s, CPU time per request (the server's processes, from /proc, utime + stime over
the requests wrk counted) and wrk's p99, and each server's ratio to granian. `floor` in --servers
adds benchmarks/floor.py: the least a Python server can do per request.

  hello         benchmarks.apps:wsgi_hello, wrk -c64
  flask         Flask JSON route, -c64
  django        Django JSON view, -c64
  sleep         time.sleep(0.01) per request, -c256, 32 threads (granian --blocking-threads 32)
  hello-2w      hello with two workers, unpinned
  sweep         hello and sleep with 1, 2, 4, 8, 32 threads (tricorn and granian)

Run by hand (never in CI):  python benchmarks/wsgi_peers.py [CASE ...] --rounds 3 --duration 8
                            python benchmarks/wsgi_peers.py hello --servers tricorn,before --baseline DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import LOAD_CPU, ROOT, SERVER_CPU, free_port, running, wait_ready

from tricorn.tune.procfs import ticks

PY = sys.executable
BIN = Path(PY).parent
APPS = {"hello": "benchmarks.apps:wsgi_hello", "flask": "benchmarks.frameworks:flask_json",
        "django": "benchmarks.frameworks:django_json", "sleep": "benchmarks.apps:wsgi_sleep"}


def argv(server: str, app: str, port: int, threads: int, workers: int) -> list[str]:
    if server == "floor":  # one thread, whatever the case's threads and workers (benchmarks/floor.py)
        return [PY, str(ROOT / "benchmarks" / "floor.py"), "wsgi", app, str(port)]
    if server in ("tricorn", "before"):
        return [PY, "-m", "tricorn", app, "-w", str(workers), "--threads", str(threads), "--port", str(port),
                "--no-access-log"]
    if server == "granian":
        return [str(BIN / "granian"), "--interface", "wsgi", "--workers", str(workers), "--blocking-threads",
                str(threads), "--port", str(port), "--no-ws", "--log-level", "warning", app]
    return [PY, "-m", "gunicorn", "-k", "gthread", "--threads", str(threads), "-w", str(workers),
            "-b", f"127.0.0.1:{port}", "--log-level", "warning", app]


def tree_cpu_s(pid: int) -> float:
    """utime + stime of `pid` and all its descendants, in seconds."""
    pids, todo = [], [pid]
    while todo:
        pids.append(p := todo.pop())
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return ticks(f"/proc/{p}/stat" for p in pids) / os.sysconf("SC_CLK_TCK")


Argv = Callable[[str, str, int, int, int], list[str]]


def run(
    server: str, app: str, connections: int, threads: int, workers: int, duration: int, baseline: Path | None,
    command_of: Argv = argv, scheme: str = "http", wrk_args: Sequence[str] = (), message_size: int | None = None,
) -> tuple[float, float, float]:
    """One server under wrk, or with `message_size` under `tricorn bench ws://` echoing messages of
    that size: (requests or round trips per second, µs of server CPU per one, p99 ms)."""
    port = free_port()
    pinned = workers == 1
    command = command_of(server, app, port, threads, workers)
    if pinned:
        command = ["taskset", "-c", SERVER_CPU, *command]
    with running(command, cwd=baseline if server == "before" and baseline else ROOT) as proc, \
            tempfile.TemporaryDirectory() as tmp:
        wait_ready(port, timeout=30, scheme=scheme, status=b"" if message_size is not None else b" 200")
        if message_size is None:
            load = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *wrk_args,
                    f"{scheme}://127.0.0.1:{port}/"]
        else:
            load = [PY, "-m", "tricorn", "bench", f"{'wss' if scheme == 'https' else 'ws'}://127.0.0.1:{port}/",
                    "-c", str(connections), "-d", f"{duration}s", "--message-size", str(message_size), "-q",
                    "--json", f"{tmp}/bench.json", *(["-k"] if scheme == "https" else [])]
        if pinned:
            load = ["taskset", "-c", LOAD_CPU, *load]
        before = tree_cpu_s(proc.pid)
        out = subprocess.run(load, capture_output=True, text=True, check=True).stdout
        cpu = tree_cpu_s(proc.pid) - before
        if message_size is not None:
            summary = json.loads(Path(f"{tmp}/bench.json").read_text())
            if summary["error_count"]:
                print(f"    {server}: tricorn bench reported {summary['errors']}", flush=True)
            done = summary["answered"]
            return done / summary["elapsed_s"], cpu / max(1, done) * 1e6, summary["latency_ms"]["p99"]
    requests = int(re.search(r"(\d+) requests in", out)[1])
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"    {server}: wrk reported {errors[0]}", flush=True)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99[2]]
    return requests / duration, cpu / max(1, requests) * 1e6, float(p99[1]) * scale


def case(name: str, app: str, servers: list[str], connections: int, threads: int, workers: int,
         args: argparse.Namespace, command_of: Argv = argv, scheme: str = "http", wrk_args: Sequence[str] = (),
         against: Sequence[str] = ("granian", "floor"), message_size: int | None = None) -> None:
    """Every server in turn, rotated each round; the medians, and tricorn's ratio to each of `against`."""
    results: dict[str, list[tuple[float, float, float]]] = {s: [] for s in servers}
    for round_number in range(args.rounds):
        for server in servers[round_number % len(servers):] + servers[:round_number % len(servers)]:  # rotated
            results[server].append(run(server, app, connections, threads, workers, args.duration, args.baseline,
                                       command_of, scheme, wrk_args, message_size))
    peers = {p: statistics.median(r[0] for r in results[p]) for p in against if p in results}
    for server in servers:
        rps = statistics.median(r[0] for r in results[server])
        cpu = statistics.median(r[1] for r in results[server])
        p99 = statistics.median(r[2] for r in results[server])
        ratios = "  ".join(f"{rps / peer:5.2f}x {p}" for p, peer in peers.items() if p != server)
        print(f"{name:22} {server:9} {rps:10,.0f} req/s  {cpu:7.1f} us CPU/req  p99 {p99:7.2f} ms  {ratios}",
              flush=True)


def arguments(doc: str | None, cases: list[str], servers: str) -> argparse.Namespace:
    """The options both peers scripts take; unknown cases are refused."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=cases, help=", ".join(cases))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--servers", default=servers, help=f"a comma-separated list of {servers}, before")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help='the server "before" is tricorn from this checkout (git worktree add DIR HEAD~1)')
    args = parser.parse_args()
    if "before" in args.servers and not args.baseline:
        parser.error('the server "before" needs --baseline DIR')
    unknown = set(args.cases) - set(cases)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(cases)}")
    return args


def main() -> None:
    args = arguments(__doc__, ["hello", "flask", "django", "sleep", "hello-2w", "sweep"], "tricorn,granian,gunicorn")
    servers = args.servers.split(",")
    for name in args.cases:
        if name in ("hello", "flask", "django"):
            case(name, APPS[name], servers, 64, 8, 1, args)
        elif name == "sleep":
            case(name, APPS[name], servers, 256, 32, 1, args)
        elif name == "hello-2w":
            case(name, APPS["hello"], servers, 64, 8, 2, args)
        elif name == "sweep":
            for app in ("hello", "sleep"):
                for threads in (1, 2, 4, 8, 32):
                    case(f"{app} {threads} threads", APPS[app], [s for s in servers if s != "gunicorn"],
                         256 if app == "sleep" else 64, threads, 1, args)


if __name__ == "__main__":
    main()
