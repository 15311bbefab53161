"""`citywatch bench model` and `bench scoring` on small files in the published formats."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
from click.testing import CliRunner

from citywatch.cli import main


def _cmapss_like(folder, subset: str = "FD777", seed: int = 0) -> None:
    """Engines whose sensors drift faster as they near failure, in C-MAPSS's text format."""
    rng = np.random.default_rng(seed)

    def engine(unit: int, life: int, stop: int) -> list[str]:
        rows = []
        offset = rng.normal(size=21) * 0.5
        for cycle in range(1, stop + 1):
            wear = (cycle / life) ** 2
            sensors = 10 + offset + wear * np.linspace(1, 5, 21) + rng.normal(size=21) * 0.2
            ops = rng.normal(size=3) * 0.01
            rows.append(" ".join([str(unit), str(cycle), *(f"{v:.4f}" for v in (*ops, *sensors))]))
        return rows

    train, test, rul = [], [], []
    for unit in range(1, 21):
        life = int(rng.integers(150, 260))
        train += engine(unit, life, life)
    for unit in range(1, 13):
        life = int(rng.integers(150, 260))
        stop = int(rng.integers(60, life - 5))
        test += engine(unit, life, stop)
        rul.append(str(life - stop))
    (folder / f"train_{subset}.txt").write_text("\n".join(train) + "\n")
    (folder / f"test_{subset}.txt").write_text("\n".join(test) + "\n")
    (folder / f"RUL_{subset}.txt").write_text("\n".join(rul) + "\n")


def _skab_like(folder, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    header = "datetime;Accelerometer1RMS;Current;Pressure;Temperature;anomaly;changepoint"
    (folder / "valve1").mkdir()
    for k in range(4):
        n, start = 420, 250 + 10 * k
        lines = [header]
        for i in range(n):
            bad = start <= i < start + 100
            v = rng.normal(size=4) * 0.05 + [0.2, 1.0, 0.5, 70.0]
            if bad:
                v[k % 3] += 0.6
            ts = f"2020-03-0{k + 1} 10:{i // 60:02d}:{i % 60:02d}"
            lines.append(";".join([ts, *(f"{x:.4f}" for x in v), str(float(bad)), "0.0"]))
        (folder / "valve1" / f"{k}.csv").write_text("\n".join(lines) + "\n")


def test_bench_model_cmapss_format(tmp_path) -> None:
    _cmapss_like(tmp_path)
    out = CliRunner().invoke(
        main,
        [
            "bench",
            "model",
            "--dataset",
            "cmapss",
            "--data",
            str(tmp_path),
            "--subset",
            "FD777",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["dataset"] == "C-MAPSS FD777" and result["n_test_units"] == 12
    for key in ("rmse", "phm_score", "auc", "precision", "recall"):
        assert key in result
    assert 0 < result["rmse"] < 60  # learnable drift; a constant guess is far worse
    assert "--subset FD777" in result["command"]
    # the regressor was chosen on validation engines, and the RUL has an interval
    assert len(result["validation"]["candidates"]) == 3
    assert result["validation"]["rmse"] == min(
        c["rmse"] for c in result["validation"]["candidates"]
    )
    assert result["interval"]["quantiles"] == [0.1, 0.9] and result["interval"]["n"] == 12
    assert 0 <= result["interval"]["coverage"] <= 1 and result["interval"]["mean_width"] > 0


def test_bench_model_skab_format(tmp_path) -> None:
    _skab_like(tmp_path)
    out = CliRunner().invoke(
        main,
        [
            "bench",
            "model",
            "--dataset",
            "skab",
            "--data",
            str(tmp_path),
            "--seeds",
            "0,1",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["n_files"] == 4 and result["folds"] == 4  # leave one file out
    # one candidate chosen per held-out file by inner folds, and the spread over files
    assert set(result["chosen"]) == {f"valve1/{k}.csv" for k in range(4)}
    assert result["spread"]["f1"]["min"] <= result["spread"]["f1"]["max"]
    assert set(result["seeds"]) == {"0", "1"}
    spread = result["spread_over_seeds"]["f1"]
    assert spread["min"] <= spread["mean"] <= spread["max"]
    for key in ("f1", "far", "mar"):
        assert result[key] is not None
    assert 0 <= result["far"] <= 100 and 0 <= result["mar"] <= 100


def test_bench_model_explains_missing_files(tmp_path) -> None:
    out = CliRunner().invoke(
        main, ["bench", "model", "--dataset", "cmapss", "--data", str(tmp_path)]
    )
    assert out.exit_code != 0
    assert "cmapss:" in out.output


def test_bench_scoring_reports_all_three_ways(tmp_path, trained_models, base_settings) -> None:
    env = {"CITYWATCH_HOME": str(base_settings.home)}
    out = CliRunner().invoke(
        main,
        [
            "bench",
            "scoring",
            "--rows",
            "3000",
            "--single-rows",
            "200",
            "--version",
            trained_models.version,
            "--json",
        ],
        env=env,
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["model"] == trained_models.version
    assert result["rows"] == 3000 and result["single_row_rows"] == 200
    assert result["single_row_per_s"] > 0 and result["batch_per_s"] > 0
    if importlib.util.find_spec("lleaves") is None:
        assert result["compiled_batch_per_s"] is None and result["compiled_reason"]
    else:
        assert result["compiled_batch_per_s"] > 0 and result["compiled_reason"] is None
        assert result["compiled_max_abs_diff"] < 1e-12
