"""`datamix audit` against ground truth: a positive control that must leak, a noise control that must not,
the verdict's calibrated thresholds, and the real split's verdict."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from datamix_cli.privacy.attacks.decoding import attack_group
from datamix_cli.privacy.attacks.separation import attack_separation
from datamix_cli.privacy.audit import ATTACKS, AuditConfig, audit_scene, build_scene
from datamix_cli.privacy.judging import Judge, best_attacks, verdict
from datamix_cli.main import app

FAST = dict(samples=64, decoder_epochs=4, search_steps=16)
# Views of what DataMix sends that the controls check, by report section and view.
VIEWS = (("inversion", "mixtures"), ("inversion", "separated"), ("adaptive", None), ("group", None), ("optimisation", None))


def views(report):
    return {(section, view): report[section][view] if view else report[section] for section, view in VIEWS}


def test_audit_cli_finds_the_known_leak_of_a_shallow_dirichlet_split(small_split, tmp_path):
    """k = 4 Dirichlet mixing after a ReLU at a shallow cut leaks (the paper's setting; issue 11's probe)."""
    png = tmp_path / "audit.png"
    args = ["audit", str(small_split), "--samples", "64", "--decoder-epochs", "4", "--search-steps", "16", "--report", str(png), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["samples"] == 64 and report["public_samples"] > 1000
    assert set(report) >= {"threat_model", *ATTACKS, "classifier", "best", "verdict", "caveat", "timing_s"}
    # Chance: the best-of-k guess only where the pairing with samples used the truth.
    assert set(report["inversion"]["mixtures"]["chance"]) == {"mean_public_image", "random_public_image"}
    for view in (report["inversion"]["separated"], report["group"], report["optimisation"]):
        assert set(view["chance"]) == {"mean_public_image", "random_public_image", "best_of_4_public_images"} and view["paired_by_truth"] == 4
        assert view["chance"]["best_of_4_public_images"]["ssim"]["mean"] > view["chance"]["random_public_image"]["ssim"]["mean"]
    assert report["adaptive"]["reidentification"]["chance"] == 1 / 64
    assert set(report["timing_s"]) == {"scene", *ATTACKS, "certificate", "total"}
    assert report["certificate"]["status"] == "none"  # the split adds no noise: no bound
    assert report["label"]["unmixed_baseline"] > 0.8  # the attack works where nothing hides the features
    assert report["classifier"]["accuracy_on_inputs"] > 0.8 and report["inversion"]["unmixed_baseline"]["classifier_label"]["accuracy"] > 0.8
    # Post-ReLU features: non-negative separation recovers them from one group's mixtures.
    assert report["separation"]["method"].startswith("non-negative") and report["separation"]["matched_abs_corr"]["mean"] > 0.95
    assert report["best"]["ssim"]["mean"] >= report["adaptive"]["ssim"]["mean"]
    assert report["best"]["classifier_label"]["mean"] > report["best"]["classifier_label"]["chance"]
    assert report["group"]["ssim_advantage"] >= 0.1 and report["group"]["reidentification"]["accuracy"] >= 0.25
    # The span search recovers the features without assuming them non-negative (here they are: separation is exact).
    assert report["optimisation"]["matched_abs_corr"]["mean"] > report["optimisation"]["single_mixture_abs_corr"]["mean"] + 0.1
    assert report["verdict"]["status"] == "leaks", report["verdict"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_positive_control_identity_mixing_leaks(small_split):
    config = AuditConfig(small_split, **FAST)
    scene = build_scene(config)
    scene.cs = np.stack([np.eye(scene.k)] * len(scene.cs))
    scene.mixtures = scene.h.copy()  # C = I: the cloud sees the head features themselves
    report = audit_scene(scene, config)
    for name, view in views(report).items():
        if name == ("group", None):  # weaker here (see below): it must still leak by the verdict's own rule, SSIM or PSNR
            assert view["ssim_advantage"] >= 0.1 or view["psnr_advantage_db"] >= 2.0, (name, view)
        else:
            assert view["ssim_advantage"] >= 0.1 and view["psnr_advantage_db"] >= 2.0, (name, view)
        if name != ("group", None):
            assert view["reidentification"]["accuracy"] >= 0.5 and view["classifier_label"]["accuracy"] >= 0.8, (name, view)
    # The group decoder learnt protocol mixtures, not C = I, in 4 epochs here: weaker, yet far above 1/64.
    assert report["group"]["reidentification"]["accuracy"] >= 0.25
    assert report["label"]["mixtures"] >= 0.8
    assert report["optimisation"]["matched_abs_corr"]["mean"] > 0.95
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
    for name, view in views(report).items():
        assert view["ssim_advantage"] < 0.05 and view["psnr_advantage_db"] < 1.0 and view["reidentification"]["accuracy"] <= 4 / 64, (name, view)
        assert view["classifier_label"]["accuracy"] <= view["classifier_label"]["chance"] + 0.15, (name, view["classifier_label"])
    assert label["mixtures"] <= label["chance"] + 0.15 and label["separated"] <= label["chance"] + 0.15, label
    for section in ("separation", "optimisation"):
        recovered = report[section]
        assert recovered["matched_abs_corr"]["mean"] < recovered["single_mixture_abs_corr"]["mean"] + 0.05, (section, recovered)
    assert report["verdict"]["status"] != "leaks", report["verdict"]


def test_separation_recovers_orthogonally_mixed_post_relu_features_at_k_8(small_split):
    """Orthogonal C keeps accuracy at large k, but post-ReLU features are still recovered from one group."""
    from datamix_cli.protocol.mixing import MixingConfig, coefficient_rng, draw_batch, mix

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
    args = ["audit", str(small_split), "--samples", "8", "--attacks", "separation,group,optimisation,label", "--decoder-epochs", "1", "--search-steps", "2"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # rich reads the width from COLUMNS
    assert result.exit_code == 0, result.output
    for text in ("Amari index", "span search", "group decoder, k mixtures *", "model's label", "strongest attack per metric",
                 "feature |corr|", "time: ", "group ", "optimisation ", "verdict: ", "not a guarantee"):
        assert text in result.output, text


def test_cli_default_attacks_are_all_attacks():
    from datamix_cli.commands.audit import DEFAULT_ATTACKS

    assert tuple(DEFAULT_ATTACKS.split(",")) == ATTACKS


def test_group_decoder_is_skipped_when_the_split_shuffles(small_split):
    """With shuffling the cloud does not know which mixtures form a group: the group decoder does not apply, and
    the report says why rather than counting it as an attack not run."""
    from dataclasses import replace

    config = AuditConfig(small_split, samples=8)
    scene = build_scene(config)
    scene.mixing = replace(scene.mixing, shuffle=True)
    metrics, recon = attack_group(scene, Judge(scene, 0), epochs=1, seed=0)
    assert recon is None and "shuffles" in metrics["skipped"]
    report = base_report(group=metrics)
    result = verdict(report, ATTACKS)
    assert result["status"] == "resists this audit" and any("group skipped" in r for r in result["reasons"]), result
    assert "group decoder on a group's mixtures" not in best_attacks(report).get("ssim", {}).get("attack", "")


@pytest.mark.parametrize(("args", "message"), [(["--attacks", "separation,telepathy"], "unknown attacks telepathy"), (["--decoder-epochs", "0"], "decoder-epochs")])
def test_audit_bad_options(small_split, args, message):
    result = CliRunner().invoke(app, ["audit", str(small_split), *args])
    assert result.exit_code == 2 and message in result.output


def base_report(**overrides):
    view = {"ssim": {"mean": 0.4}, "psnr_db": {"mean": 12.0}, "ssim_advantage": 0.0, "psnr_advantage_db": 0.0,
            "reidentification": {"accuracy": 1 / 64, "chance": 1 / 64}, "classifier_label": {"accuracy": 0.3, "chance": 0.3}}
    features = {"matched_abs_corr": {"mean": 0.5}, "single_mixture_abs_corr": {"mean": 0.8}, "chance_abs_corr": {"mean": 0.2}}
    report = {
        "samples": 64,
        "separation": {"method": "FastICA", **features},
        "inversion": {"mixtures": dict(view), "separated": dict(view)},
        "adaptive": dict(view),
        "group": dict(view),
        "optimisation": {**view, **features},
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
    assert verdict(base_report(), ATTACKS)["status"] == "resists this audit"
    # A high absolute SSIM that the public mean image also reaches is not a leak.
    assert verdict(base_report(**{"inversion.mixtures.ssim": {"mean": 0.6}}), ATTACKS)["status"] == "resists this audit"
    assert verdict(base_report(**{"inversion.mixtures.ssim_advantage": 0.11}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"inversion.separated.psnr_advantage_db": 2.5}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"adaptive.ssim_advantage": 0.11}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"adaptive.ssim_advantage": 0.07}), ATTACKS)["status"] == "inconclusive"
    # 64 samples at chance 10 %: 20 % correct is significant (p < 0.01), 14 % is not.
    assert verdict(base_report(**{"label.mixtures": 0.20}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"label.separated": 0.14}), ATTACKS)["status"] == "resists this audit"
    # Re-identification among 64 at chance 1/64: 6 hits are significant, 2 are not.
    assert verdict(base_report(**{"adaptive.reidentification": {"accuracy": 6 / 64, "chance": 1 / 64}}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"inversion.mixtures.reidentification": {"accuracy": 2 / 64, "chance": 1 / 64}}), ATTACKS)["status"] == "resists this audit"
    assert verdict(base_report(**{"separation.matched_abs_corr": {"mean": 0.9}}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"separation.matched_abs_corr": {"mean": 0.82}}), ATTACKS)["status"] == "resists this audit"
    assert verdict(base_report(**{"optimisation.matched_abs_corr": {"mean": 0.9}}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"group.ssim_advantage": 0.11}), ATTACKS)["status"] == "leaks"
    # The split's model labels reconstructions: 64 samples at chance 30 %: 45 % correct is significant, 40 % is not.
    assert verdict(base_report(**{"optimisation.classifier_label": {"accuracy": 0.45, "chance": 0.3}}), ATTACKS)["status"] == "leaks"
    assert verdict(base_report(**{"group.classifier_label": {"accuracy": 0.40, "chance": 0.3}}), ATTACKS)["status"] == "resists this audit"
    for attack in ("label", "adaptive", "group", "optimisation"):
        partial = base_report()
        del partial[attack]
        assert verdict(partial, ATTACKS)["status"] == "inconclusive"


def test_best_attack_per_metric_is_the_strongest_view_next_to_its_chance():
    report = base_report(**{"adaptive.ssim": {"mean": 0.8}, "adaptive.ssim_advantage": 0.4, "inversion.separated.reidentification": {"accuracy": 0.9, "chance": 1 / 64},
                            "label.separated": 0.7, "optimisation.matched_abs_corr": {"mean": 0.7},
                            # the best label accuracy is the one furthest above its own chance
                            "group.classifier_label": {"accuracy": 0.6, "chance": 0.4}, "inversion.mixtures.classifier_label": {"accuracy": 0.5, "chance": 0.2}})
    best = best_attacks(report)
    assert best["ssim"] == {"attack": "adaptive decoder on raw mixtures", "mean": 0.8, "chance": pytest.approx(0.4), "advantage": 0.4}
    assert best["reidentification"]["attack"] == "decoder on separated features" and best["reidentification"]["accuracy"] == 0.9
    assert best["label_accuracy"] == {"attack": "classifier on separated features", "mean": 0.7, "chance": 0.1}
    assert best["classifier_label"] == {"attack": "decoder on raw mixtures", "mean": 0.5, "chance": 0.2}
    assert best["feature_abs_corr"] == {"attack": "span search", "mean": 0.7, "single_mixture": 0.8, "chance": 0.2}
