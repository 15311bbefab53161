"""Broken model bundles: refused at promotion, or survived by the worker with a recorded reason.

Real files in a real model store and the real registry database: bundles are
corrupted the way disks and people corrupt them (a changed byte, a missing or
extra file, garbage in a model, a calibration that yields NaN).
"""

from __future__ import annotations

import contextlib
import json
import math

import psycopg
import pytest
from click.testing import CliRunner

from models.bundle import RiskModelBundle
from models.bundle_store import file_checksums, save_bundle
from models.catalog import ActiveBundles, BundleError, CatalogError, ModelCatalog
from streams.app import ModelsUnavailableError, current_models

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def bundle(small_bundle) -> RiskModelBundle:
    return small_bundle


def _save(bundle: RiskModelBundle, path, *names: str) -> list[str]:
    for name in names:
        save_bundle(RiskModelBundle(bundle.classifiers, bundle.specs, name, bundle.card), path)
    return list(names)


def _failures(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as c:
        return c.execute(
            "SELECT version, role, stage, kept, reason FROM model_load_failures ORDER BY failure_id"
        ).fetchall()


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_registration_records_checksums_and_every_load_checks_them(
    tmp_path, registry_db, bundle
) -> None:
    (v,) = _save(bundle, tmp_path, "A")
    reg = ModelCatalog(registry_db, tmp_path)
    reg.register(v)
    stored = reg.show(v)["file_sha256"]
    expected = {"card.json"} | {
        f"{t}{ext}" for t in bundle.asset_types for ext in (".json", ".model.txt")
    }
    assert set(stored) == expected and stored == file_checksums(tmp_path, v)
    assert all(len(h) == 64 for h in stored.values())
    assert reg.load(v).version == v

    model = tmp_path / v / f"{bundle.asset_types[0]}.model.txt"
    original = model.read_bytes()
    _flip_a_byte(model)
    with pytest.raises(BundleError, match=rf"{model.name} changed since registration"):
        reg.load(v)
    model.unlink()
    with pytest.raises(BundleError, match=rf"{model.name} is missing"):
        reg.load(v)
    model.write_bytes(original)
    (tmp_path / v / "extra.json").write_text("{}")
    with pytest.raises(BundleError, match=r"extra\.json was not registered"):
        reg.load(v)
    (tmp_path / v / "extra.json").unlink()
    assert reg.load(v).version == v  # the original bytes load again


def test_a_broken_bundle_is_refused_at_registration_and_promotion(
    tmp_path, registry_db, bundle, base_settings
) -> None:
    from citywatch.cli import main

    a, b, c = _save(bundle, tmp_path, "A", "B", "C")
    reg = ModelCatalog(registry_db, tmp_path)
    for v in (a, b, c):
        reg.register(v)
    reg.promote(a, actor="ops")
    kind = bundle.asset_types[0]

    # B's model file changed on disk after registration.
    _flip_a_byte(tmp_path / b / f"{kind}.model.txt")
    env = {
        "CITYWATCH_HOME": str(base_settings.home),
        "CITYWATCH_MODEL_DIR": str(tmp_path),
        "CITYWATCH_ACTOR": "ops",
    }
    runner = CliRunner()
    out = runner.invoke(main, ["model", "promote", b], env=env)
    assert out.exit_code != 0
    assert f"refused: model {b} cannot be champion" in out.output
    assert f"{kind}.model.txt changed since registration" in out.output
    assert f"The champion stays {a}" in out.output
    assert reg.active().champion == a

    # C was registered before checksums existed, then its calibration went bad:
    # it parses, but scores NaN, which the smoke test catches.
    with psycopg.connect(registry_db, autocommit=True) as conn:
        conn.execute("UPDATE model_registry SET file_sha256 = NULL WHERE version = %s", (c,))
    meta_path = tmp_path / c / f"{kind}.json"
    meta = json.loads(meta_path.read_text())
    meta["calibrator"].update(a=math.nan, b=math.nan, y=[math.nan] * len(meta["calibrator"]["y"]))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CatalogError, match=f"{kind} scored a zero row as .*nan"):
        reg.promote(c, actor="ops")
    with pytest.raises(CatalogError, match="refused"):
        reg.set_challenger(c, actor="ops")
    assert reg.active().champion == a and reg.active().challenger is None

    failures = _failures(registry_db)
    assert [(f[0], f[1], f[2], f[3]) for f in failures] == [
        (b, "champion", "promote", a),
        (c, "champion", "promote", a),
        (c, "challenger", "promote", None),
    ]
    listed = runner.invoke(main, ["model", "list"], env=env).output
    assert "REFUSED" in listed and "changed since registration" in listed
    shown = runner.invoke(main, ["model", "show", c], env=env).output
    assert "refused" in shown and "no checksums" in shown

    # A registration smoke-tests too: a copy with the bad calibration never gets in.
    (tmp_path / "D").mkdir()
    for f in (tmp_path / c).iterdir():
        (tmp_path / "D" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(BundleError, match="not a probability"):
        reg.register("D")
    assert "D" not in {r["version"] for r in reg.list()}


def test_the_worker_keeps_the_last_good_champion_and_records_why(
    tmp_path, registry_db, bundle
) -> None:
    a, b = _save(bundle, tmp_path, "A", "B")
    reg = ModelCatalog(registry_db, tmp_path)
    reg.register(a)
    reg.register(b)
    reg.promote(a, actor="ops")
    # Tries a failed version on every batch here; still one row per reason.
    worker = ActiveBundles(reg, check_every_s=0.0, retry_failed_s=0.0)
    assert worker.current()[0].version == a

    # B passes its checks at promotion, then its files change before the worker loads it.
    reg.promote(b, actor="ops")
    model = tmp_path / b / f"{bundle.asset_types[0]}.model.txt"
    original = model.read_bytes()
    model.write_text("tree\nnot a LightGBM model\n")
    for _ in range(5):  # every batch asks; one failure row, not one per batch
        champion, _ = worker.current()
        assert champion.version == a
        kind = bundle.asset_types[0]
        risk = champion.predict_proba(kind, [[0.0] * champion.feature_spec(kind).n_features])
        assert 0.0 <= risk[0] <= 1.0
    failures = _failures(registry_db)
    assert len(failures) == 1
    version, role, stage, kept, reason = failures[0]
    assert (version, role, stage, kept) == (b, "champion", "load", a)
    assert f"{model.name} changed since registration" in reason
    assert reg.list()[0]["load_failure"] == reason  # newest first: B

    # Restored files are picked up at the next retry.
    model.write_bytes(original)
    assert worker.current()[0].version == b


def test_a_worker_starting_without_a_loadable_champion_waits(tmp_path, registry_db, bundle) -> None:
    (a,) = _save(bundle, tmp_path, "A")
    reg = ModelCatalog(registry_db, tmp_path)
    reg.register(a)
    reg.promote(a, actor="ops")
    (tmp_path / a / "card.json").unlink()

    worker = ActiveBundles(reg, check_every_s=0.0, retry_failed_s=3600)
    # The worker's own wrapper turns it into a wait-and-retry, like a database outage.
    for _ in range(3):
        with pytest.raises(ModelsUnavailableError, match=f"champion {a} cannot be loaded"):
            current_models(worker)
    assert [(f[0], f[2], f[3]) for f in _failures(registry_db)] == [(a, "load", None)]


def test_a_model_file_cut_anywhere_is_refused_not_a_crash(tmp_path, bundle) -> None:
    """Without checksums (CHAMPION-file installs, versions registered before them),
    LightGBM itself would abort or segfault on a model cut mid-tree or mid-parameters."""
    from models.bundle_store import load_bundle, smoke_test

    (v,) = _save(bundle, tmp_path, "A")
    model = tmp_path / v / f"{bundle.asset_types[0]}.model.txt"
    text = model.read_bytes()
    trees_end = text.index(b"end of trees")
    end = text.index(b"\nend of parameters")
    for n in range(0, end, max(1, end // 150)):
        model.write_bytes(text[:n])
        if n <= trees_end:  # every tree is needed: refused
            with pytest.raises(BundleError, match=model.name):
                smoke_test(load_bundle(tmp_path, v))
        else:  # a cut in the trailer may load (the trees are whole); it must not crash
            with contextlib.suppress(BundleError):
                smoke_test(load_bundle(tmp_path, v))
    model.write_bytes(text)
    smoke_test(load_bundle(tmp_path, v))
