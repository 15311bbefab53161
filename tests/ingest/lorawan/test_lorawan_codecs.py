"""Codec behaviour beyond the golden vectors: round trips, profiles, look-up."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from core.assets import ASSET_TYPES
from ingest.lorawan.codecs import (
    BinaryProfileCodec,
    CayenneLppCodec,
    Codec,
    PassthroughCodec,
    ProfileError,
    UnknownCodecError,
    available_codecs,
    get_codec,
    load_profile,
)
from ingest.lorawan.codecs.binary_profile import parse_profile
from ingest.lorawan.codecs.cayenne_lpp import LPP_TYPES, encode_lpp

# --------------------------------------------------------------------------- registry


def test_every_registered_codec_satisfies_the_protocol() -> None:
    for name in available_codecs():
        codec = get_codec(name)
        assert isinstance(codec, Codec)
        assert codec.name == name


def test_get_codec_caches_profiles() -> None:
    assert get_codec("profile:water_pump") is get_codec("profile:water_pump")


@pytest.mark.parametrize(
    "name", ["lpp", "profile:", "profile:nope", "profile:../lift", "PROFILE:lift"]
)
def test_unknown_codec_names_raise(name: str) -> None:
    with pytest.raises(UnknownCodecError):
        get_codec(name)


def test_profile_must_be_named_like_its_file(tmp_path: Path) -> None:
    (tmp_path / "pump_v2.yaml").write_text(
        "name: pump_v1\nfields: [{name: a, type: u8}]\n", encoding="utf-8"
    )
    with pytest.raises(UnknownCodecError, match="must match the file name"):
        get_codec("profile:pump_v2", profile_dirs=[tmp_path])


def test_extra_profile_dirs_are_searched(tmp_path: Path) -> None:
    (tmp_path / "tank.yaml").write_text(
        "name: tank\nfports: [7]\nfields: [{name: level, type: u16, scale: 0.5}]\n",
        encoding="utf-8",
    )
    codec = get_codec("profile:tank", profile_dirs=[tmp_path])
    assert codec.decode(b"\x00\x03", 7).data == {"level": 1.5}
    assert "profile:tank" in available_codecs(profile_dirs=[tmp_path])


# --------------------------------------------------------------------------- Cayenne LPP

_scalar_keys = [t.key for t in LPP_TYPES.values() if t.shape == "scalar"]


@st.composite
def lpp_values(draw: st.DrawFn) -> dict[str, Any]:
    """Decoded-style LPP values that are exactly representable."""
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 8))):
        spec = LPP_TYPES[draw(st.sampled_from(sorted(LPP_TYPES)))]
        channel = draw(st.integers(0, 255))
        key = f"{spec.key}_{channel}"

        def number(size: int, signed: bool, divisor: int) -> int | float:
            bits = size * 8
            low, high = (
                (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            )
            raw = draw(st.integers(low, high))
            return raw if divisor == 1 else raw / divisor

        if spec.shape == "xyz":
            assert isinstance(spec.divisor, int)
            out[key] = {a: number(2, True, spec.divisor) for a in "xyz"}
        elif spec.shape == "gps":
            assert isinstance(spec.divisor, tuple)
            out[key] = {
                p: number(3, True, d)
                for p, d in zip(("latitude", "longitude", "altitude"), spec.divisor, strict=True)
            }
        elif spec.shape == "rgb":
            out[key] = {c: number(1, False, 1) for c in "rgb"}
        else:
            assert isinstance(spec.divisor, int)
            out[key] = number(spec.size, spec.signed, spec.divisor)
    return out


@given(lpp_values())
def test_lpp_encode_decode_round_trip(values: dict[str, Any]) -> None:
    result = CayenneLppCodec().decode(encode_lpp(values), 1)
    assert result.errors == []
    assert result.data == values


def test_lpp_several_channels_and_types_in_one_frame() -> None:
    frame = encode_lpp(
        {"temperature_1": -12.3, "relative_humidity_1": 81.5, "voltage_9": 3.61, "switch_2": 1}
    )
    assert CayenneLppCodec().decode(frame, 5).data == {
        "temperature_1": -12.3,
        "relative_humidity_1": 81.5,
        "voltage_9": 3.61,
        "switch_2": 1,
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": 1.0}, "not an LPP key"),
        ({"bogus_1": 1.0}, "not an LPP key"),
        ({"temperature_256": 1.0}, "not an LPP key"),
        ({"temperature_1": 5000.0}, "does not fit"),
        ({"relative_humidity_1": -1}, "does not fit"),
        ({"temperature_1": math.inf}, "does not fit"),
    ],
)
def test_lpp_encoder_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_lpp(values)


# --------------------------------------------------------------------------- shipped profiles


@pytest.mark.parametrize("asset_type", sorted(ASSET_TYPES))
def test_each_asset_type_has_a_profile_emitting_exactly_its_metrics(asset_type: str) -> None:
    codec = get_codec(f"profile:{asset_type}")
    assert isinstance(codec, BinaryProfileCodec)
    assert codec.profile.asset_type == asset_type
    assert set(codec.profile.output_keys) == set(ASSET_TYPES[asset_type].metric_names)


@given(st.sampled_from(sorted(ASSET_TYPES)), st.data())
def test_profile_decode_encode_decode_is_stable(asset_type: str, data: st.DataObject) -> None:
    codec = get_codec(f"profile:{asset_type}")
    assert isinstance(codec, BinaryProfileCodec)
    port = data.draw(st.sampled_from(sorted(codec.profile.fports or ())))
    layout = codec.profile.layout(port)
    assert layout is not None
    frame = data.draw(
        st.binary(min_size=max(p.end for p in layout), max_size=max(p.end for p in layout))
    )
    first = codec.decode(frame, port)
    assume(not first.warnings)  # sentinels and NaN are covered by the vectors
    second = codec.decode(codec.encode(first.data, port), port)
    assert second.errors == [] and second.warnings == []
    assert second.data == first.data


def test_profile_encode_writes_the_sentinel_for_missing_values() -> None:
    codec = get_codec("profile:water_pump")
    assert isinstance(codec, BinaryProfileCodec)
    frame = codec.encode({"vibration_rms": 1, "motor_current": 2, "pressure": 3, "flow": 4}, 10)
    result = codec.decode(frame, 10)
    assert "bearing_temp" not in result.data
    with pytest.raises(ValueError, match="no invalid sentinel"):
        codec.encode({"bearing_temp": 20.0}, 10)


# --------------------------------------------------------------------------- profile validation

_GOOD: dict[str, Any] = {
    "name": "demo",
    "asset_type": "water_pump",
    "fields": [{"name": "vibration_rms", "type": "u16", "scale": 0.01, "metric": "vibration_rms"}],
}


def _with(**changes: Any) -> dict[str, Any]:
    doc = {**_GOOD, **changes}
    return doc


def _field(**changes: Any) -> dict[str, Any]:
    return _with(fields=[{**_GOOD["fields"][0], **changes}])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a YAML mapping"),
        (_with(colour="red"), "unknown keys"),
        (_with(name=""), "name must match"),
        (_with(name="../x"), "name must match"),
        (_with(asset_type="tram"), "asset_type 'tram'"),
        (_with(endianness="middle"), "endianness"),
        (_with(endianness=["big"]), "endianness"),
        (_with(fields=[]), "non-empty list"),
        (_with(fields=["u8"]), "must be a mapping"),
        (_field(type="u17"), "type 'u17'"),
        (_field(sacle=2), "unknown keys"),
        (_field(name="1st"), "identifier-like"),
        (_field(scale=0), "scale must not be 0"),
        (_field(scale=True), "scale must be a finite number"),
        (_field(offset=math.nan), "offset must be a finite number"),
        (_field(offset="1"), "offset must be a finite number"),
        (_field(fport=0), "not an application fPort"),
        (_field(fport=[]), "must not be empty"),
        (_field(at=-1), "byte position"),
        (_field(bits={"shift": 12, "width": 8}), "do not fit a 16-bit field"),
        (_field(bits={"shift": 0}), "exactly 'shift' and 'width'"),
        (_field(type="f32", bits={"shift": 0, "width": 1}), "integer types"),
        (_field(type="f32", invalid=[0]), "integer types"),
        (_field(invalid="0xFFFF"), "list of raw integer"),
        (_field(metric="bearing"), "not a water_pump metric"),
        (
            _with(fports=[10], fields=[{"name": "a", "type": "u8", "fport": 11}]),
            "missing from fports",
        ),
        (_with(fields=[{"name": "a", "type": "u8"}, {"name": "a", "type": "u8"}]), "appears twice"),
        (
            _with(fports=[10, 11], fields=[{"name": "a", "type": "u8", "fport": 10}]),
            "no field is sent on fPort 11",
        ),
    ],
)
def test_invalid_profiles_fail_at_load_with_a_clear_message(document: Any, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile(document, source="demo.yaml")


def test_load_profile_reports_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nfields: [{name: a, type: u9}]\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"bad\.yaml: fields\[0\] \(a\): type 'u9'"):
        load_profile(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(broken)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.yaml")


def test_fields_can_be_specific_to_a_port() -> None:
    profile = parse_profile(
        yaml.safe_load(
            """
            name: multi
            fields:
              - {name: kind, type: u8}
              - {name: level, type: u16, fport: 1}
              - {name: alarm, type: u8, fport: 2, bits: {shift: 3, width: 2}}
              - {name: temp, type: i16, fport: 2, endianness: little, scale: 0.5}
            """
        )
    )
    codec = BinaryProfileCodec(profile)
    assert codec.decode(bytes.fromhex("07 0102"), 1).data == {"kind": 7, "level": 258}
    assert codec.decode(bytes.fromhex("07 18 FEFF"), 2).data == {
        "kind": 7,
        "alarm": 3,
        "temp": -1.0,
    }
    assert codec.decode(b"\x07\x00\x00", 3).errors


def test_a_profile_without_ports_accepts_every_application_port() -> None:
    codec = BinaryProfileCodec(
        parse_profile({"name": "any", "fields": [{"name": "a", "type": "u8"}]})
    )
    assert codec.decode(b"\x05", 1).data == {"a": 5}
    assert codec.decode(b"\x05", 223).data == {"a": 5}
    assert codec.decode(b"\x05", 0).errors  # fPort 0 carries MAC commands, not data


# --------------------------------------------------------------------------- passthrough


def test_passthrough_drops_deep_nesting_and_non_finite_numbers() -> None:
    codec = PassthroughCodec(max_depth=2)
    result = codec.decode_object({"a": {"b": {"c": 1}}, "d": math.nan, "e": "inf", "f": 2})
    assert result.data == {"f": 2}
    assert len(result.warnings) == 3


def test_passthrough_bytes_that_are_not_json_fail() -> None:
    assert PassthroughCodec().decode(b"\xff{", 1).errors
