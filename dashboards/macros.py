"""Expand Grafana's PostgreSQL macros and template variables the way Grafana does,
so every panel's SQL can run against the real database without a Grafana server.

Macro contract (Grafana docs, "PostgreSQL query editor", section Macros:
https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/#macros):

- ``$__time(col)``            -> ``col AS "time"``
- ``$__timeEpoch(col)``       -> ``extract(epoch from col) AS "time"``
- ``$__timeFilter(col)``      -> ``col BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC)
- ``$__timeFrom()``, ``$__timeTo()`` -> ``'<from>'``, ``'<to>'``
- ``$__timeGroup(col, '5m'[, fill])`` -> ``floor(extract(epoch from col)/300)*300``
- ``$__timeGroupAlias(...)``  -> the same plus ``AS "time"``
- ``$__unixEpochFilter(col)`` -> ``col >= <from s> AND col <= <to s>``
- ``$__unixEpochFrom()``, ``$__unixEpochTo()``
- ``$__interval`` (e.g. ``1m``), ``$__interval_ms`` (e.g. ``60000``): range divided by
  the panel's max data points, rounded to a "nice" step, never below the panel's
  minimum interval.

A single-value template variable is substituted as plain text (``$asset``,
``${asset}``, ``[[asset]]``), as Grafana does for SQL datasources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

# Nice steps for $__interval, in milliseconds: a rounded interval keeps bucket
# boundaries readable, as Grafana's own rounding does.
_NICE_MS = [
    10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_200_000, 1_800_000,
    3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    86_400_000, 604_800_000, 2_592_000_000, 31_536_000_000,
]  # fmt: skip
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class MacroError(ValueError):
    """A macro was used in a way Grafana would reject."""


def parse_interval_ms(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d|w)\s*", text.strip("'\""))
    if not match:
        raise MacroError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def format_interval(ms: int) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def interval_ms(start: datetime, end: datetime, max_points: int, min_interval: str | None) -> int:
    raw = (end - start) / timedelta(milliseconds=1) / max(max_points, 1)
    nice = next((step for step in _NICE_MS if step >= raw), _NICE_MS[-1])
    floor = parse_interval_ms(min_interval) if min_interval else 1
    return max(nice, floor)


@dataclass(frozen=True)
class Context:
    """What Grafana knows when it sends a query: the range, the panel, the variables."""

    start: datetime
    end: datetime
    max_points: int = 300
    min_interval: str | None = None
    variables: dict[str, str] | None = None

    @property
    def interval_ms(self) -> int:
        return interval_ms(self.start, self.end, self.max_points, self.min_interval)


def _ts(value: datetime) -> str:
    return "'" + value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z'"


def _split_args(text: str) -> list[str]:
    args, depth, current = [], 0, []
    for char in text:
        if char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        depth += char == "("
        depth -= char == ")"
        current.append(char)
    if current or args:
        args.append("".join(current).strip())
    return args


def _find_call(sql: str, name: str) -> tuple[int, int, list[str]] | None:
    """Locate ``$__name(...)`` with balanced parentheses: (start, end, arguments)."""
    match = re.search(re.escape(f"$__{name}") + r"\s*\(", sql)
    if not match:
        return None
    depth, i = 1, match.end()
    while i < len(sql) and depth:
        depth += sql[i] == "("
        depth -= sql[i] == ")"
        i += 1
    if depth:
        raise MacroError(f"unbalanced parentheses after $__{name}")
    return match.start(), i, _split_args(sql[match.end() : i - 1])


def _group(args: list[str], ctx: Context) -> str:
    if len(args) < 2:
        raise MacroError("$__timeGroup needs a column and an interval")
    step = args[1].strip()
    seconds = (ctx.interval_ms if step in ("$__interval", "'$__interval'") else
               parse_interval_ms(step)) / 1000  # fmt: skip
    step_text = f"{seconds:g}"
    return f"floor(extract(epoch from {args[0]})/{step_text})*{step_text}"


def expand(sql: str, ctx: Context) -> str:
    """The SQL Grafana would send to PostgreSQL for this query."""
    start, end = ctx.start, ctx.end
    functions = {
        "timeGroupAlias": lambda a: _group(a, ctx) + ' AS "time"',
        "timeGroup": lambda a: _group(a, ctx),
        "timeEpoch": lambda a: f'extract(epoch from {a[0]}) AS "time"',
        "timeFilter": lambda a: f"{a[0]} BETWEEN {_ts(start)} AND {_ts(end)}",
        "timeFrom": lambda a: _ts(start),
        "timeTo": lambda a: _ts(end),
        "unixEpochFilter": lambda a: (
            f"{a[0]} >= {int(start.timestamp())} AND {a[0]} <= {int(end.timestamp())}"
        ),
        "unixEpochFrom": lambda a: str(int(start.timestamp())),
        "unixEpochTo": lambda a: str(int(end.timestamp())),
        "time": lambda a: f'{a[0]} AS "time"',
    }
    # Longest names first: $__timeGroupAlias must not be read as $__timeGroup.
    for name in sorted(functions, key=len, reverse=True):
        while (call := _find_call(sql, name)) is not None:
            begin, stop, args = call
            sql = sql[:begin] + functions[name](args) + sql[stop:]
    ms = ctx.interval_ms
    sql = sql.replace("$__interval_ms", str(ms)).replace("$__interval", format_interval(ms))
    for name, value in (ctx.variables or {}).items():
        sql = re.sub(rf"\$\{{{name}\}}|\[\[{name}\]\]|\${name}\b", lambda _m, v=value: v, sql)
    leftover = re.search(r"\$__\w+", sql)
    if leftover:
        raise MacroError(f"unknown macro {leftover.group(0)}")
    return sql
