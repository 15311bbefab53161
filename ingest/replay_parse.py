"""Reading recorded sensor files line by line: formats, the row parser and its reasons.

:class:`RowParser` turns each line into a usable :class:`ReplayRow`, a
:class:`Gap` (a valid time and no value) or a :class:`BadRow` with a reason
from :data:`REASONS`. It never raises on a data line: hostile input is normal
input. Only an unusable header raises :class:`ReplayError`.
:mod:`ingest.replay` sends the rows.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from core.assets import AssetType
from core.dataset_columns import GECCO_COLUMNS

__all__ = [
    "FORMATS",
    "MAX_LINE_BYTES",
    "REASONS",
    "BadRow",
    "Gap",
    "ReplayError",
    "ReplayFormat",
    "ReplayRow",
    "RowParser",
    "detect_format",
    "iter_lines",
    "parse_lines",
]

#: Why a row was dead-lettered. Closed vocabulary, stored as the dead letter's reason.
REASONS = {
    "replay_not_utf8": "the line is not UTF-8 text",
    "replay_line_too_long": "the line is longer than MAX_LINE_BYTES",
    "replay_fields": "the row has a different number of fields than the header",
    "replay_bad_time": "the time field is missing or not a time",
    "replay_time_order": "the row is not later than the previous row",
    "replay_bad_number": "a metric field is not a number",
    "replay_non_finite": "a metric field is infinite",
    "replay_bad_label": "the label field is not 0/1/true/false",
}
MAX_LINE_BYTES = 64 * 1024
_MISSING = {"", "na", "nan", "null", "none"}
_LABEL = {"0": False, "1": True, "0.0": False, "1.0": True, "false": False, "true": True}
_CMAPSS_COLUMNS = ("unit", "cycle", "op1", "op2", "op3", *(f"s{i}" for i in range(1, 22)))


class ReplayError(ValueError):
    """The file cannot be replayed at all (its header, its format, its mapping)."""


@dataclass(frozen=True)
class ReplayFormat:
    """How to read one kind of recorded file.

    Attributes
    ----------
    name : str
    delimiter : str or None
        None splits on whitespace (C-MAPSS).
    columns : tuple of str or None
        Column names for a file without a header; None reads the header line.
    time_column : str or None
        None: rows are ``interval`` seconds apart (by ``cycle`` for C-MAPSS).
    label_column : str or None
    mapping : dict of str to str
        File column -> metric name of the asset type.
    """

    name: str
    delimiter: str | None = ","
    columns: tuple[str, ...] | None = None
    time_column: str | None = "time"
    label_column: str | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)


FORMATS: dict[str, ReplayFormat] = {
    "gecco": ReplayFormat(
        "gecco",
        time_column="time",
        label_column="event",
        mapping=GECCO_COLUMNS,
    ),
    # SKAB's pump rig onto the water_pump type; the units differ from the
    # catalogue's (the rig logs g, bar, degC, A and l/min), values pass unchanged.
    "skab": ReplayFormat(
        "skab",
        delimiter=";",
        time_column="datetime",
        label_column="anomaly",
        mapping={
            "Accelerometer1RMS": "vibration_rms",
            "Current": "motor_current",
            "Pressure": "pressure",
            "Temperature": "bearing_temp",
            "Volume Flow RateRMS": "flow",
        },
    ),
    # C-MAPSS has no header and no clock: one row per cycle of one engine.
    "cmapss": ReplayFormat("cmapss", delimiter=None, columns=_CMAPSS_COLUMNS, time_column=None),
    "csv": ReplayFormat("csv"),
}


def detect_format(first_line: str) -> str:
    """The :data:`FORMATS` key that fits a file's first line."""
    low = first_line.strip().lower()
    if low.startswith("time,") and ",event" in low and "trueb" in low:
        return "gecco"
    if low.startswith("datetime;") and "anomaly" in low:
        return "skab"
    parts = first_line.split()
    if len(parts) == len(_CMAPSS_COLUMNS) and all(_is_number(p) for p in parts):
        return "cmapss"
    return "csv"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """A usable row: its time, the metrics it has, and its label if the file has one."""

    line: int
    ts: datetime
    metrics: dict[str, float]
    label: bool | None
    unit: int | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """A row with a valid time and no value at all."""

    line: int
    ts: datetime
    label: bool | None


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that becomes a dead letter."""

    line: int
    reason: str
    detail: str
    raw: bytes


class RowParser:
    """Turn the lines of one file into :class:`ReplayRow`, :class:`Gap` or :class:`BadRow`.

    Parameters
    ----------
    fmt : ReplayFormat
    asset_type : AssetType
        Mapped metrics must be metrics of this type.
    mapping : mapping of str to str, optional
        Column -> metric overrides on top of ``fmt.mapping``. Columns named
        like a metric of the type map to it without being listed.
    interval_s : float, default=60
        Seconds between rows of a file with no time column.
    start : datetime, optional
        Time of the first row of a file with no time column (default 2000-01-01 UTC).
    """

    def __init__(
        self,
        fmt: ReplayFormat,
        asset_type: AssetType,
        mapping: Mapping[str, str] | None = None,
        *,
        interval_s: float = 60.0,
        start: datetime | None = None,
    ) -> None:
        self.fmt = fmt
        self.asset_type = asset_type
        self.extra_mapping = dict(mapping or {})
        self.interval = timedelta(seconds=interval_s)
        self.start = start or datetime(2000, 1, 1, tzinfo=UTC)
        self.header: tuple[str, ...] | None = fmt.columns
        self._cols: list[tuple[int, str]] = []
        self._time_idx: int | None = None
        self._label_idx: int | None = None
        self._last: datetime | None = None
        self._row_no = 0
        if self.header is not None:
            self._bind(self.header)

    # -- header -------------------------------------------------------------------

    def _bind(self, header: tuple[str, ...]) -> None:
        self.header = header
        lower = {h.strip().lower(): i for i, h in enumerate(header)}
        metrics = set(self.asset_type.metric_names)
        mapping = {**self.fmt.mapping, **self.extra_mapping}
        bad = sorted({m for m in self.extra_mapping.values() if m not in metrics})
        if bad:
            raise ReplayError(
                f"--map names {bad}, not metrics of {self.asset_type.name} "
                f"({', '.join(self.asset_type.metric_names)})"
            )
        cols = []
        for i, name in enumerate(header):
            metric = mapping.get(name.strip(), name.strip())
            if metric in metrics:
                cols.append((i, metric))
        if not cols:
            raise ReplayError(
                f"no column maps to a metric of {self.asset_type.name}; "
                f"header {list(header)[:12]}; name the columns with --map COLUMN=METRIC"
            )
        self._cols = cols
        if self.fmt.time_column is not None:
            idx = lower.get(self.fmt.time_column.lower())
            if idx is None:
                raise ReplayError(f"no time column {self.fmt.time_column!r} in {list(header)[:12]}")
            self._time_idx = idx
        if self.fmt.label_column is not None:
            self._label_idx = lower.get(self.fmt.label_column.lower())

    def set_header(self, line: str) -> None:
        """Read the header line of a file that has one."""
        fields = self._split(line)
        if not fields or all(not f.strip() for f in fields):
            raise ReplayError("the file's first line (its header) is empty")
        self._bind(tuple(f.strip() for f in fields))

    @property
    def metric_columns(self) -> dict[str, str]:
        """File column -> metric, for the columns that are replayed."""
        assert self.header is not None
        return {self.header[i]: m for i, m in self._cols}

    def _split(self, line: str) -> list[str]:
        if self.fmt.delimiter is None:
            return line.split()
        return next(csv.reader([line], delimiter=self.fmt.delimiter), [])

    # -- rows ---------------------------------------------------------------------

    def parse(self, line_no: int, raw: bytes) -> ReplayRow | Gap | BadRow | None:
        """One line of data; None for a blank line."""
        if len(raw) > MAX_LINE_BYTES:
            return BadRow(line_no, "replay_line_too_long", f"{len(raw)} bytes", raw)
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            return BadRow(line_no, "replay_not_utf8", str(exc), raw)
        if not line.strip():
            return None
        if "\x00" in line:
            return BadRow(line_no, "replay_not_utf8", "the line holds a NUL character", raw)
        try:
            fields = self._split(line)
        except csv.Error as exc:
            return BadRow(line_no, "replay_fields", f"unreadable CSV: {exc}", raw)
        assert self.header is not None
        if len(fields) != len(self.header):
            return BadRow(
                line_no,
                "replay_fields",
                f"{len(fields)} fields, the header has {len(self.header)}",
                raw,
            )
        ts = self._time(fields, line_no, raw)
        if isinstance(ts, BadRow):
            return ts
        label: bool | None = None
        if self._label_idx is not None:
            text = fields[self._label_idx].strip().lower()
            if text not in _LABEL:
                return BadRow(line_no, "replay_bad_label", f"label {text[:40]!r}", raw)
            label = _LABEL[text]
        metrics: dict[str, float] = {}
        for i, metric in self._cols:
            text = fields[i].strip()
            if text.lower() in _MISSING:
                continue
            try:
                value = float(text)
            except ValueError:
                return BadRow(line_no, "replay_bad_number", f"{self.header[i]}={text[:40]!r}", raw)
            if math.isnan(value):
                continue  # "nan" spelt another way: missing, as above
            if math.isinf(value):
                return BadRow(line_no, "replay_non_finite", f"{self.header[i]}={text[:40]!r}", raw)
            metrics[metric] = value
        if self._last is not None and ts <= self._last:
            return BadRow(
                line_no,
                "replay_time_order",
                f"{ts.isoformat()} is not after {self._last.isoformat()}",
                raw,
            )
        self._last = ts
        self._row_no += 1
        unit = self._unit(fields)
        if not metrics:
            return Gap(line_no, ts, label)
        return ReplayRow(line_no, ts, metrics, label, unit)

    def _unit(self, fields: list[str]) -> int | None:
        if self.fmt.name != "cmapss":
            return None
        return int(float(fields[0]))

    def _time(self, fields: list[str], line_no: int, raw: bytes) -> datetime | BadRow:
        if self._time_idx is None:
            if self.fmt.name == "cmapss":
                # A new engine restarts its cycles: keep time increasing across engines.
                try:
                    unit, cycle = int(fields[0]), int(fields[1])
                except ValueError:
                    return BadRow(line_no, "replay_bad_time", f"unit/cycle {fields[:2]!r}", raw)
                if not (0 <= unit < 1_000_000 and 0 < cycle < 1_000_000):
                    return BadRow(line_no, "replay_bad_time", f"unit/cycle {fields[:2]!r}", raw)
                return self.start + self.interval * (unit * 1_000_000 + cycle)
            return self.start + self.interval * self._row_no
        text = fields[self._time_idx].strip()
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return BadRow(line_no, "replay_bad_time", f"time {text[:40]!r}", raw)
        # Recorded files without a zone (SKAB) are read as UTC.
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def parse_lines(
    lines: Iterator[bytes], parser: RowParser, *, has_header: bool
) -> Iterator[ReplayRow | Gap | BadRow]:
    """Every data line of a file through ``parser`` (line numbers from 1)."""
    for line_no, raw in enumerate(lines, start=1):
        if line_no == 1 and has_header:
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise ReplayError(f"the header line is not UTF-8: {exc}") from None
            parser.set_header(text.rstrip("\r\n"))
            continue
        out = parser.parse(line_no, raw)
        if out is not None:
            yield out


def iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines of a binary stream; an over-long line yields only its head, so one
    huge line cannot fill memory (the row is dead-lettered as too long)."""
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (more := stream.readline(MAX_LINE_BYTES)) and not more.endswith(b"\n"):
                pass
        yield raw
