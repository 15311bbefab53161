"""Loaders for the public benchmark formats used to evaluate the models.

* NASA C-MAPSS turbofan run-to-failure data: whitespace-separated, no header,
  26 columns ``unit cycle op1 op2 op3 s1 ... s21`` (``train_FD00x.txt``,
  ``test_FD00x.txt``) and one true RUL per test unit (``RUL_FD00x.txt``).
* SKAB (Skoltech Anomaly Benchmark) pump-rig experiments: ``;``-separated CSV
  with a ``datetime`` column, sensor columns and optional ``anomaly`` and
  ``changepoint`` labels.

The files are read where they are; nothing is copied (SKAB is GPL-3.0 and must
not be redistributed with citywatch). Any file in the same format loads, not
only the published ones.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CMAPSS_COLUMNS",
    "CMAPSS_SENSORS",
    "load_cmapss",
    "load_cmapss_rul",
    "load_cmapss_subset",
    "load_skab",
    "load_skab_file",
    "skab_files",
    "snake_case",
]

CMAPSS_SENSORS = tuple(f"s{i}" for i in range(1, 22))
CMAPSS_COLUMNS = ("unit", "cycle", "op1", "op2", "op3", *CMAPSS_SENSORS)


def load_cmapss(path: str | Path) -> pd.DataFrame:
    """One C-MAPSS train or test file.

    Parameters
    ----------
    path : str or Path
        A whitespace-separated file with 26 columns and no header.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CMAPSS_COLUMNS`; ``unit`` and ``cycle`` as int, sorted
        by unit then cycle.

    Raises
    ------
    ValueError
        If a row does not have 26 columns.
    """
    frame = pd.read_csv(path, sep=r"\s+", header=None, engine="c")
    frame = frame.dropna(axis=1, how="all")  # trailing blanks on some lines
    if frame.shape[1] != len(CMAPSS_COLUMNS):
        raise ValueError(f"{path}: expected 26 columns, found {frame.shape[1]}")
    frame.columns = list(CMAPSS_COLUMNS)
    frame = frame.astype({"unit": np.int64, "cycle": np.int64})
    return frame.sort_values(["unit", "cycle"], kind="mergesort").reset_index(drop=True)


def load_cmapss_rul(path: str | Path) -> np.ndarray:
    """True remaining life after each test unit's last cycle, in unit order."""
    values = pd.read_csv(path, sep=r"\s+", header=None).dropna(axis=1, how="all")
    if values.shape[1] != 1:
        raise ValueError(f"{path}: expected one column, found {values.shape[1]}")
    return values.iloc[:, 0].to_numpy(dtype=np.float64)


def load_cmapss_subset(
    data_dir: str | Path, subset: str = "FD001"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Train, test and RUL of one subset, with a ``rul`` column on train.

    Parameters
    ----------
    data_dir : str or Path
        Folder with ``train_<subset>.txt``, ``test_<subset>.txt`` and
        ``RUL_<subset>.txt`` (it may also be the folder above a ``cmapss/`` one).
    subset : str, default="FD001"

    Returns
    -------
    train : pandas.DataFrame
        With ``rul`` = cycles left until that unit's last (failure) cycle.
    test : pandas.DataFrame
    rul : pandas.Series
        True RUL after the last cycle of each test unit, indexed by unit id.
        ``RUL_<subset>.txt`` lists one value per test unit "in order", so its
        rows are matched to the test units in ascending unit order. If the
        counts differ, only the first ``min(n_units, n_rul)`` units are
        matched, a :class:`UserWarning` names the rest, and those units are
        absent from the index (so callers cannot score them by accident).
    """
    data_dir = Path(data_dir)
    if not (data_dir / f"train_{subset}.txt").is_file() and (data_dir / "cmapss").is_dir():
        data_dir = data_dir / "cmapss"
    train = load_cmapss(data_dir / f"train_{subset}.txt")
    test = load_cmapss(data_dir / f"test_{subset}.txt")
    values = load_cmapss_rul(data_dir / f"RUL_{subset}.txt")
    units = np.sort(test["unit"].unique())
    n = min(len(units), len(values))
    if len(units) != len(values):
        warnings.warn(
            f"{data_dir}: RUL_{subset}.txt has {len(values)} rows but test_{subset}.txt has "
            f"{len(units)} units; matched the first {n} units in order, left out units "
            f"{units[n:].tolist()} and RUL rows {list(range(n + 1, len(values) + 1))}",
            UserWarning,
            stacklevel=2,
        )
    rul = pd.Series(values[:n], index=pd.Index(units[:n], name="unit"), name="rul")
    train["rul"] = train.groupby("unit")["cycle"].transform("max") - train["cycle"]
    return train, test, rul


def snake_case(name: str) -> str:
    """``"Volume Flow RateRMS"`` -> ``"volume_flow_rate_rms"``."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    name = re.sub(r"[^0-9A-Za-z]+", "_", name)
    return re.sub(r"_+", "_", name).strip("_").lower()


def load_skab_file(path: str | Path) -> pd.DataFrame:
    """One SKAB experiment.

    Parameters
    ----------
    path : str or Path
        A ``;``-separated CSV with a ``datetime`` column.

    Returns
    -------
    pandas.DataFrame
        ``datetime`` (parsed), the sensor columns renamed to snake_case
        (``accelerometer1_rms``, ..., ``volume_flow_rate_rms``), and
        ``anomaly`` / ``changepoint`` as int8 (0 when the file has no labels,
        as in the anomaly-free file), in file order.
    """
    frame = pd.read_csv(path, sep=";")
    if "datetime" not in frame.columns:
        raise ValueError(f"{path}: no 'datetime' column; not a SKAB file")
    frame["datetime"] = pd.to_datetime(frame["datetime"])
    frame = frame.rename(columns={c: snake_case(c) for c in frame.columns})
    for label in ("anomaly", "changepoint"):
        frame[label] = (
            frame[label].fillna(0).astype(np.int8) if label in frame.columns else np.int8(0)
        )
    return frame


def skab_files(data_dir: str | Path) -> list[Path]:
    """Every ``*.csv`` below ``data_dir`` (or its ``skab/`` folder), sorted naturally."""
    data_dir = Path(data_dir)
    if (data_dir / "skab").is_dir():
        data_dir = data_dir / "skab"

    def key(p: Path) -> tuple:
        rel = p.relative_to(data_dir)
        return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(rel)))

    return sorted(data_dir.rglob("*.csv"), key=key)


def load_skab(data_dir: str | Path, files: Iterable[Path] | None = None) -> pd.DataFrame:
    """All SKAB experiments below ``data_dir`` in one frame.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`load_skab_file` plus ``file`` (path relative to
        the SKAB folder, used as the device id), ``tick`` (row number within
        the file) and ``labelled`` (whether the file has an ``anomaly`` column).
    """
    data_dir = Path(data_dir)
    root = data_dir / "skab" if (data_dir / "skab").is_dir() else data_dir
    frames = []
    for path in files if files is not None else skab_files(root):
        frame = load_skab_file(path)
        header = pd.read_csv(path, sep=";", nrows=0).columns
        frame.insert(0, "file", str(Path(path).relative_to(root)))
        frame.insert(1, "tick", np.arange(len(frame), dtype=np.int64))
        frame["labelled"] = "anomaly" in header
        frames.append(frame)
    if not frames:
        raise FileNotFoundError(f"no SKAB csv files below {root}")
    return pd.concat(frames, ignore_index=True)
