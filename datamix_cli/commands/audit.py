"""``datamix audit``: measured privacy leakage of a split."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def audit(
    folder: Path = typer.Argument(..., help="A split folder written by `datamix split`.", show_default=False),
    data: str = typer.Option(None, "--data", help="Dataset (default: the one the split was evaluated on)."),
    attacks: str = typer.Option(
        "separation,inversion,adaptive,label", "--attacks", help="Comma-separated: separation, inversion, adaptive, label."
    ),
    samples: int = typer.Option(64, "--samples", help="Held-out (private) samples to attack."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated C and of the attacks."),
    decoder_epochs: int = typer.Option(12, "--decoder-epochs", help="Training epochs of each decoder (inversion, adaptive)."),
    report: Path = typer.Option(None, "--report", help="Write a PNG grid: original | cloud view | separated | reconstruction."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Attack what the cloud sees (source separation, feature inversion, adaptive decoder, label inference,
    re-identification) and report leakage against chance."""
    from datamix_cli.auditing import AuditConfig, run_audit

    config = AuditConfig(
        folder=folder,
        data=data,
        attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()),
        samples=samples,
        seed=seed,
        decoder_epochs=decoder_epochs,
        report=report,
    )
    result = run_audit(config)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print(result, report)


def _fmt(summary, digits: int = 3) -> str:
    if summary is None or summary.get("mean") is None:
        return "—"
    return f"{summary['mean']:.{digits}f} / {summary['max']:.{digits}f}"


def _print(result: dict, report: Path | None) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"[bold]threat model[/bold]: {result['threat_model']}")
    p = result["protocol"]
    console.print(
        f"audited {result['samples']} private samples against {result['public_samples']} public ones; "
        f"k={p['k']}, {p['distribution']}, alpha={p['alpha']}, kappa_max={p['kappa_max']}, shuffle={p['shuffle']}, "
        f"noise={p['noise_sigma']}, head cut {result['split']['head_cut']}"
    )
    timing = result.get("timing_s", {})
    for table in (_separation_table(result, timing), _reconstruction_table(result, timing), _label_table(result, timing), _best_table(result)):
        if table is not None:
            console.print(table)
    if timing:
        console.print("time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timing.items()))
    v = result["verdict"]
    colour = {"leaks": "red", "inconclusive": "yellow"}.get(v["status"], "green")
    console.print(f"[bold {colour}]verdict: {v['status']}[/bold {colour}]")
    for reason in v["reasons"]:
        console.print(f"  - {reason}")
    console.print(result["caveat"])
    if report is not None:
        console.print(f"picture written to {report}")


def _seconds(timing: dict, name: str) -> str:
    return f", {timing[name]:.0f} s" if name in timing else ""


def _separation_table(result: dict, timing: dict):
    from rich.table import Table

    if "separation" not in result:
        return None
    sep = result["separation"]
    table = Table(title=f"attack 1: blind source separation per group ({sep['method']}{_seconds(timing, 'separation')})")
    table.add_column("metric")
    table.add_column("mean / max", justify="right")
    table.add_row("Amari index vs true C⁻¹ (0 = key recovered)", _fmt(sep["amari_index"]) if sep["amari_index"] else "— (grouping unknown)")
    table.add_row("|corr| separated vs true features", _fmt(sep["matched_abs_corr"]))
    table.add_row("|corr| single mixture vs its strongest source", _fmt(sep["single_mixture_abs_corr"]))
    table.add_row("|corr| unrelated samples (chance)", _fmt(sep["chance_abs_corr"]))
    table.caption = f"share of negative public features {sep['negative_share']:.1%}; truth used for {sep['truth_used_for']}"
    return table


RECONSTRUCTION_ROWS = (
    ("inversion", "unmixed_baseline", "decoder, unmixed features (plain split, baseline)"),
    ("inversion", "mixtures", "decoder, raw mixtures"),
    ("inversion", "separated", "decoder, separated features"),
    ("adaptive", None, "adaptive decoder, raw mixtures"),
)


def _reconstruction_table(result: dict, timing: dict):
    from rich.table import Table

    rows = [(label, (result.get(section) or {}).get(view) if view else result.get(section)) for section, view, label in RECONSTRUCTION_ROWS]
    rows = [(label, r) for label, r in rows if r]
    if not rows:
        return None
    times = ", ".join(f"{name} {timing[name]:.0f} s" for name in ("inversion", "adaptive") if name in timing)
    table = Table(title=f"attacks 2-3: reconstruction{' (' + times + ')' if times else ''}")
    for column in ("attack", "SSIM (chance)", "PSNR dB (chance)", "re-identified (chance)"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for label, r in rows:
        ssim = "—" if r["ssim"]["mean"] is None else f"{r['ssim']['mean']:.3f}"
        if r["ssim_advantage"] is not None:
            ssim += f" ({r['ssim']['mean'] - r['ssim_advantage']:.3f})"
        psnr = f"{r['psnr_db']['mean']:.1f} ({r['psnr_db']['mean'] - r['psnr_advantage_db']:.1f})"
        reid = r["reidentification"]
        table.add_row(label, ssim, psnr, f"{reid['accuracy']:.1%} ({reid['chance']:.1%})")
    table.caption = (
        "means over the audited samples; raw mixtures are scored against each mixture's dominant input; chance = the better of "
        "the public mean image and a random public image; re-identified = the nearest audited image is the target"
    )
    return table


def _label_table(result: dict, timing: dict):
    from rich.table import Table

    if "label" not in result:
        return None
    label = result["label"]
    table = Table(title=f"attack 4: label inference (classifier trained on public data{_seconds(timing, 'label')})")
    table.add_column("features")
    table.add_column("accuracy", justify="right")
    for view, text in (("chance", "chance (majority class)"), ("unmixed_baseline", "unmixed (baseline)"),
                       ("mixtures", "raw mixtures (dominant input's label)"), ("separated", "separated features")):
        if view in label:
            table.add_row(text, f"{label[view]:.1%}")
    return table


BEST_ROWS = (  # metric, label, format
    ("ssim", "SSIM", "{:.3f}"),
    ("psnr_db", "PSNR dB", "{:.1f}"),
    ("reidentification", "re-identified", "{:.1%}"),
    ("label_accuracy", "label accuracy", "{:.1%}"),
    ("feature_abs_corr", "feature |corr|", "{:.3f}"),
)


def _best_table(result: dict):
    from rich.table import Table

    best = result.get("best") or {}
    if not best:
        return None
    table = Table(title="strongest attack per metric on what DataMix sends")
    for column in ("metric", "attack", "value", "chance"):
        table.add_column(column, justify="left" if column in ("metric", "attack") else "right")
    for metric, text, form in BEST_ROWS:
        if metric in best:
            b = best[metric]
            chance = form.format(b["chance"])
            if metric == "feature_abs_corr":
                chance += f" (single mixture {form.format(b['single_mixture'])})"
            table.add_row(text, b["attack"], form.format(b["accuracy"] if metric == "reidentification" else b["mean"]), chance)
    return table
