"""`datamix audit` on a real split: every attack runs, the verdict follows the thresholds, the picture is written."""

import json

import pytest
from typer.testing import CliRunner

from datamix_cli.auditing import verdict
from datamix_cli.main import app


def test_audit_cli_reports_all_attacks_and_writes_the_picture(small_split, tmp_path):
    png = tmp_path / "audit.png"
    args = ["audit", str(small_split), "--samples", "16", "--decoder-epochs", "2", "--report", str(png), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["samples"] == 16 and report["public_samples"] > 1000
    assert set(report) >= {"threat_model", "ica", "inversion", "label", "verdict", "caveat"}
    assert 0 <= report["ica"]["amari_index"]["mean"] <= 1
    assert set(report["inversion"]) == {"unmixed_baseline", "mixtures", "ica_recovered"}
    assert set(report["label"]) == {"chance", "unmixed_baseline", "mixtures", "ica_recovered"}
    assert report["verdict"]["status"] in ("leaks", "inconclusive", "resists this audit")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audit_table_output(small_split):
    result = CliRunner().invoke(app, ["audit", str(small_split), "--samples", "8", "--attacks", "ica,label"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Amari index" in result.output and "verdict: " in result.output and "not a guarantee" in result.output


@pytest.mark.parametrize(("args", "message"), [(["--attacks", "ica,telepathy"], "unknown attacks telepathy"), (["--decoder-epochs", "0"], "decoder-epochs")])
def test_audit_bad_options(small_split, args, message):
    result = CliRunner().invoke(app, ["audit", str(small_split), *args])
    assert result.exit_code == 2 and message in result.output


def base_report(**overrides):
    report = {
        "ica": {"matched_abs_corr": {"mean": 0.5}, "single_mixture_abs_corr": {"mean": 0.8}},
        "inversion": {"mixtures": {"ssim": {"mean": 0.1}, "psnr_db": {"mean": 8.0}}, "ica_recovered": {"ssim": {"mean": 0.1}, "psnr_db": {"mean": 8.0}}},
        "label": {"chance": 0.1, "mixtures": 0.12, "ica_recovered": 0.11},
    }
    for path, value in overrides.items():
        node = report
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return report


def test_verdict_thresholds():
    assert verdict(base_report())["status"] == "resists this audit"
    assert verdict(base_report(**{"inversion.mixtures.ssim": {"mean": 0.31}}))["status"] == "leaks"
    assert verdict(base_report(**{"inversion.ica_recovered.psnr_db": {"mean": 10.5}}))["status"] == "leaks"
    assert verdict(base_report(**{"inversion.mixtures.ssim": {"mean": 0.27}}))["status"] == "inconclusive"
    assert verdict(base_report(**{"label.mixtures": 0.16}))["status"] == "leaks"
    assert verdict(base_report(**{"ica.matched_abs_corr": {"mean": 0.9}}))["status"] == "leaks"
    partial = base_report()
    del partial["label"]
    assert verdict(partial)["status"] == "inconclusive"
