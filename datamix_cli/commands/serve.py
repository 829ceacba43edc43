"""``datamix serve``, ``datamix infer`` and ``datamix serve-local``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from datamix_cli.options import Runtime

FOLDER = typer.Argument(..., help="A split folder written by `datamix split`.", show_default=False)
RUNTIME = typer.Option(Runtime.onnx, "--runtime", help="Edge runtime: onnx, tflite (or torchscript, the PyTorch reference).", case_sensitive=False)
PRECISION = typer.Option("fp32", "--precision", help="Edge artifacts' precision: fp32, or fp16 / int8 (a split made with that --edge-precision).")



def serve(
    folder: Path = FOLDER,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: str = typer.Option(None, "--token", help="Require 'Authorization: Bearer TOKEN' on every request but health probes."),
    max_batch: int = typer.Option(256, "--max-batch", help="Largest batch (mixtures) one request may carry."),
    fmt: str = typer.Option("torchscript", "--format", help="Cloud artifact to serve: torchscript (cloud.pt), pt2 (cloud.pt2, torch.export) or aoti (if the split has one)."),
) -> None:
    """Serve the cloud part of a split over the Open Inference Protocol (KServe v2 REST)."""
    from datamix_cli.serving.server import ServeConfig
    from datamix_cli.serving.server import serve as run

    run(ServeConfig(folder=folder, host=host, port=port, token=token, max_batch=max_batch, format=fmt))


def infer(
    folder: Path = FOLDER,
    inputs: list[Path] = typer.Argument(..., help="Inputs: .npy arrays (one sample or a batch), .npz with x, or image files.", show_default=False),
    server: str = typer.Option(..., "--server", help="Cloud server URL, e.g. http://127.0.0.1:8000."),
    runtime: Runtime = RUNTIME,
    precision: str = PRECISION,
    token: str = typer.Option(None, "--token", help="Bearer token the server requires."),
    compress: bool = typer.Option(False, "--compress", help="Deflate request bodies (Content-Encoding; datamix serve and Triton take it): about 18-20 % fewer bytes for int8 mixtures."),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON."),
) -> None:
    """Edge client: head + mix here, cloud over the network, de-mix + tail here; prints predictions."""
    from datamix_cli.serving.client import EdgeClient, OipClient
    from datamix_cli.data.inputs import read_inputs
    from datamix_cli.data.preprocessing import Preprocessing

    client = EdgeClient(folder, runtime.value, precision=precision)
    x, names = read_inputs(inputs, client.input_shape, Preprocessing.from_manifest(client.manifest.model))
    oip = OipClient(server, token, compress=compress)
    try:
        result = client.run(oip, x)
    finally:
        oip.close()
    labels = client.manifest.model["class_labels"]
    rows = [
        {"input": name, "prediction": labels[int(i)], "class_index": int(i), "scores": logits.tolist()}
        for name, logits, i in zip(names, result.logits, result.logits.argmax(1))
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            typer.echo(f"{row['input']}: {row['prediction']}")
    if not as_json:  # --json prints exactly the predictions
        typer.echo(f"{len(rows)} input(s): {result.wire_up} bytes sent and {result.wire_down} received on the wire "
                   f"(tensors {result.bytes_up} up, {result.bytes_down} down; HTTP framing and decoy padding included)", err=True)


def serve_local(
    folder: Path = FOLDER,
    runtime: Runtime = RUNTIME,
    precision: str = PRECISION,
    samples: int = typer.Option(200, "--samples", help="Held-out samples to run."),
    data: str = typer.Option(None, "--data", help="Dataset (default: the one the split was evaluated on)."),
    groups_per_request: int = typer.Option(1, "--groups-per-request", help="Groups of k sent in one request."),
    compress: bool = typer.Option(False, "--compress", help="Deflate request bodies (Content-Encoding; datamix serve and Triton take it): about 18-20 % fewer bytes for int8 mixtures."),
    link: str = typer.Option(None, "--link", help="Pace the client's socket to a link: 3g, 4g, wifi or MBPS\\[/DOWN_MBPS]\\[:RTT_MS] (rates on writes and reads, half the RTT each way), to check `profile --link`'s estimate."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Serve the split on loopback, run the edge client on held-out samples, check against PyTorch."""
    from datamix_cli.errors import ConfigError
    from datamix_cli.serving.loopback import LoopbackConfig, run_serve_local

    if samples < 1 or groups_per_request < 1:
        raise ConfigError("--samples and --groups-per-request must be >= 1")
    paced = None
    if link is not None:
        from datamix_cli.pipeline.latency import parse_link

        paced = parse_link(link)
    report = run_serve_local(LoopbackConfig(folder=folder, runtime=runtime.value, precision=precision, samples=samples, data=data, groups_per_request=groups_per_request,
                                            compress=compress, link=paced))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if not report["passed"]:
        raise typer.Exit(1)


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    verdict = "[green]PASS[/green]" if report["passed"] else "[red]FAIL[/red]"
    parts = report["runtime"] if report["precision"] == "fp32" else f"{report['runtime']} {report['precision']}"
    console.print(
        f"{verdict} serve-local ({parts}, {report['samples']} samples): agreement with the PyTorch parts "
        f"{report['agreement']:.2%} (needs {report['required_agreement']:.1%}), max abs logit error {report['max_abs_logit_error']:.2e}, "
        f"accuracy {report['accuracy']:.2%}"
    )
    console.print(f"agreement with the fine-tuned model without mixing {report['agreement_with_unmixed']:.2%}")
    if report["agreement_with_original"] is not None:
        console.print(f"agreement with the original unsplit model {report['agreement_with_original']:.2%} (its accuracy {report['original_accuracy']:.2%})")
    else:
        console.print(report["original_note"])
    link = report.get("link")
    paced = f", paced to {link['name']}: {link['up_mbps']:g}/{link['down_mbps']:g} Mbit/s, RTT {link['rtt_ms']:g} ms" if link else ""
    table = Table(title=f"latency per request ({report['groups_per_request']} group(s) of k{paced}), ms")
    for column in ("stage", "p50", "p95"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, values in report["latency_ms"].items():
        table.add_row(stage, f"{values['p50']:.3f}", f"{values['p95']:.3f}")
    console.print(table)
    console.print(f"bytes per input: tensors up {report['bytes_up_per_sample']:.0f}, down {report['bytes_down_per_sample']:.0f}; "
                  f"on the wire (HTTP and padding included) up {report['wire_bytes_up_per_sample']:.0f}, down {report['wire_bytes_down_per_sample']:.0f}")
