"""`datamix audit` against ground truth: a positive control that must leak, a noise control that must not,
the verdict's calibrated thresholds, and the real split's verdict."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from datamix_cli.auditing import AuditConfig, audit_scene, build_scene, verdict
from datamix_cli.main import app

FAST = dict(samples=64, decoder_epochs=4)


def test_audit_cli_finds_the_known_leak_of_a_shallow_dirichlet_split(small_split, tmp_path):
    """k = 4 Dirichlet mixing after a ReLU at a shallow cut leaks (the paper's setting; issue 11's probe)."""
    png = tmp_path / "audit.png"
    args = ["audit", str(small_split), "--samples", "64", "--decoder-epochs", "4", "--report", str(png), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["samples"] == 64 and report["public_samples"] > 1000
    assert set(report) >= {"threat_model", "ica", "inversion", "label", "verdict", "caveat"}
    assert set(report["inversion"]["mixtures"]["chance"]) == {"mean_public_image", "random_public_image"}
    assert report["label"]["unmixed_baseline"] > 0.8  # the attack works where nothing hides the features
    assert report["verdict"]["status"] == "leaks", report["verdict"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_positive_control_identity_mixing_leaks(small_split):
    config = AuditConfig(small_split, **FAST)
    scene = build_scene(config)
    scene.cs = np.stack([np.eye(scene.k)] * len(scene.cs))
    scene.mixtures = scene.h.copy()  # C = I: the cloud sees the head features themselves
    report = audit_scene(scene, config)
    assert report["inversion"]["mixtures"]["ssim_advantage"] >= 0.1, report["inversion"]["mixtures"]
    assert report["label"]["mixtures"] >= 0.8
    assert report["verdict"]["status"] == "leaks"


def test_negative_control_noise_independent_of_the_inputs_is_at_chance(small_split):
    config = AuditConfig(small_split, **FAST)
    scene = build_scene(config)
    rng = np.random.default_rng(7)
    mean, std = scene.h_pub.mean(axis=0), scene.h_pub.std(axis=0)
    scene.mixtures = (mean + std * rng.standard_normal(scene.h.shape)).astype(np.float32)
    report = audit_scene(scene, config)
    inversion, label = report["inversion"], report["label"]
    assert inversion["unmixed_baseline"]["ssim_advantage"] >= 0.1  # the decoder itself works
    assert inversion["mixtures"]["ssim_advantage"] < 0.05 and inversion["ica_recovered"]["ssim_advantage"] < 0.05, inversion
    assert label["mixtures"] <= label["chance"] + 0.15 and label["ica_recovered"] <= label["chance"] + 0.15, label
    assert report["verdict"]["status"] != "leaks", report["verdict"]


def test_audit_table_output(small_split):
    result = CliRunner().invoke(app, ["audit", str(small_split), "--samples", "8", "--attacks", "ica,label"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Amari index" in result.output and "verdict: " in result.output and "not a guarantee" in result.output


@pytest.mark.parametrize(("args", "message"), [(["--attacks", "ica,telepathy"], "unknown attacks telepathy"), (["--decoder-epochs", "0"], "decoder-epochs")])
def test_audit_bad_options(small_split, args, message):
    result = CliRunner().invoke(app, ["audit", str(small_split), *args])
    assert result.exit_code == 2 and message in result.output


def base_report(**overrides):
    view = {"ssim": {"mean": 0.4}, "psnr_db": {"mean": 12.0}, "ssim_advantage": 0.0, "psnr_advantage_db": 0.0}
    report = {
        "samples": 64,
        "ica": {"matched_abs_corr": {"mean": 0.5}, "single_mixture_abs_corr": {"mean": 0.8}},
        "inversion": {"mixtures": dict(view), "ica_recovered": dict(view)},
        "label": {"chance": 0.1, "mixtures": 0.12, "ica_recovered": 0.11},
    }
    for path, value in overrides.items():
        node = report
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return report


def test_verdict_is_decided_on_advantage_over_chance_not_absolute_scores():
    assert verdict(base_report())["status"] == "resists this audit"
    # A high absolute SSIM that the public mean image also reaches is not a leak.
    assert verdict(base_report(**{"inversion.mixtures.ssim": {"mean": 0.6}}))["status"] == "resists this audit"
    assert verdict(base_report(**{"inversion.mixtures.ssim_advantage": 0.11}))["status"] == "leaks"
    assert verdict(base_report(**{"inversion.ica_recovered.psnr_advantage_db": 2.5}))["status"] == "leaks"
    assert verdict(base_report(**{"inversion.mixtures.ssim_advantage": 0.07}))["status"] == "inconclusive"
    # 64 samples at chance 10 %: 20 % correct is significant (p < 0.01), 14 % is not.
    assert verdict(base_report(**{"label.mixtures": 0.20}))["status"] == "leaks"
    assert verdict(base_report(**{"label.mixtures": 0.14}))["status"] == "resists this audit"
    assert verdict(base_report(**{"ica.matched_abs_corr": {"mean": 0.9}}))["status"] == "leaks"
    assert verdict(base_report(**{"ica.matched_abs_corr": {"mean": 0.82}}))["status"] == "resists this audit"
    partial = base_report()
    del partial["label"]
    assert verdict(partial)["status"] == "inconclusive"
