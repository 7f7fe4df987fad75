"""The search's decisions, given trial results: which configurations get a full trial. The servers
are left out here (tests/test_tune.py runs them end to end); a scripted runner answers each
configuration with a fixed throughput, so each decision is checked exactly."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tricorn.tune.model import Step, Trial
from tricorn.tune.search import Machine, Search


@dataclass
class ScriptedRunner:
    throughputs: dict[int, float]  # workers: req/s, for an async app (no threads)
    cores: int  # the server's
    busy: float = 0.95  # of the server's cores, at each trial's highest step
    search: Search | None = None  # the search that used it
    ran: list[tuple[str, int]] = field(default_factory=list)
    expected: dict[tuple[str, int], float] = field(default_factory=dict)  # where each trial was told to start
    default_workers: int = 1  # what a master left to its defaults chooses

    def run(self, trial: Trial, quick: bool = False, one_connection: bool = False, expected: float = 0.0) -> Trial:
        trial.workers = trial.workers or self.default_workers
        self.ran.append((trial.kind, trial.workers))
        self.expected[trial.kind, trial.workers] = expected
        trial.status, trial.throughput, trial.wall_s = "ok", self.throughputs[trial.workers], 1.0
        trial.steps = [Step(offered=trial.throughput, duration=1.0, throughput=trial.throughput, p50_ms=50.0,
                            p99_ms=100.0, requests=int(trial.throughput), errors=0, server_cpu=self.busy * self.cores,
                            generator_cpu=1.0, behind_ms=0.0, passed=True, server_idle=(1 - self.busy) * self.cores)]
        return trial

    def expected_seconds(self, quick: bool) -> float:
        return 1.0


EIGHT_CPUS = Machine(8, "--cpus", 1 << 34, "--memory", frozenset(range(8)), frozenset(range(8, 16)))
ONE_CPU = Machine(1, "--cpus", 1 << 34, "--memory", frozenset({0}), frozenset({1}))


def searched(machine: Machine, throughputs: dict[int, float], another_server: bool = True,
             busy: float = 0.95) -> ScriptedRunner:
    """`another_server`: --cmd, whose event loops are tried past busy cores."""
    runner = ScriptedRunner(throughputs, machine.cpus, busy)
    runner.search = Search(runner, machine, threaded=False, budget=600,
                           another_server=another_server)
    assert runner.search.run() is not None
    return runner


def confirmed(throughputs: dict[int, float]) -> list[int]:
    runner = searched(EIGHT_CPUS, throughputs)
    assert all(kind == "screen" for kind, _ in runner.ran[:3]), runner.ran
    return [workers for kind, workers in runner.ran if kind == "full"]


SCALING = {1: 15_000, 2: 27_000, 4: 59_000, 6: 84_000, 16: 94_000}


@pytest.mark.parametrize(("eight", "twelve", "full"), [
    # 12 workers screened within 10% of 8 but slower: it could only be picked by beating the
    # screens' ranking by more than TIE, which is not worth a full trial.
    (100_000, 95_000, [8]),
    # 12 screened faster, within TIE: 8 is picked as the cheaper, and 12's full trial decides.
    (100_000, 103_000, [8, 12]),
    # 12 faster by more than TIE: the climb moves to it; 8, cheaper and within 10%, gets one too.
    (100_000, 108_000, [12, 8]),
])
def test_a_runner_up_gets_a_full_trial_only_when_it_could_change_the_pick(
        eight: float, twelve: float, full: list[int]) -> None:
    assert confirmed({**SCALING, 8: eight, 12: twelve}) == full


def test_tricorns_own_event_loops_are_not_tried_past_busy_cores() -> None:
    """Measured on one core (benchmarks/workers.py one-core): tricorn's io_asgi served 0.99 of 1
    worker's rate with 2, 3 or 4 (its collector is set for many requests in flight)."""
    runner = searched(ONE_CPU, {1: 26_000, 2: 25_800, 3: 25_900, 4: 25_700}, another_server=False)
    assert runner.ran == [("screen", 1), ("full", 1)], runner.ran
    assert runner.search is not None and runner.search.worker_limit == 1
    assert "kept 95% of 1 CPU busy" in runner.search.stop_reason
    # An idle core (80% busy at the highest load) leaves room that more workers might fill.
    runner = searched(ONE_CPU, {1: 26_000, 2: 25_800, 3: 25_900, 4: 25_700}, another_server=False, busy=0.8)
    assert [w for kind, w in runner.ran if kind == "screen"] == [1, 2, 3], runner.ran


def test_small_gains_that_add_up_are_climbed_past_and_a_busy_event_loop_still_gets_more_workers() -> None:
    """Measured on one core (uvicorn with examples.tuning:io_asgi, wrk, interleaved): 1 worker kept
    the core 95% busy, yet 2 workers served 5% more and 4 workers 10% more: for another server's
    event loops (--cmd), neither the worker limit nor a climb that needs more than TIE per step may
    stop at 1."""
    runner = searched(ONE_CPU, {1: 21_000, 2: 22_000, 3: 23_500, 4: 23_700})
    assert runner.ran == [("screen", 1), ("screen", 2), ("screen", 3), ("screen", 4), ("full", 3), ("full", 4)]


def test_a_neighbour_that_screens_level_or_a_little_lower_is_looked_past() -> None:
    """1 → 2 workers gains a few percent on one core, which one screen can measure as a loss: the
    climb still looks at 3."""
    runner = searched(ONE_CPU, {1: 22_000, 2: 21_200, 3: 23_700, 4: 23_000})
    assert runner.ran == [("screen", 1), ("screen", 2), ("screen", 3), ("screen", 4), ("full", 3), ("full", 1)]
    # Clearly lower (by more than TIE): the climb stops there.
    runner = searched(ONE_CPU, {1: 22_000, 2: 20_000, 3: 30_000, 4: 30_000})
    assert runner.ran == [("screen", 1), ("screen", 2), ("full", 1)], runner.ran


def test_an_async_screen_starts_from_its_nearest_screened_neighbour_scaled_by_the_cpus_it_can_use() -> None:
    """The first screen probes; the next ones start where their neighbour's throughput, per CPU
    its workers can use, says they will be. Confirmations start from their own screens."""
    runner = searched(EIGHT_CPUS, {**SCALING, 8: 100_000, 12: 95_000})
    assert runner.ran[:4] == [("screen", 8), ("screen", 6), ("screen", 12), ("screen", 16)], runner.ran
    # 16 workers: from 12, the nearest, whose workers use the same 8 CPUs.
    assert runner.expected == {("screen", 8): 0.0, ("screen", 6): 100_000 * 6 / 8, ("screen", 12): 100_000,
                               ("screen", 16): 95_000, ("full", 8): 100_000}
    runner = searched(ONE_CPU, {1: 21_000, 2: 22_000, 3: 23_500, 4: 23_700})
    assert [runner.expected["screen", w] for w in (1, 2, 3, 4)] == [0.0, 21_000, 22_000, 23_500]


@pytest.mark.parametrize(("budget", "default_workers", "picked"), [
    (600, 1, "full"),  # the defaults tie with the search's pick: the one confirmed first stands
    (600, 3, "defaults"),  # the defaults (3 workers here) beat the only candidate searched: they are the pick
    (0.5, 3, None),  # no full trial fitted in the budget: the defaults alone are no recommendation
])
def test_tricorns_defaults_compete_with_what_the_search_confirmed(
        budget: float, default_workers: int, picked: str | None) -> None:
    runner = ScriptedRunner({1: 26_000, 3: 40_000}, cores=1, default_workers=default_workers)
    search = Search(runner, ONE_CPU, threaded=False, budget=budget, only_workers=[1], with_defaults=True)
    pick = search.run()
    assert search.defaults_trial is not None and search.defaults_trial.status == "ok"
    assert runner.ran[-1] == ("defaults", default_workers)  # run last, whatever the budget left
    assert (pick.kind if pick else None) == picked, runner.ran
