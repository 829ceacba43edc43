"""``datamix split`` as a library call: pick the split, fine-tune mixing-aware,
evaluate, export and verify every artifact, write the manifest, publish."""

from __future__ import annotations

import datetime
import hashlib
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from datamix_cli import __version__
from datamix_cli.errors import ConfigError, DatasetError, NearChanceError, VerificationError
from datamix_cli.model.loading import ModelSource
from datamix_cli.protocol.mixing import PROTOCOL_NAME, PROTOCOL_VERSION, MixingConfig, coefficient_rng, draw_coefficients
from datamix_cli.training.finetune import FinetuneConfig

EDGE_FORMATS = ("onnx", "tflite")
# TorchScript because the user's design asks for it (and Triton's libtorch backend takes it); the
# torch.export program because TorchScript is deprecated from torch 2.14. Both are verified.
CLOUD_FORMATS = ("torchscript", "pt2")
REFERENCE_FORMAT = "torchscript"
SPLIT_ATOL = 1e-4
CHANCE_MARGIN = 0.05  # an original model within 5 points of chance on the held-out data is refused


@dataclass(frozen=True)
class SplitConfig:
    source: ModelSource
    data: str
    out: Path
    input_shape: tuple[int, ...] | None = None
    budget: float = 0.2
    head_cut: str | None = None
    tail_cut: str | None = None
    mixing: MixingConfig = field(default_factory=MixingConfig)
    training: FinetuneConfig = field(default_factory=FinetuneConfig)
    holdout: float = 0.2
    data_seed: int = 0
    eval_seed: int | None = 0
    formats: tuple[str, ...] = EDGE_FORMATS
    cloud_formats: tuple[str, ...] = CLOUD_FORMATS
    decoys: int = 32
    verify_groups: int = 8
    atol: float | None = None
    force: bool = False
    allow_mismatch: bool = False
    allow_low_accuracy: bool = False
    # Preprocessing options (datamix_cli.data.preprocessing.Preprocessing.build): a preset and overrides.
    preprocess: str = "none"
    resize: int | None = None
    mean: str | None = None
    std: str | None = None
    channel_order: str | None = None
    eval_data: str | None = None  # a separate evaluation set instead of a holdout of ``data``
    skip_bad_images: bool = False
    cut_features: str = "any"  # "signed": the deepest cut within budget whose features take both signs (pre-activation)
    preset: str = "default"  # the --preset the options came from (recorded; datamix_cli.protocol.presets resolves it)


CUT_FEATURES = ("any", "signed")
SIGN_SAMPLES = 16  # training samples the sign of each cut's features is measured on


@dataclass(frozen=True)
class SplitResult:
    out: Path
    manifest: "datamix_cli.artifacts.manifest.Manifest"  # noqa: F821
    seconds: float


Reporter = Callable[[str], None]


def run_split(config: SplitConfig, on_step=None, report: Reporter = lambda message: None) -> SplitResult | None:
    """The whole split. Under torchrun every rank fine-tunes and rank 0 alone writes; the others return None."""
    from datamix_cli.training import distributed

    world = distributed.current()
    device = distributed.rank_device(config.training.device, world)
    if device != config.training.device:
        config = replace(config, training=replace(config.training, device=device))
    if not world.is_main:
        on_step, report = None, lambda message: None
    with distributed.process_group(world, device):
        return _run_split(config, world, on_step, report)


def _run_split(config: SplitConfig, world, on_step, report: Reporter) -> SplitResult | None:
    import contextlib

    from datamix_cli.data.datasets import load_dataset
    from datamix_cli.model.loading import load_model
    from datamix_cli.artifacts.staging import StagedFolder
    from datamix_cli.data.preprocessing import PRESETS, Preprocessing, prepend
    from datamix_cli.pipeline.profile import resolve_input_shape
    from datamix_cli.training.finetune import accuracy, finetune, on_device, predict_mixed
    from exporters import get_exporter, registered_names
    from partitioners.graph import trace_model
    from partitioners.partition import partition
    from partitioners.profile import profile_model
    from partitioners.select import choose_split

    started = time.perf_counter()
    config.training.validate(config.mixing.k)
    if not 0 < config.holdout < 1:
        raise DatasetError(f"holdout must be in (0, 1), got {config.holdout}")
    if config.cut_features not in CUT_FEATURES:
        raise ConfigError(f"unknown --cut-features {config.cut_features!r}; choose {' or '.join(CUT_FEATURES)}")
    if config.preprocess.strip().lower() not in PRESETS:
        raise ConfigError(f"unknown preprocessing preset {config.preprocess!r}; choose from {', '.join(PRESETS)}")
    exporters = {name: get_exporter(name) for name in (*config.formats, *config.cloud_formats, REFERENCE_FORMAT)}
    for role, names in (("head", config.formats), ("cloud", config.cloud_formats)):
        wrong = [name for name in names if role not in exporters[name].roles]
        if wrong or not names:
            raise ConfigError(f"{', '.join(wrong) or 'none'}: not usable for the {role} part; choose from {', '.join(registered_names(role))}")
    if REFERENCE_FORMAT not in config.cloud_formats:
        raise ConfigError(f"the cloud formats must include {REFERENCE_FORMAT} (the reference serve-local and the audit run)")
    for exporter in exporters.values():
        exporter.check_available()
    staged_folder = StagedFolder(config.out, config.force)  # every rank checks the output path, so all stop alike
    with staged_folder if world.is_main else contextlib.nullcontext(None) as staged:
        model = load_model(config.source)
        traced = trace_model(model)
        shape = resolve_input_shape(traced, config.input_shape, config.data)
        sample_shape = tuple(shape[1:])
        preprocessing = Preprocessing.build(sample_shape, config.preprocess, config.resize, config.mean, config.std, config.channel_order)
        if preprocessing.in_head:  # mean/std and channel order become the head's first operation
            traced = prepend(traced, preprocessing.normaliser(sample_shape))
        original = preprocessing.wrap(model, sample_shape)  # the oracle the split is checked against
        profile = profile_model(traced, (1, *sample_shape))
        dataset = load_dataset(config.data, sample_shape, preprocessing, config.skip_bad_images)
        shares = _negative_shares(traced, profile, dataset)
        signed = shares if config.cut_features == "signed" else None
        decision = choose_split(profile, config.budget, config.mixing.k, config.head_cut, config.tail_cut, signed)
        num_classes = _num_classes(model, sample_shape)
        _check_labels(dataset, num_classes)
        if config.eval_data:
            train, held = dataset, load_dataset(config.eval_data, sample_shape, preprocessing, config.skip_bad_images)
            _check_labels(held, num_classes)
        else:
            train, held = dataset.split(config.holdout, config.data_seed)
        skipped = len(dataset.skipped) + (len(held.skipped) if config.eval_data else 0)
        if skipped:
            report(f"warning: skipped {skipped} unreadable image(s), e.g. {(dataset.skipped or held.skipped)[0]}")
        parts = partition(traced, decision.head_cut, decision.tail_cut)
        decoys = np.asarray(train.x[np.sort(np.random.default_rng(config.data_seed).choice(len(train.y), min(config.decoys, len(train.y)), replace=False))])
        report(f"split: head → {decision.head_cut.name}, tail from {decision.tail_cut.name}, edge share {decision.edge_fraction:.1%}")
        if preprocessing.preset != "none" or preprocessing.in_head:
            report(f"preprocessing: {preprocessing.describe()}" + (" (mean/std inside the head artifact)" if preprocessing.in_head else ""))
        if ":" in config.source.spec and config.source.weights is None:
            report(f"warning: no --weights given: {config.source.spec} starts from random weights")

        device = config.training.device
        with on_device(parts, original, device):  # back on the CPU before anything is exported
            acc = _accuracy_before_finetuning(original, parts, held, decoys, config)
            _refuse_near_chance(acc["original"], held.y, config)
            report(f"fine-tuning mixing-aware on {len(train.y)} samples" + (f" on {world.size} processes" if world.distributed else ""))
            trained_at = time.perf_counter()
            history = finetune(parts, train.x, train.y, config.mixing, config.training, on_step, world)
            train_seconds = time.perf_counter() - trained_at
            if not world.is_main:
                return None
            acc["mixing_aware"] = accuracy(predict_mixed(parts, held.x, decoys, config.mixing, config.eval_seed, device=device), held.y)

        report("exporting and verifying artifacts")
        folder = staged.staging
        artifacts, checks = _export_all(parts, exporters, config, decision, sample_shape, num_classes, held.x, folder)
        if not config.allow_mismatch:
            from exporters.verify import raise_on_failures

            raise_on_failures(checks)
        files = _write_side_files(folder, parts, decoys, held.x, config, sample_shape)
        manifest = _manifest(
            config, model, profile, decision, sample_shape, dataset, num_classes, len(held.y), acc,
            history, train_seconds, artifacts, files, preprocessing, world, skipped, shares.get(decision.head_cut.name),
        )
        (folder / "manifest.json").write_text(manifest.to_json())
        out = staged.publish()
    return SplitResult(out, manifest, time.perf_counter() - started)


def _negative_shares(traced, profile, dataset) -> dict[str, float]:
    """Each cut's share of negative feature entries on the first training samples (what ``--cut-features`` reads)."""
    import torch

    from partitioners.profile import negative_shares

    x = torch.from_numpy(np.ascontiguousarray(dataset.x[: min(SIGN_SAMPLES, len(dataset.y))], dtype=np.float32))
    return negative_shares(traced, profile, x)


def _accuracy_before_finetuning(model, parts, held, decoys, config: SplitConfig) -> dict:
    """Original model, the split without mixing (checked equal to it), and naive mixing."""
    from datamix_cli.training.finetune import accuracy, predict_mixed, predict_plain

    device = config.training.device
    original_logits = predict_plain(model, held.x, device=device)
    split_logits = predict_plain(lambda x: parts.tail(parts.cloud(parts.head(x))), held.x, device=device)
    split_error = float(np.max(np.abs(split_logits - original_logits)))
    if split_error > SPLIT_ATOL:
        raise VerificationError(f"tail(cloud(head(x))) differs from model(x) by {split_error:.3g} > {SPLIT_ATOL:g}")
    return {
        "original": accuracy(original_logits, held.y),
        "split_without_mixing": accuracy(split_logits, held.y),
        "naive_mixing": accuracy(predict_mixed(parts, held.x, decoys, config.mixing, config.eval_seed, device=device), held.y),
    }


def _refuse_near_chance(original: float, y: np.ndarray, config: SplitConfig) -> None:
    """Stop before fine-tuning a model that has learned nothing the data can show: the usual silent-garbage causes."""
    chance = float(np.bincount(y).max() / len(y))  # always predicting the most frequent held-out class
    if original >= chance + CHANCE_MARGIN or config.allow_low_accuracy:
        return
    causes = ["input shape (--input-shape)", "preprocessing", "wrong or missing weights (--weights)", "label order"]
    if config.source.weights is None and ":" in config.source.spec:
        causes.insert(0, "no --weights: the model has random weights")
    raise NearChanceError(
        f"the original model scores {original:.1%} on {len(y)} held-out samples of {config.data}, within "
        f"{CHANCE_MARGIN:.0%} of chance ({chance:.1%}); likely causes: {', '.join(causes)}; --allow-low-accuracy continues anyway"
    )


def _num_classes(model, sample_shape) -> int:
    import torch

    with torch.no_grad():
        out = model(torch.zeros(1, *sample_shape))
    return int(out.shape[-1])


def _check_labels(dataset, num_classes: int) -> None:
    if int(dataset.y.max()) >= num_classes or int(dataset.y.min()) < 0:
        raise DatasetError(
            f"labels of {dataset.name} run {dataset.y.min()}..{dataset.y.max()} but the model has {num_classes} outputs"
        )
    if len(dataset.classes) > num_classes:
        raise DatasetError(f"{dataset.name} has {len(dataset.classes)} classes but the model has {num_classes} outputs")


def _tensor(name: str, shape, dtype: str = "float32") -> dict:
    spec = {"name": name, "shape": [int(d) for d in shape], "dtype": dtype}
    per_sample = [d for d in shape[1:]]
    if all(d > 0 for d in per_sample):
        spec["bytes_per_sample"] = int(np.prod(per_sample, dtype=np.int64)) * 4
    return spec


def _export_all(parts, exporters, config, decision, sample_shape, num_classes, held_x, folder: Path):
    """Export head/tail in every edge format and the cloud in every cloud format; verify each against PyTorch."""
    import torch

    from datamix_cli.protocol.edge_modules import HeadWithMix, TailWithDemix
    from exporters.torchscript import numpy_runner
    from exporters.verify import Check, max_abs_error

    k = config.mixing.k
    up, down = decision.head_cut.activation_shape, decision.tail_cut.activation_shape
    head, tail = HeadWithMix(parts.head).eval(), TailWithDemix(parts.tail).eval()
    rng = coefficient_rng(config.eval_seed)
    picks = rng.choice(len(held_x), size=(config.verify_groups, k), replace=len(held_x) < config.verify_groups * k)
    cs = [draw_coefficients(rng, config.mixing).astype(np.float32) for _ in range(config.verify_groups)]

    head_cases = [(held_x[p], c) for p, c in zip(picks, cs)]
    mixtures = [numpy_runner(head)(*case) for case in head_cases]
    cloud_out = [numpy_runner(parts.cloud)(m) for m in mixtures]
    tail_cases = [(z, np.linalg.inv(c.astype(np.float64)).astype(np.float32)) for z, c in zip(cloud_out, cs)]
    cloud_cases = [(np.concatenate(mixtures),), (mixtures[0][:1],)]  # any batch size, including 1

    specs = {
        "head": (head, head_cases, [_tensor("x", (k, *sample_shape)), _tensor("C", (k, k))], [_tensor("mixtures", (k, *up))]),
        "tail": (tail, tail_cases, [_tensor("cloud_out", (k, *down)), _tensor("C_inv", (k, k))], [_tensor("scores", (k, num_classes))]),
        "cloud": (parts.cloud, cloud_cases, [_tensor("mixtures", (-1, *up))], [_tensor("cloud_out", (-1, *down))]),
    }
    # TorchScript edge parts are the PyTorch reference that serve-local checks the edge runtimes against.
    edge_formats = tuple(dict.fromkeys((*config.formats, REFERENCE_FORMAT)))  # the reference once, even if asked for
    plan = [(role, name) for name in edge_formats for role in ("head", "tail")] + [("cloud", name) for name in config.cloud_formats]
    artifacts, checks = [], []
    for role, name in plan:
        exporter = exporters[name]
        module, cases, inputs, outputs = specs[role]
        relative = f"{'cloud' if role == 'cloud' else 'edge'}/{role}{exporter.suffix}"
        path = folder / relative
        path.parent.mkdir(exist_ok=True)
        exporter.export(module, tuple(torch.from_numpy(a) for a in cases[0]), path, [i["name"] for i in inputs], outputs[0]["name"])
        error = max_abs_error(exporter.load(path), numpy_runner(module), cases)
        tolerance = config.atol if config.atol is not None else exporter.default_atol
        checks.append(Check(relative, error, tolerance))
        artifacts.append(
            {
                "path": relative,
                "format": name,
                "role": role,
                "sha256": _sha256(path),
                "inputs": inputs,
                "outputs": outputs,
                "max_abs_error": error if np.isfinite(error) else 1e308,
                "tolerance": tolerance,
            }
        )
    return artifacts, checks


def _write_side_files(folder: Path, parts, decoys, held_x, config, sample_shape) -> list[dict]:
    """edge/decoys.npz and test_vectors.npz (one fixed test C, never used for real data)."""
    from datamix_cli.protocol.edge_modules import HeadWithMix, TailWithDemix
    from exporters.torchscript import numpy_runner

    k = config.mixing.k
    np.savez(folder / "edge" / "decoys.npz", x=decoys.astype(np.float32))
    rng = np.random.default_rng(12345)
    x = held_x[:k].astype(np.float32)
    c = draw_coefficients(rng, config.mixing).astype(np.float32)
    c_inv = np.linalg.inv(c.astype(np.float64)).astype(np.float32)
    mixtures = numpy_runner(HeadWithMix(parts.head))(x, c)
    cloud_out = numpy_runner(parts.cloud)(mixtures)
    scores = numpy_runner(TailWithDemix(parts.tail))(cloud_out, c_inv)
    np.savez(folder / "test_vectors.npz", x=x, C=c, C_inv=c_inv, mixtures=mixtures, cloud_out=cloud_out, scores=scores)
    return [
        {"path": "edge/decoys.npz", "sha256": _sha256(folder / "edge" / "decoys.npz"), "role": "decoys"},
        {"path": "test_vectors.npz", "sha256": _sha256(folder / "test_vectors.npz"), "role": "test_vectors"},
    ]


def _sha256(path: Path) -> str:
    from datamix_cli.artifacts.manifest import sha256_file

    return sha256_file(path)


def state_dict_sha256(model) -> str:
    """Identity of a model's parameters and buffers, independent of how they were stored."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _model_name(spec: str) -> str:
    stem = spec.rpartition(":")[2] if ":" in spec else Path(spec).stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "model"


def _versions() -> dict:
    from importlib import metadata

    versions = {}
    for package in ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "litert-torch", "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _manifest(config, model, profile, decision, sample_shape, dataset, num_classes, n_eval, acc, history, train_seconds, artifacts, files,
              preprocessing, world, skipped, head_negative_share):
    from datamix_cli.artifacts.manifest import Manifest
    from partitioners.flops import FLOPS_RULE

    k = config.mixing.k
    up, down = decision.head_cut.activation_shape, decision.tail_cut.activation_shape
    training = config.training
    return Manifest(
        datamix_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        model={
            "name": _model_name(config.source.spec),
            "source": config.source.spec,
            "weights": str(config.source.weights) if config.source.weights else None,
            "factory_kwargs": dict(config.source.factory_kwargs),
            "sha256": state_dict_sha256(model),
            "input_shape": [-1, *sample_shape],
            "dtype": "float32",
            "normalisation": (
                "float32 in [0, 1] (pixel / max value)"
                + ("; channel order and mean/std are applied inside the head artifact" if preprocessing.in_head else "; no mean/std normalisation")
            ),
            "preprocessing": preprocessing.to_manifest(sample_shape),
            "class_labels": list(dataset.classes) + [str(i) for i in range(len(dataset.classes), num_classes)],
            "num_classes": num_classes,
        },
        split={
            "head_cut": decision.head_cut.name,
            "tail_cut": decision.tail_cut.name,
            "cut_features": config.cut_features,
            "head_negative_share": head_negative_share,
            "uplink": _tensor("mixtures", (-1, *up)),
            "downlink": _tensor("cloud_out", (-1, *down)),
        },
        protocol={
            "name": PROTOCOL_NAME,
            "version": PROTOCOL_VERSION,
            "k": k,
            "distribution": config.mixing.distribution,
            "alpha": config.mixing.alpha,
            "kappa_max": config.mixing.kappa_max,
            "decoys": {"path": "edge/decoys.npz", "count": int(min(config.decoys, len(dataset.y)))},
            "shuffle": config.mixing.shuffle,
            "noise_sigma": config.mixing.noise_sigma,
            "noise_relative": config.mixing.noise_relative,
            "mix": "m = C·h over the group of k (h flattened per sample); fresh C per group, "
            + ("rows ~ Dirichlet(alpha·1), cond(C) <= kappa_max" if config.mixing.distribution == "dirichlet" else "Haar-random orthogonal (cond 1)"),
            "demix": "z = C⁻¹·z̃ over the group of k",
            "seeded": training.seed is not None or config.eval_seed is not None,
        },
        flops={
            "rule": FLOPS_RULE,
            "total": profile.total_flops,
            "head": decision.head_flops,
            "cloud": decision.cloud_flops,
            "tail": decision.tail_flops,
            "mix": decision.mix_flops,
            "demix": decision.demix_flops,
            "edge": decision.edge_flops,
            "edge_fraction": decision.edge_fraction,
            "uncounted_ops": profile.uncounted_ops,
        },
        accuracy={"dataset": config.eval_data or config.data, "n": n_eval, "eval_seed": config.eval_seed, **acc},
        training={
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
            "skipped_images": skipped,
            "processes": world.size,
            "workers": training.workers,
            "data_seed": config.data_seed,
            "seconds": round(train_seconds, 2),
            "history": history,
            "batchnorm": "train mode during fine-tuning (cloud BN statistics follow the mixtures), running statistics recomputed "
            "with the final weights under mixing, eval mode in every artifact",
        },
        artifacts=artifacts,
        files=files,
        versions=_versions(),
    )
