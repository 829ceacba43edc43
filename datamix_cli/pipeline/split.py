"""``datamix split`` as a library call: pick the split, fine-tune mixing-aware,
evaluate, export and verify every artifact, write the manifest, publish."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from datamix_cli.artifacts.manifest import Manifest
from datamix_cli.errors import ConfigError, DatasetError, NearChanceError, VerificationError
from datamix_cli.model.loading import ModelSource
from datamix_cli.data.preprocessing import PreprocessingOptions
from datamix_cli.options import CutFeatures
from datamix_cli.pipeline.export import REFERENCE_FORMAT, ExportConfig, export_all, write_side_files
from datamix_cli.pipeline.manifest_sections import SplitFacts, build_manifest
from datamix_cli.pipeline.privacy import PrivacyTarget
from datamix_cli.pipeline.privacy import certificate as privacy_certificate
from datamix_cli.protocol.bottleneck import BottleneckConfig
from datamix_cli.protocol.mixing import MixingConfig
from datamix_cli.training.finetune import FinetuneConfig
from datamix_cli.training.quantization import chained, check_qat_epochs, finetune_quantization_aware

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
    export: ExportConfig = field(default_factory=ExportConfig)
    force: bool = False
    allow_low_accuracy: bool = False
    preprocessing: PreprocessingOptions = field(default_factory=PreprocessingOptions)
    eval_data: str | None = None  # a separate evaluation set instead of a holdout of ``data``
    skip_bad_images: bool = False
    cut_features: str = "any"  # "signed": the deepest cut within budget whose features take both signs (pre-activation)
    preset: str = "default"  # the --preset the options came from (recorded; datamix_cli.protocol.presets resolves it)
    bottleneck: BottleneckConfig = field(default_factory=BottleneckConfig)  # a learned code at the head cut: what is sent
    max_uplink_bytes: int | None = None  # search cut × bottleneck × codec for the best accuracy within it (pipeline/uplink.py)
    privacy: PrivacyTarget = field(default_factory=PrivacyTarget)  # clipping and noise calibrated to a target (pipeline/privacy.py)
    objective: str = "flops"  # latency or bytes: the cut within the budget the link model prefers (pipeline/latency.py)
    latency: object = None  # datamix_cli.pipeline.latency.LatencyOptions, needed by those objectives
    qat_epochs: int = 0  # quantization-aware epochs after the mixing-aware ones (training/quantization.py), for int8 parts


CUT_FEATURES = tuple(c.value for c in CutFeatures)
SIGN_SAMPLES = 16  # training samples the sign of each cut's features is measured on


@dataclass(frozen=True)
class SplitResult:
    out: Path
    manifest: Manifest
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

    from datamix_cli.artifacts.staging import StagedFolder
    from partitioners.partition import partition

    started = time.perf_counter()
    exporters = _check(config)
    staged_folder = StagedFolder(config.out, config.force)  # every rank checks the output path, so all stop alike
    with staged_folder if world.is_main else contextlib.nullcontext(None) as staged:
        prepared = _prepare_model(config)
        data = _prepare_data(config, prepared, report)
        shares = _negative_shares(prepared.traced, prepared.profile, data.dataset)
        search = None
        if config.max_uplink_bytes is not None and config.latency is None:  # with --link the objective keeps to the limit
            from datamix_cli.pipeline.uplink import search as search_uplink

            fit, validation = _validation_split(data.train, config, ranking=True)
            config, search = search_uplink(config, prepared, data.train, fit, validation, report)
            report(f"uplink search chose {search['chosen']['cut']}, bottleneck {search['chosen']['bottleneck']}, {search['chosen']['codec']}: "
                   f"{search['chosen']['wire_bytes_per_input']:.0f} B/input")
        decision = _decide(config, prepared.profile, shares)
        objective = None
        if config.latency is not None:
            decision, objective = _by_objective(config, prepared, decision, report)
        config.bottleneck.code_shape(tuple(decision.head_cut.activation_shape))  # refuse a bottleneck the cut cannot take
        parts = partition(prepared.traced, decision.head_cut, decision.tail_cut)
        decoys = _decoys(data.train, config)
        _report_plan(config, decision, prepared.preprocessing, report)
        trained, parts, config, privacy = _finetune(config, prepared, data, parts, tuple(decision.head_cut.activation_shape), decoys, world, on_step, report)
        if not world.is_main:
            return None
        report("exporting and verifying artifacts")
        facts = SplitFacts(prepared.model, prepared.profile, decision, prepared.sample_shape, data.dataset.classes, data.num_classes,
                           len(data.dataset.y), len(data.held.y), trained.accuracy, trained.history, trained.seconds, trained.shipped_epoch, trained.stopped,
                           prepared.preprocessing, world.size, data.skipped, shares.get(decision.head_cut.name), objective)
        if config.mixing.noisy:
            report("certifying: the Fisher-information bound on the held-out inputs")
        certificate = privacy_certificate(parts, data.held, config.mixing, config.eval_seed, privacy)
        manifest = _export(config, exporters, parts, decoys, data, facts, staged.staging, search, certificate, privacy)
        out = staged.publish()
    return SplitResult(out, manifest, time.perf_counter() - started)


@dataclass(frozen=True)
class _Prepared:
    """The user's model, traced (with the in-head preprocessing in front), its oracle and its profile."""

    model: object
    traced: object
    sample_shape: tuple[int, ...]
    preprocessing: object
    original: object  # preprocessing + model: what tail(cloud(head(x))) must equal
    profile: object


@dataclass(frozen=True)
class _Data:
    dataset: object
    train: object
    held: object
    num_classes: int
    skipped: int


@dataclass(frozen=True)
class _Trained:
    accuracy: dict
    history: list
    seconds: float
    shipped_epoch: int
    stopped: str


def _check(config: SplitConfig) -> dict:
    """Everything that can be refused before any work: returns the exporters, each checked available."""
    from datamix_cli.pipeline.latency import check_objective
    from exporters import get_exporter, registered_names

    config.training.validate(config.mixing.k)
    config.privacy.check(config.mixing)
    check_objective(config.objective, config.latency)
    if config.latency is not None and config.bottleneck.active:
        raise ConfigError("--objective/--link estimate the cut's own features on the wire (at --uplink): drop --bottleneck")
    if config.max_uplink_bytes is not None:
        from datamix_cli.training import distributed

        if config.max_uplink_bytes < 1:
            raise ConfigError(f"--max-uplink-bytes must be >= 1, got {config.max_uplink_bytes}")
        if config.bottleneck.active:
            raise ConfigError("--max-uplink-bytes chooses the bottleneck itself: drop --bottleneck")
        if distributed.current().distributed:
            raise ConfigError("--max-uplink-bytes runs on one process: run the search without torchrun, then split with its choice")
    check_qat_epochs(config.qat_epochs, config.export.formats)
    if not 0 < config.holdout < 1:
        raise DatasetError(f"holdout must be in (0, 1), got {config.holdout}")
    if config.cut_features not in CUT_FEATURES:
        raise ConfigError(f"unknown --cut-features {config.cut_features!r}; choose {' or '.join(CUT_FEATURES)}")
    export = config.export
    exporters = {name: get_exporter(name) for name in (*export.formats, *export.cloud_formats, REFERENCE_FORMAT)}
    for role, names in (("head", export.formats), ("cloud", export.cloud_formats)):
        wrong = [name for name in names if role not in exporters[name].roles]
        if wrong or not names:
            raise ConfigError(f"{', '.join(wrong) or 'none'}: not usable for the {role} part; choose from {', '.join(registered_names(role))}")
    if REFERENCE_FORMAT not in export.cloud_formats:
        raise ConfigError(f"the cloud formats must include {REFERENCE_FORMAT} (the reference serve-local and the audit run)")
    for exporter in exporters.values():
        exporter.check_available()
    return exporters


def _prepare_model(config: SplitConfig) -> _Prepared:
    from datamix_cli.data.preprocessing import Preprocessing, prepend
    from datamix_cli.model.loading import load_model
    from datamix_cli.pipeline.profile import resolve_input_shape
    from partitioners.graph import trace_model
    from partitioners.profile import profile_model

    model = load_model(config.source)
    traced = trace_model(model)
    sample_shape = tuple(resolve_input_shape(traced, config.input_shape, config.data)[1:])
    preprocessing = Preprocessing.build(sample_shape, **config.preprocessing.as_kwargs())
    if preprocessing.in_head:  # mean/std and channel order become the head's first operation
        traced = prepend(traced, preprocessing.normaliser(sample_shape))
    original = preprocessing.wrap(model, sample_shape)  # the oracle the split is checked against
    return _Prepared(model, traced, sample_shape, preprocessing, original, profile_model(traced, (1, *sample_shape)))


def _prepare_data(config: SplitConfig, prepared: _Prepared, report: Reporter) -> _Data:
    from datamix_cli.data.datasets import load_dataset

    shape, spec = prepared.sample_shape, prepared.preprocessing
    dataset = load_dataset(config.data, shape, spec, config.skip_bad_images)
    num_classes = _num_classes(prepared.model, shape)
    _check_labels(dataset, num_classes)
    if config.eval_data:
        train, held = dataset, load_dataset(config.eval_data, shape, spec, config.skip_bad_images)
        _check_labels(held, num_classes)
    else:
        train, held = dataset.split(config.holdout, config.data_seed)
    skipped = len(dataset.skipped) + (len(held.skipped) if config.eval_data else 0)
    if skipped:
        report(f"warning: skipped {skipped} unreadable image(s), e.g. {(dataset.skipped or held.skipped)[0]}")
    return _Data(dataset, train, held, num_classes, skipped)


def _decide(config: SplitConfig, profile, shares: dict[str, float]):
    """Where to cut: the policy lives in partitioners.select, the cutting in partitioners.partition."""
    from partitioners.select import choose_split

    signed = shares if config.cut_features == "signed" else None
    return choose_split(profile, config.budget, config.mixing.k, config.head_cut, config.tail_cut, signed)


def _by_objective(config: SplitConfig, prepared: _Prepared, decision, report: Reporter):
    """The cut ``config.objective`` prefers within the budget on ``config.latency``'s link, and the manifest's record."""
    from datamix_cli.pipeline.latency import manifest_record
    from datamix_cli.pipeline.profile import choose_by_objective

    report(f"estimating the latency of every cut on {config.latency.link.name}" + (" (measuring each part)" if config.latency.measure else ""))
    chosen, table = choose_by_objective(config.source.spec, prepared.traced, prepared.profile, decision, config.latency, config.objective,
                                        config.budget, prepared.sample_shape, None, config.head_cut, config.max_uplink_bytes)
    return chosen, manifest_record(table)


def _decoys(train, config: SplitConfig) -> np.ndarray:
    """Public decoys kept with the edge artifact: a fixed random subset of the fine-tuning data."""
    n = min(config.export.decoys, len(train.y))
    return np.asarray(train.x[np.sort(np.random.default_rng(config.data_seed).choice(len(train.y), n, replace=False))])


def _report_plan(config: SplitConfig, decision, preprocessing, report: Reporter) -> None:
    report(f"split: head → {decision.head_cut.name}, tail from {decision.tail_cut.name}, edge share {decision.edge_fraction:.1%}")
    if preprocessing.preset != "none" or preprocessing.in_head:
        report(f"preprocessing: {preprocessing.describe()}" + (" (mean/std inside the head artifact)" if preprocessing.in_head else ""))
    if ":" in config.source.spec and config.source.weights is None:
        report(f"warning: no --weights given: {config.source.spec} starts from random weights")


def _finetune(config: SplitConfig, prepared: _Prepared, data: _Data, parts, cut_shape, decoys, world, on_step, report: Reporter):
    """Accuracy before, the bottleneck and the privacy mechanism put in, mixing-aware fine-tuning, accuracy after:
    (trained, the parts that ship, the configuration with the calibrated noise, the manifest's privacy section);
    trained is None on ranks other than 0."""
    from datamix_cli.pipeline.privacy import apply, first_inputs, section
    from datamix_cli.protocol.bottleneck import PCA_SAMPLES, insert
    from datamix_cli.training.evaluation import accuracy, on_device, predict_mixed
    from datamix_cli.training.finetune import finetune, frozen_copy

    device, held = config.training.device, data.held
    teacher = None
    with on_device(parts, prepared.original, device):
        acc = _accuracy_before_finetuning(prepared.original, parts, held, decoys, config)
        _refuse_near_chance(acc["original"], held.y, config)
    if config.bottleneck.active or config.privacy.clips:
        teacher = frozen_copy(parts)  # the targets of feature matching: the split without the bottleneck or the clipping
    if config.bottleneck.active:
        parts, kept = insert(parts, config.bottleneck, cut_shape, np.asarray(data.train.x[:PCA_SAMPLES]))
        report(f"bottleneck: {config.bottleneck.channels} channels, stride {config.bottleneck.stride}; its PCA start keeps {kept:.1%} of the cut's variance")
    privacy = section(config.mixing, None)
    if config.privacy.active:
        mixing, training, parts, privacy = apply(config.privacy, config.mixing, config.training, parts, first_inputs(data.train.x), report)
        config = replace(config, mixing=mixing, training=training)
    with on_device(parts, prepared.original, device):  # back on the CPU before anything is exported
        if config.privacy.active and not config.bottleneck.active:  # naive mixing under the noise that ships
            acc["naive_mixing"] = accuracy(predict_mixed(parts, held.x, decoys, config.mixing, config.eval_seed, device=device), held.y)
        if config.bottleneck.active:
            acc["bottleneck_before_finetuning"] = accuracy(predict_mixed(parts, held.x, decoys, config.mixing, config.eval_seed, device=device), held.y)
        report(f"fine-tuning mixing-aware on {len(data.train.y)} samples" + (f" on {world.size} processes" if world.distributed else ""))
        fit, validation = _validation_split(data.train, config)
        started = time.perf_counter()
        done = finetune(parts, fit.x, fit.y, config.mixing, config.training, on_step, world, validation, teacher)
        if config.qat_epochs:
            report(f"fine-tuning quantization-aware (int8 rounding simulated in head and tail) for {config.qat_epochs} epochs")
            done = chained(done, finetune_quantization_aware(parts, fit.x, fit.y, config.mixing, config.training, config.qat_epochs, on_step, world,
                                                             validation, teacher))
        seconds = time.perf_counter() - started
        if not world.is_main:
            return None, parts, config, privacy
        acc["mixing_aware"] = accuracy(predict_mixed(parts, held.x, decoys, config.mixing, config.eval_seed, device=device), held.y)
    report(f"fine-tuning: {done.stopped}")
    return _Trained(acc, done.history, seconds, done.shipped_epoch, done.stopped), parts, config, privacy


def _validation_split(train, config: SplitConfig, ranking: bool = False):
    """(samples to fit, (x, y) to select the epoch on): a part of the fine-tuning data, never the held-out data.
    Whole groups of k only; no validation when it would hold fewer than one group."""
    share = config.training.validation
    if not share or not (config.training.epochs or ranking):  # ranking: the uplink search's short fine-tunes need it
        return train, None
    fit, validation = train.split(share, config.data_seed + 1)
    n = len(validation.y) - len(validation.y) % config.mixing.k
    if n < config.mixing.k:
        return train, None
    return fit, (np.asarray(validation.x[:n]), validation.y[:n])


def _export(config: SplitConfig, exporters: dict, parts, decoys, data, facts, folder: Path, search: dict | None = None,
            certificate: dict | None = None, privacy: dict | None = None):
    """Every artifact exported and verified (all failures raised at once), the side files, the manifest."""
    from exporters.verify import raise_on_failures

    uplink = config.bottleneck.code_shape(tuple(facts.decision.head_cut.activation_shape))
    artifacts, checks = export_all(parts, exporters, config.export, config.mixing, config.eval_seed, (uplink, facts.decision.tail_cut.activation_shape),
                                   facts.sample_shape, facts.num_classes, data.held.x, folder, data.train.x, data.held.y)
    if not config.export.allow_mismatch:
        raise_on_failures(checks)
    files = write_side_files(folder, parts, decoys, data.held.x, config.mixing)
    manifest = build_manifest(config, facts, artifacts, files, search, certificate, privacy)
    (folder / "manifest.json").write_text(manifest.to_json())
    return manifest


def _negative_shares(traced, profile, dataset) -> dict[str, float]:
    """Each cut's share of negative feature entries on the first training samples (what ``--cut-features`` reads)."""
    import torch

    from partitioners.profile import negative_shares

    x = torch.from_numpy(np.ascontiguousarray(dataset.x[: min(SIGN_SAMPLES, len(dataset.y))], dtype=np.float32))
    return negative_shares(traced, profile, x)


def _accuracy_before_finetuning(model, parts, held, decoys, config: SplitConfig) -> dict:
    """Original model, the split without mixing (checked equal to it), and naive mixing."""
    from datamix_cli.training.evaluation import accuracy, predict_mixed, predict_plain

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


