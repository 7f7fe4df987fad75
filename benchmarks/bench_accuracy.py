#!/usr/bin/env python3
"""tricorn bench beside wrk, interleaved, against nginx (1 worker) and tricorn (-w 1).

The server is pinned to CPU 0, the load generator (wrk or tricorn bench, one process) to CPU 1.

  throughput  closed loop, 64 connections: bench req/s / wrk req/s (goal >= 0.6)
  latency     at about half of the server's capacity: wrk with the most connections whose rate
              stays within half of capacity, and bench open loop at the rate wrk reached;
              mean and p50 side by side (goal: within 15%)
  stall       a server that freezes 200 ms every second (tests/apps/bench_targets.py stall):
              bench open loop p99 vs closed loop p99
  ceiling     the open loop's own limit with thousands of requests in flight: a server that
              answers each request after 50 ms (bench_targets.py delay:50 on uvloop), rates
              rising by 10k req/s; per rate: answered, p99, requests started over 10 ms late

Run by hand (never in CI):  python benchmarks/bench_accuracy.py --rounds 3 --duration 5 [nginx tricorn stall ceiling]
Needs wrk and nginx (apt-get install wrk nginx).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, free_port, running, wait_ready

SERVER_CPU, LOAD_CPU = "0", "1"
PARTS = ("nginx", "tricorn", "stall", "ceiling")
NGINX_CONF = """
daemon off; master_process off; worker_processes 1; error_log stderr error; pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir}; uwsgi_temp_path {dir};
  scgi_temp_path {dir};
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
           location / {{ default_type text/plain; return 200 "Hello, world!"; }} }}
}}
"""


@contextmanager
def server(kind: str) -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "nginx":
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=tmp, port=port))
            argv = ["nginx", "-c", str(conf), "-p", tmp]
        elif kind == "tricorn":
            argv = [sys.executable, "-m", "tricorn", "benchmarks.apps:asgi_hello", "-w", "1", "--port", str(port),
                    "--no-access-log"]
        else:
            import socket

            listener = socket.socket()
            listener.bind(("127.0.0.1", port))
            listener.listen(1024)
            argv = [sys.executable, str(ROOT / "tests" / "apps" / "bench_targets.py"), kind, str(listener.fileno()),
                    "uvloop"]
        targets = kind not in ("nginx", "tricorn")
        with running(["taskset", "-c", SERVER_CPU, *argv], pass_fds=[listener.fileno()] if targets else []):
            if targets:
                listener.close()
            wait_ready(port)
            yield f"http://127.0.0.1:{port}/"


def wrk(url: str, connections: int, duration: int) -> dict[str, float]:
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout

    def ms(text: str) -> float:
        match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
        if match is None:
            raise SystemExit(f"cannot read wrk's latency {text!r} in:\n{out}")
        value, unit = match.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    mean = re.search(r"^\s+Latency\s+([\d.]+\w+)", out, re.MULTILINE)[1]  # type: ignore[index]
    p50 = re.search(r"^\s+50%\s+([\d.]+\w+)", out, re.MULTILINE)[1]  # type: ignore[index]
    p99 = re.search(r"^\s+99%\s+([\d.]+\w+)", out, re.MULTILINE)[1]  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return {"rps": rps, "mean": ms(mean), "p50": ms(p50), "p99": ms(p99)}


def bench(url: str, duration: int, *args: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["taskset", "-c", LOAD_CPU, sys.executable, "-m", "tricorn", "bench", url, "-d",
                        f"{duration}s", "-q", "--json", out.name, *args], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        result = json.loads(Path(out.name).read_text())
    latency = result["latency_ms"]
    return {"rps": result["throughput_rps"], "mean": latency["mean"], "p50": latency["p50"], "p99": latency["p99"],
            "cpu": result["generator_cpu"], "errors": result["error_count"], "requests": result["requests"],
            "late": result["open_loop_late"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("parts", nargs="*", choices=PARTS, default=list(PARTS), help="what to run (default: all)")
    args = parser.parse_args()
    for tool in ("wrk", "taskset", *(["nginx"] if "nginx" in args.parts else [])):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install wrk nginx util-linux")
    d = args.duration
    for kind in ("nginx", "tricorn"):
        if kind not in args.parts:
            continue
        with server(kind) as url:
            ratios, ours, theirs, cpus = [], [], [], []
            for _ in range(args.rounds):
                w = wrk(url, 64, d)
                b = bench(url, d, "-c", "64")
                ratios.append(b["rps"] / w["rps"])
                ours.append(b["rps"])
                theirs.append(w["rps"])
                cpus.append(b["cpu"])
            capacity = statistics.median(theirs)
            print(f"{kind}: closed loop -c 64: wrk {capacity:,.0f} req/s, bench {statistics.median(ours):,.0f} "
                  f"req/s, ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}), "
                  f"bench CPU {statistics.median(cpus):.0%}")
            # About half load: the most wrk connections whose rate stays within half of capacity.
            probes = {c: wrk(url, c, 2)["rps"] for c in (1, 2, 3, 4, 6)}
            connections = max([c for c in probes if probes[c] <= capacity * 0.5] or [1])
            rows = []
            for _ in range(args.rounds):
                w = wrk(url, connections, d)
                b = bench(url, d, "--rate", f"{w['rps']:.0f}")
                rows.append((w, b))
            for name in ("mean", "p50"):
                wv = statistics.median(r[0][name] for r in rows)
                bv = statistics.median(r[1][name] for r in rows)
                rate = statistics.median(r[0]["rps"] for r in rows)
                print(f"  half load (wrk -c {connections}, bench --rate {rate:,.0f}): {name} wrk {wv:.3f} ms, "
                      f"bench {bv:.3f} ms, bench/wrk {bv / wv:.2f}")
    if "stall" in args.parts:
        stall(d)
    if "ceiling" in args.parts:
        ceiling(d, args.rounds)


def stall(d: int) -> None:
    with server("stall") as url:
        opened = bench(url, d, "--rate", "500")
        closed = bench(url, d, "-c", "1")
        w = wrk(url, 1, d)
        print(f"stall 200 ms/s: bench open loop --rate 500 p99 {opened['p99']:.1f} ms; bench closed -c 1 p99 "
              f"{closed['p99']:.1f} ms; wrk -c 1 p99 {w['p99']:.1f} ms")


def ceiling(d: int, rounds: int) -> None:
    with server("delay:50") as url:
        for rate in range(10_000, 70_000, 10_000):
            runs = [bench(url, d, "--rate", str(rate), "-c", "20000") for _ in range(rounds)]
            answered = statistics.median(r["rps"] for r in runs)
            late = max(r["late"] / max(1, r["requests"]) for r in runs)
            print(f"ceiling, 50 ms answers: --rate {rate:,}: {answered:,.0f} req/s answered, p99 "
                  f"{statistics.median(r['p99'] for r in runs):.1f} ms, at most {late:.2%} of requests started "
                  f"over 10 ms late (median of {rounds})")
            if answered < 0.95 * rate:
                break

if __name__ == "__main__":
    main()
