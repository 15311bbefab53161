"""Render every dashboard panel, from the same SQL Grafana runs, into one HTML page.

The page is self-contained: charts are inline SVG drawn by matplotlib, tables are
HTML, there is no script and no external resource, so it opens offline. Each
chart is a ``<figure class="plot">`` with ``data-points`` (values drawn), which
the browser test uses to check that plots are not empty.
"""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display here; must precede pyplot
import matplotlib.pyplot as plt
from tqdm import tqdm

from .catalog import load_boards
from .check import QueryResult, run_checks

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "citywatch", "font.size": 8})
RISK_COLORS = [(0.5, "#56a64b"), (0.8, "#ff9830"), (float("inf"), "#e02f44")]
TABLE_ROWS = 15


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _numeric(value: Any) -> float | None:
    if value is None or isinstance(value, bool | str | datetime):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _series(result: QueryResult) -> dict[str, tuple[list, list]]:
    """Long (time, metric, value) or wide (time, a, b, ...) rows -> name: (times, values)."""
    cols = result.columns
    out: dict[str, tuple[list, list]] = {}
    if "metric" in cols:
        t, m, v = cols.index("time"), cols.index("metric"), cols.index("value")
        for row in result.data:
            xs, ys = out.setdefault(str(row[m]), ([], []))
            xs.append(row[t])
            ys.append(_numeric(row[v]))
        return out
    t = cols.index("time")
    for i, name in enumerate(cols):
        if i != t:
            out[name] = ([r[t] for r in result.data], [_numeric(r[i]) for r in result.data])
    return out


def _plot_lines(ax, series: dict[str, tuple[list, list]], bars: bool) -> int:
    points = 0
    bottom: list[float] | None = None
    for name, (xs, ys) in series.items():
        values = [y if y is not None else float("nan") for y in ys]
        points += sum(y is not None for y in ys)
        if bars:
            heights = [0.0 if y != y else y for y in values]
            base = bottom or [0.0] * len(heights)
            ax.bar(xs, heights, bottom=base, width=0.8 * _step(xs), label=name, align="edge")
            bottom = [a + b for a, b in zip(base, heights, strict=True)]
        else:
            # Markers too: sparse series (drift windows) are isolated points between gaps.
            ax.plot(xs, values, label=name, linewidth=1, marker="o", markersize=1.5)
    return points


def _step(xs: list) -> float:
    if len(xs) < 2:
        return 1 / 1440
    return (xs[1] - xs[0]).total_seconds() / 86_400  # matplotlib dates are in days


def _size(panel: dict) -> tuple[float, float]:
    """Figure inches in proportion to the panel's grid width, so wide panels aren't zoomed."""
    return 14 * panel.get("gridPos", {}).get("w", 12) / 24, 2.6


def _annotate(ax, annotations: list[QueryResult], xs: list) -> None:
    """Shade annotation regions (time .. timeend) inside the plotted time span, as
    Grafana overlays a dashboard's annotations on its time-series panels."""
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    for result in annotations:
        if "time" not in result.columns:
            continue
        t = result.columns.index("time")
        end = result.columns.index("timeend") if "timeend" in result.columns else t
        for row in result.data:
            start, stop = max(row[t], lo), min(row[end] or row[t], hi)
            if start <= stop:
                ax.axvspan(start, stop, color="#e02f44", alpha=0.12, linewidth=0)


def _time_series(
    panel: dict, results: list[QueryResult], annotations: list[QueryResult] | None = None
) -> tuple[str, int]:
    fig, ax = plt.subplots(figsize=_size(panel))
    bars = (
        panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("drawStyle")
        == "bars"
    )
    points = _plot_lines(ax, _series(results[0]), bars)
    if len(results) > 1:  # a second query on the right axis (risk over sensors)
        right = ax.twinx()
        points += _plot_lines(right, _series(results[1]), False)
        for line in right.get_lines():
            line.set_linewidth(2)
            line.set_color("#e02f44" if line.get_label() == "risk" else "#8f3bb8")
        right.set_ylim(0, 1)
        right.legend(loc="upper right", fontsize=6)
    xs = [row[r.columns.index("time")] for r in results if "time" in r.columns for row in r.data]
    _annotate(ax, annotations or [], xs)
    ax.legend(loc="upper left", fontsize=6, ncol=3)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _svg(fig), points


def _bar_chart(panel: dict, result: QueryResult) -> tuple[str, int]:
    x_field = panel["options"].get("xField") or result.columns[0]
    horizontal = panel["options"].get("orientation") == "horizontal"
    xi = result.columns.index(x_field)
    labels = [str(r[xi]) for r in result.data]
    fig, ax = plt.subplots(figsize=_size(panel))
    numeric = [i for i, c in enumerate(result.columns) if i != xi]
    width = 0.8 / max(len(numeric), 1)
    points = 0
    for k, i in enumerate(numeric):
        values = [_numeric(r[i]) or 0.0 for r in result.data]
        points += sum(v != 0 for v in values)
        pos = [j + k * width for j in range(len(labels))]
        if horizontal:
            ax.barh(pos, values, height=width, label=result.columns[i])
        else:
            ax.bar(pos, values, width=width, label=result.columns[i])
    ticks = [j + width * (len(numeric) - 1) / 2 for j in range(len(labels))]
    if horizontal:
        ax.set_yticks(ticks, labels)
        ax.invert_yaxis()
    else:
        ax.set_xticks(ticks, labels, rotation=90)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return _svg(fig), points


def _geomap(result: QueryResult) -> tuple[str, int]:
    cols = result.columns
    lat, lon, risk = cols.index("latitude"), cols.index("longitude"), cols.index("risk")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = [float(r[lon]) for r in result.data]
    ys = [float(r[lat]) for r in result.data]
    colors = [next(c for limit, c in RISK_COLORS if float(r[risk]) < limit) for r in result.data]
    ax.scatter(xs, ys, c=colors, s=40, edgecolors="black", linewidths=0.4)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.grid(alpha=0.3)
    return _svg(fig), len(xs)


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return html.escape("" if value is None else str(value))


def _table(result: QueryResult) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in result.data[:TABLE_ROWS]
    )
    more = len(result.data) - TABLE_ROWS
    tail = f"<p class='more'>... {more} more rows</p>" if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{tail}"


def _stat(result: QueryResult) -> str:
    row = result.data[0] if result.data else ()
    return "".join(
        f"<div class='stat'><span>{_cell(v)}</span><label>{html.escape(c)}</label></div>"
        for c, v in zip(result.columns, row, strict=True)
    )


def _panel_html(
    panel: dict,
    results: list[QueryResult],
    variables: dict[str, str],
    annotations: list[QueryResult],
) -> str:
    title = panel["title"]
    for name, value in variables.items():
        title = title.replace(f"${name}", value)
    title = html.escape(title)
    desc = html.escape(panel.get("description", ""))
    errors = [r.error for r in results if r.error]
    if errors:
        body = f"<p class='error'>{html.escape('; '.join(errors))}</p>"
    elif not any(r.data for r in results):
        body = "<p class='empty'>no data in this range</p>"
    elif panel["type"] == "timeseries":
        svg, points = _time_series(panel, results, annotations)
        body = f"<figure class='plot' data-points='{points}'>{svg}</figure>"
    elif panel["type"] == "barchart":
        svg, points = _bar_chart(panel, results[0])
        body = f"<figure class='plot' data-points='{points}'>{svg}</figure>"
    elif panel["type"] == "geomap":
        svg, points = _geomap(results[0])
        body = f"<figure class='plot' data-points='{points}'>{svg}</figure>"
    elif panel["type"] == "stat":
        body = _stat(results[0])
    else:
        body = _table(results[0])
    width = "wide" if panel.get("gridPos", {}).get("w", 12) > 12 else "half"
    return f"<section class='panel {width}'><h3 title='{desc}'>{title}</h3>{body}</section>"


CSS = """
body { font-family: sans-serif; background: #f4f5f5; margin: 1em; color: #222; }
h1 { font-size: 1.4em; } h2 { margin-top: 1.5em; border-bottom: 2px solid #ccc; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.panel { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 8px;
         box-sizing: border-box; overflow: auto; }
.panel.half { width: calc(50% - 6px); } .panel.wide { width: 100%; }
.panel h3 { font-size: 0.95em; margin: 0 0 6px; }
figure.plot { margin: 0; } figure.plot svg { width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 0.8em; width: 100%; }
th, td { border-bottom: 1px solid #eee; padding: 2px 6px; text-align: left; }
.stat { display: inline-block; margin-right: 2em; }
.stat span { font-size: 2em; font-weight: bold; display: block; color: #1f60c4; }
.error { color: #c4162a; } .empty, .more { color: #888; }
"""


def render_html(
    database_url: str, *, hours: float = 1.0, progress: bool = False
) -> tuple[str, dict[str, Any]]:
    """The page, and a summary (panels, panels drawn, errors)."""
    boards = load_boards()
    report = run_checks(database_url, hours=hours, boards=boards, keep_data=True)
    by_panel: dict[tuple[str, int], list[QueryResult]] = {}
    annotations: dict[str, list[QueryResult]] = {}
    for r in report["_results"]:
        if r.kind == "panel":
            by_panel.setdefault((r.dashboard, r.panel), []).append(r)
        elif r.kind == "annotation" and r.error is None:
            annotations.setdefault(r.dashboard, []).append(r)
    sections = []
    panels = [(b, i, p) for b in boards for i, p in enumerate(b["panels"])]
    current = None
    for board, index, panel in tqdm(panels, desc="panels", disable=None if progress else True):
        if board["uid"] != current:
            if current is not None:
                sections.append("</div>")
            current = board["uid"]
            sections.append(f"<h2>{html.escape(board['title'])}</h2><div class='grid'>")
        results = by_panel.get((board["uid"], index), [])
        marks = annotations.get(board["uid"], [])
        sections.append(_panel_html(panel, results, report["variables"], marks))
    sections.append("</div>")
    variables = ", ".join(f"${k} = {v}" for k, v in report["variables"].items())
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<title>citywatch dashboards snapshot</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>citywatch dashboards snapshot</h1><p>{html.escape(report['range']['from'])} to "
        f"{html.escape(report['range']['to'])} &middot; {html.escape(variables)}</p>"
        + "".join(sections)
        + "</body></html>"
    )
    summary = {
        "panels": report["panels"],
        "panels_with_rows": report["panels_with_rows"],
        "plots": page.count("class='plot'"),
        "errors": report["errors"],
        "bytes": len(page.encode()),
    }
    return page, summary
