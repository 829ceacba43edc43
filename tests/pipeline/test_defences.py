"""The protocol's privacy defences as options of `datamix split`: noise relative to each group's scale, a cut whose
features take both signs, adversarial privacy fine-tuning. Each is checked against what it must do, by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import EXAMPLES_FILE
from datamix_cli.main import app


def test_relative_noise_follows_each_groups_rms_in_numpy_and_torch():
    from datamix_cli.errors import ProtocolError
    from datamix_cli.protocol.mixing import MixingConfig, add_noise

    config = MixingConfig(k=4, noise_relative=0.25, noise_sigma=0.01)
    rng = np.random.default_rng(0)
    # Two groups whose features differ in scale by 1000: an absolute σ would drown one and vanish in the other.
    m = np.concatenate([rng.standard_normal((4, 2000)) * 0.1, rng.standard_normal((4, 2000)) * 100]).astype(np.float32)
    for kind, mixtures, normal in (
        ("numpy", m, lambda shape: rng.standard_normal(shape).astype(np.float32)),
        ("torch", torch.from_numpy(m), lambda shape: torch.randn(shape, generator=torch.Generator().manual_seed(0))),
    ):
        noisy, noise = add_noise(config, mixtures, normal)
        noise = np.asarray(noise)
        for g in range(2):
            rows = m[g * 4 : (g + 1) * 4]
            expected = 0.01 + 0.25 * np.sqrt(np.mean(rows.astype(np.float64) ** 2))
            assert abs(noise[g * 4 : (g + 1) * 4].std() / expected - 1) < 0.03, (kind, g)
        np.testing.assert_allclose(np.asarray(noisy) - noise, m, rtol=1e-6, atol=1e-4)
    assert add_noise(MixingConfig(k=4), m, normal) == (m, None)
    with pytest.raises(ProtocolError, match="not whole groups of k=4"):  # 6 rows would pass as one group of 6
        add_noise(config, m[:6], np.random.default_rng(1).standard_normal)


def test_negative_shares_match_the_layers_run_by_hand():
    from examples.models import small_cnn
    from partitioners.graph import trace_model
    from partitioners.profile import negative_shares, profile_model

    torch.manual_seed(0)
    model = small_cnn().eval()
    traced = trace_model(model)
    x = torch.rand(16, 1, 32, 32)
    shares = negative_shares(traced, profile_model(traced, (1, 1, 32, 32)), x)
    with torch.no_grad():
        for cut in ("1", "2", "3", "5"):
            by_hand = float((model[: int(cut) + 1](x) < 0).float().mean())
            assert shares[cut] == pytest.approx(by_hand, abs=1e-6), cut
    assert shares["2"] == 0 and shares["1"] > 0.2  # after the ReLU, and the BatchNorm before it


def test_signed_cut_is_the_deepest_pre_activation_cut_within_budget():
    from examples.models import small_cnn
    from partitioners.graph import trace_model
    from partitioners.profile import negative_shares, profile_model
    from partitioners.select import choose_split

    from datamix_cli.errors import BudgetError

    traced = trace_model(small_cnn())
    profile = profile_model(traced, (1, 1, 32, 32))
    shares = negative_shares(traced, profile, torch.rand(16, 1, 32, 32))
    assert choose_split(profile, 0.2).head_cut.name == "3"  # the max-pool after the first ReLU
    assert choose_split(profile, 0.2, negative_shares=shares).head_cut.name == "1"  # the BatchNorm before it
    assert choose_split(profile, 0.6, negative_shares=shares).head_cut.name == "5"
    with pytest.raises(BudgetError, match="both signs"):
        choose_split(profile, 0.2, negative_shares={name: 0.0 for name in shares})


def _adversary_errors(informative: bool, steps: int = 30) -> tuple[float, float]:
    """The co-trained decoder's relative error before and after training on digits' head features, mixed in groups
    of 4 (informative) or on Gaussian noise of the same shape (nothing to learn)."""
    from examples.models import small_cnn
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model

    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.protocol.mixing import MixingConfig, draw_batch, mix
    from datamix_cli.training.adversary import Adversary

    torch.manual_seed(0)
    traced = trace_model(small_cnn())
    profile = profile_model(traced, (1, 1, 32, 32))
    parts = partition(traced, profile.cut("3"), profile.cut("11"))
    x = torch.from_numpy(load_dataset("digits", (1, 32, 32)).x[:512])
    adversary = Adversary(parts, x.numpy(), 4, "cpu", seed=0)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        h = parts.head(x)
    errors = []
    for step in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), 32, replace=False))
        c = torch.from_numpy(draw_batch(rng, MixingConfig(k=4), 8)).float()
        m = mix(c, h[idx].reshape(8, 4, *h.shape[1:])).reshape(32, *h.shape[1:]) if informative else torch.randn(32, *h.shape[1:])
        with torch.no_grad():
            errors.append(float(-adversary.privacy_loss(m, x[idx], c)))
        adversary.step(m, x[idx], c)
    return float(np.mean(errors[:5])), float(np.mean(errors[-10:]))


def test_adversary_learns_from_mixtures_but_not_from_noise():
    start, end = _adversary_errors(informative=True)
    assert end < 0.6 < start, (start, end)  # well below guessing the mean (1.0): the min-max has a real opponent
    _, end_noise = _adversary_errors(informative=False)
    assert end_noise > 0.9, end_noise


def test_privacy_loss_reaches_the_head_while_the_adversary_beats_chance():
    from examples.models import small_cnn
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model

    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.training.adversary import Adversary
    from datamix_cli.training.mixed import sent_mixtures

    torch.manual_seed(0)
    traced = trace_model(small_cnn())
    profile = profile_model(traced, (1, 1, 32, 32))
    parts = partition(traced, profile.cut("3"), profile.cut("11"))
    x = torch.rand(8, 1, 32, 32)
    adversary = Adversary(parts, x.numpy(), 4, "cpu", seed=0)
    c = torch.eye(4).repeat(2, 1, 1)
    m = sent_mixtures(parts, x, c, MixingConfig(k=4))
    loss = adversary.privacy_loss(m, x, c)
    loss.backward(retain_graph=True)
    assert loss == -1 and all(p.grad is None or not p.grad.any() for p in parts.head.parameters())  # worse than chance: no pull
    for _ in range(40):  # let it memorise these 8 inputs
        adversary.step(m.detach(), x, c)
    loss = adversary.privacy_loss(m, x, c)
    loss.backward()
    assert loss > -1 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.head.parameters())


def test_split_with_every_defence_records_them_and_serves_exactly(tmp_path, small_cnn_weights):
    """One split with the defences combined: the manifest records each, and serve-local's per-group check (the
    recorded noise and C re-applied in float64 around the PyTorch parts) passes through the real client."""
    from datamix_cli.artifacts.manifest import load_manifest

    out = tmp_path / "defended"
    runner = CliRunner()
    result = runner.invoke(app, [
        "split", f"{EXAMPLES_FILE}:small_cnn", "--weights", str(small_cnn_weights), "--data", "digits", "--input-shape", "1,1,32,32",
        "--out", str(out), "--epochs", "1", "--seed", "0", "--formats", "onnx", "--mixing", "orthogonal", "--k", "8",
        "--cut-features", "signed", "--noise-relative", "0.1", "--adversarial", "0.3",
    ])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest.split["head_cut"] == "1" and manifest.split["cut_features"] == "signed"
    assert manifest.split["head_negative_share"] > 0.2
    assert manifest.protocol["noise_relative"] == 0.1 and manifest.protocol["distribution"] == "orthogonal"
    assert manifest.training["adversarial"] == 0.3
    result = runner.invoke(app, ["serve-local", str(out), "--samples", "32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"], report


@pytest.mark.parametrize("args, message", [
    (["--noise-relative", "-0.1"], "relative noise"),
    (["--adversarial", "-1"], "adversarial weight"),
    (["--cut-features", "relu"], "--cut-features"),
])
def test_bad_defence_options_are_one_line_and_write_nothing(tmp_path, small_cnn_weights, args, message):
    out = tmp_path / "never"
    result = CliRunner().invoke(app, [
        "split", f"{EXAMPLES_FILE}:small_cnn", "--weights", str(small_cnn_weights), "--data", "digits", "--input-shape", "1,1,32,32",
        "--out", str(out), "--epochs", "1", *args,
    ])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_preset_fills_only_what_the_command_line_leaves_open():
    from datamix_cli.errors import ConfigError
    from datamix_cli.protocol.presets import DEFAULTS, PRESETS, resolve

    nothing = dict.fromkeys(DEFAULTS)
    assert resolve("default", nothing) == DEFAULTS
    private = resolve("private", nothing)
    assert private == {**DEFAULTS, **PRESETS["private"]} and private != DEFAULTS
    assert resolve("private", {**nothing, "k": 4, "shuffle": False})["k"] == 4  # explicit wins, falsy values included
    assert resolve("private", {**nothing, "shuffle": False})["shuffle"] is False
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve("secret", nothing)


def test_the_audits_attacker_estimates_each_groups_noise_from_what_it_receives():
    from datamix_cli.privacy.attacks.separation import group_sigma
    from datamix_cli.protocol.mixing import MixingConfig

    rows = np.random.default_rng(0).standard_normal((4, 500)) * 3
    assert group_sigma(MixingConfig(k=4, noise_relative=0.5, noise_sigma=0.1), rows) == pytest.approx(0.1 + 0.5 * np.sqrt(np.mean(rows**2)))
    assert group_sigma(MixingConfig(k=4), rows) == 0.0
