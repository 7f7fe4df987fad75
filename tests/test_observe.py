"""Seeing inside a running server: /metrics from the master, blocked-loop and slow-request stacks,
--request-timeout, and `tricorn ctl`. Real servers, real clients, and prometheus_client's parser."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from .conftest import ROOT, exchange, free_port


def scrape(port: int, accept: str | None = None) -> dict[str, float]:
    """Every sample of /metrics: "name{label=value,...}" → value (none while the master starts)."""
    headers = {"accept": accept} if accept else {}
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=5)
    except httpx.ConnectError:
        return {}
    assert response.status_code == 200
    parse = parse_openmetrics if accept else text_string_to_metric_families
    samples = {}
    for family in parse(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k not in ("pid", "worker"))
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            samples[key] = samples.get(key, 0) + sample.value
    return samples


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tricorn", "ctl", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def ask_as_nobody(path: Path) -> str:
    """Ask for the status as user 65534, from a forked child (the test's Python may not be theirs to run)."""
    child = os.fork()
    if not child:
        code = 4
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(b'{"command": "status"}\n')
                code = 0 if sock.recv(100) else 3
        except (ConnectionResetError, BrokenPipeError):  # closed before reading our request
            code = 3
        except PermissionError:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return {0: "answered", 2: "refused by the file mode", 3: "closed unanswered"}.get(
        os.waitstatus_to_exitcode(status), "failed")


def requests_total(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("tricorn_requests_total{"))


def test_metrics_add_up_every_worker_and_never_go_backwards(serve) -> None:
    metrics_port = free_port()
    server = serve("observe_apps:wsgi", "-w", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    server.wait_for(lambda: scrape(metrics_port).get("tricorn_workers") == 2, what="2 workers in /metrics")
    for _ in range(20):
        with httpx.Client() as client:  # a new connection each: the workers share them
            assert client.get(server.url + "/").status_code == 200
    refused, _ = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    assert [r.status for r in refused] == [400]  # refused before the app: counted as a 4xx
    samples = server.wait_for(lambda: (s := scrape(metrics_port)) and requests_total(s) == 21 and s,
                              what="21 requests counted")
    assert samples['tricorn_requests_total{interface=wsgi,status=2xx}'] == 20
    assert samples['tricorn_requests_total{interface=wsgi,status=4xx}'] == 1
    assert samples["tricorn_request_duration_seconds_count"] == 20
    assert samples["tricorn_queue_wait_seconds_count"] == 20
    assert samples['tricorn_request_duration_seconds_bucket{le=+Inf}'] == 20
    assert samples["tricorn_bytes_sent_total"] == 40  # "ok" twenty times
    assert samples["tricorn_wsgi_threads"] > 0 and samples["tricorn_event_loop_lag_seconds_count"] > 0
    assert samples["tricorn_worker_rss_bytes"] > 10 * 2**20  # two workers' RSS, summed here
    for name in ("tricorn_requests_in_flight", "tricorn_connections_open", "tricorn_websocket_connections_open",
                 "tricorn_wsgi_threads_busy", "tricorn_event_loop_blocks_total", "tricorn_request_timeouts_total"):
        assert name in samples, name

    # A worker killed with -9: its counts stay in the totals, and a successor is counted as a restart.
    os.kill(worker_pids(metrics_port)[0], signal.SIGKILL)
    after = server.wait_for(
        lambda: (s := scrape(metrics_port)) and s['tricorn_worker_restarts_total{reason=crash}'] == 1
        and s["tricorn_workers"] == 2 and s, what="the killed worker replaced")
    assert requests_total(after) == 21
    assert after["tricorn_request_duration_seconds_count"] == 20

    openmetrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics",
                            headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert requests_total(scrape(metrics_port, "application/openmetrics-text")) == 21
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/").status_code == 404
    assert httpx.post(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 405


def test_metrics_on_a_unix_socket_with_one_worker(serve, tmp_path: Path) -> None:
    """--metrics-bind unix:PATH; and one worker gets a master, which serves them."""
    path = tmp_path / "metrics.sock"
    server = serve("observe_apps:asgi", "--metrics-bind", f"unix:{path}")
    with httpx.Client() as client:  # one connection: a status past 599 does not end it
        assert [client.get(server.url + url).status_code for url in ("/", "/status/799", "/status/503")] == [
            200, 799, 503]
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        def counted() -> bool:
            try:
                text = client.get("http://metrics/metrics").text
            except httpx.TransportError:  # the master is still starting
                return False
            return ('tricorn_requests_total{interface="asgi",status="2xx"} 1' in text
                    and 'tricorn_requests_total{interface="asgi",status="5xx"} 1' in text
                    and "tricorn_request_duration_seconds_count 3" in text)
        server.wait_for(counted, what="the requests counted")
    assert "Booting worker" in server.stderr  # under a master
    assert "Traceback" not in server.stderr


def worker_pids(metrics_port: int) -> list[int]:
    """From the pid label of tricorn_worker_rss_bytes."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    return [int(s.labels["pid"]) for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "tricorn_worker_rss_bytes"]


def test_a_blocked_loop_is_logged_once_with_the_stack_that_blocks_it(serve) -> None:
    server = serve("observe_apps:asgi", "--block-warn", "200ms")
    assert httpx.get(server.url + "/block", timeout=10).status_code == 200
    server.wait_for(lambda: "Event loop ran again" in server.stderr, what="the end of the block")
    warnings = [line for line in server.stderr.splitlines() if "Event loop blocked" in line]
    assert len(warnings) == 1, server.stderr
    assert "WARNING" in warnings[0] and "serving GET /block" in warnings[0]
    assert "in hold_the_loop_half_a_second" in server.stderr
    # A quick request blocks nothing.
    assert httpx.get(server.url + "/", timeout=10).status_code == 200
    assert server.stderr.count("Event loop blocked") == 1


@pytest.mark.parametrize("app", ["observe_apps:asgi", "observe_apps:wsgi"])
def test_request_timeout_answers_504_and_logs_the_stack(serve, app: str) -> None:
    server = serve(app, "--request-timeout", "500ms", "--threads", "2")
    response = httpx.get(server.url + "/forever", timeout=10)
    assert response.status_code == 504
    assert response.headers["connection"] == "close"
    server.wait_for(lambda: "--request-timeout" in server.stderr, what="the timeout logged")
    function = "wait_far_too_long" if app.endswith("asgi") else "sleep_past_the_deadline"
    assert f"in {function}" in server.stderr, server.stderr
    if app.endswith("asgi"):
        server.wait_for(lambda: "cancelled" in server.records(), what="the app to see CancelledError")
    # The worker serves on: a WSGI thread takes the abandoned one's place.
    assert httpx.get(server.url + "/", timeout=10).text == "ok"
    assert httpx.get(server.url + "/", timeout=10).text == "ok"


@pytest.mark.parametrize("app", ["observe_apps:asgi", "observe_apps:wsgi"])
def test_a_slow_request_logs_its_stack_once_and_still_completes(serve, app: str) -> None:
    server = serve(app, "--slow-request", "300ms")
    response = httpx.get(server.url + "/slow", timeout=10)
    assert response.status_code == 200
    server.wait_for(lambda: "Slow request GET /slow" in server.stderr, what="the slow request logged")
    assert server.stderr.count("Slow request") == 1
    function = "sleep_past_the_deadline" if app.endswith("wsgi") else "asgi"
    assert f"in {function}" in server.stderr, server.stderr


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="tricorn-ctl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_ctl_status_workers_stacks_and_stop(serve, open_dir: Path) -> None:
    tmp_path = open_dir
    pid_file = tmp_path / "server.pid"
    server = serve("observe_apps:wsgi", "-w", "2", "--pid", str(pid_file))
    socket_path = tmp_path / "server.ctl"

    def status() -> dict:
        result = ctl("status", "--json", "--pid", str(pid_file))
        return json.loads(result.stdout)["status"] if result.stdout else {} | {"rc": result.returncode}

    first = server.wait_for(lambda: (s := status()) and s.get("workers") and all(
        w["state"] == "ready" for w in s["workers"]) and len(s["workers"]) == 2 and s, what="2 ready workers")
    assert first["master"] == server.proc.pid
    assert ctl("status", "--pid", str(pid_file)).returncode == 0
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600

    assert ctl("workers", "3", "--control-socket", str(socket_path)).returncode == 0
    server.wait_for(lambda: sum(w["state"] == "ready" for w in status().get("workers", [])) == 3,
                    what="a third worker")

    assert ctl("remove", "--pid", str(pid_file)).returncode == 0
    server.wait_for(lambda: len(status().get("workers", [])) == 2, what="back to two workers")
    before = {w["pid"] for w in status()["workers"]}
    assert ctl("reload", "--pid", str(pid_file)).returncode == 0  # as HUP: new workers, the old drained
    server.wait_for(lambda: (s := status()) and len(s.get("workers", [])) == 2 and s["generation"] == 1
                    and not {w["pid"] for w in s["workers"]} & before, what="a new generation")

    number = status()["workers"][-1]["worker"]
    stacks = ctl("stacks", str(number), "--pid", str(pid_file))
    assert stacks.returncode == 0
    assert f"--- worker {number} ---" in stacks.stdout and "(event loop)" in stacks.stdout
    assert "tricorn-wsgi-0" in stacks.stdout  # the app's threads too
    every = ctl("stacks", "--pid", str(pid_file))  # both workers, asked at once
    assert every.returncode == 0 and every.stdout.count("(event loop)") == 2, every.stdout
    missing = ctl("stacks", "9", "--pid", str(pid_file))
    assert missing.returncode == 1 and "no worker 9" in missing.stderr

    if os.getuid() == 0:  # another user may not use the socket: its mode says so, and the master checks
        assert ask_as_nobody(socket_path) == "refused by the file mode"
        socket_path.chmod(0o666)
        assert ask_as_nobody(socket_path) == "closed unanswered"
        assert ctl("status", "--pid", str(pid_file)).returncode == 0

    assert ctl("stop", "--graceful", "--pid", str(pid_file)).returncode == 0
    assert server.wait() == 0
    assert not socket_path.exists()
    gone = ctl("status", "--pid", str(pid_file))
    assert gone.returncode != 0 and "no control socket" in gone.stderr


def test_ctl_status_fails_while_a_worker_is_not_ready(serve, tmp_path: Path) -> None:
    """As a liveness or readiness probe: non-zero until every worker the master wants is ready."""
    socket_path, gate = tmp_path / "c.sock", tmp_path / "gate"
    metrics_port = free_port()
    server = serve("observe_apps:gated()", "--control-socket", str(socket_path),
                   "--metrics-bind", f"127.0.0.1:{metrics_port}", env={"TEST_GATE": str(gate)})
    server.wait_for(lambda: ctl("status", "--control-socket", str(socket_path)).returncode == 0,
                    what="the one worker ready")
    gate.touch()  # a worker starting from now on waits in the app's import
    assert ctl("add", "--control-socket", str(socket_path)).returncode == 0
    server.wait_for(lambda: "waiting" in server.records(), what="the second worker booting")
    booting = ctl("status", "--control-socket", str(socket_path))
    assert booting.returncode == 1 and "booting" in booting.stdout
    assert scrape(metrics_port)["tricorn_workers"] == 1  # a booting worker does not serve yet
    stacks = ctl("stacks", "--control-socket", str(socket_path)).stdout  # the ready one answers
    assert stacks.count("(event loop)") == 1 and "did not answer in 2s: still booting" in stacks, stacks
    gate.unlink()
    server.wait_for(lambda: ctl("status", "--control-socket", str(socket_path)).returncode == 0,
                    what="both workers ready")


def test_an_apps_prometheus_client_metrics_are_summed_over_workers_and_tidied(serve) -> None:
    metrics_port = free_port()
    server = serve("observe_apps:counted()", "-w", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}")
    server.wait_for(lambda: scrape(metrics_port).get("tricorn_workers") == 2, what="2 workers")
    for _ in range(10):
        with httpx.Client() as client:
            assert client.get(server.url + "/").text == "ok"
    server.wait_for(lambda: scrape(metrics_port).get("app_hits_total") == 10, what="the app's counter summed")
    directory = Path(server.records()[0])
    assert directory.is_dir() and str(directory).startswith(tempfile.gettempdir())
    old = {path.name for path in directory.iterdir()}

    server.proc.send_signal(signal.SIGHUP)  # every worker replaced
    server.wait_for(lambda: scrape(metrics_port).get("tricorn_worker_restarts_total{reason=reload}") == 2,
                    what="both workers replaced")
    assert scrape(metrics_port).get("app_hits_total") == 10  # the old workers' counts are kept
    left = {path.name for path in directory.iterdir()}
    assert not {name for name in old if not name.endswith("_archive.db")} & left, (old, left)
    assert server.stop() == 0
    assert not directory.exists()


def test_a_worker_with_most_threads_abandoned_is_replaced(serve) -> None:
    """WSGI threads cannot be stopped: past half the pool running abandoned requests, a successor
    takes over and the restart is counted as a timeout."""
    metrics_port = free_port()
    server = serve("observe_apps:wsgi", "--threads", "2", "--request-timeout", "300ms",
                   "--metrics-bind", f"127.0.0.1:{metrics_port}")
    server.wait_for(lambda: scrape(metrics_port).get("tricorn_workers") == 1, what="the worker under a master")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: httpx.get(server.url + "/forever", timeout=10).status_code, range(2)))
    assert answers == [504, 504]
    after = server.wait_for(
        lambda: (s := scrape(metrics_port)) and s.get("tricorn_worker_restarts_total{reason=timeout}") == 1
        and s.get("tricorn_workers") == 1 and s, what="the worker replaced")
    assert after["tricorn_request_timeouts_total"] == 2
    assert "More than half the threads run abandoned requests" in server.stderr
    assert httpx.get(server.url + "/", timeout=10).text == "ok"


def test_gauges_show_requests_threads_and_websockets_in_progress(serve) -> None:
    wsgi_metrics, asgi_metrics = free_port(), free_port()
    wsgi = serve("observe_apps:wsgi", "--threads", "4", "--metrics-bind", f"127.0.0.1:{wsgi_metrics}")
    asgi = serve("ws_apps:echo", "--metrics-bind", f"127.0.0.1:{asgi_metrics}")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(httpx.get, wsgi.url + "/forever", timeout=10)  # 3 s in the app
        busy = wsgi.wait_for(lambda: (s := scrape(wsgi_metrics)) and s.get("tricorn_requests_in_flight") == 1
                             and s, what="the request in flight")
        assert busy["tricorn_wsgi_threads_busy"] == 1 and busy["tricorn_wsgi_threads"] == 4
        assert busy["tricorn_connections_open"] == 1
        assert running.result().status_code == 200

    async def hold_a_websocket() -> None:
        async with connect(asgi.url.replace("http", "ws") + "/") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await asyncio.to_thread(asgi.wait_for, lambda: scrape(asgi_metrics).get(
                "tricorn_websocket_connections_open") == 1, 10.0, "the WebSocket counted")

    asyncio.run(hold_a_websocket())
    asgi.wait_for(lambda: scrape(asgi_metrics).get("tricorn_websocket_connections_open") == 0,
                  what="the WebSocket gone")
