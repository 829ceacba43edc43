"""A Fisher-information certificate for what the cloud receives (Hannun et al. UAI 2021; Maeng et al. NeurIPS 2023).

The cloud sees, per group, m_j = Σ_l C_jl·h(x_l) + n_j with n_j ~ N(0, σ²I). Give it C (separation recovers C at
post-ReLU cuts) and the other inputs of the group: the Fisher information about input i is then
I(x_i) = ‖c_i‖²·J_iᵀJ_i/σ², c_i the i-th column of C and J_i the Jacobian of the head (preprocessing and bottleneck
included) at x_i. Knowing less can only lower it, so the bound below holds for a cloud that knows less too.
With d the input dimension, dFIL = tr(I)/d, and any **unbiased** reconstruction has

    E‖x̂ − x‖²/d ≥ 1/dFIL = σ²·d / (‖c_i‖²·‖J_i‖_F²),

in the units of the head artifact's input (pixels in [0, 1]: a PSNR ceiling of −10·log10 of it). Quantization by the
uplink codec is a deterministic function of the mixtures and cannot add Fisher information: ignoring it keeps the
bound valid. A biased attacker (a decoder with a learned prior) is not bounded by this; no van Trees form is given,
because the prior's Fisher information would have to be overestimated, not fitted, to keep the bound a bound.

‖J‖_F² is estimated per input by Hutchinson's estimator on the reverse mode, E_u‖Jᵀu‖² with u ~ N(0, I): one
backward pass per probe for a whole batch. Its relative standard deviation is at most √(2/P) for P probes; the bound
uses the estimate plus Z standard errors (a larger ‖J‖ gives a smaller, safer bound).
"""

from __future__ import annotations

import numpy as np

PROBES = 128
Z = 3.0  # one-sided, ≈ 0.13 % under the normal approximation of the probes' mean
HONESTY = ("holds for unbiased attackers only, assuming the exported head and the noise are exactly as deployed and "
           "that the cloud knows C and the group's other inputs; decoders with a learned prior are not bounded by it")


def jacobian_frobenius(head, x: np.ndarray, probes: int = PROBES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per input: (Hutchinson estimate of ‖J‖_F², its standard error), J the Jacobian of ``head`` at each input of
    ``x``. ``head`` is a torch module that treats the inputs of a batch independently (eval mode)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
    out = head(inputs)
    squares = []
    for _ in range(probes):
        u = torch.randn(out.shape, generator=generator)
        (grad,) = torch.autograd.grad(out, inputs, u, retain_graph=True)
        squares.append(grad.reshape(len(x), -1).double().pow(2).sum(1))
    values = torch.stack(squares)
    return values.mean(0).numpy(), (values.std(0) / np.sqrt(probes)).numpy()


def mse_bound(sigma: np.ndarray, column_norm_sq: np.ndarray, frobenius_sq: np.ndarray, d: int) -> np.ndarray:
    """1/dFIL per input: σ²·d / (‖c_i‖²·‖J_i‖_F²); 0 where σ is 0 (no noise: no bound), inf where the head does not
    depend on its input."""
    info = column_norm_sq * frobenius_sq
    return np.where(info > 0, sigma**2 * d / np.maximum(info, 1e-300), np.inf)


def certify(scene, probes: int = PROBES) -> dict:
    """The certificate for the audited inputs of ``scene`` with the C they were mixed with."""
    privacy = scene.manifest.privacy
    return certify_inputs(scene.head_module(), scene.x, scene.h, scene.cs, scene.mixing, probes, (privacy or {}).get("clip_norm"),
                          calibrated_target(privacy))


def certify_inputs(head, x: np.ndarray, h: np.ndarray, cs: np.ndarray, mixing, probes: int = PROBES,
                   clip_norm: float | None = None, target_mse: float | None = None) -> dict:
    """The certificate for inputs ``x`` (whole groups of k, in order) with head features ``h`` = head(x), mixed by
    ``cs`` (G, k, k) under ``mixing``'s noise; with ``clip_norm`` (the head clips to it) also μ-GDP
    (datamix_cli.privacy.gdp), for the worst C the protocol can draw and for the C these inputs were mixed with; with
    ``target_mse`` (what the noise was calibrated to) the share of these inputs whose bound reaches it."""
    from datamix_cli.protocol.mixing import mix, noise_std

    k = mixing.k
    if not mixing.noisy:
        return {"status": "none", "reason": "the protocol adds no noise: the Fisher information is unbounded and no unbiased bound exists",
                "caveat": HONESTY}
    estimate, stderr = jacobian_frobenius(head, x, probes)
    upper = estimate + Z * stderr
    groups = len(cs)
    clean = mix(cs.astype(np.float64), h.reshape(groups, k, -1).astype(np.float64)).reshape(h.shape)
    sigma = np.repeat(np.asarray(noise_std(mixing, clean), dtype=np.float64), k)  # the realised std of each group
    column_norm_sq = (cs**2).sum(1).reshape(-1)  # ‖c_i‖² for the i-th input of each group
    d = int(np.prod(x.shape[1:]))
    bound = mse_bound(sigma, column_norm_sq, upper, d)
    psnr = -10 * np.log10(np.maximum(bound, 1e-300))
    result = {
        "status": "unbiased",
        "mse_bound": {"mean": float(bound.mean()), "p5": float(np.percentile(bound, 5)), "min": float(bound.min())},
        "psnr_ceiling_db": {"p95": float(np.percentile(psnr, 95)), "max": float(psnr.max())},
        "inputs": len(bound),
        "input_dimension": d,
        "sigma": {"mean": float(sigma.mean()), "data_dependent": bool(mixing.noise_relative)},
        "jacobian": {"estimator": f"Hutchinson, {probes} Gaussian probes, estimate + {Z:g} standard errors",
                     "frobenius_sq_mean": float(estimate.mean()), "relative_stderr_max": float((stderr / np.maximum(estimate, 1e-300)).max())},
        "assumes": "the cloud knows C and the other inputs of each group; quantization ignored (it cannot add information)",
        "caveat": HONESTY,
    }
    if target_mse is not None:
        result["target_mse"] = {"target": target_mse, "share_met": float((bound >= target_mse).mean())}
    if clip_norm is not None and not mixing.noise_relative:
        result["gdp"] = clipped_gaussian(clip_norm, float(mixing.noise_sigma), mixing, np.sqrt(column_norm_sq))
    return result


def clipped_gaussian(clip_norm: float, sigma: float, mixing, column_norms: np.ndarray) -> dict:
    """μ of the clipped Gaussian mechanism for the worst C the protocol can draw (what is guaranteed), with the
    realised μ of these inputs' C beside it."""
    from datamix_cli.privacy.gdp import guarantee, mu
    from datamix_cli.protocol.clipping import column_norm_max

    worst = mu(clip_norm, column_norm_max(mixing), sigma)
    return {**guarantee(worst), "clip_norm": clip_norm, "sigma": sigma,
            "mu_realised": {"mean": float(np.mean([mu(clip_norm, c, sigma) for c in column_norms])),
                            "max": float(max(mu(clip_norm, c, sigma) for c in column_norms))}}


def calibrated_target(privacy: dict | None) -> float | None:
    """The MSE a manifest's ``privacy`` section says the noise was calibrated to, if any."""
    return ((privacy or {}).get("calibration") or {}).get("target_mse")
