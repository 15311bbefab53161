"""The database model registry: register, promote, challenger, rollback, load."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime

import psycopg
import pytest

from models.bundle import RiskModelBundle
from models.bundle_store import read_champion, save_bundle
from models.catalog import ActiveModels, BundleError, CatalogError, ModelCatalog

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def bundle(small_bundle) -> RiskModelBundle:
    return small_bundle


def _save_versions(bundle: RiskModelBundle, path, n: int) -> list[str]:
    versions = []
    for i in range(n):
        copy = RiskModelBundle(
            classifiers=bundle.classifiers,
            specs=bundle.specs,
            version=f"2026112{i}T000000Z-{bundle.version[-8:]}",
            card=bundle.card,
        )
        save_bundle(copy, path)
        versions.append(copy.version)
    return versions


def test_register_is_idempotent_and_keeps_the_card(tmp_path, registry_db, bundle) -> None:
    (v,) = _save_versions(bundle, tmp_path, 1)
    reg = ModelCatalog(registry_db, tmp_path)
    reg.register(v)
    reg.register(v)
    reg.register(v, owner="asset-analytics@city.example")
    with psycopg.connect(registry_db) as c:
        assert c.execute("SELECT count(*) FROM model_registry").fetchone()[0] == 1

    rows = reg.list()
    assert [r["version"] for r in rows] == [v]
    assert rows[0]["owner"] == "asset-analytics@city.example"
    assert rows[0]["role"] is None
    assert rows[0]["asset_types"] == list(bundle.asset_types)

    shown = reg.show(v)
    card = shown["card"]
    assert card["version"] == v
    assert shown["data_sha256"] == card["training_data"]["sha256"]
    assert len(shown["data_sha256"]) == 64
    assert shown["data_from"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert shown["data_to"] > shown["data_from"]
    for key in ("features", "metrics", "thresholds", "intended_use", "limits", "owner"):
        assert card[key], key
    # jsonb holds strict JSON: NaN metrics became null, nothing else changed.
    on_disk = json.loads((tmp_path / v / "card.json").read_text())
    assert card["features"] == on_disk["features"]


def test_register_rejects_missing_or_unregistered(tmp_path, registry_db) -> None:
    reg = ModelCatalog(registry_db, tmp_path)
    with pytest.raises(FileNotFoundError):
        reg.register("20000101T000000Z-deadbeef")
    with pytest.raises(CatalogError, match="not registered"):
        reg.promote("20000101T000000Z-deadbeef", actor="t")
    with pytest.raises(CatalogError, match="not registered"):
        reg.show("20000101T000000Z-deadbeef")
    with pytest.raises(ValueError, match="invalid model version"):
        reg.promote("../etc", actor="t")
    with pytest.raises(CatalogError, match="no earlier champion"):
        reg.rollback(actor="t")
    assert reg.active() == ActiveModels(champion=None, challenger=None)


def test_promote_challenger_rollback(tmp_path, registry_db, bundle) -> None:
    a, b, c = _save_versions(bundle, tmp_path, 3)
    reg = ModelCatalog(registry_db, tmp_path)
    for v in (a, b, c):
        reg.register(v)

    reg.promote(a, actor="alice")
    assert reg.active() == ActiveModels(a, None)
    assert read_champion(tmp_path) == a  # the file pointer follows
    reg.promote(a, actor="alice")  # no-op: no second log row

    reg.set_challenger(b, actor="bob")
    assert reg.active() == ActiveModels(a, b)
    with pytest.raises(CatalogError, match="is the champion"):
        reg.set_challenger(a, actor="bob")
    assert [r["role"] for r in reg.list() if r["version"] in (a, b)] == ["challenger", "champion"]

    reg.promote(b, actor="carol")  # the challenger wins: the shadow slot clears
    assert reg.active() == ActiveModels(b, None)
    assert read_champion(tmp_path) == b
    reg.promote(c, actor="carol")
    reg.set_challenger(a, actor="bob")
    reg.set_challenger(None, actor="bob")
    assert reg.active() == ActiveModels(c, None)

    assert reg.rollback(actor="dave") == b
    assert reg.active().champion == b and read_champion(tmp_path) == b
    assert reg.rollback(actor="dave") == a
    with pytest.raises(CatalogError, match="no earlier champion"):
        reg.rollback(actor="dave")
    assert reg.active().champion == a

    log = reg.show(b)["promotions"]
    assert [(p["action"], p["role"], p["actor"]) for p in log] == [
        ("set_challenger", "challenger", "bob"),
        ("promote", "champion", "carol"),
        ("clear_challenger", "challenger", "carol"),
        ("promote", "champion", "carol"),  # c replaced b (b is "previous")
        ("rollback", "champion", "dave"),
        ("rollback", "champion", "dave"),  # back to a, away from b
    ]


def test_load_checks_the_files_are_the_registered_ones(tmp_path, registry_db, bundle) -> None:
    (v,) = _save_versions(bundle, tmp_path, 1)
    reg = ModelCatalog(registry_db, tmp_path)
    with pytest.raises(CatalogError, match="not registered"):
        reg.load(v)
    reg.register(v)
    loaded = reg.load(v)
    assert loaded.version == v and loaded.asset_types == bundle.asset_types

    card_path = tmp_path / v / "card.json"
    card = json.loads(card_path.read_text())
    card["training_data"]["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    # The file checksums catch it before the card is even parsed.
    with pytest.raises(BundleError, match=r"card\.json changed since registration"):
        reg.load(v)


def test_concurrent_promotions_serialise(tmp_path, registry_db, bundle) -> None:
    versions = _save_versions(bundle, tmp_path, 4)
    reg = ModelCatalog(registry_db, tmp_path)
    for v in versions:
        reg.register(v)
    reg.promote(versions[0], actor="seed")
    errors: list[BaseException] = []

    def work(v: str) -> None:
        try:
            for _ in range(5):
                reg.promote(v, actor=v)
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    # Under the lock every row's "previous" is the champion the row before it set.
    with psycopg.connect(registry_db) as c:
        rows = c.execute(
            "SELECT version, previous FROM model_promotions WHERE role = 'champion'"
            " ORDER BY promotion_id"
        ).fetchall()
    for (prev_version, _), (_, previous) in itertools.pairwise(rows):
        assert previous == prev_version
    assert reg.active().champion == rows[-1][0]


def test_model_cli(tmp_path, registry_db, bundle, base_settings) -> None:
    from click.testing import CliRunner

    from citywatch.cli import main

    a, b = _save_versions(bundle, tmp_path, 2)
    env = {
        "CITYWATCH_HOME": str(base_settings.home),
        "CITYWATCH_MODEL_DIR": str(tmp_path),
        "CITYWATCH_ACTOR": "ops@city.example",
    }
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> str:
        out = runner.invoke(main, ["model", *args], env=env)
        assert (out.exit_code == 0) == ok, out.output
        return out.output

    assert "no registered models" in run("list")
    for v in (a, b):
        assert f"registered {v}" in run("register", v, "--owner", "asset-team")
    assert f"champion is now {a}" in run("promote", a)
    assert f"challenger is now {b}" in run("challenger", b)
    listed = json.loads(run("list", "--json"))
    assert {r["version"]: r["role"] for r in listed} == {a: "champion", b: "challenger"}
    shown = run("show", a)
    for text in ("intended use", "limits", "training data", "owner asset-team", "ops@city.example"):
        assert text in shown
    assert json.loads(run("show", b, "--json"))["card"]["version"] == b
    assert "challenger cleared" in run("challenger", "--clear")
    assert "give either a VERSION or --clear" in run("challenger", ok=False)
    run("promote", b)
    assert f"champion is now {a}" in run("rollback")
    assert "no earlier champion" in run("rollback", ok=False)
    assert "not registered" in run("promote", "20000101T000000Z-deadbeef", ok=False)
    assert "not registered" in run("show", "20000101T000000Z-deadbeef", ok=False)
    assert read_champion(tmp_path) == a


def test_active_bundles_follow_the_registry(tmp_path, registry_db, bundle, caplog) -> None:
    from models.bundle_store import promote as promote_file
    from models.catalog import ActiveBundles

    a, b = _save_versions(bundle, tmp_path, 2)
    reg = ModelCatalog(registry_db, tmp_path)
    watcher = ActiveBundles(reg, check_every_s=0.0)
    with pytest.raises(RuntimeError, match="no champion model"):
        watcher.current()

    promote_file(tmp_path, a)  # nothing in the registry yet: the file pointer counts
    champion, challenger = watcher.current()
    assert (champion.version, challenger) == (a, None)

    reg.register(a)
    reg.register(b)
    reg.promote(b, actor="t")
    reg.set_challenger(a, actor="t")
    champion, challenger = watcher.current()
    assert (champion.version, challenger.version) == (b, a)
    same_object = champion
    assert watcher.current()[0] is same_object  # unchanged versions are not reloaded

    reg.set_challenger(None, actor="t")
    assert watcher.current()[1] is None

    slow = ActiveBundles(reg, check_every_s=3600)
    slow.current()
    reg.promote(a, actor="t")  # slow does not ask the registry again yet
    assert slow.current()[0].version == b
    assert watcher.current()[0].version == a
    reg.rollback(actor="t")
    assert watcher.current()[0].version == b

    # Database gone: keep scoring with what is loaded.
    watcher.registry = ModelCatalog("postgresql://nobody@127.0.0.1:1/none", tmp_path)
    assert watcher.current()[0].version == b
    assert "registry unreachable" in caplog.text

    # A promoted version whose files are missing here: keep the old one, say why.
    watcher.registry = reg
    (tmp_path / a / "card.json").unlink()
    reg.promote(a, actor="t")
    assert watcher.current()[0].version == b
    assert f"cannot load model {a}" in caplog.text
