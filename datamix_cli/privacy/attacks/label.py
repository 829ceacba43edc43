"""Label inference (attack ``label``): a classifier on pooled features, trained on public features or on
public groups mixed as the protocol mixes."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from datamix_cli.errors import require
from datamix_cli.privacy.attacks.registry import AttackContext, AttackOutcome, register
from datamix_cli.protocol.mixing import coefficient_rng

if TYPE_CHECKING:
    from datamix_cli.privacy.scene import Scene


def pooled(features: np.ndarray, grid: int = 4) -> np.ndarray:
    """A compact descriptor for the label attack: channel-wise average pooling to grid×grid (or the raw vector)."""
    if features.ndim == 4:
        n, c, h, w = features.shape
        gh, gw = min(grid, h), min(grid, w)
        trimmed = features[:, :, : h - h % gh, : w - w % gw]
        return trimmed.reshape(n, c, gh, trimmed.shape[2] // gh, gw, trimmed.shape[3] // gw).mean(axis=(3, 5)).reshape(n, -1)
    if features.ndim == 3:
        n, c, length = features.shape
        g = min(grid * grid, length)
        return features[:, :, : length - length % g].reshape(n, c, g, -1).mean(axis=3).reshape(n, -1)
    return features.reshape(len(features), -1)


def _label_pipeline(features: np.ndarray, labels: np.ndarray, seed: int):
    linear_model = require("sklearn.linear_model", "data")
    preprocessing = require("sklearn.preprocessing", "data")
    pipeline = require("sklearn.pipeline", "data")
    model = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(pooled(features), labels)
    return model


def train_label_classifier(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Logistic regression on pooled features; returns a function features -> predicted labels."""
    model = _label_pipeline(features, labels, seed)
    return lambda f: model.predict(pooled(f))


def label_logits(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """The same classifier as a differentiable torch function, features -> logits (the span search's confidence)."""
    import torch

    model = _label_pipeline(features, labels, seed)
    scaler, linear = model[0], model[-1]
    coef = linear.coef_ / scaler.scale_
    bias = linear.intercept_ - coef @ scaler.mean_
    if len(coef) == 1:  # binary: sklearn keeps one row, the logit of class 1 against class 0
        coef, bias = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    weight, offset = torch.from_numpy(coef.T.astype(np.float32)), torch.from_numpy(bias.astype(np.float32))
    return lambda f: pooled(f).reshape(len(f), -1) @ weight + offset


def attack_label(scene: Scene, separated, seed: int) -> dict:
    clean = train_label_classifier(scene.h_pub, scene.y_pub, seed)
    public_mixtures, dominant = scene.simulate_public_dominant(coefficient_rng(seed + 2))
    on_mixtures = train_label_classifier(public_mixtures, scene.y_pub[dominant], seed)
    counts = np.bincount(scene.y, minlength=scene.classes)
    results = {
        "chance": float(counts.max() / counts.sum()),
        "unmixed_baseline": float((clean(scene.h) == scene.y).mean()),
        "mixtures": float((on_mixtures(scene.mixtures) == scene.y[scene.dominant()]).mean()),
    }
    if separated is not None:
        results["separated"] = float((clean(separated) == scene.y).mean())
    return results


@register("label", "a classifier on the features: raw mixtures and separated features", order=60)
def run(ctx: AttackContext) -> AttackOutcome:
    return AttackOutcome(attack_label(ctx.scene, ctx.separated, ctx.seed))
