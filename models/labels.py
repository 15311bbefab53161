"""Work-order CSV files as training labels.

A maintenance system's export, one row per closed work order::

    work_order_id,asset_id,device_id,observed_at,window_start,outcome,notes
    WO-1001,pump-0007,,2026-03-02T10:15:00Z,2026-03-01T00:00:00Z,fault_confirmed,bearing

Required: ``work_order_id`` (or ``id``), ``asset_id``, ``observed_at`` (or
``closed_at`` / ``completed_at``; ISO 8601, UTC when no zone is given) and
``outcome``. Optional: ``device_id``, ``window_start``. Every other column is
kept in ``detail``. Outcomes are ``fault_confirmed``, ``false_alarm``,
``no_access`` and ``maintenance`` (case, spaces and hyphens are ignored; a few
common spellings such as ``fault found`` or ``no fault found`` are mapped).

Each row becomes a label with ``label_id = "work_order:<id>"``, so importing a
file twice adds nothing. A row that cannot be used is rejected with its reason
and its raw text, for the dead-letter table; the rest of the file still loads.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.vocabulary import LABEL_OUTCOMES as OUTCOMES

__all__ = ["OUTCOMES", "LabelImport", "parse_work_orders"]

_OUTCOME_ALIASES = {
    "fault": "fault_confirmed",
    "fault_found": "fault_confirmed",
    "confirmed": "fault_confirmed",
    "failure": "fault_confirmed",
    "no_fault": "false_alarm",
    "no_fault_found": "false_alarm",
    "nff": "false_alarm",
    "false_positive": "false_alarm",
    "no_access_possible": "no_access",
    "preventive_maintenance": "maintenance",
    "repair": "maintenance",
}
_ID = ("work_order_id", "id")
_OBSERVED = ("observed_at", "closed_at", "completed_at")


@dataclass
class LabelImport:
    """Rows ready for the labels table, and the rows rejected with their reasons."""

    labels: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0  # data rows read
    repeats: int = 0  # exact repeats of a row earlier in the file (ignored)

    def reasons(self) -> dict[str, int]:
        """Rejected rows counted by reason."""
        out: dict[str, int] = {}
        for r in self.rejected:
            out[r["reason"]] = out.get(r["reason"], 0) + 1
        return out


def _time(value: str) -> datetime:
    ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _pick(row: dict[str, str], names: tuple[str, ...]) -> str:
    for n in names:
        v = (row.get(n) or "").strip()
        if v:
            return v
    return ""


def _outcome(value: str) -> str | None:
    key = "_".join(value.strip().lower().replace("-", " ").split())
    key = _OUTCOME_ALIASES.get(key, key)
    return key if key in OUTCOMES else None


def parse_work_orders(path: Path) -> LabelImport:
    """Read a work-order CSV into label rows and rejected rows (never raises on a bad row).

    Raises
    ------
    ValueError
        If the file has no header or lacks a required column altogether.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [
        names[0]
        for names in (_ID, ("asset_id",), _OBSERVED, ("outcome",))
        if not any(n in header for n in names)
    ]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {missing}; header is {header}")
    known = {*_ID, *_OBSERVED, "asset_id", "device_id", "window_start", "outcome"}
    result = LabelImport()
    seen: dict[str, dict[str, Any]] = {}
    for line_no, row in enumerate(reader, start=2):
        result.rows += 1
        buf = io.StringIO()
        csv.writer(buf).writerow([row.get(h, "") for h in header])
        raw = buf.getvalue().rstrip("\r\n").encode()

        def reject(reason: str, detail: str, line_no=line_no, raw=raw) -> None:
            result.rejected.append(
                {
                    "deadletter_id": "labels:" + hashlib.sha1(raw).hexdigest(),
                    "stage": "labels",
                    "reason": reason,
                    "detail": f"{path.name} line {line_no}: {detail}",
                    "raw": raw,
                }
            )

        if None in row:  # more fields than the header
            reject("malformed_csv", "more fields than the header")
            continue
        wo_id, asset_id = _pick(row, _ID), _pick(row, ("asset_id",))
        observed, outcome_raw = _pick(row, _OBSERVED), _pick(row, ("outcome",))
        if not wo_id or not asset_id or not observed or not outcome_raw:
            reject("missing_field", "work_order_id, asset_id, observed_at and outcome are required")
            continue
        outcome = _outcome(outcome_raw)
        if outcome is None:
            reject("unknown_outcome", f"outcome {outcome_raw!r} is not one of {list(OUTCOMES)}")
            continue
        try:
            observed_at = _time(observed)
            start = _pick(row, ("window_start",))
            window_start = _time(start) if start else None
        except ValueError as exc:
            reject("bad_timestamp", str(exc))
            continue
        if window_start is not None and window_start > observed_at:
            reject("bad_window", "window_start is after observed_at")
            continue
        label = {
            "label_id": f"work_order:{wo_id}",
            "asset_id": asset_id,
            "device_id": _pick(row, ("device_id",)) or None,
            "observed_at": observed_at,
            "window_start": window_start,
            "outcome": outcome,
            "source": "work_order",
            "detail": {k: v for k, v in row.items() if k not in known and v not in ("", None)},
        }
        previous = seen.get(label["label_id"])
        if previous is not None:
            if previous != label:
                reject("conflicting_duplicate", f"work order {wo_id} appears twice, differently")
            else:
                result.repeats += 1  # an exact repeat is harmless
            continue
        seen[label["label_id"]] = label
        result.labels.append(label)
    return result
