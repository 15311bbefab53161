"""Run every dashboard query against a live database, as Grafana would send it.

Each query is macro-expanded for a recent time range (``dashboards.macros``),
template variables take their first value from their own query (as Grafana's
default does), and the SQL runs in a read-only transaction with a statement
timeout. A panel "has rows" only when every one of its targets returns at least
one row carrying data: gap filling always yields rows, so rows of nothing but
NULLs and zeros do not count. The alert rules' SQL runs too (errors only: a rule
that finds nothing is a quiet pipeline).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from numbers import Number as numbers_Number
from typing import Any

import psycopg

from .alerting import alert_rules
from .catalog import Query, load_boards, queries
from .macros import Context, expand


@dataclass
class QueryResult:
    dashboard: str
    kind: str
    title: str
    ref_id: str
    panel: int = -1
    rows: int = 0
    rows_with_data: int = 0
    ms: float = 0.0
    error: str | None = None
    columns: list[str] = field(default_factory=list)
    data: list[tuple] = field(default_factory=list, repr=False)


def _has_data(row: tuple, columns: list[str]) -> bool:
    """A row carries data when a value column is a non-zero number. Text columns are
    labels (series names, bins): a row of labels with a NULL value carries nothing,
    a row of labels only (a variable's values) does."""
    values = [v for name, v in zip(columns, row, strict=True) if name != "time"]
    numbers = [
        v for v in values if isinstance(v, numbers_Number | Decimal) and not isinstance(v, bool)
    ]
    if numbers:
        return any(n != 0 for n in numbers)
    return bool(values) and all(v is not None for v in values)


def run_query(
    conn: psycopg.Connection, query: Query, ctx: Context, timeout_ms: int = 10_000
) -> QueryResult:
    result = QueryResult(query.dashboard, query.kind, query.title, query.ref_id, query.panel)
    started = time.perf_counter()
    try:
        sql = expand(query.sql, ctx)
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            cur = conn.execute(sql)
            rows = cur.fetchall()
            result.columns = [d.name for d in cur.description or []]
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        result.ms = round((time.perf_counter() - started) * 1000, 1)
        return result
    result.ms = round((time.perf_counter() - started) * 1000, 1)
    result.rows = len(rows)
    result.rows_with_data = sum(_has_data(r, result.columns) for r in rows)
    result.data = rows
    return result


def variable_defaults(
    conn: psycopg.Connection, boards: Iterable[dict[str, Any]], ctx: Context
) -> dict[str, str]:
    """Each query variable's first value, as Grafana selects it on first load."""
    values: dict[str, str] = {}
    for board in boards:
        for q in queries(board):
            if q.kind != "variable":
                continue
            result = run_query(conn, q, ctx)
            if result.data:
                values[q.title] = str(result.data[0][0])
    return values


def run_checks(
    database_url: str,
    *,
    hours: float = 1.0,
    end: datetime | None = None,
    boards: list[dict[str, Any]] | None = None,
    keep_data: bool = False,
) -> dict[str, Any]:
    """Run every query of every dashboard; summarise panels and per-panel results."""
    boards = boards if boards is not None else load_boards()
    end = end or datetime.now(UTC)
    start = end - timedelta(hours=hours)
    results: list[QueryResult] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        variables = variable_defaults(conn, boards, Context(start, end))
        for board in boards:
            for q in queries(board):
                ctx = Context(start, end, q.max_data_points or 300, q.min_interval, variables)
                result = run_query(conn, q, ctx)
                if not keep_data:
                    result.data = []
                results.append(result)
        for rule in alert_rules():
            sql = rule["data"][0]["model"]["rawSql"]
            q = Query("alerting", "alert_rule", rule["title"], "A", sql, "table")
            results.append(run_query(conn, q, Context(start, end)))
    panels: dict[tuple[str, int], list[QueryResult]] = {}
    for r in results:
        if r.kind == "panel":
            panels.setdefault((r.dashboard, r.panel), []).append(r)
    with_rows = [
        key for key, rs in panels.items() if all(r.error is None and r.rows_with_data for r in rs)
    ]
    errors = [
        {"dashboard": r.dashboard, "kind": r.kind, "title": r.title, "error": r.error}
        for r in results
        if r.error
    ]
    return {
        "range": {"from": start.isoformat(), "to": end.isoformat()},
        "variables": variables,
        "dashboards": len(boards),
        "panels": len(panels),
        "panels_with_rows": len(with_rows),
        "panels_without_rows": [
            f"{d} / {rs[0].title}" for (d, i), rs in panels.items() if (d, i) not in set(with_rows)
        ],
        "alert_rules": sum(r.kind == "alert_rule" for r in results),
        "queries": len(results),
        "errors": errors,
        "results": [
            {k: v for k, v in asdict(r).items() if k not in ("data", "columns")} for r in results
        ],
        "_results": results if keep_data else None,
    }
