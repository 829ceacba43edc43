"""``datamix serve-local``: a split folder checked end to end on one machine.

Starts ``datamix serve`` in a child process on a free loopback port, runs the
edge client on held-out samples, and compares every prediction with the
PyTorch reference (TorchScript parts as plain head and tail, the same C and
noise per group applied by ``mixing.mix``/``demix``), with the fine-tuned
model without mixing, and with the original, unsplit model. The child is
always shut down, also on failure or Ctrl-C.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import DatamixError, LoopbackError

AGREEMENT_REQUIRED = 0.995



@dataclass(frozen=True)
class LoopbackConfig:
    folder: Path
    runtime: str = "onnx"
    precision: str = "fp32"  # int8: the split's int8 edge parts for runtime
    seed: int | None = None  # seeds the client's C, decoys and noise (tests only; None: OS entropy)
    samples: int = 200
    data: str | None = None
    groups_per_request: int = 1
    compress: bool = False  # deflate request bodies
    link: object = None  # a datamix_cli.pipeline.latency.Link the client's socket is paced to
    startup_timeout: float = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``datamix serve`` as a child process; a context manager that always stops it."""

    def __init__(self, folder: Path, port: int, extra_args: tuple[str, ...] = ()):
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "datamix_cli.main", "serve", str(folder), "--port", str(port), *extra_args]
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        from datamix_cli.serving.client import OipClient, ServerError

        client = OipClient(self.url, timeout=2.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LoopbackError(f"the server exited with code {self.process.returncode}: {self.output()[-300:]}")
            try:
                if client.get_json("/v2/health/ready").get("ready"):
                    client.close()
                    return
            except ServerError:
                time.sleep(0.1)
        raise LoopbackError(f"the server was not ready within {timeout:g} s")

    def output(self) -> str:
        self.log.seek(0)
        return " ".join(self.log.read().decode(errors="replace").split())

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def reference_logits(folder: Path, manifest, x: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """The protocol recomputed independently of the edge artifacts under test.

    The PyTorch parts (TorchScript) run with C = I, i.e. as plain head and
    tail, and mixing and de-mixing are done here by ``mixing.mix`` /
    ``mixing.demix`` in float64 with the same C and noise per group. A wrong
    matrix inside an exported head or tail (a transpose, C for C⁻¹) therefore
    shows as disagreement instead of cancelling out.

    Returns (reference logits under the protocol, logits of the fine-tuned
    model without mixing), both over the padded input.
    """
    from datamix_cli.artifacts.folder import SplitFolder
    from datamix_cli.protocol.codecs import decode, encode
    from datamix_cli.protocol.mixing import MixingConfig, demix, mix

    parts = SplitFolder(folder, manifest=manifest)
    head, cloud, tail = (parts.runner(role) for role in ("head", "cloud", "tail"))
    eye = np.eye(manifest.protocol["k"], dtype=np.float32)
    protocol = MixingConfig.from_protocol(manifest.protocol)
    up, down = protocol.uplink_codec, protocol.downlink_codec
    out, unmixed = [], []
    for indices, c, noise in groups:
        c64, features = c.astype(np.float64), head(x[indices], eye)
        mixtures = mix(c64, features.astype(np.float64))
        if noise is not None:
            mixtures = mixtures + noise
        mixtures = decode(up, *encode(up, mixtures.astype(np.float32)))  # what the server decodes
        cloud_out = decode(down, *encode(down, cloud(mixtures))).astype(np.float64)
        out.append(tail(demix(np.linalg.inv(c64), cloud_out).astype(np.float32), eye))
        unmixed.append(tail(cloud(features), eye))
    return np.concatenate(out), np.concatenate(unmixed)


def _original_logits(manifest, x: np.ndarray):
    """The unsplit model from the manifest's source, or None with the reason it cannot be loaded."""
    from datamix_cli.model.loading import ModelSource, load_model
    from datamix_cli.data.preprocessing import Preprocessing
    from datamix_cli.model.identity import state_dict_sha256
    from datamix_cli.training.evaluation import predict_plain

    model_info = manifest.model
    try:
        weights = Path(model_info["weights"]) if model_info.get("weights") else None
        model = load_model(ModelSource(model_info["source"], weights=weights, factory_kwargs=model_info.get("factory_kwargs") or {}))
    except DatamixError as exc:
        return None, f"original model not loadable here: {exc}"
    if state_dict_sha256(model) != model_info["sha256"]:
        return None, "original model differs from the one the split was made from (sha256)"
    # The split's head starts with the in-head preprocessing; the original model needs it in front.
    return predict_plain(Preprocessing.from_manifest(model_info).wrap(model, x.shape[1:]), x), None


def run_serve_local(config: LoopbackConfig) -> dict:
    from datamix_cli.serving.client import EdgeClient, OipClient
    from datamix_cli.data.datasets import split_datasets
    from datamix_cli.artifacts.manifest import load_manifest

    folder = Path(config.folder)
    manifest = load_manifest(folder)
    client = EdgeClient(folder, config.runtime, seed=config.seed, manifest=manifest, precision=config.precision)
    _, held = split_datasets(manifest, client.input_shape, config.data)
    x, y = np.asarray(held.x[: config.samples]), held.y[: config.samples]
    with ServerProcess(folder, free_port()) as server:
        server.wait_ready(config.startup_timeout)
        oip = OipClient(server.url, compress=config.compress, link=config.link)
        try:
            result = client.run(oip, x, config.groups_per_request)
        finally:
            oip.close()
    reference, unmixed = (a[: len(x)] for a in reference_logits(folder, manifest, result.inputs, result.groups))
    original, original_note = _original_logits(manifest, x)
    predictions = result.logits.argmax(1)
    report = {
        "runtime": config.runtime,
        "samples": int(len(x)),
        "agreement": float((predictions == reference.argmax(1)).mean()),
        "accuracy": float((predictions == y).mean()),
        "max_abs_logit_error": float(np.max(np.abs(result.logits - reference))),
        # The fine-tuned model run without mixing: what mixing costs in predictions.
        "agreement_with_unmixed": float((predictions == unmixed.argmax(1)).mean()),
        "agreement_with_original": None if original is None else float((predictions == original.argmax(1)).mean()),
        # Exact only when the cloud part is affine (mixing then commutes with it) and the split was not fine-tuned.
        "max_abs_logit_error_vs_original": None if original is None else float(np.max(np.abs(result.logits - original))),
        "original_accuracy": None if original is None else float((original.argmax(1) == y).mean()),
        "original_note": original_note,
        "bytes_up_per_sample": result.bytes_up / len(x),
        "bytes_down_per_sample": result.bytes_down / len(x),
        # What crossed the socket per input (padding decoys and HTTP/JSON framing included), next to the tensors.
        "wire_bytes_up_per_sample": result.wire_up / len(x),
        "wire_bytes_down_per_sample": result.wire_down / len(x),
        "groups_per_request": config.groups_per_request,
        "compressed": config.compress,
        "latency_ms": {
            "edge_head_mix": _percentiles(client.times.head_mix),
            "uplink": _percentiles(client.times.uplink),
            "cloud": _percentiles(client.times.cloud),
            "downlink": _percentiles(client.times.downlink),
            "edge_demix_tail": _percentiles(client.times.demix_tail),
            "total": _percentiles(client.times.totals()),
        },
        "link": None if config.link is None else config.link.to_dict(),
        "required_agreement": AGREEMENT_REQUIRED,
    }
    # Quantized formats carry their own bar (exporters' min_agreement, checked at export on 512 held-out inputs):
    # int8 logits differ from PyTorch by design, so on these samples and fresh C the bar is lowered by 3 binomial
    # standard errors (a chain that truly agrees on 99 % falls below it about 0.5 % of the time at 200 samples).
    from datamix_cli.serving.client import edge_format
    from exporters import get_exporter

    bar = getattr(get_exporter(edge_format(config.runtime, config.precision)), "min_agreement", None)
    report["precision"] = config.precision
    report["required_agreement"] = AGREEMENT_REQUIRED if bar is None else bar - 3 * float(np.sqrt(bar * (1 - bar) / len(x)))
    report["passed"] = report["agreement"] >= report["required_agreement"]
    return report

