"""The garbage collector's settings in real serving processes (tricorn/host/garbage.py)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

PYTHONS_THRESHOLD = int(subprocess.check_output(
    [sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"], text=True))


def gc_state(serve, *args: str, env: dict[str, str] | None = None) -> dict:
    server = serve("gc_apps:app", "--no-access-log", *args, env=env)
    response = httpx.get(server.url + "/", timeout=10)
    assert response.status_code == 200, server.stderr
    return response.json()


@pytest.mark.parametrize("args", [(), ("-w", "2"), ("-w", "2", "--preload")])
def test_workers_collect_less_often_and_freeze_the_loaded_app(serve, args: tuple[str, ...]) -> None:
    state = gc_state(serve, *args)
    assert state["threshold"] == 10_000
    assert state["app_frozen"] and state["frozen"] > 1000, state  # the app and everything imported with it


def test_a_threshold_of_zero_leaves_pythons_collector_alone(serve) -> None:
    state = gc_state(serve, "-w", "2", "--gc-threshold", "0")
    assert state == {**state, "threshold": PYTHONS_THRESHOLD, "frozen": 0, "app_frozen": False}


def test_the_threshold_is_configurable(serve) -> None:
    assert gc_state(serve, env={"TRICORN_GC_THRESHOLD": "50000"})["threshold"] == 50_000


def test_an_app_that_sets_its_own_threshold_keeps_it(serve) -> None:
    state = gc_state(serve, "-w", "2", env={"GC_APP_THRESHOLD": "1234"})
    assert state["threshold"] == 1234 and state["app_frozen"]


def test_a_closed_connection_is_freed_without_the_collector(serve) -> None:
    """A connection leaves no reference cycle behind: with the collector off, 200 closed
    connections leave none of their objects alive."""
    server = serve("gc_apps:live", "--no-access-log", env={"GC_APP_DISABLE": "1"})
    for _ in range(200):
        with httpx.Client() as client:  # a connection each
            assert client.get(server.url + "/", headers={"connection": "close"}).status_code == 200
    with httpx.Client() as client:
        counts = client.get(server.url + "/").json()
    # The asking connection's own objects (its HttpConnection, parser, cycle, request) at most.
    assert counts == {**counts, "HttpConnection": 1, "RequestParser": 1, "HttpCycle": 1}, counts
    assert counts["Request"] <= 2, counts
