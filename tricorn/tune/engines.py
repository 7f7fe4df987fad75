"""Where a trial's load comes from: the LoadEngine contract, and tricorn bench's own engine in
forked processes (locust.py has the Locust one)."""

from __future__ import annotations

from typing import Any, Protocol

from ..bench.engine import Load, Watch
from ..bench.runner import Collector, Plan, fell_behind, run_processes, summarize
from ..bench.scenario import Scenario, Target
from .server_process import UNVERIFIED


class LoadEngine(Protocol):
    def measure(self, target: Target, scenario: Scenario, load: Load, watch: Watch | None = None) -> dict[str, Any]:
        """Offer `load`; the numbers in `tricorn bench --json`'s shape, plus generator_saturated,
        and where the engine can, "watched": how fast what `watch()` returns grew while it measured."""


class BuiltinEngine:
    """tricorn bench's engine, in processes forked from here (on the generator's cores)."""

    def __init__(self, procs: int) -> None:
        self.procs = procs

    def measure(self, target: Target, scenario: Scenario, load: Load, watch: Watch | None = None) -> dict[str, Any]:
        plan = Plan(target, scenario, load, self.procs, watch, UNVERIFIED if target.secure else None)
        collector = Collector(plan.procs, None)
        run_processes(plan, collector)
        summary = summarize(plan, collector)
        summary["generator_saturated"] = fell_behind(summary["open_loop_late"], summary["requests"])
        summary["watched"] = collector.watched
        return summary
