"""tricorn bench against a real tricorn server and against small servers with known behaviour."""

from __future__ import annotations

import collections
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tricorn.bench import pages
from tricorn.host.interrupts import held_interrupts

from .conftest import APPS, ROOT


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tricorn", "bench", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def bench_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    result = bench(*args, "--json", str(out), "-q")
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


@pytest.fixture
def target() -> Iterator:
    """Start tests/apps/bench_targets.py in a mode on a pre-bound port; yields its URL."""
    procs = []

    def start(mode: str) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        port, fd = listener.getsockname()[1], listener.fileno()
        procs.append(subprocess.Popen([sys.executable, str(APPS / "bench_targets.py"), mode, str(fd)],
                                      pass_fds=[fd]))
        listener.close()
        return f"http://127.0.0.1:{port}/"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_histogram_error_is_bounded() -> None:
    import random

    from tricorn.bench.histogram import Histogram, bucket_bounds, bucket_of

    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 2)) for _ in range(50_000)]
    histogram, ordered = Histogram.of(values), sorted(values)
    for p in (1, 50, 90, 99, 99.9):
        exact = ordered[max(0, int(p / 100 * len(ordered)) - 1)]
        assert abs(histogram.percentile(p) - exact) <= exact * 0.008 + 1, (p, exact)
    assert histogram.percentile(100) == max(values) and histogram.mean == sum(values) / len(values)
    previous = -1
    for value in (*range(0, 5000), *range(10**6, 10**6 + 5000), 10**9):
        low, high = bucket_bounds(bucket_of(value))
        assert low <= value < high and (high - low) <= max(1, value * 0.008)
        assert bucket_of(value) >= previous
        previous = bucket_of(value)
    merged = Histogram.of(values[:100])
    merged.merge(Histogram.from_dict(Histogram.of(values[100:]).to_dict()))
    assert merged.counts == histogram.counts and merged.total == histogram.total


def test_closed_loop_counts_are_exact_against_tricorn(serve, tmp_path) -> None:
    server = serve("asgi_apps:app", "--no-access-log")
    result = bench_json(tmp_path, server.url + "/", "-c", "8", "-n", "3000")
    assert result["requests"] == result["answered"] == 3000
    assert result["errors"] == {} and result["status"] == {"200": 3000}
    assert result["load"]["mode"] == "closed" and result["load"]["connections"] == 8
    latency = result["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert sum(second["answered"] for second in result["series"]) == 3000


def test_percentiles_match_an_injected_delay(target, tmp_path) -> None:
    url = target("delay:20")
    result = bench_json(tmp_path, url, "-c", "4", "-d", "2s")
    latency = result["latency_ms"]
    # 20 ms of server delay plus loopback: the histogram is within 0.8%, the network adds little.
    # No request can be faster than the delay; the tail depends on the machine's load, the median not.
    assert latency["min"] >= 20.0 * 0.992 and 20.0 <= latency["p50"] <= 23.0, latency
    assert result["requests"] == result["answered"] + result["error_count"]
    # Four connections, one answer per 20 ms each: no more than that, and not far fewer (the generator
    # keeps every connection busy; the margin is for a loaded CI machine).
    assert 4 * 2 / 0.020 * 0.5 <= result["answered"] <= 4 * 2 / 0.020 * 1.05


def test_open_loop_holds_its_rate(serve, tmp_path) -> None:
    server = serve("asgi_apps:app", "--no-access-log")
    result = bench_json(tmp_path, server.url + "/", "--rate", "500", "-d", "3s")
    assert abs(result["requests"] - 1500) <= 1500 * 0.02, result["requests"]
    assert result["answered"] == result["requests"] and result["error_count"] == 0
    assert abs(result["throughput_rps"] - 500) <= 500 * 0.02


def test_watch_is_sampled_as_the_measurement_starts_and_ends(target, tmp_path) -> None:
    """tune reads the server's CPU over the measured seconds: not the load processes' start, nor
    the warmup, nor the wait for the last answers."""
    from tricorn.bench.engine import Load
    from tricorn.bench.runner import Collector, Plan, run_processes
    from tricorn.bench.scenario import Target, single

    url = target("delay:1000")
    calls = tmp_path / "calls"

    def watch() -> list[float]:
        now = time.monotonic()
        with calls.open("a") as f:  # the load process is forked: it reports through a file
            f.write(f"{now}\n")
        return [now, 1.0]

    parsed = Target.parse(url)
    plan = Plan(parsed, single(parsed, "GET", {}, b"", True), Load("open", rate=50, duration=1.0, warmup=0.5),
                procs=2, watch=watch)
    collector = Collector(plan.procs, None)
    began = time.monotonic()
    run_processes(plan, collector)
    ended = time.monotonic()
    first, last = (float(line) for line in calls.read_text().split())  # one process watches, twice
    assert first - began >= 0.5  # after the warmup
    assert 0.95 <= last - first <= 1.6  # the measured second, not the 1 s answers still owed
    assert ended - last >= 0.5
    rate, constant = collector.watched
    assert rate == pytest.approx(1.0, abs=0.05) and constant == 0.0


def test_open_loop_sees_a_stall_that_a_closed_loop_hides(target, tmp_path) -> None:
    """Coordinated omission: the server freezes for 200 ms every second."""
    url = target("stall")
    open_loop = bench_json(tmp_path, url, "--rate", "500", "-d", "3s")
    closed_loop = bench_json(tmp_path, url, "-c", "1", "-d", "3s")
    assert open_loop["latency_ms"]["p99"] >= 100, open_loop["latency_ms"]  # ~20% of due requests waited
    assert closed_loop["latency_ms"]["p99"] < 50, closed_loop["latency_ms"]  # 1 delayed request of thousands
    assert closed_loop["latency_ms"]["max"] >= 100  # the stall happened to it too
    # The server stalled, not the generator: its requests still left on time.
    assert open_loop["open_loop_late"] <= 0.01 * open_loop["requests"], open_loop
    assert not any("open loop started" in warning for warning in open_loop["warnings"]), open_loop["warnings"]


@pytest.mark.parametrize(("stop_s", "warned"), [(0.3, True), (0.02, False)])
def test_open_loop_says_when_the_generator_itself_was_late(target, tmp_path, stop_s: float, warned: bool) -> None:
    """The generator stopped (SIGSTOP) during a 5 s run at 500 req/s: the requests due meanwhile
    leave late. 300 ms (6% of the run) is enough to reach the p99, and the summary says the
    generator delayed them; 20 ms (0.4%) is a hiccup, seen but not worth a warning."""
    out = tmp_path / "result.json"
    proc = subprocess.Popen([sys.executable, "-m", "tricorn", "bench", target("delay:1"), "--rate", "500", "-d", "5s",
                             "--json", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stderr is not None
        assert "req/s" in proc.stderr.readline()  # the first measured second is over
        proc.send_signal(signal.SIGSTOP)
        time.sleep(stop_s)
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    result = json.loads(out.read_text())
    assert result["open_loop_behind_ms"] >= stop_s * 1000 * 0.8, result  # the stop was seen either way
    late = [w for w in result["warnings"] if "open loop started" in w and "could not keep to its schedule" in w]
    if warned:
        assert result["open_loop_late"] >= 100 and late, result
        assert "generator could not keep to its schedule" in stdout + stderr
    else:
        assert result["open_loop_late"] <= 0.01 * result["requests"] and not late, result


@pytest.mark.parametrize(("mode", "kinds"), [
    ("reset", {"reset", "closed"}), ("garbage", {"malformed"}), ("close-mid", {"closed"}),
])
def test_server_faults_are_errors_by_kind(target, tmp_path, mode: str, kinds: set[str]) -> None:
    result = bench_json(tmp_path, target(mode), "-c", "4", "-d", "1s")
    assert result["answered"] == 0 and result["error_count"] > 0
    assert set(result["errors"]) <= kinds, result["errors"]
    assert result["requests"] == result["error_count"]


@pytest.mark.parametrize(("mode", "size"), [("chunked", 11), ("close-delimited", 1000)])
def test_chunked_and_close_delimited_responses(target, tmp_path, mode: str, size: int) -> None:
    result = bench_json(tmp_path, target(mode), "-c", "2", "-n", "200")
    assert result["answered"] == result["requests"] == 200 and result["error_count"] == 0
    assert result["bytes"] >= 200 * size


def test_refused_connections_are_counted_not_fatal(tmp_path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    out = tmp_path / "refused.json"
    run = bench(f"http://127.0.0.1:{port}/", "-c", "2", "-d", "1s", "-q", "--json", str(out))
    assert run.returncode == 0 and not run.stderr, run.stderr  # no retry left pending for the loop's close
    result = json.loads(out.read_text())
    assert result["answered"] == 0 and set(result["errors"]) == {"refused"}
    assert result["requests"] == result["errors"]["refused"] > 0


def test_connections_beyond_the_soft_open_files_limit(target, tmp_path) -> None:
    """300 connections from a process allowed 128 open files: bench lifts its soft limit to the
    hard one (tune too: an open-loop step can hold thousands of connections in flight)."""
    url = target("delay:200")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= 400, f"the hard open-files limit ({hard}) is below the test's"
    out = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, "-m", "tricorn", "bench", url, "-c", "300", "-d", "1s", "--json", str(out), "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard)),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["error_count"] == 0, data["errors"]
    assert data["answered"] >= 300  # every connection answered at least once: 1500 in 1 s at best


def test_timeouts_are_errors(target, tmp_path) -> None:
    result = bench_json(tmp_path, target("delay:2000"), "-c", "2", "-d", "1s", "--timeout", "300ms")
    assert result["errors"].get("timeout", 0) >= 2 and result["answered"] == 0
    assert result["requests"] == result["error_count"]


def test_scenario_weights_and_sequences(serve, tmp_path) -> None:
    access = tmp_path / "access.log"
    server = serve("asgi_apps:app", "--access-logfile", str(access), "--access-logformat", "%(m)s %(U)s")
    scenario = tmp_path / "shop.toml"
    scenario.write_text(f'''
url = "{server.url}"
[defaults]
headers = {{ X-Test = "1" }}

[[task]]
name = "home"
weight = 5
path = "/"

[[task]]
name = "item"
weight = 3
path = "/items/{{random_int(1,50)}}"

[[task]]
name = "flow"
weight = 2
steps = [
    {{ name = "list", path = "/list" }},
    {{ name = "buy", method = "POST", path = "/buy", body = "id={{seq}}" }},
]
''')
    result = bench_json(tmp_path, "--scenario", str(scenario), "-c", "8", "-n", "12000")
    counts = result["by_request"]
    assert result["answered"] == 12000 == sum(counts.values())
    flows = 12000 / 12  # per 12 requests: 5 home, 3 item, 2 flows of 2 steps
    for name, share in (("home", 5), ("item", 3), ("list", 2), ("buy", 2)):
        assert abs(counts[name] - flows * share) <= flows * share * 0.03, counts
    log = access.read_text().splitlines()
    assert len(log) == 12000
    assert abs(sum(line.startswith("POST /buy") for line in log) - counts["buy"]) == 0
    assert len({line for line in log if line.startswith("GET /items/")}) > 20  # placeholders vary


def test_users_with_think_time(serve, tmp_path) -> None:
    server = serve("asgi_apps:app", "--no-access-log")
    result = bench_json(tmp_path, server.url + "/", "--users", "20", "--spawn-rate", "200",
                        "--think", "100ms-300ms", "-d", "3s")
    # Each user makes about one request per 0.2 s of thinking: 20 users, 100 req/s.
    assert 70 <= result["throughput_rps"] <= 110, result["throughput_rps"]
    assert result["requests"] == result["answered"] and result["error_count"] == 0


def test_no_keepalive_and_procs(serve, tmp_path) -> None:
    server = serve("asgi_apps:app", "--no-access-log")
    result = bench_json(tmp_path, server.url + "/", "-c", "4", "-n", "1000", "--no-keepalive", "--procs", "2")
    assert result["answered"] == result["requests"] == 1000 and result["load"]["procs"] == 2


def test_live_line_and_summary(serve) -> None:
    server = serve("asgi_apps:app", "--no-access-log")
    result = bench(server.url + "/", "-c", "2", "-d", "2s")
    assert result.returncode == 0
    assert len([line for line in result.stderr.splitlines() if "req/s" in line and "p99" in line]) == 2
    assert "latency ms  mean" in result.stdout and "status      200:" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("ftp://x/",), "is not an http(s):// or ws(s):// URL"),
    (("http://127.0.0.1:1/", "-d", "soon"), "argument -d/--duration: expected a duration"),
    (("http://127.0.0.1:1/", "--rate", "10", "--users", "2"), "different models"),
    (("http://127.0.0.1:1/", "-c", "0"), "-c must be at least 1"),
    (("http://127.0.0.1:1/", "-H", "novalue"), "expected 'Name: value'"),
    (("--scenario", "/nonexistent.toml"), "scenario file /nonexistent.toml not found"),
    ((), "give a URL to load"),
    (("http://127.0.0.1:1/", "--bogus"), "unrecognized arguments: --bogus"),
])
def test_bad_command_lines_are_one_line(args: tuple[str, ...], message: str) -> None:
    result = bench(*args)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and message in result.stderr and result.stderr.startswith("Error: ")


def test_unresolvable_host_is_one_line() -> None:
    result = bench("http://no-such-host.invalid/", "-d", "1s")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot resolve 'no-such-host.invalid'") and result.stderr.count("\n") == 1


# pages with their assets (assets = true) ------------------------------------------------------------

ASSETS = ("/static/site.css", "/static/app.js", "/static/big.png", "/favicon.ico", "/static/fonts/f.woff2",
          "/static/img/bg.png")  # what page_apps' page makes a browser fetch, besides one missing image


def page_scenario(tmp_path: Path, url: str, cache: bool) -> Path:
    scenario = tmp_path / "site.toml"
    scenario.write_text(f'url = "{url}"\n[[task]]\nname = "home"\npath = "/"\nassets = true\n'
                        f"cache = {'true' if cache else 'false'}\n")
    return scenario


def test_pages_fetch_their_assets_as_a_browser_would(serve, tmp_path) -> None:
    access = tmp_path / "access.log"
    form = "%(m)s %(U)s %(s)s %({cookie}i)s|%({if-none-match}i)s|%({if-modified-since}i)s"
    server = serve("page_apps:site", "--access-logfile", str(access), "--access-logformat", form)
    result = bench_json(tmp_path, "--scenario", str(page_scenario(tmp_path, server.url, cache=True)),
                        "-c", "2", "-n", "20")
    # Two users, ten visits each: the first fetches every asset, the next nine revalidate them.
    assert result["answered"] == 20 and result["pages"]["visits"] == 20, result
    assets = result["assets"]
    assert assets["status"] == {"200": 2 * 6, "304": 18 * 6, "404": 20} and assets["error_count"] == 0, assets
    assert assets["answered"] == 20 * 7 and assets["bytes"] > 2 * (1 << 20)  # the large image, twice
    assert result["pages"]["latency_ms"]["p50"] >= result["latency_ms"]["p50"]  # until the last asset

    lines = access.read_text().splitlines()
    assert len(lines) == 20 + 20 * 7
    seen = collections.Counter(line.split(" ", 3)[1] for line in lines)
    assert seen == {"/": 20, "/missing.png": 20, **{path: 20 for path in ASSETS}}, seen  # nothing else
    first_visits = [line for line in lines if line.startswith("GET / ") and "session=" not in line]
    assert len(first_visits) == 2  # after its first page, each user sends the cookie it was given
    assert all("session=s3cret" in line for line in lines if not line.startswith("GET / "))
    by_etag = [line for line in lines if '|"' in line]
    by_date = [line for line in lines if line.endswith("|Wed, 02 Dec 2026 10:00:00 GMT")]
    assert len(by_etag) == 18 * 5 and len(by_date) == 18  # the icon is validated by its Last-Modified
    assert all(" 304 " in line for line in by_etag + by_date)


def test_pages_without_cache_fetch_everything_each_visit(serve, tmp_path) -> None:
    access = tmp_path / "access.log"
    server = serve("page_apps:site", "--access-logfile", str(access), "--access-logformat", "%(U)s %(s)s")
    result = bench_json(tmp_path, "--scenario", str(page_scenario(tmp_path, server.url, cache=False)),
                        "--users", "3", "--think", "0-0.01", "-d", "1", "--procs", "2")
    visits = result["pages"]["visits"]
    assert visits > 0 and result["assets"]["status"] == {"200": visits * 6, "404": visits}, result
    log = access.read_text().splitlines()
    assert sum(line == "/static/big.png 200" for line in log) >= visits  # each visit fetched it again


@pytest.mark.parametrize(("html", "expected"), [
    ('<link rel="stylesheet" href="a.css"><link rel="alternate" href="/feed">', ["/dir/a.css"]),
    ('<script src="/x.js"></script><script>inline()</script>', ["/x.js"]),
    ('<img srcset="/s.png 1x, /l.png 2x"><img src="//cdn.example/i.png"><img src="data:,">', ["/s.png"]),
    ('<link rel="preload" as="font" href="/f.woff2"><link rel="icon" href="/i.ico"><img src="/i.ico">',
     ["/f.woff2", "/i.ico"]),
    ('<video poster="/p.jpg" src="/v.mp4"></video><a href="/page">x</a><img src="/q.png?v=2#top">',
     ["/v.mp4", "/p.jpg", "/q.png?v=2"]),
])
def test_which_references_are_assets(html: str, expected: list[str]) -> None:
    assert pages.html_assets(html, "http://127.0.0.1:8000/dir/page") == expected


def test_a_stylesheets_imports_fonts_and_images() -> None:
    css = '@import "base.css"; @font-face { src: url(/f.woff2) } a { background: url("img/b.png") } ' \
          'b { background: url(data:image/png;base64,AA) } c { background: url(http://other.example/x.png) }'
    assert pages.css_assets(css, "http://h:1/static/site.css") == ["/static/base.css", "/f.woff2",
                                                                   "/static/img/b.png"]


@pytest.mark.parametrize(("task", "message"), [
    ('path = "/"\nassets = "yes"', "assets must be true or false"),
    ('path = "/"\ncache = true', "cache = true revalidates a page's assets; add assets = true"),
    ('path = "/"\nasset = true', "unknown key 'asset'"),
])
def test_bad_page_keys_are_one_line(tmp_path, task: str, message: str) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(f'url = "http://127.0.0.1:1"\n[[task]]\n{task}\n')
    result = bench("--scenario", str(scenario), "-n", "1")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


# https:// ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1 from it, made for these tests (trustme)."""
    import trustme

    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {name: root / f"{name}.pem" for name in ("ca", "cert", "key", "junk")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    files["junk"].write_text("not a certificate\n")
    return files


def serve_tls(serve, tls_files: dict[str, Path], app: str, *args: str) -> str:
    """The https:// URL of a tricorn serving `app` with the certificate."""
    server = serve(app, "--certfile", str(tls_files["cert"]), "--keyfile", str(tls_files["key"]), *args)
    return server.url.replace("http://", "https://")


def test_https_counts_are_exact_and_an_untrusted_server_is_an_error_by_kind(serve, tls_files, tmp_path) -> None:
    url = serve_tls(serve, tls_files, "asgi_apps:app", "--no-access-log")
    trusted = bench_json(tmp_path, url + "/", "--cacert", str(tls_files["ca"]), "-c", "8", "-n", "2000")
    assert trusted["url"].startswith("https://") and trusted["answered"] == 2000 == trusted["requests"]
    assert trusted["error_count"] == 0 and trusted["status"] == {"200": 2000}
    untrusted = bench_json(tmp_path, url + "/", "-c", "2", "-n", "10")  # the system's CAs do not know ours
    assert untrusted["answered"] == 0 and untrusted["errors"] == {"tls-verify": 10}, untrusted
    insecure = bench_json(tmp_path, url + "/", "-k", "-c", "2", "-n", "10")
    assert insecure["answered"] == 10


def test_https_pages_fetch_their_assets_over_tls(serve, tls_files, tmp_path) -> None:
    url = serve_tls(serve, tls_files, "page_apps:site", "--no-access-log")
    result = bench_json(tmp_path, "--scenario", str(page_scenario(tmp_path, url, cache=True)),
                        "--cacert", str(tls_files["ca"]), "-c", "2", "-n", "10")
    assert result["pages"]["visits"] == 10 and result["assets"]["answered"] == 70, result
    assert result["assets"]["error_count"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (("https://127.0.0.1:1/", "--cacert", "{junk}"), "cannot load --cacert"),
    (("https://127.0.0.1:1/", "--cacert", "{missing}"), "cannot load --cacert"),
    (("http://127.0.0.1:1/", "-k"), "--cacert and --insecure are for https:// and wss:// URLs"),
])
def test_bad_tls_options_are_one_line(tls_files, tmp_path, args: tuple[str, ...], message: str) -> None:
    given = [a.format(junk=tls_files["junk"], missing=tmp_path / "nope.pem") for a in args]
    result = bench(*given, "-n", "1")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


# ws:// and wss:// ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 16384])
def test_websocket_round_trips_are_exact_against_tricorn(serve, tmp_path, size: int) -> None:
    server = serve("ws_apps:echo", "--no-access-log")
    url = server.url.replace("http://", "ws://") + "/"
    result = bench_json(tmp_path, url, "-c", "8", "-n", "2000", "--message-size", str(size))
    assert result["answered"] == 2000 == result["requests"] and result["error_count"] == 0, result
    assert result["websocket"]["round_trips"] == 2000 and result["websocket"]["close_codes"] == {}
    assert result["bytes"] >= 2000 * size  # every echo came back whole
    # and each connection said goodbye with a close frame, as a leaving client does (not a dropped 1006)
    server.wait_for(lambda: len(server.records()) == 8, what="the app to hear of all 8 closes")
    assert server.records() == ["disconnect-1000"] * 8, server.records()


def test_wss_with_a_trusted_ca(serve, tls_files, tmp_path) -> None:
    url = serve_tls(serve, tls_files, "ws_apps:echo", "--no-access-log").replace("https://", "wss://") + "/"
    result = bench_json(tmp_path, url, "--cacert", str(tls_files["ca"]), "-c", "4", "-n", "400")
    assert result["answered"] == 400 and result["url"].startswith("wss://"), result
    untrusted = bench_json(tmp_path, url, "-c", "2", "-n", "4")
    assert untrusted["errors"] == {"tls-verify": 4}, untrusted


def test_a_server_closing_with_1011_is_counted_by_code(serve, tmp_path) -> None:
    server = serve("ws_apps:crash", "--no-access-log")  # accepts, then fails on the first message: 1011
    result = bench_json(tmp_path, server.url.replace("http://", "ws://") + "/", "-c", "2", "-n", "10")
    assert result["answered"] == 0 and result["errors"] == {"closed": 10}, result
    assert result["websocket"]["close_codes"] == {"1011": 10}


def test_an_open_loop_of_messages_sees_a_stall(serve, tmp_path) -> None:
    server = serve("ws_apps:stall", "--no-access-log")  # holds its loop 0.5 s at the 200th message
    url = server.url.replace("http://", "ws://") + "/"
    result = bench_json(tmp_path, url, "--rate", "400", "-d", "2s")
    latency = result["latency_ms"]
    assert result["error_count"] == 0 and latency["max"] >= 400 and latency["p99"] >= 100, latency


def test_bad_websocket_options_are_one_line(tmp_path) -> None:
    result = bench("ws://127.0.0.1:1/", "-m", "POST", "-n", "1")
    assert result.returncode == 2 and "a ws:// load sends --message-size bytes" in result.stderr


def test_a_ctrl_c_as_a_load_process_forks_comes_after_its_pid_is_kept() -> None:
    """run_processes forks under held_interrupts: the KeyboardInterrupt of a Ctrl-C that lands in
    fork() is raised once the pid is stored (for the parent to end the child), and the child keeps
    SIGINT held (its parent ends it)."""
    pids: list[int] = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # even where this run ignores SIGINT
    with pytest.raises(KeyboardInterrupt), held_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, ()) else 1)
        pids.append(pid)
    signal.signal(signal.SIGINT, previous)
    assert len(pids) == 1 and os.waitpid(pids[0], 0)[1] == 0
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, ())
