"""``datamix audit``: measured privacy leakage of a split."""

from __future__ import annotations

import json
from pathlib import Path

import typer

# judging.ATTACKS, spelled out so that `datamix --help` need not import the audit (a test keeps them equal).
DEFAULT_ATTACKS = "separation,inversion,adaptive,group,optimisation,label"


def audit(
    folder: Path = typer.Argument(..., help="A split folder written by `datamix split`.", show_default=False),
    data: str = typer.Option(None, "--data", help="Dataset (default: the one the split was evaluated on)."),
    attacks: str = typer.Option(
        DEFAULT_ATTACKS, "--attacks", help=f"Comma-separated: {DEFAULT_ATTACKS.replace(',', ', ')} (docs/audit.md)."
    ),
    samples: int = typer.Option(64, "--samples", help="Held-out (private) samples to attack."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated C and of the attacks."),
    decoder_epochs: int = typer.Option(12, "--decoder-epochs", help="Training epochs of each decoder (inversion, adaptive, group)."),
    search_steps: int = typer.Option(40, "--search-steps", help="Gradient steps of the optimisation attack's span search."),
    report: Path = typer.Option(None, "--report", help="Write a PNG grid: original | cloud view | separated | reconstruction."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Attack what the cloud sees (source separation, feature inversion, adaptive and group decoders, a search of
    each group's span, label inference, re-identification) and report leakage against chance."""
    from datamix_cli.privacy.audit import AuditConfig, run_audit

    config = AuditConfig(
        folder=folder,
        data=data,
        attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()),
        samples=samples,
        seed=seed,
        decoder_epochs=decoder_epochs,
        search_steps=search_steps,
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
        f"noise={p['noise_sigma']}, relative noise={p.get('noise_relative', 0.0)}, head cut {result['split']['head_cut']}"
    )
    classifier = result.get("classifier")
    if classifier:
        console.print(f"the split's model labels the true inputs at {classifier['accuracy_on_inputs']:.1%} (majority class {classifier['chance']:.1%})")
    timing = result.get("timing_s", {})
    tables = (_separation_table(result, timing), _search_table(result, timing), _reconstruction_table(result, timing),
              _label_table(result, timing), _best_table(result))
    for table in tables:
        if table is not None:
            console.print(table)
    group = result.get("group") or {}
    if "skipped" in group:
        console.print(f"group decoder skipped: {group['skipped']}")
    if timing:
        console.print("time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timing.items()))
    v = result["verdict"]
    colour = {"leaks": "red", "inconclusive": "yellow"}.get(v["status"], "green")
    console.print(f"[bold {colour}]verdict: {v['status']}[/bold {colour}]")
    for reason in v["reasons"]:
        console.print(f"  - {reason}")
    console.print(result["caveat"])
    cert = result.get("certificate")
    if cert is not None:
        _print_certificate(console, cert)
    if report is not None:
        console.print(f"picture written to {report}")


def _print_certificate(console, cert: dict) -> None:
    if cert["status"] == "none":
        console.print(f"certificate: none ({cert['reason']})")
        return
    best = cert.get("best_attack_psnr_db")
    beaten = " (it beats the unbiased bound: it uses a prior)" if cert.get("best_attack_above_ceiling") else ""
    console.print(
        f"certificate (Fisher information): no unbiased attacker gets below MSE {cert['mse_bound']['p5']:.3g} per input "
        f"value on 95 % of the audited inputs (mean bound {cert['mse_bound']['mean']:.3g}), a PSNR ceiling of "
        f"{cert['psnr_ceiling_db']['p95']:.1f} dB" + (f"; the best attack above reached {best:.1f} dB{beaten}" if best is not None else "")
        + f". It {cert['caveat']}."
    )
    if "target_mse" in cert:
        console.print(f"calibrated to MSE {cert['target_mse']['target']:.3g}: met by {cert['target_mse']['share_met']:.0%} of the audited inputs")
    gdp = cert.get("gdp")
    if gdp is None:
        return
    if "meaning" in gdp:
        console.print(f"clipped Gaussian mechanism: mu = {gdp['mu']:.3g} per input: {gdp['meaning']}")
        return
    console.print(f"clipped Gaussian mechanism: {gdp['mu']:.3g}-GDP per input (epsilon {gdp['epsilon']:.3g} at delta {gdp['delta']:g}), "
                  f"{gdp['composition']}; any attacker, whatever its prior:")
    for name, a in gdp.get("attacks", {}).items():
        console.print(f"  {name}: measured {a['rate']:.1%} ({a['attack']}) against a bound of {a['bound']:.1%} (chance {a['prior']:.1%})")


def _seconds(timing: dict, name: str) -> str:
    return f", {timing[name]:.0f} s" if name in timing else ""


def _feature_rows(table, metrics: dict) -> None:
    table.add_column("metric")
    table.add_column("mean / max", justify="right")
    table.add_row("Amari index vs true C⁻¹ (0 = key recovered)", _fmt(metrics["amari_index"]) if metrics["amari_index"] else "— (grouping unknown)")
    table.add_row("|corr| recovered vs true features", _fmt(metrics["matched_abs_corr"]))
    table.add_row("|corr| single mixture vs its strongest source", _fmt(metrics["single_mixture_abs_corr"]))
    table.add_row("|corr| unrelated samples (chance)", _fmt(metrics["chance_abs_corr"]))


def _separation_table(result: dict, timing: dict):
    from rich.table import Table

    if "separation" not in result:
        return None
    sep = result["separation"]
    table = Table(title=f"attack 1: blind source separation per group ({sep['method']}{_seconds(timing, 'separation')})")
    _feature_rows(table, sep)
    table.caption = f"share of negative public features {sep['negative_share']:.1%}; truth used for {sep['truth_used_for']}"
    return table


def _search_table(result: dict, timing: dict):
    from rich.table import Table

    if "optimisation" not in result:
        return None
    search = result["optimisation"]
    title = f"attack 5: span search per group (most natural W·M, {search['steps']} steps, {search['restarts']} starts{_seconds(timing, 'optimisation')})"
    table = Table(title=title)
    _feature_rows(table, search)
    table.caption = f"objective (lower = more natural) {_fmt(search['objective'])}; decoder: {search['decoder']}; truth used for {search['truth_used_for']}"
    return table


RECONSTRUCTION_ROWS = (
    ("inversion", "unmixed_baseline", "decoder, unmixed (plain split, baseline)"),
    ("inversion", "mixtures", "decoder, raw mixtures"),
    ("inversion", "separated", "decoder, separated features"),
    ("adaptive", None, "adaptive decoder, raw mixtures"),
    ("group", None, "group decoder, k mixtures"),
    ("optimisation", None, "decoder, span search"),
)


def _reconstruction_table(result: dict, timing: dict):
    from rich.table import Table

    rows = [(label, (result.get(section) or {}).get(view) if view else result.get(section)) for section, view, label in RECONSTRUCTION_ROWS]
    rows = [(label, r) for label, r in rows if r and "ssim" in r]
    if not rows:
        return None
    times = ", ".join(f"{name} {timing[name]:.0f} s" for name in ("inversion", "adaptive", "group") if name in timing)
    table = Table(title=f"attacks 2-4: reconstruction{' (' + times + ')' if times else ''}")
    for column in ("attack", "SSIM (chance)", "PSNR dB (chance)", "re-identified (chance)", "model's label (chance)"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    pools = sorted({r.get("chance_pool") or r["paired_by_truth"] for _, r in rows if r.get("paired_by_truth")})
    for label, r in rows:
        ssim = "—" if r["ssim"]["mean"] is None else f"{r['ssim']['mean']:.3f}"
        if r["ssim_advantage"] is not None:
            ssim += f" ({r['ssim']['mean'] - r['ssim_advantage']:.3f})"
        psnr = f"{r['psnr_db']['mean']:.1f} ({r['psnr_db']['mean'] - r['psnr_advantage_db']:.1f})"
        reid, labelled = r["reidentification"], r["classifier_label"]
        mark = " *" if r.get("paired_by_truth") else ""
        table.add_row(label + mark, ssim, psnr, f"{reid['accuracy']:.1%} ({reid['chance']:.1%})", f"{labelled['accuracy']:.1%} ({labelled['chance']:.1%})")
    paired = f"; * paired with samples by the truth: chance includes the best of {' or '.join(map(str, pools))} random public images" if pools else ""
    table.caption = (
        "means over the audited samples; raw mixtures are scored against each mixture's dominant input; chance = the better of "
        f"the public mean image and a random public image{paired}; re-identified = the nearest audited image is the target; "
        "model's label = the split's model labels the reconstruction as the target's class (chance: the majority class, "
        "or for * the label of the nearest of those random images)"
    )
    return table


def _label_table(result: dict, timing: dict):
    from rich.table import Table

    if "label" not in result:
        return None
    label = result["label"]
    table = Table(title=f"attack 6: label inference (classifier trained on public data{_seconds(timing, 'label')})")
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
    ("classifier_label", "model's label of reconstruction", "{:.1%}"),
    ("label_accuracy", "label from features", "{:.1%}"),
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
