"""BattLeDIM 2019 scoring against the organisers' perfect score, and the bench command."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from citywatch.cli import main
from networks.battledim import load, perfect_score, score


@pytest.fixture(scope="module")
def data(battledim_dir):
    return load(battledim_dir)


def test_perfect_submission_scores_the_organisers_figure(data):
    assert perfect_score(data) == pytest.approx(523_153.82, abs=0.01)


def test_false_alarms_and_repeated_detections(data):
    first_new = data.leaks.sort_values("start").iloc[4]  # p523, the first 2019 leak
    before = first_new["start"] - pd.Timedelta(hours=1)
    after = first_new["start"] + pd.Timedelta(hours=2)
    figures = score(data, [after])
    assert figures["true_detections"] == 1 and figures["false_alarms"] == 0
    assert figures["detection_delay_h"] == {first_new["pipe"]: 2.0}
    # Before p523 only the four 2018 leaks run: an alarm then is given to the newest.
    assert score(data, [before])["missed_2019_leaks"] == figures["leaks_2019"]
    # Once every running leak is taken, further alarms are false: -500 € each.
    many = score(data, [after] * 7)
    assert many["true_detections"] == 5 and many["false_alarms"] == 2
    assert many["economic_score_eur"] < score(data, [after] * 5)["economic_score_eur"]


def test_bench_battledim_json(battledim_dir):
    out = CliRunner().invoke(
        main, ["bench", "leaks", "--dataset", "battledim", "--data", str(battledim_dir), "--json"]
    )
    assert out.exit_code == 0, out.output
    town = json.loads(out.output)["l-town"]
    assert town["perfect_score_eur"] == pytest.approx(523_153.82, abs=0.01)
    for fig in (town, town["baseline"]):
        assert fig["true_detections"] + fig["missed_2019_leaks"] >= fig["leaks_2019"]
        assert fig["false_alarms"] >= 0
        assert "left out" in fig["distance_term"]
