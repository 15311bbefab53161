"""`citywatch register publish`: the public AI register, rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from click.testing import CliRunner

from citywatch.cli import main
from models.bundle import RiskModelBundle
from models.bundle_store import save_bundle
from models.catalog import ModelCatalog
from models.register import build_entries
from tests.browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.stack

_WHO = {
    "organization": "City of Example",
    "department": "Water and Public Works",
    "contact_email": "algorithms@city.example",
    "area": "Example City",
}


def _two_versions(bundle: RiskModelBundle, path) -> list[str]:
    versions = []
    for i in range(2):
        copy = RiskModelBundle(
            classifiers=bundle.classifiers,
            specs=bundle.specs,
            version=f"2026113{i}T000000Z-{bundle.version[-8:]}",
            card=bundle.card,
        )
        save_bundle(copy, path)
        versions.append(copy.version)
    return versions


def test_only_models_in_use_get_entries_with_the_standard_fields(small_bundle) -> None:
    row = {
        "version": small_bundle.version,
        "role": "champion",
        "card": small_bundle.card,
        "promotions": [],
        "asset_types": list(small_bundle.asset_types),
    }
    entries = build_entries([row, {**row, "role": None}], **_WHO)
    kinds = [e["citywatch"]["kind"] for e in entries]
    assert kinds == ["failure_risk", "anomaly"]  # the retired row has none
    for e in entries:
        for field in (
            "name",
            "organization",
            "department",
            "contact_email",
            "description_short",
            "status",
            "goal",
            "risks",
            "training_data",
            "human_intervention",
            "performance",
        ):
            assert e[field], field
        assert e["status"] == "operational" and e["standard_version"] == "0.3.1"
        assert len(e["citywatch"]["data"]["sha256"]) == 64
    policy = small_bundle.card["scoring_policy"]
    assert entries[0]["citywatch"]["scoring_policy"] == policy
    assert set(entries[1]["citywatch"]["health_specs"]) == set(policy)


def test_publish_renders_in_chromium(tmp_path, registry_db, base_settings, small_bundle) -> None:
    from playwright.sync_api import expect, sync_playwright

    models = tmp_path / "models"
    old, new = _two_versions(small_bundle, models)
    registry = ModelCatalog(registry_db, models)
    for v in (old, new):
        registry.register(v, owner="asset-analytics@city.example")
    registry.promote(old, actor="ana")
    registry.promote(new, actor="ben")
    registry.set_challenger(old, actor="ben")
    evidence = tmp_path / "skab.json"
    evidence.write_text(
        json.dumps(
            {
                "dataset": "SKAB",
                "protocol": "leaderboard",
                "f1": 0.81,
                "far": 10.1,
                "mar": 19.1,
                "command": "citywatch bench model --dataset skab",
            }
        )
    )
    out = tmp_path / "register"
    env = {"CITYWATCH_HOME": str(base_settings.home), "CITYWATCH_MODEL_DIR": str(models)}
    args = ["register", "publish", "--out", str(out), "--evidence", str(evidence)]
    who = [f"--{k.replace('_', '-')}={v}" for k, v in _WHO.items()]
    result = CliRunner().invoke(main, args + who, env=env)
    assert result.exit_code == 0, result.output
    register = json.loads((out / "register.json").read_text())
    entries = register["entries"]
    assert [(e["citywatch"]["role"], e["citywatch"]["kind"]) for e in entries] == [
        ("champion", "failure_risk"),
        ("champion", "anomaly"),
        ("challenger", "failure_risk"),
    ]
    champion = entries[0]
    assert champion["citywatch"]["model_version"] == new
    actions = [(h["action"], h["actor"]) for h in champion["citywatch"]["change_history"]]
    assert ("promote", "ben") in actions
    assert "SKAB (leaderboard): f1 0.810" in champion["performance"]
    assert "time to failure: 10-90 % interval covers" in champion["performance"]
    for e in entries:
        assert json.loads((out / f"{e['uuid']}.json").read_text()) == e

    bad = CliRunner().invoke(main, [*args, *who[:2], "--contact-email=nobody", who[3]], env=env)
    assert bad.exit_code != 0 and "e-mail" in bad.output

    profile = tempfile.mkdtemp(prefix="citywatch-chromium-")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                viewport={"width": 1100, "height": 900},
            )
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "index.html").as_uri())
            cards = page.locator("article.card")
            expect(cards).to_have_count(3)
            expect(cards.nth(0).locator("h2")).to_contain_text("failure risk")
            expect(cards.nth(0).locator(".status")).to_have_text("operational")
            expect(cards.nth(2).locator(".status")).to_have_text("evaluation")
            expect(cards.nth(0).locator("[data-field=contact_email]")).to_have_text(
                "algorithms@city.example"
            )
            expect(cards.nth(0).locator("[data-field=human_intervention]")).to_contain_text("crew")
            expect(cards.nth(0).locator("table.history tr")).to_have_count(1 + len(actions))
            expect(cards.nth(1).locator("[data-field=algorithm_type]")).to_have_text("rule-based")
            shot = tmp_path / "register.png"
            page.screenshot(path=shot, full_page=False)
            browser.close()
        assert errors == []
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    keep = os.environ.get("REGISTER_PNG_COPY")
    if keep:  # how docs/img/register.png is refreshed
        shutil.copy(shot, keep)
