"""Running a load: a Plan (target, scenario, load model, processes) run by the engine in one or
more processes, each second's results merged by a Collector (with the live line), and the summary
of the whole. `tricorn bench` (command.py) and `tricorn tune` both drive it."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import selectors
import signal
import ssl
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, Any, NoReturn

from ..errors import UserError
from ..host.eventloop import new_event_loop
from ..host.interrupts import held_interrupts
from . import scenario as scenarios
from .engine import LATE_MS, Engine, Load, Watch, Window
from .histogram import Histogram
from .websocket import WebSocketConnection

PERCENTILES = (50, 90, 99, 99.9)
CPU_BOTTLENECK = 0.9  # of one core, per process
LATE_SHARE = 0.01  # of the open loop's requests started late (LATE_MS): enough for its delays to reach the p99


@dataclass
class Plan:
    target: scenarios.Target
    scenario: scenarios.Scenario
    load: Load
    procs: int
    # Sampled by the first process as it starts and stops measuring (tune: the server's CPU time):
    # its rate over exactly the measured seconds, not the processes' start and the answers' drain.
    watch: Watch | None = None
    tls: ssl.SSLContext | None = None  # an https:// target's: whom to trust

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
    engine = Engine(plan.target, plan.scenario, plan.share(index), on_second, plan.watch if index == 0 else None,
                    plan.tls, WebSocketConnection if plan.target.websocket else None)
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
    window.pages, window.assets, window.asset_bytes = data["pages"], data["assets"], data["asset_bytes"]
    window.page_histogram = Histogram.from_dict(data["page_histogram"])
    window.asset_status = {int(k): v for k, v in data["asset_status"].items()}
    window.asset_errors = dict(data["asset_errors"])
    window.close_codes = {int(k): v for k, v in data["close_codes"].items()}
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
        sys.stderr.write(f"Error: load process {index} failed: {exc!r}\n")  # one write beside the other processes
        code = 1
    finally:
        os._exit(code)


def run_processes(plan: Plan, collector: Collector) -> None:
    """Fork --procs processes; each reports its seconds and its total as JSON lines on a pipe."""
    pipes: dict[int, IO[str]] = {}
    pids = []
    try:
        for index in range(plan.procs):
            read_fd, write_fd = os.pipe()
            pipes[read_fd] = os.fdopen(read_fd)
            with held_interrupts():
                pid = os.fork()
                if pid == 0:  # the parent ends it on Ctrl-C: it keeps SIGINT held
                    os.close(read_fd)
                    _child(plan, index, write_fd)
                pids.append(pid)
            os.close(write_fd)
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
        "url": f"{plan.target.origin}{plan.target.path}",
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
        **(_pages(total, elapsed) if plan.scenario.has_pages else {}),
        **({"websocket": {"round_trips": total.answered, "messages_per_s": 2 * total.answered / elapsed if elapsed
                          else 0.0, "close_codes": {str(k): v for k, v in sorted(total.close_codes.items())}}}
           if plan.target.websocket else {}),
    }


def _pages(total: Window, elapsed: float) -> dict[str, Any]:
    """A scenario with pages: the visits (page latency: until the page's last asset arrived) and
    their assets, counted apart from the requests."""
    h = total.page_histogram
    return {
        "pages": {"visits": total.pages, "rate": total.pages / elapsed if elapsed else 0.0,
                  "latency_ms": {"mean": h.mean / 1000, **{f"p{p:g}": h.percentile(p) / 1000 for p in PERCENTILES},
                                 "max": h.max / 1000}},
        "assets": {"answered": total.assets, "bytes": total.asset_bytes,
                   "status": {str(k): v for k, v in sorted(total.asset_status.items())},
                   "errors": dict(sorted(total.asset_errors.items())),
                   "error_count": sum(total.asset_errors.values())},
    }


def run(plan: Plan, collector: Collector) -> None:
    """Run `plan` to its end, in this process when it asks for one, else in forked processes."""
    if plan.procs == 1:
        result = run_engine(plan, 0, collector.second)
        collector.final(result["window"], result)
    else:
        run_processes(plan, collector)
