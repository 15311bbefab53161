"""File-based model store: versioned risk-model bundles and a champion pointer.

Layout::

    <models_path>/
        CHAMPION                      # one line: the champion's version
        20261124T213000Z-1a2b3c4d/    # one directory per version
            card.json                 # model card (data, metrics, intended use, limits)
            water_pump.model.txt      # LightGBM text model (also loadable by lleaves)
            water_pump.json           # calibration, threshold, feature spec, params
            ...

Nothing is pickled: a bundle is LightGBM text plus JSON, so loading a model
never runs code from the model directory. ``CHAMPION`` is replaced atomically,
so a worker polling it always reads a whole version name, and a promotion
never stops the stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.files import write_text_atomic
from models.bundle import RiskModelBundle, check_version
from models.feature_spec import FeatureSpec
from models.remaining_life import RemainingLifeInterval
from models.risk import FailureRiskClassifier

__all__ = [
    "BundleError",
    "card_summary",
    "file_checksums",
    "list_versions",
    "load_bundle",
    "load_champion",
    "promote",
    "read_champion",
    "save_bundle",
    "smoke_test",
]

CHAMPION_FILE = "CHAMPION"
CARD_FILE = "card.json"
_BUNDLE_FORMAT = 1


def save_bundle(bundle: RiskModelBundle, models_path: Path) -> Path:
    """Write a bundle to ``models_path/<version>/`` and return that directory.

    The version directory is written under a temporary name and renamed into
    place, so readers never see half a bundle.

    Raises
    ------
    FileExistsError
        If that version already exists.
    """
    models_path = Path(models_path)
    version = check_version(bundle.version)
    models_path.mkdir(parents=True, exist_ok=True)
    final = models_path / version
    if final.exists():
        raise FileExistsError(f"model version {version} already exists in {models_path}")
    tmp = Path(tempfile.mkdtemp(dir=models_path, prefix=f".{version}."))
    try:
        for asset_type in bundle.asset_types:
            text, meta = bundle.classifiers[asset_type].to_state()
            (tmp / f"{asset_type}.model.txt").write_text(text, encoding="utf-8")
            meta = {
                "format": _BUNDLE_FORMAT,
                "asset_type": asset_type,
                "feature_spec": bundle.specs[asset_type].to_dict(),
                **meta,
            }
            (tmp / f"{asset_type}.json").write_text(
                json.dumps(meta, indent=2, allow_nan=True), encoding="utf-8"
            )
        rul_meta = {}
        for asset_type, est in sorted(bundle.remaining_life.items()):
            texts, meta = est.to_state()
            for part, text in zip(_RUL_PARTS, texts, strict=True):
                (tmp / f"{asset_type}.rul-{part}.model.txt").write_text(text, encoding="utf-8")
            rul_meta[asset_type] = {
                **bundle.card.get("remaining_life", {}).get(asset_type, {}),
                **meta,
            }
        # Only the remaining-life models saved here: a copy of a bundle without them
        # must not promise files it does not have.
        card = {"version": version, **bundle.card, "remaining_life": rul_meta}
        if not rul_meta:
            card.pop("remaining_life")
        (tmp / CARD_FILE).write_text(
            json.dumps(card, indent=2, default=str, allow_nan=True), encoding="utf-8"
        )
        os.replace(tmp, final)
    except BaseException:
        for p in tmp.glob("*"):
            p.unlink(missing_ok=True)
        tmp.rmdir()
        raise
    return final


class BundleError(ValueError):
    """A saved bundle that cannot be used: its files are not the registered ones,
    do not parse, or the models cannot score. The message names the file and why."""


def _is_bundle_file(path: Path) -> bool:
    # What load_bundle reads: card.json, <type>.json and <type>.model.txt.
    name = path.name
    return (
        path.is_file()
        and not name.startswith(".")
        and (name.endswith(".json") or name.endswith(".model.txt"))
    )


def _read_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if _is_bundle_file(p)}


def file_checksums(models_path: Path, version: str) -> dict[str, str]:
    """sha256 of every file of a saved version, by file name (stored at registration)."""
    directory = Path(models_path) / check_version(version)
    if not (directory / CARD_FILE).is_file():
        raise FileNotFoundError(f"no model version {version} in {models_path}")
    return {name: hashlib.sha256(data).hexdigest() for name, data in _read_files(directory).items()}


def _verify(files: Mapping[str, bytes], expected: Mapping[str, str], version: str) -> None:
    problems = [f"{name} is missing" for name in sorted(set(expected) - set(files))]
    problems += [f"{name} was not registered" for name in sorted(set(files) - set(expected))]
    for name in sorted(set(files) & set(expected)):
        got = hashlib.sha256(files[name]).hexdigest()
        if got != expected[name]:
            problems.append(
                f"{name} changed since registration (sha256 {got[:12]}, "
                f"registered {expected[name][:12]})"
            )
    if problems:
        raise BundleError(f"model {version}: " + "; ".join(problems))


_TREE_KEYS = (b"num_leaves=", b"split_feature=", b"threshold=", b"leaf_value=", b"shrinkage=")


def check_model_text(data: bytes) -> None:
    """Check a LightGBM text model's tree layout before LightGBM parses it.

    LightGBM parses trees in parallel at the offsets its ``tree_sizes`` header
    gives, and a malformed tree there aborts the whole process (observed:
    a model file cut mid-tree ends in ``terminate called``; one cut in its
    parameters segfaults), which no ``except`` can catch. So the layout is
    checked here; registered checksums remain the real protection.

    Raises
    ------
    ValueError
        Naming the first tree that does not line up.
    """
    match = re.search(rb"^tree_sizes=([0-9 ]*)$", data, re.M)
    if match is None:
        raise ValueError("no tree_sizes header")
    pos = data.find(b"\nTree=0\n")
    if pos < 0:
        raise ValueError("no Tree=0")
    pos += 1
    for i, size in enumerate(int(x) for x in match.group(1).split()):
        block = data[pos : pos + size]
        if not block.startswith(b"Tree=%d\n" % i) or len(block) != size:
            raise ValueError(f"tree {i} is not where tree_sizes says (file cut or edited?)")
        missing = [k.decode() for k in _TREE_KEYS if k not in block]
        if missing:
            raise ValueError(f"tree {i} lacks {', '.join(missing)}")
        pos += size
    if not data.startswith(b"end of trees", pos):
        raise ValueError("no 'end of trees' after the last tree")
    # A parameters section cut short crashes LightGBM too (segfault, observed).
    params = data.find(b"\nparameters:\n", pos)
    if params >= 0 and data.find(b"\nend of parameters", params) < 0:
        raise ValueError("the parameters section is cut short")


_RUL_PARTS = ("point", "low", "high")


def _model_text(data: bytes) -> str:
    check_model_text(data)
    return data.decode("utf-8")


def _parse_model(data: bytes, meta: dict[str, Any]) -> FailureRiskClassifier:
    check_model_text(data)
    return FailureRiskClassifier.from_state(data.decode("utf-8"), meta)


def load_bundle(
    models_path: Path, version: str, *, checksums: Mapping[str, str] | None = None
) -> RiskModelBundle:
    """Load one saved version.

    Parameters
    ----------
    checksums : mapping of file name to sha256, optional
        The registered checksums; every file is verified against them before
        anything is parsed (the bytes checked are the bytes loaded).

    Raises
    ------
    FileNotFoundError
        If the version does not exist.
    BundleError
        If a file differs from ``checksums``, or a file does not parse.
    """
    directory = Path(models_path) / check_version(version)
    if not (directory / CARD_FILE).is_file():
        raise FileNotFoundError(f"no model version {version} in {models_path}")
    files = _read_files(directory)
    if checksums is not None:
        _verify(files, checksums, version)

    def parse(name: str, fn: Callable[[bytes], Any]) -> Any:
        if name not in files:
            raise BundleError(f"model {version}: {name} is missing")
        try:
            return fn(files[name])
        except Exception as exc:
            raise BundleError(f"model {version}: {name}: {type(exc).__name__}: {exc}") from exc

    card = parse(CARD_FILE, lambda b: json.loads(b.decode("utf-8")))
    if not isinstance(card, dict):
        raise BundleError(f"model {version}: {CARD_FILE} is not a JSON object")
    classifiers: dict[str, FailureRiskClassifier] = {}
    specs: dict[str, FeatureSpec] = {}
    for name in files:
        if name == CARD_FILE or not name.endswith(".json"):
            continue
        meta = parse(name, lambda b: json.loads(b.decode("utf-8")))
        if not isinstance(meta, dict) or meta.get("format") != _BUNDLE_FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise BundleError(f"model {version}: {name}: unsupported bundle format {fmt!r}")
        asset_type = meta.get("asset_type")
        classifiers[asset_type] = parse(
            f"{asset_type}.model.txt",
            lambda b, m=meta: _parse_model(b, m),
        )
        specs[asset_type] = parse(name, lambda _, m=meta: FeatureSpec.from_dict(m["feature_spec"]))
    remaining: dict[str, Any] = {}
    for asset_type, meta in (card.get("remaining_life") or {}).items():
        names = [f"{asset_type}.rul-{part}.model.txt" for part in _RUL_PARTS]
        texts = tuple(parse(n, lambda b: _model_text(b)) for n in names)
        remaining[asset_type] = parse(
            CARD_FILE, lambda _, t=texts, m=meta: RemainingLifeInterval.from_state(t, m)
        )
    try:
        return RiskModelBundle(
            classifiers=classifiers,
            specs=specs,
            version=card.get("version", version),
            card=card,
            remaining_life=remaining,
        )
    except ValueError as exc:
        raise BundleError(f"model {version}: {exc}") from exc


def smoke_test(bundle: RiskModelBundle) -> None:
    """Score one all-zero row per asset type, as the worker would; raise if it cannot.

    Raises
    ------
    BundleError
        If a model has nothing to score, raises, or returns no probability.
    """
    if not bundle.asset_types:
        raise BundleError(f"model {bundle.version}: no asset types")
    for asset_type in bundle.asset_types:
        try:
            n = bundle.feature_spec(asset_type).n_features
            risk = bundle.predict_proba(asset_type, np.zeros((1, n)))
            threshold = bundle.threshold(asset_type)
        except Exception as exc:
            raise BundleError(
                f"model {bundle.version}: {asset_type} cannot score: {type(exc).__name__}: {exc}"
            ) from exc
        if risk.shape != (1,) or not (0.0 <= float(risk[0]) <= 1.0):
            raise BundleError(
                f"model {bundle.version}: {asset_type} scored a zero row as {risk!r}, "
                "not a probability"
            )
        if not np.isfinite(threshold):
            raise BundleError(f"model {bundle.version}: {asset_type} threshold is {threshold}")


def list_versions(models_path: Path) -> list[str]:
    """Saved versions, oldest first (version names sort by creation time)."""
    models_path = Path(models_path)
    if not models_path.is_dir():
        return []
    return sorted(
        p.name
        for p in models_path.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / CARD_FILE).is_file()
    )


def promote(models_path: Path, version: str) -> None:
    """Make ``version`` the champion by rewriting ``CHAMPION`` atomically.

    Raises
    ------
    FileNotFoundError
        If the version has not been saved.
    """
    models_path = Path(models_path)
    if not (models_path / check_version(version) / CARD_FILE).is_file():
        raise FileNotFoundError(f"no model version {version} in {models_path}")
    write_text_atomic(models_path / CHAMPION_FILE, version + "\n")


def read_champion(models_path: Path) -> str | None:
    """The champion's version name, or None when nothing has been promoted.

    Cheap enough to poll: the worker can compare it with the version it runs.
    """
    path = Path(models_path) / CHAMPION_FILE
    try:
        version = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return version or None


def load_champion(models_path: Path) -> RiskModelBundle | None:
    """The promoted bundle, or None when nothing has been promoted yet."""
    version = read_champion(models_path)
    if version is None:
        return None
    return load_bundle(models_path, version)


def card_summary(card: Mapping[str, Any]) -> str:
    """A few human-readable lines about a model card (for CLI output)."""

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, int | float) else "n/a"

    lines = [f"version {card.get('version')} (owner {card.get('owner')})"]
    for asset_type, m in sorted((card.get("metrics") or {}).items()):
        scores = " ".join(f"{k}={fmt(m.get(k))}" for k in ("auc", "precision", "recall"))
        lines.append(f"  {asset_type}: {scores} threshold={fmt(m.get('threshold'))}")
    return "\n".join(lines)
