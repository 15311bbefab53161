"""A water-quality station's alert in the crew API: its incident outlook, 1 to 48 hours."""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta

import httpx
import pytest

from crew.routing import add_rule
from storage.outlook import OutlookRow, write_outlook
from storage.sinks import PostgresSink, SinkBatch

from .conftest import T0, add_device, alert_row

pytestmark = pytest.mark.stack


def _seed(crew_db, conn):
    """A station's alert with two scored readings, and a pump's alert; both north."""
    crew_db.execute("TRUNCATE station_outlook")
    add_rule(crew_db, "north", zone="z1")
    add_device(crew_db, "station-1", "z1", asset_type="water_quality_station")
    add_device(crew_db, "pump-1", "z1")
    station = alert_row("station-1", asset_type="water_quality_station")
    pump = alert_row("pump-1")
    sink = PostgresSink(conn.database_url)
    sink.write(SinkBatch(alerts=[station, pump]))
    sink.close()
    with crew_db.cursor() as cur:
        write_outlook(
            cur,
            [
                OutlookRow(T0, "dev-station-1", "station-1", "wq-a", 0.9, True, 0.8, 0.7, 0.4, 0.3),
                # the latest; this model has no 24/48 h horizon yet
                OutlookRow(T0 + timedelta(minutes=1), "dev-station-1", "station-1", "wq-b",
                           0.2, False, 0.6, 0.5, None, None),
            ],
        )  # fmt: skip
    return station, pump


def test_station_alert_carries_the_latest_outlook(api, tokens, crew_db, conn):
    station, pump = _seed(crew_db, conn)

    def outlook(alert, who="ana"):
        return httpx.get(
            f"{api}/api/v1/alerts/{alert.alert_id}/outlook",
            headers={"Authorization": f"Bearer {tokens[who]}"},
        )

    got = outlook(station)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["asset_id"] == "station-1"
    out = body["outlook"]
    assert (out["model_version"], out["event_probability"], out["alarm"]) == ("wq-b", 0.2, False)
    assert [(h["hours"], h["probability"]) for h in out["horizons"]] == [
        (1, 0.6), (6, 0.5), (24, None), (48, None)
    ]  # fmt: skip
    # Any other asset has none; another team's alert stays invisible.
    assert outlook(pump).json() == {"asset_id": "pump-1", "outlook": None}
    assert outlook(station, who="sam").status_code == 404


def test_inbox_draws_the_station_outlook(api, tokens, crew_db, conn, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    station, pump = _seed(crew_db, conn)
    profile = tempfile.mkdtemp(prefix="citywatch-chromium-")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                viewport={"width": 390, "height": 844},
            )  # fmt: skip
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{api}/inbox/")
            page.fill("#token", tokens["ana"])
            page.click("#login-form button")
            page.locator(f'#alerts li[data-alert-id="{station.alert_id}"]').click()
            expect(page.locator("#wq")).to_be_visible()
            # Two horizons scored (60 %, 50 %), two not yet (n/a).
            expect(page.locator("#wq-chart rect.horizon")).to_have_count(2)
            expect(page.locator("#wq-chart")).to_contain_text("60 %")
            expect(page.locator("#wq-chart")).to_contain_text("48 h")
            expect(page.locator("#wq-asof")).to_contain_text("incident now 20 %")
            page.screenshot(path=tmp_path / "inbox-station.png", full_page=True)
            # Another asset's alert has no outlook box.
            page.click("#back")
            page.locator(f'#alerts li[data-alert-id="{pump.alert_id}"]').click()
            expect(page.locator("#d-title")).to_contain_text("pump-1")
            expect(page.locator("#wq")).to_be_hidden()
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert errors == []
