#!/usr/bin/env python3
"""tricorn tune against the exhaustive grid, on the example apps whose best configuration theory
predicts (examples/tuning.py). For each app: every candidate configuration measured with a full
trial (the same procedure the tuner confirms with), then `tricorn tune` itself; the tuner's pick
is compared with the grid's best, and its wall time with the grid's.

Goal: the pick within 5% of the grid's best sustainable throughput, in ≤ 25% of the grid's time.

Run by hand (never in CI):  python benchmarks/tune.py [APP ...] --step 2 [--cpus N]
Where the pick is not the grid's best, both are measured again, interleaved (--rounds, default 3);
to re-measure any configurations of one app:
                            python benchmarks/tune.py APP --confirm 2x1 1x1 --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tricorn.bench import scenario as scenarios  # noqa: E402
from tricorn.config import size  # noqa: E402
from tricorn.host.resources import raise_open_files_limit  # noqa: E402
from tricorn.tune.engines import BuiltinEngine  # noqa: E402
from tricorn.tune.model import MIB, Trial  # noqa: E402
from tricorn.tune.search import THREADS, Machine, plan_machine, worker_counts  # noqa: E402
from tricorn.tune.server_process import ServerCommand  # noqa: E402
from tricorn.tune.trial import TrialRunner, Workload  # noqa: E402

APPS = {  # app: (threaded, tune options, environment)
    "cpu_wsgi": (True, [], {}),
    "io_wsgi": (True, [], {}),
    "io_asgi": (False, [], {}),
    "memory_wsgi": (True, ["--memory", "1g"], {"MEMORY_MB": "300"}),
}


# Before main() pins this script (and the load generator it runs) to the generator's cores: from
# inside that pin, the server would get the generator's core. main() plans again for --cpus.
ALL_CORES = frozenset(os.sched_getaffinity(0))
MACHINE = plan_machine()


def plan(memory: int | None) -> Machine:
    return MACHINE if memory is None else dataclasses.replace(MACHINE, memory=memory, memory_why="--memory")


def trial_runner(app: str, memory: int | None, step: float) -> tuple[TrialRunner, Machine]:
    machine = plan(memory)

    def make(url: str) -> tuple[scenarios.Target, scenarios.Scenario]:
        target = scenarios.Target.parse(url + "/")
        return target, scenarios.single(target, "GET", {}, b"", True)

    runner = TrialRunner(
        ServerCommand(app=f"examples.tuning:{app}"),
        Workload(make, "/", 200.0, 0.001, step, machine.server_cores),
        BuiltinEngine(len(machine.generator_cores)),
    )
    return runner, machine


def grid(app: str, threaded: bool, memory: int | None, step: float) -> tuple[list[Trial], float]:
    runner, machine = trial_runner(app, memory, step)
    trials, started = [], time.monotonic()
    for workers in worker_counts(machine.cpus):
        for threads in THREADS if threaded else [None]:
            trial = runner.run(Trial(workers, threads))
            trial.fits = trial.rss_total <= machine.memory_budget
            trials.append(trial)
            print(
                f"  grid {app} {trial.label}: {trial.throughput:,.0f} req/s, {trial.rss_total / MIB:,.0f} MiB"
                f"{'' if trial.fits else ' (does not fit)'}",
                file=sys.stderr,
            )
    return trials, time.monotonic() - started


def tuner(app: str, options: list[str], env: dict[str, str], step: float) -> tuple[dict[str, Any], float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        started = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tricorn",
                "tune",
                f"examples.tuning:{app}",
                "--step",
                f"{step}s",
                "--budget",
                "30m",
                "--json",
                out.name,
                "-q",
                *options,
            ],
            cwd=ROOT,
            check=True,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, ALL_CORES),  # the tuner splits the machine itself
        )
        return json.loads(Path(out.name).read_text()), time.monotonic() - started


def _memory(options: list[str]) -> int | None:
    return size(options[options.index("--memory") + 1]) if "--memory" in options else None


def remeasure(app: str, configs: list[Trial], step: float, rounds: int) -> list[list[float]]:
    """Measure a few configurations again, interleaved: a grid's single best run is the largest of
    many noisy samples, so it flatters the grid; this compares like with like."""
    _, options, env = APPS[app]
    os.environ.update(env)
    runner, _ = trial_runner(app, _memory(options), step)
    results: list[list[float]] = [[] for _ in configs]
    for _ in range(rounds):
        for config, values in zip(configs, results, strict=True):
            values.append(runner.run(Trial(config.workers, config.threads)).throughput)
    for key in env:
        del os.environ[key]
    return results


def _parse(config: str) -> Trial:
    workers, _, threads = config.partition("x")
    return Trial(int(workers), int(threads) if threads else None)


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} req/s ({min(values):,.0f}–{max(values):,.0f})"


def confirm(app: str, configs: list[str], step: float, rounds: int) -> None:
    results = remeasure(app, [_parse(config) for config in configs], step, rounds)
    cells = [f"{config}: {_median(values)}" for config, values in zip(configs, results, strict=True)]
    print(f"| {app} | {' | '.join(cells)} | {rounds} rounds |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("apps", nargs="*", default=list(APPS))
    parser.add_argument("--step", type=float, default=2.0)
    parser.add_argument(
        "--confirm",
        nargs="+",
        metavar="WxT",
        help="re-measure these configurations of the "
        "one app given, interleaved, --rounds times (0: the table without re-measuring)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, help="plan for a server of this many CPUs (the tuner's --cpus); "
                        "the load generator gets the other cores")
    args = parser.parse_args()
    global MACHINE
    if args.cpus:
        MACHINE = plan_machine(args.cpus)
    machine = MACHINE
    raise_open_files_limit()
    os.sched_setaffinity(0, machine.generator_cores)
    if args.confirm:
        confirm(args.apps[0], args.confirm, args.step, args.rounds)
        return
    cpus = f" --cpus {args.cpus}" if args.cpus else ""
    print(
        f"`python benchmarks/tune.py --step {args.step:g}{cpus}`; {machine.cpus_why}; server on CPU "
        f"{sorted(machine.server_cores or [])}, load generator on {sorted(machine.generator_cores)}.\n"
    )
    print(
        "| app | grid best | grid time | tuner pick | pick measured (tuner / grid) | vs best | tuner time "
        f"| share of grid time | trials | re-measured, {args.rounds} rounds interleaved: best / pick (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for app in args.apps:
        threaded, options, env = APPS[app]
        os.environ.update(env)
        trials, grid_time = grid(app, threaded, _memory(options), args.step)
        for key in env:
            del os.environ[key]
        fitting = [t for t in trials if t.fits and t.status == "ok"]
        best = max(fitting, key=lambda t: t.throughput)
        result, tune_time = tuner(app, [*options, *(["--cpus", str(args.cpus)] if args.cpus else [])], env, args.step)
        rec = result["recommendation"]
        same = next(t for t in trials if (t.workers, t.threads) == (rec["workers"], rec["threads"]))
        ran = [t for t in result["trials"] if t["status"] in ("ok", "failed")]
        pick = Trial(rec["workers"], rec["threads"]).label
        again = "the same configuration"
        if pick != best.label and args.rounds:
            best_again, pick_again = remeasure(app, [best, same], args.step, args.rounds)
            ratio = statistics.median(pick_again) / statistics.median(best_again)
            again = f"{_median(best_again)} / {_median(pick_again)}: **{ratio:.1%}**"
        print(
            f"| {app} | {best.label}: {best.throughput:,.0f} req/s | {grid_time:.0f}s ({len(trials)} trials) "
            f"| {pick} | {rec['throughput']:,.0f} / {same.throughput:,.0f} req/s "
            f"| {same.throughput / best.throughput:.1%} | {tune_time:.0f}s | {tune_time / grid_time:.0%} "
            f"| {len(ran)} ({sum(t['kind'] == 'screen' for t in ran)} screening) | {again} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
