"""The asset catalogue: built-in types from a data file, operators' types from theirs,
and every mistake in a catalogue file refused with its place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.assets import (
    ASSET_TYPES,
    CatalogueError,
    load_catalogue,
    parse_catalogue,
    read_catalogue_file,
)

STATION = """
[types.quality_probe]
description = "A test water-quality probe."
metrics = [
  { name = "ph", unit = "pH", low = 0, high = 14 },
  { name = "turbidity", unit = "NTU", low = 0.0, high = 1000.0 },
]
"""


def _run_cli(*args: str, catalogue: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    if catalogue is not None:
        env["CITYWATCH_ASSET_CATALOGUE"] = catalogue
    return subprocess.run(
        [sys.executable, "-m", "citywatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_builtin_catalogue_starts_with_the_four_city_asset_types():
    assert list(ASSET_TYPES)[:4] == ["water_pump", "bridge", "lift", "streetlight"]
    assert all(len(ASSET_TYPES[t].metrics) == 5 for t in list(ASSET_TYPES)[:4])
    pressure = ASSET_TYPES["water_pump"].metric("pressure")
    assert (pressure.unit, pressure.low, pressure.high) == ("bar", 0.0, 40.0)


def test_an_operator_file_adds_a_type_after_the_builtin_ones(tmp_path):
    extra = tmp_path / "station.toml"
    extra.write_text(STATION)
    catalogue = load_catalogue([extra])
    assert list(catalogue)[-1] == "quality_probe"
    assert catalogue["quality_probe"].metric_names == ("ph", "turbidity")
    assert catalogue["quality_probe"].metric("ph").high == 14.0


def test_a_process_started_with_an_operator_file_knows_its_types(tmp_path):
    extra = tmp_path / "station.toml"
    extra.write_text(STATION)
    done = _run_cli("assets", "list", "--json", catalogue=str(extra))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {*ASSET_TYPES, "quality_probe"}
    assert doc["quality_probe"]["metrics"][0] == {
        "name": "ph",
        "unit": "pH",
        "low": 0.0,
        "high": 14.0,
    }


def test_a_process_with_a_bad_catalogue_refuses_to_start_with_the_reason(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(STATION.replace("high = 14", "high = -1"))
    done = _run_cli("assets", "list", catalogue=str(bad))
    assert done.returncode == 1
    assert "cannot use the asset catalogue" in done.stderr
    assert "low 0.0 must be below high -1.0" in done.stderr
    assert "Traceback" not in done.stderr


def test_assets_check_names_the_file_and_the_mistake(tmp_path):
    good, clash = tmp_path / "good.toml", tmp_path / "clash.toml"
    good.write_text(STATION)
    clash.write_text(STATION.replace("quality_probe", "lift"))
    done = _run_cli("assets", "check", str(good))
    assert done.returncode == 0 and "ok:" in done.stdout
    done = _run_cli("assets", "check", str(good), str(clash))
    assert done.returncode == 1
    assert "already defined: lift" in done.stderr


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (STATION.replace("high = 14", "high = nan"), "finite number"),
        (STATION.replace("high = 14", "high = inf"), "finite number"),
        (STATION.replace("high = 14", "high = true"), "finite number"),
        (STATION.replace("high = 14", 'high = "14"'), "finite number"),
        (STATION.replace('"ph"', '"turbidity"'), "listed twice"),
        (STATION.replace('name = "ph"', 'name = "pH value"'), "must match"),
        (STATION.replace("quality_probe", "Quality-Probe"), "must match"),
        (STATION.replace('unit = "pH"', 'unit = "pH", scale = 2'), "unknown key"),
        (STATION.replace("description", "descripton"), "unknown key"),
        (STATION.replace('unit = "pH"', 'unit = "p\\u0000H"'), "printable text"),
        ("[types.empty]\ndescription = 'x'\nmetrics = []\n", "1 to 64 metrics"),
        ("title = 'no types'\n", "unknown key"),
        ("[types.x\n", "not valid UTF-8 TOML"),
    ],
)
def test_every_mistake_is_refused_with_its_place(tmp_path, text, reason):
    path = tmp_path / "operator.toml"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=reason) as caught:
        read_catalogue_file(path)
    assert str(path) in str(caught.value)


def test_binary_oversized_and_missing_files_are_refused(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[types]")
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (1 << 20))
    for path, reason in [
        (binary, "UTF-8"),
        (huge, "at most"),
        (tmp_path / "missing.toml", "cannot read"),
    ]:
        with pytest.raises(CatalogueError, match=reason):
            read_catalogue_file(path)


def test_a_type_cannot_be_redefined(tmp_path):
    extra = tmp_path / "redefine.toml"
    extra.write_text(STATION.replace("quality_probe", "water_pump"))
    with pytest.raises(CatalogueError, match=r"already defined in .*asset_types\.toml"):
        load_catalogue([extra])


_toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["types", "other"]),
        st.dictionaries(st.text(max_size=12), _toml_values, max_size=3) | _toml_values,
        max_size=2,
    )
)
def test_any_document_is_either_a_catalogue_or_a_catalogue_error(document):
    try:
        catalogue = parse_catalogue(document, "fuzz")
    except CatalogueError:
        return
    for asset_type in catalogue.values():
        assert asset_type.metrics
        assert all(m.low < m.high for m in asset_type.metrics)


def test_the_builtin_file_is_packaged():
    root = Path(__file__).resolve().parents[2]
    assert '"*.toml"' in (root / "pyproject.toml").read_text()
    assert (root / "core" / "asset_types.toml").is_file()
