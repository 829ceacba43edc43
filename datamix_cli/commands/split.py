"""``datamix split``: pick the split, fine-tune mixing-aware, export and verify a shippable folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from datamix_cli.commands._model_options import MODEL_ARG, MODEL_KWARGS, TRUST_PICKLE, WEIGHTS, model_source
from datamix_cli.options import OptimizerName


def split(
    model: str = MODEL_ARG,
    weights: Path = WEIGHTS,
    trust_pickle: bool = TRUST_PICKLE,
    model_kwargs: str = MODEL_KWARGS,
    data: str = typer.Option(..., "--data", help="digits, faces, x.npz (arrays x, y) or a folder of class sub-folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (refused if it exists, unless --force)."),
    input_shape: str = typer.Option(None, "--input-shape", help="Model input with batch dimension, e.g. 1,1,32,32."),
    budget: float = typer.Option(0.2, "--budget", help="Largest share of the model's FLOPs the edge may run, in (0, 1]."),
    head_cut: str = typer.Option(None, "--head-cut", help="End the head at this cut instead of the budget's choice."),
    cut_features: str = typer.Option(None, "--cut-features", help="any, or signed: the deepest cut within budget whose features take both signs (pre-activation; non-negative separation cannot hold on to them). Default any."),
    tail_cut: str = typer.Option(None, "--tail-cut", help="Start the tail at this cut instead of the one before the classifier."),
    preset: str = typer.Option("default", "--preset", help="default, or private: the sweep's most private protocol within 3 points of accuracy (see README); explicit options win."),
    k: int = typer.Option(None, "--k", help="Group size: inputs mixed together (2..64). Default 4."),
    mixing: str = typer.Option(None, "--mixing", help="Distribution of C: dirichlet (rows ~ Dirichlet(alpha), cond <= kappa-max) or orthogonal (Haar, cond 1, any k). Default dirichlet."),
    alpha: float = typer.Option(None, "--alpha", help="Dirichlet concentration of the rows of C (> 0). Default 1."),
    kappa_max: float = typer.Option(None, "--kappa-max", help="Largest condition number of C (>= 1). Default 20."),
    noise: float = typer.Option(None, "--noise", help="Std of Gaussian noise added to mixtures (trained with), absolute. Default 0."),
    noise_relative: float = typer.Option(None, "--noise-relative", help="Std of Gaussian noise in units of each group's mixture RMS (trained with; fine-tuning cannot outgrow it). Default 0."),
    shuffle: bool = typer.Option(None, "--shuffle/--no-shuffle", help="Shuffle mixtures across groups before sending. Default off."),
    epochs: int = typer.Option(12, "--epochs", help="Mixing-aware fine-tuning epochs."),
    lr: float = typer.Option(3e-3, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch size, a multiple of k."),
    optimizer: OptimizerName = typer.Option(OptimizerName.adam, "--optimizer", help="Optimizer."),
    distill: float = typer.Option(0.0, "--distill", help="Weight of distillation to the original model's logits (0 = off)."),
    feature_match: float = typer.Option(1.0, "--feature-match", help="Weight of matching de-mixed cloud outputs to the original model's (0 = off)."),
    adversarial: float = typer.Option(None, "--adversarial", help="Weight of adversarial privacy fine-tuning: raise the error of a decoder trained alongside on the mixtures. Default 0 (off)."),
    seed: int = typer.Option(None, "--seed", help="Seed training (batch order, C) for reproducible runs; default: OS entropy."),
    eval_seed: int = typer.Option(0, "--eval-seed", help="Seed of the C used to evaluate accuracy and verify artifacts."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of the data held out for evaluation (unless --eval-data)."),
    eval_data: str = typer.Option(None, "--eval-data", help="A separate evaluation set (same forms as --data); all of --data is then fine-tuned on."),
    preprocess: str = typer.Option("none", "--preprocess", help="Preprocessing preset: none (built-in data, already at size) or imagenet (resize 256/224, centre crop, ImageNet mean/std)."),
    resize: int = typer.Option(None, "--resize", help="Resize the shorter image side to this many pixels, then centre-crop to the input size."),
    mean: str = typer.Option(None, "--mean", help="Per-channel mean, comma-separated (applied inside the head)."),
    std: str = typer.Option(None, "--std", help="Per-channel std, comma-separated (applied inside the head)."),
    channel_order: str = typer.Option(None, "--channel-order", help="Channel order the model expects: rgb (default) or bgr; images are read as RGB."),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Leave out unreadable or truncated images (decodes each once up front) and count them."),
    workers: int = typer.Option(None, "--workers", help="DataLoader worker processes (default: 0 for arrays in memory, up to 4 for image folders)."),
    formats: str = typer.Option("onnx,tflite", "--formats", help="Edge formats, comma-separated."),
    cloud_formats: str = typer.Option("torchscript,pt2", "--cloud-formats", help="Cloud formats: torchscript (required), pt2, aoti (AOTInductor, compiled for this machine)."),
    atol: float = typer.Option(None, "--atol", help="Max abs error accepted against PyTorch (default: per format, 1e-4 for fp32)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Write artifacts even if they miss the tolerance."),
    allow_low_accuracy: bool = typer.Option(False, "--allow-low-accuracy", help="Fine-tune even if the original model scores near chance."),
    device: str = typer.Option("auto", "--device", help="Fine-tuning and evaluation: auto (CUDA if present), cpu, cuda or cuda:N. Export always runs on CPU copies."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast during fine-tuning (for CUDA)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON instead of tables."),
) -> None:
    """Split a model for DataMix: fine-tune it mixing-aware and export edge (ONNX, TFLite) and cloud (TorchScript) parts."""
    from datamix_cli.training.devices import resolve_device
    from datamix_cli.protocol.mixing import MixingConfig
    from datamix_cli.options import parse_shape
    from datamix_cli.protocol.presets import resolve
    from datamix_cli.pipeline.split import SplitConfig, run_split
    from datamix_cli.training.finetune import FinetuneConfig

    o = resolve(preset, {"k": k, "mixing": mixing, "alpha": alpha, "kappa_max": kappa_max, "noise": noise, "noise_relative": noise_relative,
                         "shuffle": shuffle, "cut_features": cut_features, "adversarial": adversarial})
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
                            distribution=o["mixing"], noise_relative=o["noise_relative"]),
        training=FinetuneConfig(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, distill=distill, feature_match=feature_match, adversarial=o["adversarial"], seed=seed,
                                device=resolve_device(device), bf16=bf16, workers=workers),
        holdout=holdout,
        eval_data=eval_data,
        preprocess=preprocess,
        resize=resize,
        mean=mean,
        std=std,
        channel_order=channel_order,
        skip_bad_images=skip_bad_images,
        eval_seed=eval_seed,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        cloud_formats=tuple(f.strip() for f in cloud_formats.split(",") if f.strip()),
        atol=atol,
        force=force,
        allow_mismatch=allow_mismatch,
        allow_low_accuracy=allow_low_accuracy,
        preset=preset,
    )
    if as_json:
        result = run_split(config, report=lambda message: typer.echo(message, err=True) if message.startswith("warning:") else None)
        if result is None:  # a torchrun rank other than 0: rank 0 reports
            return
        typer.echo(json.dumps(json.loads(result.manifest.to_json()), indent=2))
        return
    _run_with_progress(config, run_split)


def _run_with_progress(config, run_split) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("fine-tuning"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = None

    def on_step(step, total, loss, acc):
        nonlocal task
        if task is None:  # shown only once training starts, so early errors stay one line
            progress.start()
            task = progress.add_task("train", total=total, loss=loss, acc=acc)
        progress.update(task, completed=step, loss=loss, acc=acc)
        if step == total:
            progress.stop()

    try:
        result = run_split(config, on_step=on_step, report=console.print)
    finally:
        progress.stop()
    if result is not None:  # None on torchrun ranks other than 0
        _print_summary(result)


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result.manifest
    console = Console()
    acc = m.accuracy
    table = Table(title=f"accuracy on {acc['n']} held-out samples of {acc['dataset']} (C seed {acc['eval_seed']}, k={m.protocol['k']})")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    for key, label in (("original", "original model"), ("split_without_mixing", "split, no mixing"),
                       ("naive_mixing", "naive mixing (before fine-tuning)"), ("mixing_aware", "mixing-aware fine-tuned")):
        table.add_row(label, f"{acc[key]:.2%}")
    console.print(table)
    artifacts = Table(title="artifacts (verified against PyTorch)")
    for column in ("path", "format", "max abs error", "tolerance"):
        artifacts.add_column(column, justify="right" if column in ("max abs error", "tolerance") else "left")
    for a in m.artifacts:
        artifacts.add_row(a["path"], a["format"], f"{a['max_abs_error']:.2e}", f"{a['tolerance']:g}")
    console.print(artifacts)
    f = m.flops
    console.print(
        f"edge FLOPs share {f['edge_fraction']:.1%} (head {m.split['head_cut']}, tail from {m.split['tail_cut']}); "
        f"uplink {m.split['uplink']['bytes_per_sample']} B/sample, downlink {m.split['downlink']['bytes_per_sample']} B/sample"
    )
    console.print(f"wrote {result.out} in {result.seconds:.1f} s")
