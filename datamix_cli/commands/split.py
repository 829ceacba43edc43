"""``datamix split``: pick the split, fine-tune mixing-aware, export and verify a shippable folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from datamix_cli.commands._model_options import MODEL_ARG, MODEL_KWARGS, TRUST_PICKLE, WEIGHTS, model_source
from datamix_cli.options import (
    ChannelOrder, CutFeatures, DownlinkCodec, MixingDistribution, OptimizerName, Preset, PreprocessPreset, UplinkCodec,
)

# Help panels, in the order `datamix split --help` shows them.
MODEL, DATA, SPLIT, WIRE, PROTOCOL, GUARANTEE, TRAINING, PREPROCESSING, EXPORT, OUTPUT = (
    "Model", "Data", "Where to split", "What is sent (bytes on the wire)", "Mixing protocol (defaults from --preset)",
    "Privacy guarantee (noise calibrated to a bound)", "Fine-tuning", "Preprocessing", "Export and verification", "Output",
)


def split(
    model: str = MODEL_ARG,
    weights: Path = WEIGHTS,
    trust_pickle: bool = TRUST_PICKLE,
    model_kwargs: str = MODEL_KWARGS,
    input_shape: str = typer.Option(None, "--input-shape", help="Model input with batch dimension, e.g. 1,1,32,32.", rich_help_panel=MODEL),
    data: str = typer.Option(..., "--data", help="digits, faces, x.npz (arrays x, y) or a folder of class sub-folders.", rich_help_panel=DATA),
    eval_data: str = typer.Option(None, "--eval-data", help="A separate evaluation set (same forms as --data); all of --data is then fine-tuned on.", rich_help_panel=DATA),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of the data held out for evaluation (unless --eval-data).", rich_help_panel=DATA),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Leave out unreadable or truncated images (decodes each once up front) and count them.", rich_help_panel=DATA),
    workers: int = typer.Option(None, "--workers", help="DataLoader worker processes (default: 0 for arrays in memory, up to 4 for image folders).", rich_help_panel=DATA),
    budget: float = typer.Option(0.2, "--budget", help="Largest share of the model's FLOPs the edge may run, in (0, 1].", rich_help_panel=SPLIT),
    head_cut: str = typer.Option(None, "--head-cut", help="End the head at this cut instead of the budget's choice.", rich_help_panel=SPLIT),
    tail_cut: str = typer.Option(None, "--tail-cut", help="Start the tail at this cut instead of the one before the classifier.", rich_help_panel=SPLIT),
    cut_features: CutFeatures = typer.Option(None, "--cut-features", help="any, or signed: the deepest cut within budget whose features take both signs (pre-activation; non-negative separation cannot hold on to them). Default any.", rich_help_panel=SPLIT, case_sensitive=False),
    objective: str = typer.Option("flops", "--objective", help="flops (the budget's deepest cut), latency, bytes or energy (with --device-power) on --link: what picks the cut within the budget and --max-uplink-bytes.", rich_help_panel=SPLIT),
    device_power: float = typer.Option(None, "--device-power", help="The device's power in W while it runs the edge parts, for --objective energy (`datamix profile --device-power`).", rich_help_panel=SPLIT),
    link: str = typer.Option(None, "--link", help="The link the latency objective is estimated on: 3g, 4g, wifi or MBPS\\[/DOWN_MBPS]\\[:RTT_MS] (`datamix profile --link`).", rich_help_panel=SPLIT),
    measure: bool = typer.Option(False, "--measure", help="Time every candidate part for the estimate (edge parts on --runtime, the cloud in PyTorch) instead of splitting by FLOPs.", rich_help_panel=SPLIT),
    runtime: str = typer.Option("onnx", "--runtime", help="Edge runtime --measure times the parts on: onnx (onnxruntime) or tflite (ai-edge-litert).", rich_help_panel=SPLIT),
    threads: int = typer.Option(1, "--threads", help="Edge runtime threads for the measured edge times.", rich_help_panel=SPLIT),
    bottleneck: int = typer.Option(None, "--bottleneck", help="Channels of a learned code at the head cut (encoder on the edge, decoder first in the cloud, PCA-initialised, trained mixing-aware): what is mixed and sent.", rich_help_panel=WIRE),
    bottleneck_stride: int = typer.Option(1, "--bottleneck-stride", help="Spatial stride of the bottleneck (s×s patches per code vector; image-like cuts).", rich_help_panel=WIRE),
    max_uplink_bytes: int = typer.Option(None, "--max-uplink-bytes", help="Send at most this many bytes per input on the wire (HTTP included, one group per request): searches cut × bottleneck × codec within --budget for the best validation accuracy, then fine-tunes the winner; with --link, the --objective picks among the cuts that send at most this at --uplink instead.", rich_help_panel=WIRE),
    uplink: UplinkCodec = typer.Option(UplinkCodec.fp32, "--uplink", help="Codec of the mixtures on the wire, after mixing and noise: fp32, fp16, or int8 (a scale and zero point per mixture; trained with).", rich_help_panel=WIRE, case_sensitive=False),
    downlink: DownlinkCodec = typer.Option(DownlinkCodec.fp32, "--downlink", help="Codec of the cloud outputs on the way back: fp32 or fp16 (trained with).", rich_help_panel=WIRE, case_sensitive=False),
    preset: Preset = typer.Option(Preset.default, "--preset", help="default, or private: k 8 and noise calibrated to a certified MSE of 1e-3, the privacy frontier's point closest to its target (costs 14 points on digits, none on faces; docs/audit.md); explicit options win.", rich_help_panel=PROTOCOL, case_sensitive=False),
    k: int = typer.Option(None, "--k", help="Group size: inputs mixed together (2..64). Default 4.", rich_help_panel=PROTOCOL),
    mixing: MixingDistribution = typer.Option(None, "--mixing", help="Distribution of C: dirichlet (rows ~ Dirichlet(alpha), cond <= kappa-max) or orthogonal (Haar, cond 1, any k). Default dirichlet.", rich_help_panel=PROTOCOL, case_sensitive=False),
    alpha: float = typer.Option(None, "--alpha", help="Dirichlet concentration of the rows of C (> 0). Default 1.", rich_help_panel=PROTOCOL),
    kappa_max: float = typer.Option(None, "--kappa-max", help="Largest condition number of C (>= 1). Default 20.", rich_help_panel=PROTOCOL),
    noise: float = typer.Option(None, "--noise", help="Std of Gaussian noise added to mixtures (trained with), absolute. Default 0.", rich_help_panel=PROTOCOL),
    noise_relative: float = typer.Option(None, "--noise-relative", help="Std of Gaussian noise in units of each group's mixture RMS (trained with; fine-tuning cannot outgrow it). Default 0.", rich_help_panel=PROTOCOL),
    shuffle: bool = typer.Option(None, "--shuffle/--no-shuffle", help="Shuffle mixtures across groups before sending. Default off.", rich_help_panel=PROTOCOL),
    adversarial: float = typer.Option(None, "--adversarial", help="Weight of adversarial privacy fine-tuning: raise the error of a decoder trained alongside on the mixtures. Default 0 (off).", rich_help_panel=PROTOCOL),
    target_mse: float = typer.Option(None, "--target-mse", help="Calibrate the noise so that no unbiased attacker reconstructs below this MSE per input value (Fisher-information bound, [0, 1] pixels) on 95 % of inputs; the head is then frozen while fine-tuning.", rich_help_panel=GUARANTEE),
    target_mu: float = typer.Option(None, "--target-mu", help="Clip each input's features inside the head and calibrate the noise to mu-GDP per input and query (bounds label inference and re-identification for any attacker).", rich_help_panel=GUARANTEE),
    clip_norm: float = typer.Option(None, "--clip-norm", help="L2 norm the features are clipped to (default with --target-mu: their median norm on the training data).", rich_help_panel=GUARANTEE),
    epochs: int = typer.Option(12, "--epochs", help="Most mixing-aware fine-tuning epochs (training stops earlier once the validation accuracy stops improving, see --patience).", rich_help_panel=TRAINING),
    validation: float = typer.Option(0.1, "--validation", help="Share of the fine-tuning data held out to pick the epoch that ships (never the evaluation holdout); 0: the last epoch ships.", rich_help_panel=TRAINING),
    patience: int = typer.Option(3, "--patience", help="Stop after this many epochs without a better validation score (0: run all --epochs).", rich_help_panel=TRAINING),
    lr: float = typer.Option(3e-3, "--lr", help="Learning rate.", rich_help_panel=TRAINING),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch size, a multiple of k.", rich_help_panel=TRAINING),
    optimizer: OptimizerName = typer.Option(OptimizerName.adam, "--optimizer", help="Optimizer.", rich_help_panel=TRAINING),
    distill: float = typer.Option(0.0, "--distill", help="Weight of distillation to the original model's logits (0 = off).", rich_help_panel=TRAINING),
    feature_match: float = typer.Option(1.0, "--feature-match", help="Weight of matching de-mixed cloud outputs to the original model's (0 = off).", rich_help_panel=TRAINING),
    seed: int = typer.Option(None, "--seed", help="Seed training (batch order, C) for reproducible runs; default: OS entropy.", rich_help_panel=TRAINING),
    eval_seed: int = typer.Option(0, "--eval-seed", help="Seed of the C used to evaluate accuracy and verify artifacts.", rich_help_panel=TRAINING),
    device: str = typer.Option("auto", "--device", help="Fine-tuning and evaluation: auto (CUDA if present), cpu, cuda or cuda:N. Export always runs on CPU copies.", rich_help_panel=TRAINING),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast during fine-tuning (for CUDA).", rich_help_panel=TRAINING),
    allow_low_accuracy: bool = typer.Option(False, "--allow-low-accuracy", help="Fine-tune even if the original model scores near chance.", rich_help_panel=TRAINING),
    preprocess: PreprocessPreset = typer.Option(PreprocessPreset.none, "--preprocess", help="Preprocessing preset: none (built-in data, already at size) or imagenet (resize 256/224, centre crop, ImageNet mean/std).", rich_help_panel=PREPROCESSING, case_sensitive=False),
    resize: int = typer.Option(None, "--resize", help="Resize the shorter image side to this many pixels, then centre-crop to the input size.", rich_help_panel=PREPROCESSING),
    mean: str = typer.Option(None, "--mean", help="Per-channel mean, comma-separated (applied inside the head).", rich_help_panel=PREPROCESSING),
    std: str = typer.Option(None, "--std", help="Per-channel std, comma-separated (applied inside the head).", rich_help_panel=PREPROCESSING),
    channel_order: ChannelOrder = typer.Option(None, "--channel-order", help="Channel order the model expects: rgb (default) or bgr; images are read as RGB.", rich_help_panel=PREPROCESSING, case_sensitive=False),
    edge_precision: str = typer.Option("fp32", "--edge-precision", help="fp32; fp16: also an fp16 head and tail for each of ONNX (fp16 weights and activations) and TFLite (fp16 weights) in --formats; int8: also an int8 head and tail for each, statically quantized (ONNX QDQ, TFLite PT2E) with ranges calibrated on the fine-tuning data. Mixing and the parts' inputs and outputs stay fp32; both are verified by top-1 agreement >= 99 % with the fp32 parts.", rich_help_panel=EXPORT),
    qat_epochs: int = typer.Option(0, "--qat-epochs", help="With --edge-precision int8: quantization-aware epochs after the mixing-aware ones (int8 rounding simulated in head and tail, a tenth of --lr); 0: post-training quantization alone.", rich_help_panel=EXPORT),
    formats: str = typer.Option("onnx,tflite", "--formats", help="Edge formats, comma-separated.", rich_help_panel=EXPORT),
    cloud_formats: str = typer.Option("torchscript,pt2", "--cloud-formats", help="Cloud formats: torchscript (required), pt2, aoti (AOTInductor, compiled for this machine).", rich_help_panel=EXPORT),
    atol: float = typer.Option(None, "--atol", help="Max abs error accepted against PyTorch (default: per format, 1e-4 for fp32).", rich_help_panel=EXPORT),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Write artifacts even if they miss the tolerance.", rich_help_panel=EXPORT),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (refused if it exists, unless --force).", rich_help_panel=OUTPUT),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder.", rich_help_panel=OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON instead of tables.", rich_help_panel=OUTPUT),
) -> None:
    """Split a model for DataMix: fine-tune it mixing-aware and export edge (ONNX, TFLite) and cloud (TorchScript) parts."""
    from datamix_cli.data.preprocessing import PreprocessingOptions
    from datamix_cli.options import parse_list, parse_shape
    from datamix_cli.errors import ConfigError
    from datamix_cli.pipeline.export import ExportConfig
    from datamix_cli.pipeline.latency import latency_options
    from datamix_cli.pipeline.privacy import PrivacyTarget
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.protocol.bottleneck import BottleneckConfig
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.protocol.presets import resolve
    from datamix_cli.training.devices import resolve_device
    from datamix_cli.training.finetune import FinetuneConfig

    value = lambda option: None if option is None else option.value  # noqa: E731
    given = [name for name, option in (("--noise", noise), ("--noise-relative", noise_relative)) if option]
    if given and (target_mse is not None or target_mu is not None):
        raise ConfigError(f"{' and '.join(given)} conflict with --target-mse/--target-mu, which set the noise themselves")
    o = resolve(preset.value, {"k": k, "mixing": value(mixing), "alpha": alpha, "kappa_max": kappa_max, "noise": noise,
                               "noise_relative": noise_relative, "shuffle": shuffle, "cut_features": value(cut_features), "adversarial": adversarial,
                               "target_mse": target_mse, "bottleneck": bottleneck})
    if target_mse is None and (noise is not None or noise_relative is not None or target_mu is not None):
        o["target_mse"] = None  # noise options given explicitly win over a preset's target
    if bottleneck is None and (max_uplink_bytes is not None or link is not None):
        o["bottleneck"] = None  # the uplink search and the latency objective choose what is sent themselves
    target = PrivacyTarget(o["target_mse"], target_mu, clip_norm)
    if target.active:  # the targets set the noise: a preset's relative noise gives way
        o["noise_relative"] = 0.0 if noise_relative is None else noise_relative
    config = SplitConfig(
        source=model_source(model, weights, trust_pickle, model_kwargs),
        data=data,
        out=out,
        input_shape=parse_shape(input_shape) if input_shape else None,
        budget=budget,
        head_cut=head_cut,
        tail_cut=tail_cut,
        cut_features=o["cut_features"],
        mixing=MixingConfig(k=o["k"], alpha=o["alpha"], kappa_max=o["kappa_max"], shuffle=o["shuffle"], noise_sigma=o["noise"],
                            distribution=o["mixing"], noise_relative=o["noise_relative"], uplink=uplink.value, downlink=downlink.value),
        bottleneck=BottleneckConfig(o["bottleneck"], bottleneck_stride),
        max_uplink_bytes=max_uplink_bytes,
        privacy=target,
        objective=objective,
        latency=latency_options(link, measure=measure, threads=threads, uplink=uplink.value, runtime=runtime, device_power_w=device_power),
        training=FinetuneConfig(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, distill=distill, feature_match=feature_match,
                                adversarial=o["adversarial"], seed=seed, device=resolve_device(device), bf16=bf16, workers=workers,
                                validation=validation, patience=patience),
        holdout=holdout,
        eval_data=eval_data,
        preprocessing=PreprocessingOptions(preprocess.value, resize, mean, std, value(channel_order)),
        skip_bad_images=skip_bad_images,
        eval_seed=eval_seed,
        export=ExportConfig(formats=_edge_formats(parse_list(formats), edge_precision), cloud_formats=parse_list(cloud_formats), atol=atol, allow_mismatch=allow_mismatch),
        force=force,
        allow_low_accuracy=allow_low_accuracy,
        preset=preset.value,
        qat_epochs=qat_epochs,
    )
    if as_json:
        result = run_split(config, report=lambda message: typer.echo(message, err=True) if message.startswith("warning:") else None)
        if result is None:  # a torchrun rank other than 0: rank 0 reports
            return
        typer.echo(json.dumps(json.loads(result.manifest.to_json()), indent=2))
        return
    from datamix_cli.commands._split_report import run_with_progress

    run_with_progress(config, run_split)




def _edge_formats(formats: tuple[str, ...], precision: str) -> tuple[str, ...]:
    """``formats`` plus the fp16 or int8 variant of each edge format that has one."""
    from datamix_cli.errors import ConfigError

    if precision == "fp32":
        return formats
    if precision not in ("fp16", "int8"):
        raise ConfigError(f"--edge-precision must be fp32, fp16 or int8, got {precision!r}")
    reduced = tuple(f"{f}_{precision}" for f in formats if f in ("onnx", "tflite"))
    if not reduced:
        raise ConfigError(f"--edge-precision {precision} converts the ONNX and TFLite parts: add onnx or tflite to --formats")
    return (*formats, *reduced)
