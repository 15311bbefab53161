"""The crew inbox in headless Chromium (Debian's, via Python playwright), on a phone viewport."""

from __future__ import annotations

import math
import shutil
import tempfile
from datetime import timedelta

import pytest
from psycopg.types.json import Jsonb

from crew.routing import add_rule
from models.feature_spec import FeatureSpec
from storage.sinks import PostgresSink, SinkBatch
from tests.browser import CHROMIUM, CHROMIUM_ARGS

from .conftest import T0, add_device, alert_row

pytestmark = pytest.mark.stack


def seed(db) -> None:
    """A degrading pump: its readings, and the worker-style explanation of its score."""
    add_rule(db, "north", zone="north")
    add_rule(db, "south", zone="south")
    for asset, zone in (("pump-1", "north"), ("pump-2", "north"), ("pump-9", "south")):
        add_device(db, asset, zone)
    rows = []
    for i in range(120):
        wear = max(0, i - 60) / 60  # degradation over the last hour
        metrics = {
            "vibration_rms": round(2.0 + 0.2 * math.sin(i / 5) + 6 * wear**2, 3),
            "bearing_temp": round(45 + 0.5 * math.sin(i / 9) + 18 * wear, 2),
            "motor_current": round(30 + math.sin(i / 7) + 4 * wear, 2),
            "pressure": round(6 - 0.8 * wear + 0.05 * math.cos(i / 3), 3),
            "flow": round(300 - 40 * wear + 3 * math.sin(i / 4), 1),
        }
        rows.append(
            (
                T0 + timedelta(minutes=i - 120),
                "dev-pump-1",
                "pump-1",
                "water_pump",
                Jsonb(metrics),
                Jsonb({"kind": "simulator", "seq": i}),
            )
        )
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (ts, device_id, asset_id, asset_type, metrics, source)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )
    # LightGBM pred_contrib shape: every feature, plus the bias; sums to the raw score.
    names = FeatureSpec.for_asset_type("water_pump").feature_names
    contrib = {n: 0.01 * ((k % 7) - 3) for k, n in enumerate(names)}
    contrib.update(
        {
            "vibration_rms__z_baseline": 2.41,
            "bearing_temp__slope_30": 1.12,
            "vibration_rms__ewm_30": 0.86,
            "flow__delta_baseline": -0.47,
            "motor_current__std_30": 0.31,
            "_bias": -2.9,
        }
    )
    db.execute(
        "INSERT INTO score_explanations (ts, device_id, asset_id, model_version, risk,"
        " contributions) VALUES (%s, 'dev-pump-1', 'pump-1', 'v1', 0.93, %s)",
        (T0, Jsonb(contrib)),
    )


def test_crew_works_an_alert_on_a_phone(conn, crew_db, tokens, api, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    seed(crew_db)
    crew_db.execute("TRUNCATE downlink_commands")
    sink = PostgresSink(conn.database_url)
    top, low = alert_row("pump-1", risk=0.93), alert_row("pump-2", risk=0.74)
    sink.write(SinkBatch(alerts=[low, top, alert_row("pump-9", risk=0.99)]))
    sink.close()

    profile = tempfile.mkdtemp(prefix="citywatch-chromium-")
    try:
        with sync_playwright() as p:
            # A fresh profile directory per run (playwright wants it as user_data_dir).
            browser = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                viewport={"width": 390, "height": 844},
                device_scale_factor=2,
            )
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # The API's Content-Security-Policy must not block anything the inbox does.
            page.on(
                "console",
                lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.goto(f"{api}/inbox/")
            page.fill("#token", "cw_wrong")
            page.click("#login-form button")
            expect(page.locator("#login-error")).to_contain_text("sign in")
            page.fill("#token", tokens["ana"])
            page.click("#login-form button")

            items = page.locator("#alerts li")
            expect(items).to_have_count(2)  # pump-9 belongs to the south team
            assert items.nth(0).get_attribute("data-alert-id") == top.alert_id  # riskiest first
            assert items.nth(1).get_attribute("data-alert-id") == low.alert_id
            page.screenshot(path=tmp_path / "inbox-list.png", full_page=True)

            items.nth(0).click()
            expect(page.locator("#d-status")).to_have_text("open")
            expect(page.locator("#plot polyline.metric")).to_have_count(5)
            features = page.locator("#contrib li.feature")
            expect(features).to_have_count(5)
            expect(features.nth(0)).to_contain_text("vibration_rms__z_baseline")
            expect(features.nth(0)).to_contain_text("+2.41")
            expect(features.nth(3)).to_contain_text("-0.47")
            page.screenshot(path=tmp_path / "inbox-detail.png", full_page=True)

            # A fresh reading, asked from the phone: the request shows with the alert.
            page.click("#fresh-reading")
            expect(page.locator("#commands li")).to_have_count(1)
            expect(page.locator("#commands li").nth(0)).to_contain_text("request_reading")
            expect(page.locator("#commands li").nth(0)).to_contain_text("requested")

            page.click("#ack")
            expect(page.locator("#d-status")).to_have_text("acknowledged")
            expect(page.locator("#ack")).to_be_disabled()
            page.select_option("#outcome", "fault_confirmed")
            page.click("#resolve")
            expect(page.locator("#d-status")).to_have_text("resolved")
            expect(page.locator("#resolve")).to_be_disabled()
            expect(page.locator("#history li")).to_have_count(3)
            page.screenshot(path=tmp_path / "inbox-resolved.png", full_page=True)

            page.click("#back")
            expect(page.locator("#alerts li")).to_have_count(1)
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)

    assert errors == []
    row = crew_db.execute(
        "SELECT status, outcome, acknowledged_by, resolved_by FROM alerts WHERE alert_id = %s",
        (top.alert_id,),
    ).fetchone()
    assert row == ("resolved", "fault_confirmed", "ana", "ana")
    assert crew_db.execute("SELECT label_id, outcome FROM labels").fetchall() == [
        (f"alert:{top.alert_id}", "fault_confirmed")
    ]
