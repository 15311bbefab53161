"""`citywatch dashboards snapshot`: a self-contained HTML page, checked in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from citywatch.cli import main
from tests.browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.stack


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_snapshot_renders_every_panel_with_non_empty_plots(filled_db, tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["dashboards", "snapshot", "--out", str(out), "--database-url", filled_db]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["errors"] == []
    assert summary["panels"] >= 12 and summary["plots"] >= 9

    requests = []
    with sync_playwright() as p:
        # A fresh profile per run (Playwright takes it as user_data_dir).
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            shot = tmp_path / "dashboards-snapshot.png"
            page.screenshot(path=str(shot), full_page=True)
            plots = page.locator("figure.plot")
            assert plots.count() == summary["plots"]
            for i in range(plots.count()):
                plot = plots.nth(i)
                title = plot.locator("xpath=..").locator("h3").inner_text()
                assert int(plot.get_attribute("data-points")) > 0, title
                # Drawn marks: lines, bars and markers are SVG paths (or <use> of one).
                marks = plot.locator("svg path, svg use").count()
                assert marks > 10, f"{title}: only {marks} drawn marks"
                pixels = np.asarray(Image.open(io.BytesIO(plot.screenshot())).convert("L"))
                assert pixels.std() > 5, f"{title}: plot area is blank"
            assert page.locator("section.panel").count() == summary["panels"]
            assert page.locator(".error").count() == 0
        finally:
            browser.close()
    # Self-contained: the page loads nothing but itself.
    assert requests == [out.as_uri()]
    print(f"screenshot: {shot}")
    keep = os.environ.get("SNAPSHOT_PNG_COPY")
    if keep:  # how docs/img/dashboards-snapshot.png is refreshed
        shutil.copy(shot, keep)
