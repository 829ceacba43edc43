"""``datamix audit``: measured privacy leakage of a split."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def audit(
    folder: Path = typer.Argument(..., help="A split folder written by `datamix split`.", show_default=False),
    data: str = typer.Option(None, "--data", help="Dataset (default: the one the split was evaluated on)."),
    attacks: str = typer.Option("ica,inversion,label", "--attacks", help="Comma-separated: ica, inversion, label."),
    samples: int = typer.Option(64, "--samples", help="Held-out (private) samples to attack."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated C and of the attacks."),
    decoder_epochs: int = typer.Option(12, "--decoder-epochs", help="Training epochs of the inversion decoder."),
    report: Path = typer.Option(None, "--report", help="Write a PNG grid: original | cloud view | ICA | reconstruction."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Attack what the cloud sees (ICA key recovery, feature inversion, label inference) and report leakage."""
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
    from rich.table import Table

    console = Console()
    console.print(f"[bold]threat model[/bold]: {result['threat_model']}")
    p = result["protocol"]
    console.print(
        f"audited {result['samples']} private samples against {result['public_samples']} public ones; "
        f"k={p['k']}, alpha={p['alpha']}, kappa_max={p['kappa_max']}, shuffle={p['shuffle']}, noise={p['noise_sigma']}, "
        f"head cut {result['split']['head_cut']}"
    )
    if "ica" in result:
        ica = result["ica"]
        table = Table(title="attack 1: key recovery (FastICA per group)")
        table.add_column("metric")
        table.add_column("mean / max", justify="right")
        table.add_row("Amari index vs true C⁻¹ (0 = key recovered)", _fmt(ica["amari_index"]) if ica["amari_index"] else "— (grouping unknown)")
        table.add_row("|corr| ICA-recovered vs true features", _fmt(ica["matched_abs_corr"]))
        table.add_row("|corr| single mixture vs its strongest source", _fmt(ica["single_mixture_abs_corr"]))
        table.add_row("|corr| unrelated samples (chance)", _fmt(ica["chance_abs_corr"]))
        console.print(table)
    if "inversion" in result:
        table = Table(title="attack 2: feature inversion (decoder trained on public data), against chance on the same samples")
        for column in ("input to the decoder", "SSIM mean / max", "SSIM vs chance", "PSNR dB mean / max", "PSNR vs chance"):
            table.add_column(column, justify="left" if column.startswith("input") else "right")
        for view, label in (("unmixed_baseline", "unmixed features (plain split, baseline)"), ("mixtures", "raw mixtures (vs dominant source)"), ("ica_recovered", "ICA-recovered features")):
            if view in result["inversion"]:
                r = result["inversion"][view]
                ssim_adv = "—" if r["ssim_advantage"] is None else f"{r['ssim_advantage']:+.3f}"
                table.add_row(label, _fmt(r["ssim"]), ssim_adv, _fmt(r["psnr_db"], 1), f"{r['psnr_advantage_db']:+.1f}")
        console.print(table)
        console.print("chance = the better of the public mean image and a random public image, scored against the same truth")
    if "label" in result:
        label = result["label"]
        table = Table(title="attack 3: label inference (classifier trained on public data)")
        table.add_column("features")
        table.add_column("accuracy", justify="right")
        for view, text in (("chance", "chance (majority class)"), ("unmixed_baseline", "unmixed (baseline)"), ("mixtures", "raw mixtures (dominant source's label)"), ("ica_recovered", "ICA-recovered")):
            if view in label:
                table.add_row(text, f"{label[view]:.1%}")
        console.print(table)
    v = result["verdict"]
    colour = {"leaks": "red", "inconclusive": "yellow"}.get(v["status"], "green")
    console.print(f"[bold {colour}]verdict: {v['status']}[/bold {colour}]")
    for reason in v["reasons"]:
        console.print(f"  - {reason}")
    console.print(result["caveat"])
    if report is not None:
        console.print(f"picture written to {report}")
