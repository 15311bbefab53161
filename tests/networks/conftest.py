from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def leakdb_dir() -> Path:
    """The shared LeakDB files (skips when absent, as on a user's machine)."""
    default = Path(__file__).resolve().parents[3] / "shared" / "datasets"
    path = Path(os.environ.get("CITYWATCH_DATASETS", default)) / "leakdb"
    if not path.is_dir():
        pytest.skip(f"LeakDB folder {path} not found (set CITYWATCH_DATASETS)")
    return path


@pytest.fixture(scope="session")
def battledim_dir() -> Path:
    """The shared BattLeDIM files (skips when absent)."""
    default = Path(__file__).resolve().parents[3] / "shared" / "datasets"
    path = Path(os.environ.get("CITYWATCH_DATASETS", default)) / "battledim"
    if not path.is_dir():
        pytest.skip(f"BattLeDIM folder {path} not found (set CITYWATCH_DATASETS)")
    return path
