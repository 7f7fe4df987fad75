"""Results → the terminal table (rich) and a self-contained HTML report with SVG charts.

The report needs nothing from the network: the charts are inline SVG drawn here, the style is
inline CSS, and a few lines of inline script only record, in the page, which series the browser
drew (a test reads that back from headless Chromium).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from .model import FULL, MIB, Trial

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
WIDTH, HEIGHT, MARGIN = 640, 340, (20, 20, 50, 70)  # top, right, bottom, left


def table(trials: Sequence[Trial], pick: Trial | None) -> Any:
    """A rich Table of every trial, the recommended one marked."""
    from rich.table import Table

    grid = Table(title="trials", title_justify="left", header_style="bold")
    for name, justify in (("#", "right"), ("kind", "left"), ("workers", "right"), ("threads", "right"),
                          ("req/s", "right"), ("p50 ms", "right"), ("p99 ms", "right"), ("server CPU", "right"),
                          ("RSS MiB", "right"), ("time", "right"), ("", "left")):
        grid.add_column(name, justify=justify)  # type: ignore[arg-type]
    for number, trial in enumerate(trials, 1):
        ran = trial.status in ("ok", "failed")
        mark = "★ " if trial is pick else ""
        grid.add_row(
            str(number), trial.kind, str(trial.workers), "-" if trial.threads is None else str(trial.threads),
            f"{trial.throughput:,.0f}" if ran else "", f"{trial.p50_ms:,.1f}" if trial.throughput else "",
            f"{trial.p99_ms:,.1f}" if trial.throughput else "", f"{trial.server_cpu:.2f}" if trial.throughput else "",
            f"{trial.rss_total / MIB:,.0f}" if trial.rss_total else "", f"{trial.wall_s:.0f}s" if trial.wall_s else "",
            mark + (trial.note or trial.status), style="bold green" if trial is pick else None,
        )
    return grid


def sizes_table(sizes: Sequence[dict[str, Any]]) -> Any:
    """tune --sizes: a row per size, its recommendation beside tricorn's defaults."""
    from rich.table import Table

    grid = Table(title="recommendations by size", title_justify="left", header_style="bold")
    for name in ("size", "limit", "recommended", "req/s", "p99 ms", "RSS MiB", "tricorn's defaults", "req/s",
                 "p99 ms", "RSS MiB"):
        grid.add_column(name, justify="left" if name in ("size", "limit") else "right")
    for size in sizes:
        grid.add_row(size["label"], size["limit"], *_pick_fields(size["recommendation"]),
                     *_pick_fields(size["default"]))
    return grid


def _pick_fields(pick: dict[str, Any] | None) -> list[str]:
    """A measured configuration (a recommendation's JSON): workers × threads, req/s, p99, RSS."""
    if not pick:
        return ["none", "", "", ""]
    label = f"{pick['workers']}" + (f" × {pick['threads']}" if pick["threads"] is not None else "")
    return [label, f"{pick['throughput']:,.0f}", f"{pick['p99_ms']:,.1f}", f"{pick['rss_mb']:,.0f}"]


# HTML ------------------------------------------------------------------------------------------

def html_report(result: dict[str, Any], trials: Sequence[Trial]) -> str:
    return _page(f"tricorn tune: {result['target']}", _section(result, trials, ""))


def sizes_report(result: dict[str, Any], trials: Sequence[Sequence[Trial]]) -> str:
    """tune --sizes: the table of sizes, then each size's section (its charts' names prefixed with
    its number)."""
    rows = "".join(
        f"<tr><td>{html.escape(size['label'])}</td><td>{size['limit']}</td>{_cells(size['recommendation'])}"
        f"{_cells(size['default'])}</tr>" for size in result["sizes"])
    sections = "".join(
        f"<h2>{html.escape(size['label'])} ({size['limit']})</h2>{_section(size, size_trials, f'size{i}-')}"
        for i, (size, size_trials) in enumerate(zip(result["sizes"], trials, strict=True), 1))
    body = (f"<p>{html.escape(result['limit_why'])}</p>"
            "<table><tr><th>size</th><th>limit</th><th>recommended</th><th>req/s</th><th>p99 ms</th><th>RSS MiB</th>"
            "<th>tricorn's defaults</th><th>req/s</th><th>p99 ms</th><th>RSS MiB</th></tr>"
            f"{rows}</table>{sections}")
    return _page(f"tricorn tune --sizes: {result['target']}", body)


def _cells(pick: dict[str, Any] | None) -> str:
    return "".join(f"<td>{html.escape(field)}</td>" for field in _pick_fields(pick))


def _section(result: dict[str, Any], trials: Sequence[Trial], prefix: str) -> str:
    full = [t for t in trials if t.steps]
    colours = {id(t): PALETTE[i % len(PALETTE)] for i, t in enumerate(full)}
    target = result["workload"]["p99_ms"]

    def series(value: str) -> list[tuple[str, str, list[tuple[float, float]], bool]]:
        return [(f"{t.label} {t.kind}", colours[id(t)], [(s.offered, getattr(s, value)) for s in t.steps],
                 t.kind == "screen") for t in full]

    throughput = line_chart("throughput vs offered load", "offered req/s", "answered req/s", series("throughput"),
                            prefix + "throughput", diagonal=True)
    latency = line_chart("p99 latency vs offered load", "offered req/s", "p99 ms", series("p99_ms"), prefix + "p99",
                         hline=(target, f"target {target:g} ms"), y_cap=target * 4)
    configs: dict[str, Trial] = {}
    for trial in trials:
        if trial.rss_total:
            configs[trial.label] = trial
    limit = result["machine"]["memory_budget_mb"]
    memory = bar_chart("memory per configuration", "RSS MiB",
                       [(label, t.rss_total / MIB) for label, t in configs.items()], prefix + "memory",
                       hline=(limit, f"{limit:,.0f} MiB budget"))
    rec = result["recommendation"]
    headline = (f"<p class=pick>Recommended: <b>{html.escape(result['reason'])}</b></p>"
                f"<pre>{html.escape(result['snippet'])}</pre>" if rec else
                f"<p class=pick>No recommendation: {html.escape(result.get('error') or result['stop_reason'])}</p>")
    rows = "".join(
        f"<tr{' class=best' if rec and t.key == (rec['workers'], rec['threads']) and t.kind in FULL else ''}>"
        f"<td>{i}</td><td>{t.kind}</td><td>{t.workers}</td><td>{'-' if t.threads is None else t.threads}</td>"
        f"<td>{t.throughput:,.0f}</td><td>{t.p50_ms:,.1f}</td><td>{t.p99_ms:,.1f}</td><td>{t.server_cpu:.2f}</td>"
        f"<td>{t.rss_total / MIB:,.0f}</td><td>{t.wall_s:.1f}</td><td>{html.escape(t.note or t.status)}</td>"
        f"<td><code>{html.escape(t.command)}</code></td></tr>"
        for i, t in enumerate(trials, 1))
    machine = result["machine"]
    return f"""<p>{html.escape(machine['cpus_why'])} → tuned for {machine['cpus']} CPU(s);
memory {machine['memory_mb']:,.0f} MiB ({html.escape(machine['memory_why'])}).
Target: p99 ≤ {target:g} ms, errors ≤ {result['workload']['max_errors']:.2%}.
{html.escape(result['stop_reason'])}.</p>
{headline}
<div class=charts>{throughput}{latency}{memory}</div>
<table><tr><th>#</th><th>kind</th><th>workers</th><th>threads</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th>
<th>server CPU</th><th>RSS MiB</th><th>s</th><th></th><th>command</th></tr>{rows}</table>
"""


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }}
svg {{ background: #fff; border: 1px solid #ddd; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #333; }}
svg .title {{ font-size: 13px; font-weight: bold; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: right; }}
td:nth-child(11), td:nth-child(12) {{ text-align: left; }}
tr.best {{ background: #e6f4e6; font-weight: bold; }}
.pick {{ font-size: 16px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
<script>
// Which series the browser laid out with a non-empty box, per chart: read back by the tests.
const drawn = {{}};
for (const shape of document.querySelectorAll("svg [data-series]")) {{
  const box = shape.getBBox();
  if (box.width > 0 || box.height > 0) {{
    (drawn[shape.closest("svg").dataset.chart] ||= []).push(shape.dataset.series);
  }}
}}
document.body.dataset.drawn = JSON.stringify(drawn);
</script>
</body></html>
"""


def _ticks(high: float, count: int = 5) -> list[float]:
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(high / step) + 2)]


def _frame(title: str, xlabel: str, ylabel: str, xs: list[float] | None, ys: list[float], chart: str) -> tuple[
        str, Any, Any, float, float]:
    """The axes, grid and labels of a chart; `xs` None: no x scale (bars carry their own labels)."""
    top, right, bottom, left = MARGIN
    x_ticks, y_ticks = _ticks(max(xs or [1.0])), _ticks(max(ys, default=1.0))
    x_max, y_max = x_ticks[-1], y_ticks[-1]

    def x(value: float) -> float:
        return left + (WIDTH - left - right) * value / x_max

    def y(value: float) -> float:
        return HEIGHT - bottom - (HEIGHT - top - bottom) * min(value, y_max) / y_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 60}" data-chart="{chart}">',
             f'<text class="title" x="{left}" y="14">{html.escape(title)}</text>']
    for value in x_ticks if xs is not None else ():
        parts.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top}" y2="{HEIGHT - bottom}" stroke="#eee"/>'
                     f'<text x="{x(value):.1f}" y="{HEIGHT - bottom + 14}" text-anchor="middle">{value:,.6g}</text>')
    for value in y_ticks:
        parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value:,.6g}</text>')
    parts.append(f'<text x="{(left + WIDTH - right) / 2}" y="{HEIGHT - bottom + 32}" text-anchor="middle">'
                 f'{html.escape(xlabel)}</text><text x="12" y="{(top + HEIGHT - bottom) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(top + HEIGHT - bottom) / 2})">{html.escape(ylabel)}</text>')
    return "".join(parts), x, y, x_max, y_max


def line_chart(title: str, xlabel: str, ylabel: str, series: list[tuple[str, str, list[tuple[float, float]], bool]],
               chart: str, diagonal: bool = False, hline: tuple[float, str] | None = None,
               y_cap: float | None = None) -> str:
    xs = [px for _, _, points, _ in series for px, _ in points]
    ys = [py for _, _, points, _ in series for _, py in points]
    if y_cap is not None:
        ys = [min(v, y_cap) for v in ys]
    if diagonal:  # one scale for both axes, so that y = x is the diagonal
        ys += xs
    if hline is not None:
        ys.append(hline[0] * 1.1)
    head, x, y, x_max, _ = _frame(title, xlabel, ylabel, xs, ys, chart)
    parts = [head]
    if diagonal:
        parts.append(f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(x_max):.1f}" y2="{y(x_max):.1f}" '
                     'stroke="#bbb" stroke-dasharray="4 4"/>')
    if hline is not None:
        parts.append(f'<line x1="{x(0):.1f}" x2="{x(x_max):.1f}" y1="{y(hline[0]):.1f}" y2="{y(hline[0]):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="6 3"/><text x="{x(x_max) - 4:.1f}" y="{y(hline[0]) - 4:.1f}" '
                     f'text-anchor="end" fill="#d62728">{html.escape(hline[1])}</text>')
    for index, (name, colour, points, dashed) in enumerate(series):
        ordered = sorted(points)
        if not ordered:
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{x(px):.1f},{y(py):.1f}" for i, (px, py) in enumerate(ordered))
        dash = ' stroke-dasharray="3 3" opacity="0.6"' if dashed else ""
        parts.append(f'<path data-series="{html.escape(name)}" d="{d}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"{dash}/>')
        parts.extend(f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="2.5" fill="{colour}"/>' for px, py in ordered)
        row, column = divmod(index, 5)
        lx, ly = MARGIN[3] + column * 112, HEIGHT + 10 + row * 16
        parts.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{ly + 9}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, ylabel: str, bars: list[tuple[str, float]], chart: str,
              hline: tuple[float, str] | None = None) -> str:
    if hline is not None and hline[0] > 4 * max((value for _, value in bars), default=0.0):
        title, hline = f"{title} ({hline[1]}: off the scale)", None
    values = [value for _, value in bars] + ([hline[0] * 1.1] if hline else [])
    head, _, y, _, _ = _frame(title, "configuration (workers×threads)", ylabel, None, values, chart)
    _, right, bottom, left = MARGIN
    parts = [head]
    slot = (WIDTH - left - right) / max(1, len(bars))
    for index, (label, value) in enumerate(bars):
        bx = left + index * slot + slot * 0.15
        parts.append(f'<rect data-series="{html.escape(label)}" x="{bx:.1f}" y="{y(value):.1f}" '
                     f'width="{slot * 0.7:.1f}" height="{y(0) - y(value):.1f}" fill="{PALETTE[index % len(PALETTE)]}"/>'
                     f'<text x="{bx + slot * 0.35:.1f}" y="{HEIGHT - bottom + 28}" text-anchor="middle">'
                     f'{html.escape(label)}</text>')
    if hline is not None:
        parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(hline[0]):.1f}" y2="{y(hline[0]):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="6 3"/><text x="{WIDTH - right - 4}" '
                     f'y="{y(hline[0]) - 4:.1f}" text-anchor="end" fill="#d62728">{html.escape(hline[1])}</text>')
    parts.append("</svg>")
    return "".join(parts)
