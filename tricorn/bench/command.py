"""`tricorn bench`: the command line, the processes, the live line, the summary and --json."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import selectors
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any, NoReturn

from ..arguments import CommandParser, typed
from ..config import duration
from ..errors import ConfigError, UserError
from ..host.eventloop import new_event_loop
from ..host.resources import raise_open_files_limit
from . import scenario as scenarios
from .engine import LATE_MS, Engine, Load, ResolveError, Watch, Window
from .histogram import Histogram

PERCENTILES = (50, 90, 99, 99.9)
CPU_BOTTLENECK = 0.9  # of one core, per process
LATE_SHARE = 0.01  # of the open loop's requests started late (LATE_MS): enough for its delays to reach the p99


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="tricorn bench", description="Load-test any HTTP/1.1 server: closed loop (-c), open loop (--rate) "
        "or users with think time (--users), from a URL or a --scenario file.",
    )
    parser.add_argument("url", nargs="?", help="http://host:port/path (optional with a --scenario that has url)")
    parser.add_argument("-c", "--connections", type=int, default=None,
                        help="closed loop: connections (default 64); open loop: the most to open (default 1024)")
    parser.add_argument("-d", "--duration", type=_duration, default=None, help="how long to measure (default 10s)")
    parser.add_argument("-n", "--requests", type=int, default=0, help="stop after this many requests instead")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: start this many requests per second")
    parser.add_argument("--users", type=int, default=0, help="simulated users, each with its own connection")
    parser.add_argument("--spawn-rate", type=float, default=0.0, help="users started per second (default: all at once)")
    parser.add_argument("--think", type=_think, default=(0.0, 0.0), metavar="MIN-MAX",
                        help="a user's pause between requests, uniform in MIN-MAX (e.g. 3s-5s)")
    parser.add_argument("--scenario", metavar="FILE", help="TOML file of weighted requests and sequences")
    parser.add_argument("--warmup", type=_duration, default=0.0, help="load without measuring first (e.g. 2s)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a request header; repeatable")
    parser.add_argument("-m", "--method", default="GET")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body", default="", help="request body")
    body.add_argument("--body-file", metavar="FILE", help="request body from a file")
    parser.add_argument("--timeout", type=_duration, default=10.0, help="a request unanswered this long is an error")
    parser.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                        help="a new connection per request")
    parser.add_argument("--procs", type=int, default=1, help="processes generating load (one core each)")
    parser.add_argument("--json", metavar="FILE", help="write every result, with the per-second series, as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no live line")
    return parser


_duration = typed(duration)


def _think(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    try:
        pair = (duration(low), duration(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError("expected MIN-MAX durations, like 3s-5s") from None
    if pair[0] > pair[1]:
        raise argparse.ArgumentTypeError("MIN is above MAX")
    return pair


@dataclass
class Plan:
    target: scenarios.Target
    scenario: scenarios.Scenario
    load: Load
    procs: int
    # Sampled by the first process as it starts and stops measuring (tune: the server's CPU time):
    # its rate over exactly the measured seconds, not the processes' start and the answers' drain.
    watch: Watch | None = None

    def share(self, index: int) -> Load:
        """Process `index`'s part of the load."""
        n, load = self.procs, self.load

        def part(total: int) -> int:
            return total // n + (1 if index < total % n else 0)

        return Load(
            load.mode, connections=max(1, part(load.connections)), rate=load.rate / n, users=part(load.users),
            spawn_rate=load.spawn_rate / n, think=load.think, duration=load.duration,
            requests=part(load.requests) if load.requests else 0, warmup=load.warmup, timeout=load.timeout,
            keepalive=load.keepalive,
        )


def plan(args: argparse.Namespace) -> Plan:
    headers: dict[str, str] = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"-H {header!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    if args.body_file:
        try:
            with open(args.body_file, "rb") as f:
                body: bytes = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read --body-file {args.body_file}: {exc.strerror}") from None
    else:
        body = args.body.encode()
    if args.scenario:
        target, scenario = scenarios.load(args.scenario, args.url, headers, args.keepalive)
    elif args.url:
        target = scenarios.Target.parse(args.url)
        scenario = scenarios.single(target, args.method, headers, body, args.keepalive)
    else:
        raise ConfigError("give a URL to load, like tricorn bench http://127.0.0.1:8000/, or --scenario FILE")
    if args.rate and args.users:
        raise ConfigError("--rate (open loop) and --users (user model) are different models: choose one")
    for flag, value in (("-c", args.connections), ("--procs", args.procs), ("--users", args.users or None)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1")
    if args.requests < 0 or args.rate < 0 or args.spawn_rate < 0:
        raise ConfigError("-n, --rate and --spawn-rate cannot be negative")
    if args.requests and args.duration is not None:
        raise ConfigError("-d and -n both say when to stop: give one")
    mode = "open" if args.rate else "users" if args.users else "closed"
    if mode != "users" and (args.spawn_rate or args.think != (0.0, 0.0)):
        raise ConfigError("--spawn-rate and --think apply to --users")
    connections = args.connections or (1024 if mode == "open" else 64)
    if mode == "closed" and args.requests and args.requests < connections:
        connections = args.requests
    procs = max(1, min(args.procs, connections if mode == "closed" else args.users if mode == "users" else args.procs))
    load = Load(
        mode, connections=connections, rate=args.rate, users=args.users, spawn_rate=args.spawn_rate,
        think=args.think, duration=10.0 if args.duration is None else args.duration, requests=args.requests,
        warmup=args.warmup, timeout=args.timeout, keepalive=args.keepalive,
    )
    if not load.requests and load.duration <= 0:
        raise ConfigError("-d must be above 0")
    return Plan(target, scenario, load, procs)


# results -------------------------------------------------------------------------------------

@dataclass
class Second:
    answered: int = 0
    errors: int = 0
    bytes: int = 0
    histogram: Histogram = field(default_factory=Histogram)
    cpu: list[float] = field(default_factory=list)
    behind_ms: float = 0.0
    reports: int = 0


class Collector:
    """Merges what each process measured, per second and in total, and shows the live line."""

    def __init__(self, procs: int, live: IO[str] | None) -> None:
        self.procs = procs
        self.live = live
        self.seconds: dict[int, Second] = {}
        self.total = Window()
        self.cpu: list[float] = []
        self.behind_ms = 0.0
        self.late = 0
        self.waited = 0
        self.elapsed = 0.0
        self.finals = 0
        self.errors_seen = 0
        self.watched: list[float] = []  # Plan.watch's rates

    def second(self, number: int, window: Window, cpu: float, behind_ms: float) -> None:
        entry = self.seconds.setdefault(number, Second())
        entry.answered += window.answered
        entry.errors += sum(window.errors.values())
        entry.bytes += window.bytes
        entry.histogram.merge(window.histogram)
        entry.cpu.append(cpu)
        entry.behind_ms = max(entry.behind_ms, behind_ms)
        entry.reports += 1
        if entry.reports == self.procs and self.live is not None:
            self.errors_seen += entry.errors
            h = entry.histogram
            line = (f"{number + 1:>5}s {entry.answered:>9,} req/s  p50 {h.percentile(50) / 1000:7.2f} ms  "
                    f"p99 {h.percentile(99) / 1000:7.2f} ms  errors {self.errors_seen:,}")
            end = "\r" if self.live.isatty() else "\n"
            self.live.write(line + end)
            self.live.flush()

    def final(self, window: Window, result: dict[str, Any]) -> None:
        """One process's total, and the rest of what run_engine returned."""
        self.total.merge(window)
        self.cpu.extend(result["cpu"])
        self.behind_ms = max(self.behind_ms, result["behind_ms"])
        self.late += result["late"]
        self.waited += result["waited"]
        self.elapsed = max(self.elapsed, result["elapsed"])
        self.watched = result["watched"] or self.watched
        self.finals += 1


def run_engine(plan: Plan, index: int, on_second: Callable[[int, Window, float, float], None]) -> dict[str, Any]:
    loop = new_event_loop("auto")
    asyncio.set_event_loop(loop)
    engine = Engine(plan.target, plan.scenario, plan.share(index), on_second, plan.watch if index == 0 else None)
    # A collector pause would be charged to the server as latency (the open loop counts from due
    # times), and the engine makes no reference cycles worth collecting during a run.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        total = loop.run_until_complete(engine.run())
    finally:
        gc.enable()
        loop.close()
    return {"window": total, "cpu": engine.cpu_samples, "behind_ms": engine.behind_ns / 1e6, "late": engine.late,
            "waited": engine.waited, "elapsed": engine.elapsed, "watched": engine.watched}


def _window_from(data: dict[str, Any]) -> Window:
    window = Window()
    window.issued, window.answered, window.bytes = data["issued"], data["answered"], data["bytes"]
    window.status = {int(k): v for k, v in data["status"].items()}
    window.errors = dict(data["errors"])
    window.names = dict(data["names"])
    window.histogram = Histogram.from_dict(data["histogram"])
    return window


def _child(plan: Plan, index: int, write_fd: int) -> NoReturn:
    code = 0
    try:
        out = os.fdopen(write_fd, "w")

        def send(number: int, window: Window, cpu: float, behind: float) -> None:
            out.write(json.dumps({"second": number, "window": window.to_dict(), "cpu": cpu,
                                  "behind_ms": behind}) + "\n")
            out.flush()

        result = run_engine(plan, index, send)
        result["window"] = result["window"].to_dict()
        out.write(json.dumps({"final": result}) + "\n")
        out.flush()
    except BaseException as exc:  # the parent then reports a missing process
        print(f"Error: load process {index} failed: {exc!r}", file=sys.stderr)
        code = 1
    finally:
        os._exit(code)


def run_processes(plan: Plan, collector: Collector) -> None:
    """Fork --procs processes; each reports its seconds and its total as JSON lines on a pipe."""
    pipes: dict[int, IO[str]] = {}
    pids = []
    for index in range(plan.procs):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(plan, index, write_fd)
        os.close(write_fd)
        pids.append(pid)
        pipes[read_fd] = os.fdopen(read_fd)
    try:
        _collect(pipes, collector)
    except BaseException:  # Ctrl-C: the load stops with us
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        raise
    finally:
        for pipe in pipes.values():
            pipe.close()
        for pid in pids:
            os.waitpid(pid, 0)
    if collector.finals != plan.procs:
        raise UserError(f"{plan.procs - collector.finals} load process(es) failed; see the errors above")


def _collect(pipes: dict[int, IO[str]], collector: Collector) -> None:
    with selectors.DefaultSelector() as selector:
        for fd in pipes:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                line = pipes[key.fd].readline()
                if not line:
                    selector.unregister(key.fd)
                    continue
                message = json.loads(line)
                if "final" in message:
                    final = message["final"]
                    collector.final(_window_from(final["window"]), final)
                else:
                    collector.second(message["second"], _window_from(message["window"]), message["cpu"],
                                     message["behind_ms"])


def fell_behind(late: int, issued: int) -> bool:
    """The open loop started enough of its requests late for its own delays to show in the p99:
    one late start (a stall of the machine) does not make a generator too slow."""
    return late > LATE_SHARE * issued


def summarize(plan: Plan, collector: Collector) -> dict[str, Any]:
    total, load = collector.total, plan.load
    h = total.histogram
    elapsed = collector.elapsed or load.duration
    warnings = []
    cpu = statistics.fmean(collector.cpu) if collector.cpu else 0.0
    if cpu >= CPU_BOTTLENECK and load.mode != "open":  # the open loop polls near due times: busy by design
        warnings.append(f"the load generator used {cpu:.0%} of a core per process: it may be the bottleneck, "
                        f"not the server; add --procs (now {plan.procs}) if cores are free")
    if fell_behind(collector.late, total.issued):
        warnings.append(f"the open loop started {collector.late / total.issued:.1%} of its requests more than "
                        f"{LATE_MS:g} ms late (up to {collector.behind_ms:,.0f} ms): the generator could not keep to "
                        "its schedule, and its delays count in the latency; lower --rate or add --procs")
    if collector.waited:
        warnings.append(f"{collector.waited:,} requests waited for a free connection (all {load.connections} busy): "
                        "their wait counts in the latency")
    series = []
    for number in sorted(collector.seconds):
        s = collector.seconds[number]
        series.append({"second": number + 1, "answered": s.answered, "errors": s.errors, "bytes": s.bytes,
                       "p50_ms": s.histogram.percentile(50) / 1000, "p99_ms": s.histogram.percentile(99) / 1000,
                       "cpu": round(max(s.cpu), 3) if s.cpu else 0.0, "behind_ms": s.behind_ms})
    return {
        "url": f"http://{plan.target.authority}{plan.target.path}",
        "load": {**asdict(load), "procs": plan.procs},
        "requests": total.issued,
        "answered": total.answered,
        "errors": dict(sorted(total.errors.items())),
        "error_count": sum(total.errors.values()),
        "status": {str(k): v for k, v in sorted(total.status.items())},
        "by_request": dict(sorted(total.names.items(), key=lambda item: -item[1])),
        "bytes": total.bytes,
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": total.answered / elapsed if elapsed else 0.0,
        "latency_ms": {
            "mean": h.mean / 1000, "min": h.min / 1000,
            **{f"p{p:g}": h.percentile(p) / 1000 for p in PERCENTILES}, "max": h.max / 1000,
        },
        "generator_cpu": round(cpu, 3),
        "open_loop_behind_ms": round(collector.behind_ms, 3),
        "open_loop_late": collector.late,
        "waited_for_connection": collector.waited,
        "warnings": warnings,
        "series": series,
        "histogram_us": total.histogram.to_dict(),
    }


def render(summary: dict[str, Any]) -> str:
    load = summary["load"]
    model = {"closed": f"closed loop, {load['connections']} connections",
             "open": f"open loop, {load['rate']:,g} req/s (at most {load['connections']} connections)",
             "users": f"{load['users']} users, think {load['think'][0]:g}-{load['think'][1]:g}s"}[load["mode"]]
    latency = summary["latency_ms"]
    errors = ", ".join(f"{k} {v:,}" for k, v in summary["errors"].items()) or "none"
    status = ", ".join(f"{k}: {v:,}" for k, v in summary["status"].items()) or "none"
    lines = [
        f"tricorn bench {summary['url']}: {model}, {load['procs']} process(es)",
        f"  requests    {summary['requests']:,} = {summary['answered']:,} answered + {summary['error_count']:,} errors"
        f" in {summary['elapsed_s']:.2f}s",
        f"  throughput  {summary['throughput_rps']:,.1f} req/s, "
        f"{summary['bytes'] / max(summary['elapsed_s'], 1e-9) / 1e6:,.2f} MB/s in",
        f"  latency ms  mean {latency['mean']:.3f}  p50 {latency['p50']:.3f}  p90 {latency['p90']:.3f}  "
        f"p99 {latency['p99']:.3f}  p99.9 {latency['p99.9']:.3f}  max {latency['max']:.3f}",
        f"  status      {status}",
        f"  errors      {errors}",
    ]
    if len(summary["by_request"]) > 1:
        lines.append("  by request  " + ", ".join(f"{k} {v:,}" for k, v in summary["by_request"].items()))
    lines.extend(f"  warning: {w}" for w in summary["warnings"])
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        the_plan = plan(args)
        raise_open_files_limit()  # a socket per connection
        collector = Collector(the_plan.procs, None if args.quiet else sys.stderr)
        started = time.monotonic()
        if the_plan.procs == 1:
            result = run_engine(the_plan, 0, collector.second)
            collector.final(result["window"], result)
        else:
            run_processes(the_plan, collector)
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")
        summary = summarize(the_plan, collector)
        summary["wall_s"] = round(time.monotonic() - started, 3)
    except ResolveError as exc:
        print(f"Error: {exc}; check the URL", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(render(summary))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=1)
        except OSError as exc:
            print(f"Error: cannot write --json {args.json}: {exc.strerror}", file=sys.stderr)
            return 1
    return 0

