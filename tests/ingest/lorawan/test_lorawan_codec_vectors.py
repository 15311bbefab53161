"""Golden vectors: every ``test_decode_<name>.json`` beside a codec or profile."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

import ingest.lorawan
from core.assets import ASSET_TYPES
from ingest.lorawan.codecs import PROFILE_DIR, PassthroughCodec, get_codec

PACKAGE = Path(ingest.lorawan.__file__).resolve().parent
VECTOR_FILES = sorted(PACKAGE.rglob("test_decode_*.json"))


def _cases() -> list[Any]:
    params = []
    for path in VECTOR_FILES:
        doc = json.loads(path.read_text())
        for case in doc["cases"]:
            params.append(pytest.param(doc["codec"], case, id=f"{path.stem}: {case['name']}"))
    return params


def _payload(case: dict[str, Any]) -> bytes:
    if "hex" in case:
        return bytes.fromhex(case["hex"])
    return base64.b64decode(case["base64"])


def _contains_in_order(messages: list[str], fragments: list[str]) -> bool:
    return len(messages) == len(fragments) and all(
        frag in msg for msg, frag in zip(messages, fragments, strict=True)
    )


def test_vector_files_cover_every_codec() -> None:
    names = {json.loads(p.read_text())["codec"] for p in VECTOR_FILES}
    expected = {"cayenne_lpp", "passthrough"} | {f"profile:{t}" for t in ASSET_TYPES}
    assert expected <= names


def test_vectors_sit_beside_their_codec() -> None:
    for path in VECTOR_FILES:
        codec = json.loads(path.read_text())["codec"]
        if codec.startswith("profile:"):
            assert path.parent == PROFILE_DIR
            assert path.name == f"test_decode_{codec.removeprefix('profile:')}.json"
        else:
            assert path.parent == PACKAGE / "codecs"
            assert (path.parent / f"{codec}.py").is_file()


@pytest.mark.parametrize(("codec_name", "case"), _cases())
def test_golden_vector(codec_name: str, case: dict[str, Any]) -> None:
    codec = get_codec(codec_name)
    if "object" in case:
        assert isinstance(codec, PassthroughCodec)
        result = codec.decode_object(case["object"])
    else:
        result = codec.decode(_payload(case), case["f_port"])
    expected = case["expected"]
    assert _contains_in_order(result.errors, expected.get("errors", [])), result.errors
    assert _contains_in_order(result.warnings, expected.get("warnings", [])), result.warnings
    if "data" in expected:
        assert result.data == expected["data"]


def test_passthrough_vectors_also_decode_from_json_bytes() -> None:
    codec = PassthroughCodec()
    path = PACKAGE / "codecs" / "test_decode_passthrough.json"
    for case in json.loads(path.read_text())["cases"]:
        from_bytes = codec.decode(json.dumps(case["object"]).encode(), case["f_port"])
        assert from_bytes == codec.decode_object(case["object"])
