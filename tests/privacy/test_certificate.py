"""The Fisher-information certificate against estimators whose error is known in closed form, and its Jacobian
estimate against the exact Jacobian."""

import numpy as np
import pytest
import torch

from datamix_cli.privacy.certificate import Z, jacobian_frobenius, mse_bound

D_IN, D_OUT, K, SIGMA = 12, 20, 4, 0.3


class Linear(torch.nn.Module):
    def __init__(self, a: np.ndarray):
        super().__init__()
        self.a = torch.from_numpy(a.astype(np.float32))

    def forward(self, x):
        return x @ self.a.T


def group(rng):
    c = rng.dirichlet(np.ones(K), size=K)
    return c, rng.random((K, D_IN))


def test_the_efficient_estimator_meets_the_bound_and_a_blind_one_stays_above_it():
    """Head f(x) = Ax with orthonormal columns, mixtures M = C·(XAᵀ) + N. A cloud that knows C and the other inputs
    estimates x_i without bias by projecting on c_i: its MSE is σ²/‖c_i‖², exactly the bound. Joint least squares
    without the other inputs, for any full-rank A, is unbiased too and never does better."""
    rng = np.random.default_rng(0)
    a = np.linalg.qr(rng.standard_normal((D_OUT, D_IN)))[0]  # AᵀA = I
    c, x = group(rng)
    trials = 4000
    noise = SIGMA * rng.standard_normal((trials, K, D_OUT))
    m = (c @ (x @ a.T))[None] + noise
    frobenius = np.full(K, float((a**2).sum()))  # = D_IN
    bound = mse_bound(np.full(K, SIGMA), (c**2).sum(0), frobenius, D_IN)
    for i in range(K):
        others = sum(c[:, l, None] * (x[l] @ a.T) for l in range(K) if l != i)
        estimate = ((m - others) * c[None, :, i, None]).sum(1) @ a / (c[:, i] ** 2).sum()
        mse = ((estimate - x[i]) ** 2).mean(1)
        # The per-trial MSE·‖c‖²/σ² is χ²_d/d: the mean of 4000 has relative std √(2/(12·4000)) = 0.0065; 5 of them.
        assert mse.mean() == pytest.approx(bound[i], rel=5 * np.sqrt(2 / (D_IN * trials)))
    general = rng.standard_normal((D_OUT, D_IN))  # not orthonormal
    m = (c @ (x @ general.T))[None] + noise
    joint = np.linalg.solve(c, m.transpose(1, 0, 2).reshape(K, -1)).reshape(K, trials, D_OUT) @ np.linalg.pinv(general).T
    bound = mse_bound(np.full(K, SIGMA), (c**2).sum(0), np.full(K, float((general**2).sum())), D_IN)
    mse = ((joint - x[:, None]) ** 2).mean((1, 2))
    assert (mse >= bound * (1 - 5 * np.sqrt(2 / (D_IN * trials)))).all(), (mse, bound)
    assert (mse > 1.5 * bound).any()  # strictly above where C and A are far from orthonormal


def test_hutchinson_agrees_with_the_exact_jacobian_within_its_stated_error():
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(D_IN, 32), torch.nn.Tanh(), torch.nn.Linear(32, D_OUT)).eval()
    x = np.random.default_rng(1).standard_normal((8, D_IN)).astype(np.float32)
    estimate, stderr = jacobian_frobenius(head, x, probes=256, seed=3)
    exact = np.array([float((torch.autograd.functional.jacobian(head, torch.from_numpy(v)) ** 2).sum()) for v in x])
    # Seeded probes: the same figures every run; each lies within Z standard errors of the truth.
    assert (np.abs(estimate - exact) <= Z * stderr).all(), (estimate, exact, stderr)
    assert (stderr / exact <= np.sqrt(2 / 256) * 1.5).all()


def test_bound_scales_with_noise_and_mixing_as_the_formula_says():
    frobenius, column = np.array([4.0]), np.array([0.5])
    base = mse_bound(np.array([0.1]), column, frobenius, 16)
    assert base == pytest.approx(0.1**2 * 16 / (0.5 * 4.0))
    assert mse_bound(np.array([0.2]), column, frobenius, 16) == pytest.approx(4 * base)
    assert mse_bound(np.array([0.1]), 2 * column, frobenius, 16) == pytest.approx(base / 2)
    assert mse_bound(np.array([0.0]), column, frobenius, 16) == 0


def test_audit_reports_no_certificate_without_noise_and_one_with_it(small_split):
    from dataclasses import replace

    from datamix_cli.privacy.certificate import certify
    from datamix_cli.privacy.scene import Scene

    scene = Scene(small_split, samples=16)
    assert certify(scene)["status"] == "none"
    scene.mixing = replace(scene.mixing, noise_sigma=0.5)
    first = certify(scene, probes=32)
    scene.mixing = replace(scene.mixing, noise_sigma=1.0)
    second = certify(scene, probes=32)
    assert first["status"] == "unbiased" and first["inputs"] == 16 and first["input_dimension"] == 1024
    assert second["mse_bound"]["mean"] == pytest.approx(4 * first["mse_bound"]["mean"], rel=1e-9)  # σ² (same probes)
    assert "unbiased attackers only" in first["caveat"]


def test_split_records_the_certificate_the_audit_finds_on_its_artifacts(tmp_path, small_cnn_weights, small_split):
    """The manifest's bound (the in-memory head at split time) against the audit's (the exported TorchScript head):
    same inputs, same C (evaluation seed 0 = audit seed 0), same probes."""
    from datamix_cli.artifacts.manifest import load_manifest
    from datamix_cli.model.loading import ModelSource
    from datamix_cli.pipeline.export import ExportConfig
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.privacy.certificate import certify
    from datamix_cli.privacy.scene import Scene
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.training.finetune import FinetuneConfig
    from tests.helpers import EXAMPLES_FILE

    assert load_manifest(small_split).certificate["status"] == "none"
    out = tmp_path / "noisy"
    run_split(SplitConfig(source=ModelSource(f"{EXAMPLES_FILE}:small_cnn", weights=small_cnn_weights), data="digits", out=out,
                          input_shape=(1, 1, 32, 32), training=FinetuneConfig(epochs=0), mixing=MixingConfig(noise_relative=0.3),
                          export=ExportConfig(formats=("onnx",))))
    recorded = load_manifest(out).certificate
    audited = certify(Scene(out, samples=64))
    assert recorded["status"] == audited["status"] == "unbiased" and recorded["inputs"] == 64
    assert recorded["mse_bound"]["mean"] == pytest.approx(audited["mse_bound"]["mean"], rel=1e-3)
    assert recorded["sigma"]["data_dependent"]
