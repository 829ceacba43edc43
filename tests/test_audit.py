"""`datamix audit` against ground truth: a positive control that must leak, a noise control that must not,
the verdict's calibrated thresholds, and the real split's verdict."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from datamix_cli.auditing import AuditConfig, attack_separation, audit_scene, best_attacks, build_scene, verdict
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
    assert set(report) >= {"threat_model", "separation", "inversion", "adaptive", "label", "best", "verdict", "caveat", "timing_s"}
    assert set(report["inversion"]["mixtures"]["chance"]) == {"mean_public_image", "random_public_image"}
    assert report["adaptive"]["reidentification"]["chance"] == 1 / 64
    assert set(report["timing_s"]) == {"scene", "separation", "inversion", "adaptive", "label", "total"}
    assert report["label"]["unmixed_baseline"] > 0.8  # the attack works where nothing hides the features
    # Post-ReLU features: non-negative separation recovers them from one group's mixtures.
    assert report["separation"]["method"].startswith("non-negative") and report["separation"]["matched_abs_corr"]["mean"] > 0.95
    assert report["best"]["ssim"]["mean"] >= report["adaptive"]["ssim"]["mean"]
    assert report["verdict"]["status"] == "leaks", report["verdict"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_positive_control_identity_mixing_leaks(small_split):
    config = AuditConfig(small_split, **FAST)
    scene = build_scene(config)
    scene.cs = np.stack([np.eye(scene.k)] * len(scene.cs))
    scene.mixtures = scene.h.copy()  # C = I: the cloud sees the head features themselves
    report = audit_scene(scene, config)
    for view in (report["inversion"]["mixtures"], report["inversion"]["separated"], report["adaptive"]):
        assert view["ssim_advantage"] >= 0.1 and view["reidentification"]["accuracy"] >= 0.5, view
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
    for view in (inversion["mixtures"], inversion["separated"], report["adaptive"]):
        assert view["ssim_advantage"] < 0.05 and view["reidentification"]["accuracy"] <= 4 / 64, view
    assert label["mixtures"] <= label["chance"] + 0.15 and label["separated"] <= label["chance"] + 0.15, label
    separation = report["separation"]
    assert separation["matched_abs_corr"]["mean"] < separation["single_mixture_abs_corr"]["mean"] + 0.05, separation
    assert report["verdict"]["status"] != "leaks", report["verdict"]


def test_separation_recovers_orthogonally_mixed_post_relu_features_at_k_8(small_split):
    """Orthogonal C keeps accuracy at large k, but post-ReLU features are still recovered from one group."""
    from datamix_cli.mixing import MixingConfig, coefficient_rng, draw_batch, mix

    scene = build_scene(AuditConfig(small_split, samples=64))
    scene.k, scene.mixing = 8, MixingConfig(k=8, distribution="orthogonal")
    scene.cs = draw_batch(coefficient_rng(3), scene.mixing, len(scene.h) // 8)
    scene.mixtures = mix(scene.cs, scene.h.reshape(len(scene.cs), 8, -1)).reshape(scene.h.shape).astype(np.float32)
    metrics, _ = attack_separation(scene, seed=0)
    assert metrics["matched_abs_corr"]["mean"] >= 0.95 and metrics["amari_index"]["mean"] < 0.05, metrics
    assert metrics["method"].startswith("non-negative")


def test_separation_falls_back_to_fastica_on_features_of_both_signs(small_split):
    scene = build_scene(AuditConfig(small_split, samples=16))
    shift = scene.h_pub.mean()  # as if cut before the ReLU: a shift keeps Dirichlet mixing intact (rows sum to one)
    scene.h_pub, scene.h, scene.mixtures = scene.h_pub - shift, scene.h - shift, scene.mixtures - shift
    metrics, recovered = attack_separation(scene, seed=0)
    assert metrics["method"] == "FastICA" and metrics["negative_share"] > 0.1 and recovered.shape == scene.h.shape


def test_audit_table_output(small_split):
    result = CliRunner().invoke(app, ["audit", str(small_split), "--samples", "8", "--attacks", "separation,label"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("Amari index", "strongest attack per metric", "feature |corr|", "time: ", "verdict: ", "not a guarantee"):
        assert text in result.output


@pytest.mark.parametrize(("args", "message"), [(["--attacks", "separation,telepathy"], "unknown attacks telepathy"), (["--decoder-epochs", "0"], "decoder-epochs")])
def test_audit_bad_options(small_split, args, message):
    result = CliRunner().invoke(app, ["audit", str(small_split), *args])
    assert result.exit_code == 2 and message in result.output


def base_report(**overrides):
    view = {"ssim": {"mean": 0.4}, "psnr_db": {"mean": 12.0}, "ssim_advantage": 0.0, "psnr_advantage_db": 0.0,
            "reidentification": {"accuracy": 1 / 64, "chance": 1 / 64}}
    report = {
        "samples": 64,
        "separation": {"method": "FastICA", "matched_abs_corr": {"mean": 0.5}, "single_mixture_abs_corr": {"mean": 0.8}, "chance_abs_corr": {"mean": 0.2}},
        "inversion": {"mixtures": dict(view), "separated": dict(view)},
        "adaptive": dict(view),
        "label": {"chance": 0.1, "mixtures": 0.12, "separated": 0.11},
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
    assert verdict(base_report(**{"inversion.separated.psnr_advantage_db": 2.5}))["status"] == "leaks"
    assert verdict(base_report(**{"adaptive.ssim_advantage": 0.11}))["status"] == "leaks"
    assert verdict(base_report(**{"adaptive.ssim_advantage": 0.07}))["status"] == "inconclusive"
    # 64 samples at chance 10 %: 20 % correct is significant (p < 0.01), 14 % is not.
    assert verdict(base_report(**{"label.mixtures": 0.20}))["status"] == "leaks"
    assert verdict(base_report(**{"label.separated": 0.14}))["status"] == "resists this audit"
    # Re-identification among 64 at chance 1/64: 6 hits are significant, 2 are not.
    assert verdict(base_report(**{"adaptive.reidentification": {"accuracy": 6 / 64, "chance": 1 / 64}}))["status"] == "leaks"
    assert verdict(base_report(**{"inversion.mixtures.reidentification": {"accuracy": 2 / 64, "chance": 1 / 64}}))["status"] == "resists this audit"
    assert verdict(base_report(**{"separation.matched_abs_corr": {"mean": 0.9}}))["status"] == "leaks"
    assert verdict(base_report(**{"separation.matched_abs_corr": {"mean": 0.82}}))["status"] == "resists this audit"
    for attack in ("label", "adaptive"):
        partial = base_report()
        del partial[attack]
        assert verdict(partial)["status"] == "inconclusive"


def test_best_attack_per_metric_is_the_strongest_view_next_to_its_chance():
    report = base_report(**{"adaptive.ssim": {"mean": 0.8}, "adaptive.ssim_advantage": 0.4, "inversion.separated.reidentification": {"accuracy": 0.9, "chance": 1 / 64},
                            "label.separated": 0.7})
    best = best_attacks(report)
    assert best["ssim"] == {"attack": "adaptive decoder on raw mixtures", "mean": 0.8, "chance": pytest.approx(0.4), "advantage": 0.4}
    assert best["reidentification"]["attack"] == "decoder on separated features" and best["reidentification"]["accuracy"] == 0.9
    assert best["label_accuracy"] == {"attack": "classifier on separated features", "mean": 0.7, "chance": 0.1}
    assert best["feature_abs_corr"]["mean"] == 0.5 and best["feature_abs_corr"]["single_mixture"] == 0.8
