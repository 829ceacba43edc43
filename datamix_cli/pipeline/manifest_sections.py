"""The manifest of a split, one builder per section (docs/manifest.md describes every field).

What the split measured along the way travels in one :class:`SplitFacts`; each section reads only what it needs.
The protocol section is written by the mixing config itself (:meth:`MixingConfig.to_protocol`, the inverse of
``from_protocol``), the preprocessing by its spec.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

from datamix_cli import __version__
from datamix_cli.artifacts.manifest import Manifest
from datamix_cli.model.identity import model_name, state_dict_sha256
from datamix_cli.protocol.codecs import wire_spec

VERSIONED_PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "litert-torch", "ai-edge-litert")
BATCHNORM_NOTE = ("train mode during fine-tuning (cloud BN statistics follow the mixtures), running statistics recomputed "
                  "under mixing for the weights of each validated epoch (or the last), eval mode in every artifact")


@dataclass(frozen=True)
class SplitFacts:
    """What ``datamix split`` found and measured, for the manifest."""

    model: object  # the user's model (torch.nn.Module), for its sha256
    profile: object  # partitioners.profile.GraphProfile
    decision: object  # partitioners.select.SplitDecision
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...]
    num_classes: int
    n_train_data: int
    n_eval: int
    accuracy: dict
    history: list
    train_seconds: float
    shipped_epoch: int
    stopped: str
    preprocessing: object  # datamix_cli.data.preprocessing.Preprocessing
    processes: int
    skipped_images: int
    head_negative_share: float | None
    objective: dict | None = None  # with --link: the objective, the link and the chosen cut's latency estimate


def build_manifest(config, facts: SplitFacts, artifacts: list[dict], files: list[dict], uplink_search: dict | None = None,
                   certificate: dict | None = None, privacy: dict | None = None) -> Manifest:
    return Manifest(
        datamix_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        model=model_section(config, facts),
        split=split_section(config, facts.decision, facts.head_negative_share, uplink_search, facts.objective),
        protocol=config.mixing.to_protocol(decoys=min(config.export.decoys, facts.n_train_data),
                                           seeded=config.training.seed is not None or config.eval_seed is not None),
        flops=flops_section(facts.profile, facts.decision, config.bottleneck),
        accuracy={"dataset": config.eval_data or config.data, "n": facts.n_eval, "eval_seed": config.eval_seed, **facts.accuracy},
        training=training_section(config, facts),
        artifacts=artifacts,
        files=files,
        versions=versions_section(),
        certificate=certificate,
        privacy=privacy,
    )


def model_section(config, facts: SplitFacts) -> dict:
    source, preprocessing = config.source, facts.preprocessing
    return {
        "name": model_name(source.spec),
        "source": source.spec,
        "weights": str(source.weights) if source.weights else None,
        "factory_kwargs": dict(source.factory_kwargs),
        "sha256": state_dict_sha256(facts.model),
        "input_shape": [-1, *facts.sample_shape],
        "dtype": "float32",
        "normalisation": (
            "float32 in [0, 1] (pixel / max value)"
            + ("; channel order and mean/std are applied inside the head artifact" if preprocessing.in_head else "; no mean/std normalisation")
        ),
        "preprocessing": preprocessing.to_manifest(facts.sample_shape),
        "class_labels": list(facts.classes) + [str(i) for i in range(len(facts.classes), facts.num_classes)],
        "num_classes": facts.num_classes,
    }


def split_section(config, decision, head_negative_share: float | None, uplink_search: dict | None = None, objective: dict | None = None) -> dict:
    cut = tuple(decision.head_cut.activation_shape)
    section = {
        "head_cut": decision.head_cut.name,
        "tail_cut": decision.tail_cut.name,
        "cut_features": config.cut_features,
        "head_negative_share": head_negative_share,
        "uplink": wire_spec(config.mixing.uplink_codec, "mixtures", (-1, *config.bottleneck.code_shape(cut))),
        "downlink": wire_spec(config.mixing.downlink_codec, "cloud_out", (-1, *decision.tail_cut.activation_shape)),
        "bottleneck": config.bottleneck.to_manifest(cut),
    }
    if uplink_search is not None:
        section["uplink_search"] = uplink_search
    if objective is not None:
        section["objective"] = objective
    return section


def flops_section(profile, decision, bottleneck) -> dict:
    """Per-sample FLOPs of every part; the bottleneck's encoder counts on the edge, its decoder in the cloud, and
    mixing acts on the code."""
    from partitioners.flops import FLOPS_RULE

    cut = tuple(decision.head_cut.activation_shape)
    encoder, decoder = bottleneck.flops(cut)
    code = int(np.prod(bottleneck.code_shape(cut)))
    mix = 2 * decision.k * code if bottleneck.active else decision.mix_flops
    head, cloud = decision.head_flops + encoder, decision.cloud_flops + decoder
    edge = head + decision.tail_flops + mix + decision.demix_flops
    total = profile.total_flops + encoder + decoder
    return {
        "rule": FLOPS_RULE,
        "total": total,
        "head": head,
        "cloud": cloud,
        "tail": decision.tail_flops,
        "mix": mix,
        "demix": decision.demix_flops,
        "edge": edge,
        "edge_fraction": edge / total if total else 1.0,
        "uncounted_ops": profile.uncounted_ops,
        "bottleneck": {"encoder": encoder, "decoder": decoder},
    }


def training_section(config, facts: SplitFacts) -> dict:
    training = config.training
    return {
        "epochs": training.epochs,
        "lr": training.lr,
        "batch_size": training.batch_size,
        "optimizer": training.optimizer.value,
        "distill": training.distill,
        "feature_match": training.feature_match,
        "adversarial": training.adversarial,
        "preset": config.preset,
        "temperature": training.temperature,
        "seed": training.seed,
        "device": training.device,
        "bf16": training.bf16,
        "data": config.data,
        "eval_data": config.eval_data,
        "holdout": None if config.eval_data else config.holdout,
        "skipped_images": facts.skipped_images,
        "processes": facts.processes,
        "workers": training.workers,
        "data_seed": config.data_seed,
        "seconds": round(facts.train_seconds, 2),
        "history": facts.history,
        "validation": training.validation,
        "patience": training.patience,
        "freeze_head": training.freeze_head,
        "quantization_aware_epochs": config.qat_epochs,  # after the mixing-aware ones; history marks them
        "shipped_epoch": facts.shipped_epoch,
        "stopped": facts.stopped,
        "batchnorm": BATCHNORM_NOTE,
    }


def versions_section() -> dict:
    from importlib import metadata

    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
