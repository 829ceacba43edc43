"""``datamix export triton`` and ``datamix export kserve``: deploy the cloud part on a production engine."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from datamix_cli.options import InstanceKind, TritonBackend

app = typer.Typer(help="Deploy the cloud part on a production inference engine (Triton, KServe).", no_args_is_help=True)


@app.command("triton")
def triton(
    folder: Path = typer.Argument(..., help="A split folder written by `datamix split`.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="The model repository folder to write (refused if it exists, unless --force)."),
    backend: TritonBackend = typer.Option(TritonBackend.onnx, "--backend", help="onnx (platform onnxruntime_onnx) or torchscript (pytorch_libtorch)."),
    max_batch: int = typer.Option(256, "--max-batch", help="max_batch_size: mixtures per batch, a multiple of k."),
    instances: int = typer.Option(1, "--instances", help="Model instances (instance_group count)."),
    kind: InstanceKind = typer.Option(InstanceKind.auto, "--instance-kind", help="auto (GPU if present), cpu or gpu."),
    max_queue_delay_us: int = typer.Option(500, "--max-queue-delay-us", help="Dynamic batching: longest wait for a fuller batch."),
    force: bool = typer.Option(False, "--force", help="Replace an existing repository folder."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a Triton model repository for the cloud part, verified against PyTorch."""
    from dataclasses import asdict

    from datamix_cli.serving.deploy.triton import TritonConfig, export_triton

    result = export_triton(TritonConfig(folder, out, backend, max_batch, instances, kind, max_queue_delay_us, force))
    if as_json:
        typer.echo(json.dumps({**asdict(result), "out": str(result.out)}, indent=2))
    else:
        typer.echo(
            f"wrote {result.out}/{result.model_name} ({result.platform}, max abs error {result.max_abs_error:.2e} against PyTorch, "
            f"preferred batches {list(result.preferred_batch_sizes)}) in {result.seconds:.1f} s\n"
            f"run: tritonserver --model-repository={result.out}"
        )


@app.command("kserve")
def kserve(
    repository: Path = typer.Argument(..., help="A repository written by `datamix export triton`.", show_default=False),
    storage_uri: str = typer.Option(..., "--storage-uri", help="Where the cluster finds the repository: s3://…, gs://…, pvc://…"),
    out: Path = typer.Option(..., "--out", "-o", help="The InferenceService YAML file to write."),
    name: str = typer.Option(None, "--name", help="InferenceService name (default: from the model name)."),
    namespace: str = typer.Option(None, "--namespace", help="Kubernetes namespace."),
    cpu: str = typer.Option("1", "--cpu", help="CPU request and limit."),
    memory: str = typer.Option("2Gi", "--memory", help="Memory request and limit."),
    gpus: int = typer.Option(0, "--gpus", help="nvidia.com/gpu request and limit (0: none)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
) -> None:
    """Write a KServe InferenceService (v1beta1, protocol v2) that runs the repository on KServe's Triton runtime."""
    from datamix_cli.serving.deploy.kserve import KServeConfig, write_kserve

    manifest = write_kserve(KServeConfig(repository, out, storage_uri, name, namespace, cpu, memory, gpus, force))
    typer.echo(f"wrote {out}: InferenceService {manifest['metadata']['name']} (kubectl apply -f {out})")
