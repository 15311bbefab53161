"""`citywatch labels import`: work-order CSV -> labels table, bad rows -> dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from citywatch.cli import main
from models.labels import parse_work_orders

CSV = """work_order_id,asset_id,device_id,observed_at,window_start,outcome,notes
WO-1,pump-1,dev-1,2026-03-02T10:15:00Z,2026-03-01T00:00:00Z,fault_confirmed,bearing
WO-2,pump-2,,2026-03-03 08:00:00,,No fault found,
WO-3,lift-1,,2026-03-04T09:00:00+01:00,,Maintenance,oil change
WO-2,pump-2,,2026-03-03 08:00:00,,No fault found,
WO-4,pump-3,,not-a-date,,fault_confirmed,
WO-5,pump-3,,2026-03-05T00:00:00Z,,exploded,
,pump-4,,2026-03-05T00:00:00Z,,fault_confirmed,
WO-6,pump-5,,2026-03-05T00:00:00Z,2026-03-06T00:00:00Z,fault_confirmed,
WO-1,pump-9,dev-1,2026-03-02T10:15:00Z,,fault_confirmed,
WO-7,pump-5,,2026-03-05T00:00:00Z,,fault_confirmed,x,extra
"""


def test_parse_keeps_good_rows_and_explains_bad_ones(tmp_path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(CSV)
    parsed = parse_work_orders(path)
    assert [(r["label_id"], r["outcome"]) for r in parsed.labels] == [
        ("work_order:WO-1", "fault_confirmed"),
        ("work_order:WO-2", "false_alarm"),
        ("work_order:WO-3", "maintenance"),
    ]
    first = parsed.labels[0]
    assert first["observed_at"] == datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
    assert first["detail"] == {"notes": "bearing"}
    assert parsed.labels[1]["observed_at"].tzinfo is UTC  # no zone given: UTC
    assert parsed.labels[1]["device_id"] is None
    assert parsed.reasons() == {
        "bad_timestamp": 1,
        "unknown_outcome": 1,
        "missing_field": 1,
        "bad_window": 1,
        "conflicting_duplicate": 1,
        "malformed_csv": 1,
    }
    bad = {r["reason"]: r for r in parsed.rejected}
    assert bad["unknown_outcome"]["raw"].startswith(b"WO-5,pump-3")
    assert "line 7" in bad["unknown_outcome"]["detail"]
    assert len({r["deadletter_id"] for r in parsed.rejected}) == len(parsed.rejected)


def test_missing_column_is_refused(tmp_path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("id,asset_id,outcome\nWO-1,a,fault\n")
    with pytest.raises(ValueError, match="missing column"):
        parse_work_orders(path)


@pytest.mark.stack
def test_cli_import_is_idempotent_and_dead_letters_bad_rows(db, base_settings, tmp_path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(CSV)
    runner = CliRunner()
    env = {"CITYWATCH_HOME": str(base_settings.home)}
    first = runner.invoke(main, ["labels", "import", str(path), "--json"], env=env)
    assert first.exit_code == 0, first.output
    counts = json.loads(first.output)
    assert (counts["rows"], counts["new"], counts["rejected"]) == (10, 3, 6)
    assert counts["repeated_rows"] == 1
    again = runner.invoke(main, ["labels", "import", str(path), "--json"], env=env)
    again = json.loads(again.output)
    assert (again["new"], again["already_imported"]) == (0, 3)

    assert db.execute("SELECT count(*) FROM labels WHERE source = 'work_order'").fetchone()[0] == 3
    rows = db.execute(
        "SELECT reason, stage, raw FROM deadletters WHERE stage = 'labels' ORDER BY reason"
    ).fetchall()
    assert [r[0] for r in rows] == sorted(counts["rejected_by_reason"])
    assert all(r[2] for r in rows)  # the raw line is kept

    text = runner.invoke(main, ["labels", "import", str(path)], env=env).output
    assert "0 new" in text and "unknown_outcome: 1" in text
