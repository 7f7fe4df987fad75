"""The master's `/metrics`: every worker's scoreboard slot added up, in the Prometheus text format
(0.0.4), or OpenMetrics 1.0 when the scraper asks for it, followed by the app's own
`prometheus_client` metrics when it uses them in multiprocess mode (`AppMetrics`)."""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..stats import BUCKETS, INTERFACES, STATUS_CLASSES
from . import scoreboard as sb

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
RESTART_REASONS = ("crash", "timeout", "max_requests", "memory", "lifetime", "reload")


@dataclass
class Totals:
    """What the master adds up: the counters of workers that exited, per interface, and restarts."""

    retired: dict[int, list[int]] = field(default_factory=dict)  # interface → scoreboard words
    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESTART_REASONS, 0))

    def fold(self, words: list[int]) -> None:
        """A worker exited: keep its counters."""
        _add_counters(self.retired.setdefault(words[sb.INTERFACE], [0] * sb.WORDS), words)


def _add_counters(into: list[int], words: list[int]) -> None:
    for index in sb.COUNTERS:
        into[index] += words[index]


@dataclass
class Worker:
    number: int  # as in its process title, "worker N"
    pid: int
    words: list[int]  # its scoreboard slot
    rss: int


def render(workers: list[Worker], totals: Totals, openmetrics: bool = False) -> str:
    per_interface: dict[int, list[int]] = {i: list(words) for i, words in totals.retired.items()}
    for worker in workers:
        _add_counters(per_interface.setdefault(worker.words[sb.INTERFACE], [0] * sb.WORDS), worker.words)
    everything = [0] * sb.WORDS
    for words in per_interface.values():
        _add_counters(everything, words)

    out = _Writer(openmetrics)
    out.family("tricorn_requests_total", "counter", "Responses sent, by application interface and status class.")
    for interface, words in sorted(per_interface.items()):
        for offset, status in enumerate(STATUS_CLASSES):
            if words[sb.STATUS + offset] or status in ("2xx", "5xx"):
                out.sample("tricorn_requests_total", words[sb.STATUS + offset],
                           interface=INTERFACES[interface] or "unknown", status=status)
    out.histogram("tricorn_request_duration_seconds", "From a request's head being read to its response sent.",
                  everything, sb.DURATION)
    out.histogram("tricorn_queue_wait_seconds", "From a request's head being read to the app starting on it "
                  "(WSGI: the wait for a thread).", everything, sb.QUEUE_WAIT)
    out.histogram("tricorn_event_loop_lag_seconds", "How late workers' event loops ran a timer that was due.",
                  everything, sb.LOOP_LAG)
    out.counter("tricorn_event_loop_blocks_total", "Times a worker's event loop was held past --block-warn.",
                everything[sb.LOOP_BLOCKS])
    out.counter("tricorn_request_timeouts_total", "Requests answered 504 at --request-timeout.",
                everything[sb.REQUEST_TIMEOUTS])
    out.counter("tricorn_bytes_sent_total", "Response bytes sent (heads excluded).", everything[sb.BYTES_SENT])
    for name, index, help_text in (
        ("tricorn_requests_in_flight", sb.IN_FLIGHT, "Requests being served."),
        ("tricorn_connections_open", sb.CONNECTIONS, "Client connections open."),
        ("tricorn_websocket_connections_open", sb.WEBSOCKETS, "WebSocket connections open."),
        ("tricorn_wsgi_threads", sb.THREADS, "WSGI threads for the app, all workers."),
        ("tricorn_wsgi_threads_busy", sb.THREADS_BUSY, "WSGI threads running or owed a request."),
    ):
        out.gauge(name, help_text, sum(worker.words[index] for worker in workers))
    out.gauge("tricorn_workers", "Worker processes serving.", len(workers))
    out.family("tricorn_worker_rss_bytes", "gauge", "Resident memory of each worker.")
    for worker in sorted(workers, key=lambda w: w.number):
        out.sample("tricorn_worker_rss_bytes", worker.rss, worker=str(worker.number), pid=str(worker.pid))
    out.family("tricorn_worker_restarts_total", "counter", "Workers replaced, by reason.")
    for reason, count in totals.restarts.items():
        out.sample("tricorn_worker_restarts_total", count, reason=reason)
    return out.text()


class _Writer:
    def __init__(self, openmetrics: bool) -> None:
        self.openmetrics = openmetrics
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        if self.openmetrics and kind == "counter":
            name = name.removesuffix("_total")
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        self.lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")

    def counter(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "counter", help_text)
        self.sample(name, value)

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "gauge", help_text)
        self.sample(name, value)

    def histogram(self, name: str, help_text: str, words: list[int], base: int) -> None:
        self.family(name, "histogram", help_text)
        cumulative = 0
        for index, bound in enumerate((*BUCKETS, float("inf"))):
            cumulative += words[base + index]
            self.sample(f"{name}_bucket", cumulative, le="+Inf" if bound == float("inf") else _number(bound))
        self.sample(f"{name}_sum", words[base + len(BUCKETS) + 1] / 1e9)
        self.sample(f"{name}_count", cumulative)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class AppMetrics:
    """The app's `prometheus_client` metrics in multiprocess mode. The master makes the directory
    (PROMETHEUS_MULTIPROC_DIR) when the environment does not name one and prometheus_client is
    installed; when a worker exits, its counters, histograms and summaries are added into archive
    files and its files removed, so totals never go backwards and files do not pile up."""

    def __init__(self) -> None:
        """Before the app is imported (--preload included): prometheus_client chooses its mode when
        it is first imported."""
        self.path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        self.owned = False
        self.available = importlib.util.find_spec("prometheus_client") is not None
        if self.available and not self.path:
            self.path = tempfile.mkdtemp(prefix="tricorn-prometheus-")
            self.owned = True
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.path

    @property
    def client(self) -> Any:
        """prometheus_client, imported on first use (after the environment names the directory)."""
        if not self.available:
            return None
        for name in ("multiprocess", "mmap_dict", "openmetrics.exposition"):
            importlib.import_module(f"prometheus_client.{name}")
        return importlib.import_module("prometheus_client")

    def render(self, openmetrics: bool) -> str:
        if not self.available or not glob.glob(os.path.join(self.path, "*.db")):
            return ""
        client = self.client
        registry = client.CollectorRegistry()
        client.multiprocess.MultiProcessCollector(registry, path=self.path)
        if openmetrics:
            text: str = client.openmetrics.exposition.generate_latest(registry).decode()
            return text.removesuffix("# EOF\n")
        return str(client.generate_latest(registry).decode())

    def worker_exited(self, pid: int) -> None:
        if not self.available:
            return
        mmaped = self.client.mmap_dict.MmapedDict
        for kind in ("counter", "histogram", "summary"):
            for name in glob.glob(os.path.join(self.path, f"{kind}_{pid}.db")):
                archive = mmaped(os.path.join(self.path, f"{kind}_archive.db"))
                try:
                    for key, value, *_ in mmaped.read_all_values_from_file(name):
                        kept = archive.read_value(key)  # (value, timestamp) in recent versions
                        archive.write_value(key, (kept[0] if isinstance(kept, tuple) else kept) + value, 0.0)
                finally:
                    archive.close()
                os.remove(name)
        for name in glob.glob(os.path.join(self.path, f"gauge_*_{pid}.db")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def exposition(
    workers: list[Worker], totals: Totals, app: AppMetrics | None, headers: Mapping[str, str],
) -> tuple[str, str]:
    """The body and content type of a scrape: OpenMetrics when the scraper accepts it."""
    if "application/openmetrics-text" in headers.get("accept", ""):
        return render(workers, totals, True) + (app.render(True) if app else "") + "# EOF\n", OPENMETRICS_TYPE
    return render(workers, totals) + (app.render(False) if app else ""), PROMETHEUS_TYPE
