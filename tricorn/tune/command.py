"""`tricorn tune`: the command line, the live progress, and what it writes."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..arguments import CommandParser, typed
from ..bench import scenario as scenarios
from ..bench import websocket
from ..config import default_threads, duration, size
from ..errors import ConfigError, UserError
from ..host.resources import raise_open_files_limit
from . import limits, report
from .engines import BuiltinEngine, LoadEngine
from .locust import LocustEngine, locustfile
from .model import MIB, Trial, TrialError
from .search import HEADROOM, Machine, Search, describe, plan_machine, reason
from .server_process import ServerCommand
from .trial import TrialRunner, Workload


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="tricorn tune",
        usage="tricorn tune APP [options] [-- tricorn options] | tricorn tune --cmd TEMPLATE [options]",
        description="Run the app under candidate configurations and recommend workers (and threads, for WSGI) "
        "from measurements: the most load sustained within the p99 target, in the memory limit.",
    )
    parser.add_argument("app", nargs="?", help="the application, module:attribute (served by tricorn)")
    parser.add_argument("--cmd", metavar="TEMPLATE",
                        help="tune another server: a command with {workers}, {port} and optionally {threads}, e.g. "
                        "\"gunicorn -w {workers} --threads {threads} -b 127.0.0.1:{port} app:app\"")
    add = parser.add_argument
    add("--url-path", default="/", metavar="PATH", help="the path to load (default /), without --scenario")
    add("--scenario", metavar="FILE", help="a tricorn bench scenario (TOML); its url is replaced")
    add("--websocket", action="store_true",
        help="load --url-path as a WebSocket that echoes: each connection upgrades once, then sends "
        "--message-size bytes and waits for the echo; throughput is round trips per second")
    add("--message-size", type=int, default=32, metavar="BYTES",
        help="--websocket: each message's size (default 32)")
    add("--p99", type=_duration, default=0.2, metavar="DURATION",
        help="latency target for the 99th percentile (default 200ms)")
    add("--max-errors", type=_fraction, default=0.001, metavar="SHARE",
        help="error budget: errors and 5xx answers per request (default 0.1%%)")
    add("--budget", type=_duration, default=300.0, metavar="DURATION", help="wall time for the whole search "
        "(default 5m)")
    add("--cpus", type=int, metavar="N", help="plan for this many CPUs (default: this machine's, less the load "
        "generator's share)")
    add("--memory", type=_size, metavar="SIZE", help="plan for this memory limit, e.g. 2g (default: cgroup limit, "
        "else RAM)")
    add("--sizes", type=_sizes, metavar="CPUS/MEM,...|FILE.toml",
        help="tune for each container size, e.g. 0.5/512m,1/1g,2/2g (or a TOML file with sizes = [...]): every "
        "trial's server runs in a cgroup with that CPU quota and memory limit (emulated by pinning where this "
        "machine allows no cgroup); the budget is shared between the sizes")
    add("--workers", type=_counts, metavar="N,N,...", help="only these worker counts (default: 1 to 2 × CPUs, "
        "at least 4)")
    add("--threads", type=_counts, metavar="N,N,...", help="only these thread counts, for a WSGI app (default: 1 "
        "to 128, doubling)")
    add("--step", type=_duration, default=3.0, metavar="DURATION", help="seconds each load step measures in a "
        "full trial (default 3s; screening steps take a third; at least four of one request's latency)")
    add("--start-timeout", type=_duration, default=30.0, metavar="DURATION", help="how long a server may take "
        "to answer its first request (default 30s)")
    parser.add_argument("--engine", choices=("builtin", "locust"), default="builtin",
                        help="what generates the load: tricorn bench's engine here (default), or a Locust cluster")
    parser.add_argument("--locust-master", metavar="URL", help="--engine locust: the master's web address, "
                        "e.g. http://10.0.0.5:8089")
    parser.add_argument("--locustfile", metavar="FILE", help="write the workload as a locustfile for the Locust "
                        "cluster, then exit")
    parser.add_argument("--json", metavar="FILE", help="write every trial and the recommendation as JSON")
    parser.add_argument("--report", metavar="FILE", help="write a self-contained HTML report with charts")
    parser.add_argument("--write", metavar="FILE", help="write the recommended workers/threads into this "
                        "tricorn.toml")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


_duration, _size, _sizes = typed(duration), typed(size), typed(limits.parse_sizes)


def _counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError("expected counts separated by commas, like 1,2,4") from None
    if counts[0] < 1:
        raise argparse.ArgumentTypeError("counts must be at least 1")
    return counts


def _fraction(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a fraction like 0.001 or a percentage like 0.1%") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("expected a share of requests below 100%")
    return value


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Tune's own options, and the tricorn options after `--` that every trial's server gets."""
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1:]
    return argv, []


def server_command(args: argparse.Namespace, extra: list[str]) -> tuple[ServerCommand, bool, str]:
    """The server to run, whether it takes threads, and what it serves (for the messages)."""
    if args.cmd:
        if args.app:
            raise ConfigError("give APP (served by tricorn) or --cmd (another server), not both")
        missing = [name for name in ("{workers}", "{port}") if name not in args.cmd]
        if missing:
            raise ConfigError(f"--cmd needs {' and '.join(missing)} in it, e.g. "
                              "\"gunicorn -w {workers} -b 127.0.0.1:{port} app:app\"")
        try:
            args.cmd.format(workers=1, threads=1, port=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"--cmd: bad placeholder {exc}; it may use {{workers}}, {{threads}} and {{port}}"
                              ) from None
        return ServerCommand(template=args.cmd), "{threads}" in args.cmd, args.cmd
    if not args.app:
        raise ConfigError("give the application to tune, like tricorn tune myapp:app, or --cmd for another server")
    checked = subprocess.run([sys.executable, "-m", "tricorn", "check", args.app, *extra],
                             capture_output=True, text=True)
    if checked.returncode != 0:
        lines = (checked.stderr or checked.stdout).strip().splitlines() or ["tricorn check failed"]
        raise ConfigError(f"the app does not start: {lines[-1].removeprefix('Error: ')}")
    match = re.search(r"is an? (\w+) application", checked.stdout)
    interface = match[1] if match else "asgi3"
    return ServerCommand(app=args.app, extra=tuple(extra)), interface == "wsgi", f"{args.app} ({interface})"


def requests_for(args: argparse.Namespace) -> Callable[[str], tuple[scenarios.Target, scenarios.Scenario]]:
    """Base URL → the target and the requests to send it: --scenario, else GET --url-path. A bad
    scenario file or path fails here, before any server starts."""
    if not args.url_path.startswith("/"):
        raise ConfigError(f"--url-path {args.url_path!r} must start with /")
    if args.websocket and (args.scenario or args.engine == "locust"):
        raise ConfigError("--websocket loads one echoing path with the builtin engine: drop --scenario and "
                          "--engine locust")
    if args.message_size < 0:
        raise ConfigError("--message-size cannot be negative")

    def make(url: str) -> tuple[scenarios.Target, scenarios.Scenario]:
        if args.scenario:
            return scenarios.load(args.scenario, url, {}, True)
        if args.websocket:  # http:// → ws://, https:// → wss://
            target = scenarios.Target.parse("ws" + url.removeprefix("http") + args.url_path)
            return target, websocket.scenario(args.message_size)
        target = scenarios.Target.parse(url + args.url_path)
        return target, scenarios.single(target, "GET", {}, b"", True)

    make("http://127.0.0.1:1")
    return make


def workload(args: argparse.Namespace, machine: Machine) -> Workload:
    return Workload(requests_for(args), args.url_path, args.p99 * 1000, args.max_errors, args.step,
                    machine.server_cores, args.start_timeout)


def result(target: str, machine: Machine, work: Workload, search: Search, pick: Trial | None,
           server: ServerCommand, engine: str, error: str = "") -> dict[str, Any]:
    snippet = ""
    recommendation = None
    if pick is not None:
        recommendation = measured(pick)
        snippet = toml_snippet(pick) if server.template is None else server.filled(pick.workers, pick.threads)
    return {
        "target": target,
        "recommendation": recommendation,
        "reason": reason(pick, search.trials) if pick else "",
        "snippet": snippet,
        "stop_reason": search.stop_reason,
        "thread_limit": search.thread_limit,
        "worker_limit": search.worker_limit,
        "error": error,
        "machine": {"cpus": machine.cpus, "cpus_why": machine.cpus_why, "memory_mb": round(machine.memory / MIB, 1),
                    "memory_why": machine.memory_why, "memory_budget_mb": round(machine.memory_budget / MIB, 1),
                    "headroom": HEADROOM, "server_cores": sorted(machine.server_cores or []),
                    "generator_cores": sorted(machine.generator_cores), "note": machine.note},
        "workload": {"p99_ms": work.p99_ms, "max_errors": work.max_errors, "step_s": work.step,
                     "budget_s": search.budget, "path": work.path, "engine": engine},
        "trials": [t.to_dict() for t in search.trials],
    }


def toml_snippet(pick: Trial) -> str:
    lines = [f"workers = {pick.workers}"]
    if pick.threads is not None:
        lines.append(f"threads = {pick.threads}")
    return "\n".join(lines) + "\n"


def write_toml(path: str, pick: Trial) -> None:
    """Set workers/threads in a tricorn.toml, keeping the rest of it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8") if file.exists() else ""
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    settings = {"workers": pick.workers, "threads": pick.threads}
    lines = text.splitlines()
    top = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    for key, value in settings.items():
        pattern = re.compile(rf"^\s*{key}\s*=")
        found = next((i for i in range(top) if pattern.match(lines[i])), None)
        if value is None:
            if found is not None:
                del lines[found]
                top -= 1
        elif found is not None:
            lines[found] = f"{key} = {value}"
        else:
            lines.insert(0 if key == "workers" else 1, f"{key} = {value}")
            top += 1
    try:
        file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


class Progress:
    """A rich progress bar over the budget, with the trial in progress; silent with -q."""

    def __init__(self, budget: float, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.console = Console(stderr=True)
        self.bar = None if quiet else Bar(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                          console=self.console, transient=True)
        self.budget = budget
        self.task = self.bar.add_task("starting", total=budget) if self.bar else None
        self.started = time.monotonic()

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def trial(self, trial: Trial) -> None:
        if self.bar is None or self.task is None:
            return
        elapsed = time.monotonic() - self.started
        if trial.status == "pending":  # about to run
            text = f"{trial.kind} {describe(trial)}"
        else:
            text = f"{trial.kind} {describe(trial)}: " + (
                f"{trial.throughput:,.0f} req/s, p99 {trial.p99_ms:,.0f} ms" if trial.throughput else trial.note)
            self.bar.console.print(f"  {text}")
        self.bar.update(self.task, completed=min(elapsed, self.budget), description=text)


def main(argv: Sequence[str]) -> int:
    own, extra = _split(list(argv))
    args = build_parser().parse_args(own)
    try:
        try:
            import rich  # noqa: F401
        except ImportError:
            raise ConfigError("tricorn tune needs rich: pip install 'tricorn[tune]'") from None
        if args.cpus is not None and args.cpus < 1:
            raise ConfigError("--cpus must be at least 1")
        if args.sizes and (args.cpus is not None or args.memory is not None):
            raise ConfigError("--sizes gives each size's CPUs and memory: drop --cpus and --memory")
        if args.sizes and args.write:
            raise ConfigError("--write takes one recommendation; with --sizes, copy the snippet for your size")
        if args.p99 <= 0 or args.step <= 0:
            raise ConfigError("--p99 and --step must be above 0")
        if extra and args.cmd:
            raise ConfigError("options after -- are for tricorn; with --cmd put them in the command")
        if args.threads and args.cmd and "{threads}" not in args.cmd:
            raise ConfigError("--threads: the --cmd template has no {threads} to put them in")
        if args.write and args.cmd:
            raise ConfigError("--write sets tricorn's settings; with --cmd, use the command printed at the end")
        if args.locustfile:
            return write_locustfile(args)
        if (args.engine == "locust") != bool(args.locust_master):
            raise ConfigError("--engine locust needs --locust-master URL (and --locust-master needs --engine locust)")
        if args.sizes:
            machines = [size_machine(size, args.sizes, generator=args.engine == "builtin") for size in args.sizes]
            machine = machines[-1]
        else:
            machine = plan_machine(args.cpus, args.memory, generator=args.engine == "builtin")
        raise_open_files_limit()  # for the generator's connections, and the servers' (inherited)
        server, threaded, target = server_command(args, extra)
        work = workload(args, machine)
        engine: LoadEngine
        if args.engine == "locust" and work.scenario("http://127.0.0.1:1")[1].has_pages:
            raise ConfigError("Locust does not fetch a page's assets (assets = true): drop --engine locust")
        if args.engine == "locust":
            engine = LocustEngine(args.locust_master, work.p99_ms)
            engine.check()
        else:
            engine = BuiltinEngine(len(machine.generator_cores))
            # The load processes fork from here: they inherit the generator's cores.
            os.sched_setaffinity(0, machine.generator_cores)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.sizes:
        return tune_sizes(args, machines, server, threaded, target, engine)
    return tune(args, machine, server, threaded, target, work, engine)


def write_locustfile(args: argparse.Namespace) -> int:
    _, scenario = requests_for(args)("http://127.0.0.1:1")  # Locust sets the host per trial
    _write(args.locustfile, locustfile(scenario, args.scenario or f"GET {args.url_path}"))
    print(f"wrote {args.locustfile}: start the cluster with it (locust -f {args.locustfile} --master; on each load "
          f"machine locust -f {args.locustfile} --worker --master-host HOST), then run tricorn tune with "
          "--engine locust --locust-master http://HOST:8089")
    return 0


def tune(args: argparse.Namespace, machine: Machine, server: ServerCommand, threaded: bool, target: str,
         work: Workload, engine: LoadEngine) -> int:
    from rich.console import Console

    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    if isinstance(engine, LocustEngine):
        cores = f"load from the Locust cluster at {engine.base}"
    elif machine.server_cores:
        cores = f"server on CPU {_cores(machine.server_cores)}, load generator on {_cores(machine.generator_cores)}"
    else:
        cores = machine.note
    out.print(f"tricorn tune {target}: {machine.cpus} CPU(s) ({machine.cpus_why}); memory "
              f"{machine.memory / MIB:,.0f} MiB ({machine.memory_why}), configurations up to "
              f"{HEADROOM:.0%} of it; {cores}")
    out.print(f"target: p99 ≤ {work.p99_ms:g} ms, errors ≤ {work.max_errors:.2%}; budget {args.budget:g}s")
    runner = TrialRunner(server, work, engine)
    error, code = "", 0
    with Progress(args.budget, args.quiet or not sys.stderr.isatty()) as progress:
        search = Search(runner, machine, threaded, args.budget, on_trial=progress.trial,
                        only_workers=args.workers, only_threads=args.threads,
                        another_server=server.template is not None)
        if search.estimate(quick=True) > args.budget:
            error = (f"a budget of {args.budget:g}s is too small for even one trial (about "
                     f"{search.estimate(quick=True):.0f}s each); raise --budget or shorten --step")
            code = 2
            pick = None
        else:
            pick, error, code = run_search(search)
    if search.trials:
        out.print(report.table(search.trials, pick))
    if search.stop_reason:
        out.print(f"stopped: {search.stop_reason}")
    summary = result(target, machine, work, search, pick, server, args.engine, error)
    if pick is not None:
        out.print(f"[bold]recommended: {summary['reason']}[/bold]")
        if pick.generator_bound:
            out.print(f"warning: {pick.note}")
        if server.template is None:
            out.print(f"tricorn.toml:\n{summary['snippet']}", end="")
        else:
            out.print(f"command: {summary['snippet']}")
    elif not error:
        error = "no recommendation: " + _why_none(search.trials)
        summary["error"], code = error, 1
    if error:
        print(f"Error: {error}", file=sys.stderr)
    try:
        if args.json:
            _write(args.json, json.dumps(summary, indent=1))
        if args.report:
            _write(args.report, report.html_report(summary, search.trials))
        if args.write and pick is not None:
            write_toml(args.write, pick)
            out.print(f"wrote {args.write}")
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return code or exc.exit_code
    return code


def run_search(search: Search) -> tuple[Trial | None, str, int]:
    """Run `search`: its pick; or, when a TrialError or Ctrl-C stopped it, none, the error and the
    exit code."""
    try:
        return search.run(), "", 0
    except TrialError as exc:
        return None, str(exc), 1
    except KeyboardInterrupt:
        search.stop_reason = "interrupted (Ctrl-C)"
        return None, "interrupted: the results so far are below", 130


def size_machine(size: limits.Size, sizes: list[limits.Size], generator: bool) -> Machine:
    """The cores a size's server is pinned to: the first `size.cores` of this process's; the load
    generator keeps those the largest size leaves."""
    available = sorted(os.sched_getaffinity(0))
    largest = max(s.cores for s in sizes)
    room = len(available) - (1 if generator else 0)
    if largest > room:
        kept = " with one kept for the load generator (or give --engine locust)" if generator else ""
        raise ConfigError(f"--sizes: {max(sizes, key=lambda s: s.cores).label} needs {largest} cores and this "
                          f"machine gives {len(available)}{kept}: sizes up to {room} CPUs fit")
    return Machine(size.cores, f"{size.cpus:g} CPU quota", size.memory, "the size's memory limit",
                   frozenset(available[:size.cores]), frozenset(available[largest:]) if generator else frozenset())


def tune_sizes(args: argparse.Namespace, machines: list[Machine], server: ServerCommand, threaded: bool,
               target: str, engine: LoadEngine) -> int:
    """A search per size, each trial's server in a cgroup of that size, and then tricorn's own
    defaults in it: the table of sizes, the JSON and the report."""
    from rich.console import Console

    share = args.budget / len(args.sizes)
    probe = TrialRunner(server, workload(args, machines[0]), engine)
    least = probe.expected_seconds(True) + (probe.expected_seconds(False) if server.template is None else 0.0)
    if share < least:
        print(f"Error: a budget of {args.budget:g}s gives each of {len(args.sizes)} sizes {share:.0f}s, too small for "
              f"a search and the defaults' trial (about {least:.0f}s); raise --budget", file=sys.stderr)
        return 2
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    cgroups = limits.Cgroups()
    if cgroups.kind:
        for name in cgroups.sweep():
            out.print(f"removed {name}, left by a tuner that was killed")
        limit_why = f"each trial's server runs in a cgroup of its size ({cgroups.kind})"
    else:
        limit_why = (f"emulated: no cgroup can be made here ({cgroups.why}); each size's server is pinned to its "
                     "cores (whole CPUs) and the memory is only a budget")
    sizes, trials_by_size, code = [], [], 0
    out.print(f"tricorn tune {target} for {len(args.sizes)} sizes: {limit_why}")
    for box, machine in zip(args.sizes, machines, strict=True):
        work = workload(args, machine)
        make_limit = (lambda box=box: cgroups.make(box)) if cgroups.kind else None
        runner = TrialRunner(server, work, engine, make_limit)
        reserve = runner.expected_seconds(False) if server.template is None else 0.0
        out.print(f"[bold]{box.label}[/bold]: server on CPU {_cores(machine.server_cores)}, "
                  f"target p99 ≤ {work.p99_ms:g} ms; budget {share:.0f}s")
        with Progress(share, args.quiet or not sys.stderr.isatty()) as progress:
            search = Search(runner, machine, threaded, max(0.0, share - reserve), on_trial=progress.trial,
                            only_workers=args.workers, only_threads=args.threads,
                            another_server=server.template is not None, with_defaults=server.template is None,
                            default_threads=default_threads(box.cores) if threaded else None)
            pick, error, code = run_search(search)
        defaults = search.defaults_trial
        out.print(report.table(search.trials, pick))
        summary = result(target, machine, work, search, pick, server, args.engine, error)
        if pick is not None:
            out.print(f"recommended for {box.label}: {summary['reason']}")
        elif not error:
            summary["error"] = error = "no recommendation: " + _why_none(search.trials)
        summary.update(label=box.label, cpus=box.cpus, memory_mb=round(box.memory / MIB),
                       limit="cgroup" if cgroups.kind else "emulated",
                       default=measured(defaults) if defaults is not None and defaults.status == "ok" else None)
        sizes.append(summary)
        trials_by_size.append(search.trials)
        if code:  # the app or the workload (no size would do better), or Ctrl-C
            break
    out.print(report.sizes_table(sizes))
    for summary in sizes:
        if summary["snippet"]:
            out.print(f"{summary['label']}, tricorn.toml:\n{summary['snippet']}", end="")
    whole = {"target": target, "limit_why": limit_why, "sizes": sizes}
    failed = [s for s in sizes if s["error"]]
    for summary in failed:
        print(f"Error: {summary['label']}: {summary['error']}", file=sys.stderr)
    try:
        if args.json:
            _write(args.json, json.dumps(whole, indent=1))
        if args.report:
            _write(args.report, report.sizes_report(whole, trials_by_size))
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return code or exc.exit_code
    return code or (1 if failed else 0)


def measured(trial: Trial) -> dict[str, Any]:
    """A configuration's numbers, as the JSON gives a recommendation."""
    return {"workers": trial.workers, "threads": trial.threads, "throughput": round(trial.throughput, 1),
            "p99_ms": round(trial.p99_ms, 2), "p50_ms": round(trial.p50_ms, 2),
            "rss_mb": round(trial.rss_total / MIB, 1), "command": trial.command}


def _why_none(trials: list[Trial]) -> str:
    ran = [t for t in trials if t.status in ("ok", "failed")]
    if not ran:
        return "no trial ran; raise --budget"
    if all(not t.fits for t in ran):
        return "none fits in the memory limit; raise --memory or lower the app's memory use"
    screened = [t for t in ran if t.status == "ok" and t.fits and t.kind == "screen"]
    if screened:
        best = max(screened, key=lambda t: t.throughput)
        return (f"the budget ran out before a full trial confirmed one (best screened: {describe(best)}, "
                f"{best.throughput:,.0f} req/s); raise --budget")
    if any(t.status == "ok" for t in ran):
        return "the budget ran out before the search confirmed a configuration; raise --budget"
    return f"{ran[0].note}; relax --p99 or --max-errors, or fix what fails"


def _cores(cores: frozenset[int] | None) -> str:
    values = sorted(cores or [])
    return ",".join(map(str, values))


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None

