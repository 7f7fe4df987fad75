#!/usr/bin/env python3
"""tricorn against its peers, side by side, interleaved (A B A B), on one machine.

Each server is pinned to CPU 0 with taskset and wrk to CPU 1; access logs are off on both. The
order alternates each round (A B, B A).
Run by hand (never in CI):

    python benchmarks/compare.py                 # every case, 3 rounds of 10 s
    python benchmarks/compare.py asgi-hello --rounds 1 --duration 3
    python benchmarks/compare.py asgi-hello wsgi-hello --baseline /tmp/before   # tricorn vs tricorn
    python benchmarks/compare.py asgi-hello --baseline /tmp/before --tricorn-args="--metrics-bind 127.0.0.1:0"

With --baseline DIR the peer of every case is tricorn itself, run from another checkout (`git
worktree add /tmp/before HEAD~3`), with the same flags: a change measured against what it changed.

Prints req/s medians, the ratio tricorn/peer, and the RSS of each serving process after one
request and before the load (idle memory; the hello cases load no framework). The interpreter
running this script runs both servers: `/path/to/python3.12 benchmarks/compare.py` compares on 3.12.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Benchmarks serve self-signed certificates; readiness only needs an answer.
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE
SERVER_CPU = "0"
LOAD_CPU = "1"

CASES = {
    # name: (connections, path, tricorn argv, peer name, peer argv)
    "asgi-hello": (64, "benchmarks.apps:asgi_hello", ["--no-access-log"],
                   "uvicorn", ["uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log"]),
    "wsgi-hello": (64, "benchmarks.apps:wsgi_hello", ["--no-access-log"],
                   "gunicorn gthread 2", ["gunicorn", "-k", "gthread", "--threads", "2"]),
    "fastapi-json": (64, "benchmarks.frameworks:fastapi_json", ["--no-access-log"],
                     "uvicorn", ["uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log"]),
    "fastapi-async": (64, "benchmarks.frameworks:fastapi_async", ["--no-access-log"],
                      "uvicorn", ["uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log"]),
    "flask-json": (64, "benchmarks.frameworks:flask_json", ["--no-access-log"],
                   "gunicorn gthread 8", ["gunicorn", "-k", "gthread", "--threads", "8"]),
    "asgi-sleep-256": (256, "benchmarks.apps:asgi_sleep", ["--no-access-log"],
                       "uvicorn", ["uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log"]),
    # 1,500 requests in flight, each waiting 50 ms: what the garbage collector's settings are for
    # (tricorn/host/garbage.py); the -gc0 case leaves Python's collector as it is.
    "asgi-sleep-1500": (1500, "examples.tuning:io_asgi", ["--no-access-log"],
                        "uvicorn", ["uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log"]),
    "asgi-sleep-1500-gc0": (1500, "examples.tuning:io_asgi", ["--no-access-log", "--gc-threshold", "0"],
                            "uvicorn", ["uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(kind: str, app: str, extra: list[str], port: int) -> list[str]:
    taskset = ["taskset", "-c", SERVER_CPU]
    if kind == "tricorn":
        return [*taskset, sys.executable, "-m", "tricorn", app, "-w", "1", "--port", str(port), *extra]
    if extra[0] == "gunicorn":
        return [*taskset, sys.executable, "-m", "gunicorn", *extra[1:], "-w", "1", "-b", f"127.0.0.1:{port}", app]
    return [*taskset, sys.executable, "-m", "uvicorn", *extra[1:], "--port", str(port), app]


def wait_ready(port: int, timeout: float = 15.0, scheme: str = "http", status: bytes = b" 200") -> None:
    """Until the server answers (with `status`; b"" for any: a WebSocket-only app answers 500)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                s = UNVERIFIED.wrap_socket(raw) if scheme == "https" else raw
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1" + status):
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not answer 200 within {timeout}s")


def rss_kib(pid: int) -> int:
    """RSS of the serving process: the child of taskset/gunicorn that holds the socket."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text)[1])


def serving_pid(pid: int) -> int:
    """gunicorn serves from a forked worker; the others from the process itself."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid


def run_wrk(port: int, connections: int, duration: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"    wrk reported: {errors[0]}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])


@contextmanager
def running(argv: list[str], pass_fds: Sequence[int] = (), cwd: Path = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, stopped with everything it forked, even on error."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, pass_fds=pass_fds)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(kind: str, case: str, duration: int, baseline: Path | None = None,
            more: Sequence[str] = ()) -> tuple[float, int]:
    """`more`: flags for this checkout's tricorn only (not the peer, nor the baseline)."""
    connections, app, extra, _, peer = CASES[case]
    port = free_port()
    if kind == "tricorn":
        extra = [*extra, *more]
    if kind == "peer" and baseline is not None:
        kind, peer, cwd = "tricorn", extra, baseline
    else:
        cwd = ROOT
    with running(server_command(kind, app, extra if kind == "tricorn" else peer, port), cwd=cwd) as proc:
        wait_ready(port)
        time.sleep(0.3)
        rss = rss_kib(serving_pid(proc.pid))
        return run_wrk(port, connections, duration), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=list(CASES), help=", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="the peer is tricorn from this checkout (python -m tricorn run there)")
    parser.add_argument("--tricorn-args", default="", metavar="FLAGS",
                        help="more flags for this checkout's tricorn only, e.g. --metrics-bind 127.0.0.1:0")
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    print(f"{'case':20} {'tricorn req/s':>14} {'peer req/s':>12} {'ratio':>6} {'min-max':>10}  "
          f"{'RSS MiB t/p':>12}  peer")
    for case in args.cases:
        results: dict[str, list[float]] = {"tricorn": [], "peer": []}
        memory: dict[str, list[int]] = {"tricorn": [], "peer": []}
        for round_number in range(args.rounds):
            # Interleaved, and the order swapped each round (A B, B A, …): whichever runs first in
            # a round measured up to 5% apart from the second on this VM, in an A/A test.
            for kind in ("tricorn", "peer")[::1 if round_number % 2 == 0 else -1]:
                rps, rss = measure(kind, case, args.duration, args.baseline, args.tricorn_args.split())
                results[kind].append(rps)
                memory[kind].append(rss)
        t, p = statistics.median(results["tricorn"]), statistics.median(results["peer"])
        # Each round's pair ran back to back, so the ratio within a round is what drifts least.
        ratios = [a / b for a, b in zip(results["tricorn"], results["peer"], strict=True)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        mt, mp = statistics.median(memory["tricorn"]) / 1024, statistics.median(memory["peer"]) / 1024
        print(f"{case:20} {t:14,.0f} {p:12,.0f} {statistics.median(ratios):6.2f} {spread:>10}  "
              f"{mt:5.1f}/{mp:5.1f}  {'tricorn at ' + str(args.baseline) if args.baseline else CASES[case][3]}",
              flush=True)


if __name__ == "__main__":
    main()
