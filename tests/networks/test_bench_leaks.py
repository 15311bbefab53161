"""``citywatch bench leaks`` on two short slices: the JSON contract and another leak file."""

from __future__ import annotations

import json

from click.testing import CliRunner

from citywatch.cli import main


def test_bench_leaks_json_on_another_scenario_file(leakdb_dir, tmp_path):
    # Independent evaluation runs on a file of the same format (scenarios 701-1000):
    # two published Hanoi leaks renumbered, plus one leak-free scenario.
    rows = (leakdb_dir / "hanoi_leaks.csv").read_text().splitlines()
    header = rows[0]
    picked = [r for r in rows[1:] if r.split(",")[0] in ("4", "13")]
    renumbered = [
        ",".join([str(697 + int(r.split(",")[0]) // 4), *r.split(",")[1:]]) for r in picked
    ]
    leaks = tmp_path / "hanoi_leaks.csv"
    leaks.write_text("\n".join([header, *renumbered]) + "\n")
    (tmp_path / "hanoi_scenarios.csv").write_text("scenario,n_leaks\n698,1\n700,2\n701,0\n")
    out = CliRunner().invoke(
        main,
        [
            "bench",
            "leaks",
            "--data",
            str(leakdb_dir),
            "--network",
            "hanoi",
            "--leaks",
            str(leaks),
            "--scenarios",
            "698-701",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    figures = json.loads(out.output)
    hanoi = figures["hanoi"]
    assert hanoi["scenarios"] == 3
    for key in ("f1", "recall", "tnr", "early_detection", "localised_top3"):
        assert 0 <= hanoi[key] <= 1
        if key != "localised_top3":
            assert 0 <= hanoi["baseline"][key] <= 1
    # Three large abrupt leaks: both detectors see them; ours sooner, and it names the node.
    assert hanoi["recall"] > 0.9 and hanoi["tnr"] > 0.99
    assert hanoi["early_detection"] > hanoi["baseline"]["early_detection"]
    # The second leak of scenario 700 starts while the alarm for the first is up:
    # only leaks that start an alarm are localised.
    assert hanoi["localised_leaks"] == 2 and hanoi["localised_top3"] == 1.0
    assert hanoi["paper_mnf"]["f1"] == 0.5649


def test_bench_leaks_refuses_an_empty_range(leakdb_dir):
    out = CliRunner().invoke(
        main,
        [
            "bench",
            "leaks",
            "--data",
            str(leakdb_dir),
            "--network",
            "hanoi",
            "--scenarios",
            "900-901",
        ],
    )
    assert out.exit_code != 0
    assert "no scenario" in out.output
