"""Benchmark loaders on small files in the published formats, and on the real data."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

from models.datasets import (
    load_cmapss,
    load_cmapss_subset,
    load_skab,
    load_skab_file,
    snake_case,
)


def _write_cmapss(path, units: dict[int, int], trailing: str = "  ") -> None:
    rng = np.random.default_rng(0)
    lines = []
    for unit, n in units.items():
        for cycle in range(1, n + 1):
            values = " ".join(f"{v:.4f}" for v in rng.normal(size=24))
            lines.append(f"{unit} {cycle} {values}{trailing}")
    path.write_text("\n".join(lines) + "\n")


def test_cmapss_loader(tmp_path) -> None:
    _write_cmapss(tmp_path / "train_FD009.txt", {1: 5, 2: 7})
    _write_cmapss(tmp_path / "test_FD009.txt", {1: 3, 2: 4})
    (tmp_path / "RUL_FD009.txt").write_text("10\n20\n")
    train, _, rul = load_cmapss_subset(tmp_path, "FD009")
    assert list(train.columns[:5]) == ["unit", "cycle", "op1", "op2", "op3"]
    assert train.shape == (12, 27)
    assert train.loc[train["unit"] == 1, "rul"].tolist() == [4, 3, 2, 1, 0]
    assert rul.to_dict() == {1: 10.0, 2: 20.0}
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="26 columns"):
        load_cmapss(bad)


def test_cmapss_rul_count_mismatch_is_reported(tmp_path) -> None:
    _write_cmapss(tmp_path / "train_FD001.txt", {1: 5})
    _write_cmapss(tmp_path / "test_FD001.txt", {1: 3, 2: 4, 3: 2})
    (tmp_path / "RUL_FD001.txt").write_text("10\n20\n")
    with pytest.warns(UserWarning, match=r"left out units \[3\]"):
        _, test, rul = load_cmapss_subset(tmp_path, "FD001")
    assert rul.index.tolist() == [1, 2]
    assert test["unit"].nunique() == 3


def test_skab_loader(tmp_path) -> None:
    header = "datetime;Accelerometer1RMS;Volume Flow RateRMS"
    (tmp_path / "free.csv").write_text(f"{header}\n2020-01-01 00:00:00;0.1;32\n")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "10.csv").write_text(
        f"{header};anomaly;changepoint\n"
        "2020-01-01 00:00:00;0.1;32;0.0;0.0\n2020-01-01 00:00:01;0.3;30;1.0;1.0\n"
    )
    (tmp_path / "exp" / "9.csv").write_text(
        f"{header};anomaly;changepoint\n2020-01-01 00:00:00;0.1;32;0.0;0.0\n"
    )
    one = load_skab_file(tmp_path / "exp" / "10.csv")
    assert list(one.columns) == [
        "datetime",
        "accelerometer1_rms",
        "volume_flow_rate_rms",
        "anomaly",
        "changepoint",
    ]
    assert one["anomaly"].tolist() == [0, 1]
    frame = load_skab(tmp_path)
    assert frame["file"].unique().tolist() == ["exp/9.csv", "exp/10.csv", "free.csv"]
    assert frame.groupby("file")["labelled"].first().to_dict() == {
        "exp/10.csv": True,
        "exp/9.csv": True,
        "free.csv": False,
    }
    assert frame.loc[frame["file"] == "exp/10.csv", "tick"].tolist() == [0, 1]
    assert snake_case("Volume Flow RateRMS") == "volume_flow_rate_rms"


@pytest.mark.dataset
def test_real_cmapss_loads(datasets_dir) -> None:
    # The shared copy has more test units than RUL rows; that must be reported.
    with pytest.warns(UserWarning) if _rul_mismatch(datasets_dir) else nullcontext():
        train, _, rul = load_cmapss_subset(datasets_dir)
    assert train["rul"].min() == 0
    assert len(rul) > 0


@pytest.mark.dataset
def test_real_skab_loads(datasets_dir) -> None:
    frame = load_skab(datasets_dir)
    assert frame["labelled"].any()
    assert {"accelerometer1_rms", "volume_flow_rate_rms", "anomaly"} <= set(frame.columns)


def _rul_mismatch(datasets_dir) -> bool:
    folder = datasets_dir / "cmapss"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    n_rul = len((folder / "RUL_FD001.txt").read_text().split())
    units = {line.split()[0] for line in (folder / "test_FD001.txt").read_text().splitlines()}
    return n_rul != len(units)
