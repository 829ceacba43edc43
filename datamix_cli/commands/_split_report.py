"""What ``datamix split`` shows while it runs and when it is done: a progress bar, the accuracy table, the artifacts."""

from __future__ import annotations


def run_with_progress(config, run_split) -> None:
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
        print_summary(result)


def print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result.manifest
    console = Console()
    acc = m.accuracy
    table = Table(title=f"accuracy on {acc['n']} held-out samples of {acc['dataset']} (C seed {acc['eval_seed']}, k={m.protocol['k']})")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    for key, label in (("original", "original model"), ("split_without_mixing", "split, no mixing"),
                       ("naive_mixing", "naive mixing (before fine-tuning)"),
                       ("bottleneck_before_finetuning", "with the bottleneck, before fine-tuning"), ("mixing_aware", "mixing-aware fine-tuned")):
        if key in acc:
            table.add_row(label, f"{acc[key]:.2%}")
    console.print(table)
    search = m.split.get("uplink_search")
    if search:
        frontier = Table(title=f"uplink search: at most {search['max_uplink_bytes']} B per input on the wire ({search['search_epochs']} epochs each)")
        for column in ("cut", "code", "codec", "B/input on the wire", "validation accuracy", ""):
            frontier.add_column(column, justify="right" if column.startswith(("B/", "validation")) else "left")
        for c in sorted(search["candidates"], key=lambda c: c["wire_bytes_per_input"]):
            code = "×".join(map(str, c["code_shape"])) + (f" (stride {c['stride']})" if c["stride"] else " (no bottleneck)")
            frontier.add_row(c["cut"], code, c["codec"], f"{c['wire_bytes_per_input']:.0f}", f"{c['validation_accuracy']:.2%}", "◀ chosen" if c == search["chosen"] else "")
        console.print(frontier)
    artifacts = Table(title="artifacts (verified against PyTorch)")
    for column in ("path", "format", "max abs error", "tolerance"):
        artifacts.add_column(column, justify="right" if column in ("max abs error", "tolerance") else "left")
    for a in m.artifacts:
        bar = f"top-1 {a['agreement']['top1']:.1%}" if "agreement" in a else f"{a['tolerance']:g}"  # int8: verified by agreement
        artifacts.add_row(a["path"], a["format"], f"{a['max_abs_error']:.2e}", bar)
    console.print(artifacts)
    f, up, down = m.flops, m.split["uplink"], m.split["downlink"]
    bottleneck = m.split.get("bottleneck")
    code = f", bottleneck {'×'.join(map(str, bottleneck['code_shape']))}" if bottleneck else ""
    console.print(
        f"edge FLOPs share {f['edge_fraction']:.1%} (head {m.split['head_cut']}{code}, tail from {m.split['tail_cut']}); "
        f"uplink {up['bytes_per_sample']} B/sample ({up.get('codec', 'fp32')}), downlink {down['bytes_per_sample']} B/sample ({down.get('codec', 'fp32')})"
    )
    console.print(privacy_line(m.certificate, m.privacy))
    console.print(f"wrote {result.out} in {result.seconds:.1f} s")


def privacy_line(cert: dict | None, privacy: dict | None) -> str:
    """The certificate in one sentence, with what it does not cover."""
    if not cert or cert["status"] == "none":
        return "privacy: no noise, so no certificate; what a curious cloud recovers: datamix audit"
    line = (f"certificate: no unbiased attacker reconstructs below MSE {cert['mse_bound']['p5']:.3g} per input value on 95 % of "
            f"{cert['inputs']} held-out inputs (PSNR ceiling {cert['psnr_ceiling_db']['p95']:.1f} dB)")
    if "target_mse" in cert:
        line += f"; calibrated to {cert['target_mse']['target']:.3g}: met by {cert['target_mse']['share_met']:.0%}"
    gdp = cert.get("gdp")
    if gdp is not None:
        line += f"; {gdp['meaning']}" if "meaning" in gdp else f"; {gdp['mu']:.3g}-GDP per input and query (epsilon {gdp['epsilon']:.3g} at delta {gdp['delta']:g})"
    frozen = " The head was frozen while fine-tuning." if (privacy or {}).get("head_frozen") else ""
    return line + f". It {cert['caveat']}.{frozen} Attacks with a prior: datamix audit"
