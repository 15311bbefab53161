"""`citywatch dashboards check`: every panel's SQL, macro-expanded, against a real run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from citywatch.cli import main

pytestmark = pytest.mark.stack


def test_every_panel_returns_rows_from_a_real_pipeline_run(filled_db):
    result = CliRunner().invoke(
        main, ["dashboards", "check", "--json", "--database-url", filled_db]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["errors"] == []
    assert report["panels"] >= 12
    assert report["panels_with_rows"] == report["panels"], report["panels_without_rows"]
    assert report["variables"]["asset"]
