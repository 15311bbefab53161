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


def test_bench_leaks_asks_which_network_a_leak_file_is(leakdb_dir, tmp_path):
    leaks = tmp_path / "leaks.csv"
    leaks.write_text("scenario,leak,node,diameter_m,type,start_step,peak_step,end_step\n")
    out = CliRunner().invoke(
        main, ["bench", "leaks", "--data", str(leakdb_dir), "--leaks", str(leaks)]
    )
    assert out.exit_code != 0 and "--network" in out.output


def test_bench_leaks_refuses_a_bad_leak_file_with_its_reason(leakdb_dir, tmp_path):
    leaks = tmp_path / "hanoi_leaks.csv"
    header = "scenario,leak,node,diameter_m,type,start_step,peak_step,end_step\n"
    for row, reason in (
        ("701,1,99,0.05,abrupt,10,10,20\n", "no such junction"),
        ("701,1,13,0.05,abrupt,30,30,20\n", "start <= peak <= end"),
        ("701,1,13,lots,abrupt,10,10,20\n", "unusable"),
        ("701,1,13,0.05,sudden,10,10,20\n", "unknown leak type"),
    ):
        leaks.write_text(header + row)
        out = CliRunner().invoke(
            main,
            [
                "bench",
                "leaks",
                "--data",
                str(leakdb_dir),
                "--leaks",
                str(leaks),
                "--scenarios",
                "701-701",
            ],
        )
        assert out.exit_code != 0 and reason in out.output, out.output
