"""The split's privacy mechanism: clipping in the head, noise calibrated to a target, and the certificate.

``--target-mse M`` calibrates an absolute σ to the Fisher-information bound (datamix_cli.privacy.calibration) and
freezes the head while fine-tuning, so that the head certified is the head that ships. ``--target-mu μ`` clips
every input's features to ``--clip-norm B`` (default: their median norm on the training data) inside the head and
sets σ = 2B·max‖c_i‖/μ (datamix_cli.privacy.gdp); the head may train, since μ does not depend on it. Both noises
are absolute (drawn on the device from OS entropy, as any noise is); with both targets the larger σ is used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from datamix_cli.errors import ConfigError

CERTIFIED_SAMPLES = 64


@dataclass(frozen=True)
class PrivacyTarget:
    target_mse: float | None = None
    target_mu: float | None = None
    clip_norm: float | None = None  # None with target_mu: the median feature norm on the training data

    @property
    def clips(self) -> bool:
        return self.target_mu is not None or self.clip_norm is not None

    @property
    def active(self) -> bool:
        return self.clips or self.target_mse is not None

    def check(self, mixing) -> None:
        for name, value in (("--target-mse", self.target_mse), ("--target-mu", self.target_mu), ("--clip-norm", self.clip_norm)):
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.clips and mixing.noise_relative:
            raise ConfigError("clipping is stated for input-independent noise: drop --noise-relative (use --target-mu or --noise)")
        if self.clip_norm is not None and self.target_mu is None and self.target_mse is None and not mixing.noise_sigma:
            raise ConfigError("--clip-norm without noise bounds nothing: give --target-mu, --target-mse or --noise")


def first_inputs(x) -> np.ndarray:
    """The training inputs the clip norm and the calibration read, and no more: an image folder is read lazily."""
    from datamix_cli.privacy.calibration import CALIBRATION_INPUTS
    from datamix_cli.protocol.clipping import CLIP_SAMPLES

    return np.asarray(x[: max(CALIBRATION_INPUTS, CLIP_SAMPLES)])


def apply(target: PrivacyTarget, mixing, training, parts, train_x: np.ndarray, report) -> tuple[object, object, object, dict]:
    """(mixing, training, parts, the manifest's ``privacy`` section) with the clipping put in the head and the
    noise set by the targets; ``parts`` as they will be fine-tuned (after the bottleneck, if any)."""
    from datamix_cli.protocol import clipping

    record = {"clip_norm": None, "head_frozen": False}
    if target.clips:
        norm = target.clip_norm if target.clip_norm is not None else clipping.median_norm(parts.head, train_x)
        parts = clipping.insert(parts, norm)
        record.update(clip_norm=norm, clip_norm_source="--clip-norm" if target.clip_norm is not None else "median feature norm of the training inputs")
    sigmas = [mixing.noise_sigma]
    if target.target_mu is not None:
        from datamix_cli.privacy.gdp import sigma_for_mu

        sigmas.append(sigma_for_mu(record["clip_norm"], clipping.column_norm_max(mixing), target.target_mu))
        record["target_mu"] = target.target_mu
    if target.target_mse is not None:
        from datamix_cli.privacy.calibration import calibrate_mse

        sigma, record["calibration"] = calibrate_mse(parts.head, train_x, mixing, target.target_mse)
        sigmas.append(sigma)
        record["head_frozen"] = True
        training = replace(training, freeze_head=True)
    if target.active:
        mixing = replace(mixing, noise_sigma=float(max(sigmas)), noise_relative=0.0)
        report(f"privacy: noise sigma {mixing.noise_sigma:.4g}" + (f", features clipped to norm {record['clip_norm']:.4g}" if target.clips else "")
               + (", head frozen while fine-tuning (the calibrated bound holds for it)" if record["head_frozen"] else ""))
    return mixing, training, parts, {**section(mixing, record["clip_norm"]), **record}


def section(mixing, clip_norm: float | None) -> dict:
    """The mechanism as the manifest names it, with its guarantee where clipping gives one."""
    mechanism = ("clipped_gaussian" if clip_norm is not None else "relative_gaussian" if mixing.noise_relative else
                 "gaussian" if mixing.noise_sigma else "none")
    record = {"mechanism": mechanism, "sigma": float(mixing.noise_sigma), "noise_relative": float(mixing.noise_relative),
              "clip_norm": clip_norm, "head_frozen": False}
    if clip_norm is not None:
        from datamix_cli.privacy.certificate import clipped_gaussian
        from datamix_cli.protocol.clipping import column_norm_max

        gdp = clipped_gaussian(clip_norm, mixing.noise_sigma, mixing, np.array([column_norm_max(mixing)]))
        gdp.pop("mu_realised")
        record["gdp"] = gdp
    if mixing.noise_relative:
        record["data_dependent"] = "sigma = noise_sigma + noise_relative * RMS of each group's mixtures: it depends on the inputs"
    return record


def certificate(parts, held, mixing, eval_seed: int | None, privacy: dict) -> dict | None:
    """The Fisher-information bound (datamix_cli.privacy.certificate) on the first held-out inputs, whole groups of
    k, mixed with the evaluation C; None with fewer than k held-out inputs."""
    import torch

    from datamix_cli.privacy.certificate import calibrated_target, certify_inputs
    from datamix_cli.protocol.mixing import coefficient_rng, draw_batch

    k = mixing.k
    n = min(CERTIFIED_SAMPLES, len(held.y))
    n -= n % k
    if n < k:
        return None
    x = np.ascontiguousarray(held.x[:n], dtype=np.float32)
    head = parts.head.eval()
    with torch.no_grad():
        h = head(torch.from_numpy(x)).numpy()
    cs = draw_batch(coefficient_rng(eval_seed), mixing, n // k)
    return certify_inputs(head, x, h, cs, mixing, clip_norm=privacy.get("clip_norm"), target_mse=calibrated_target(privacy))
