"""The export loop of ``datamix split``: head and tail in every edge format (mixing and de-mixing inside the
artifact), the cloud in every cloud format, each verified against its PyTorch part; and the side files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.artifacts.manifest import sha256_file
from datamix_cli.protocol.mixing import DECOYS_PATH, coefficient_rng, draw_coefficients

EDGE_FORMATS = ("onnx", "tflite")
# TorchScript because the user's design asks for it (and Triton's libtorch backend takes it); the
# torch.export program because TorchScript is deprecated from torch 2.14. Both are verified.
CLOUD_FORMATS = ("torchscript", "pt2")
REFERENCE_FORMAT = "torchscript"


@dataclass(frozen=True)
class ExportConfig:
    """What ``datamix split`` exports and how strictly it is verified."""

    formats: tuple[str, ...] = EDGE_FORMATS  # head and tail
    cloud_formats: tuple[str, ...] = CLOUD_FORMATS  # must include REFERENCE_FORMAT
    atol: float | None = None  # None: each exporter's default tolerance
    allow_mismatch: bool = False  # publish even when an artifact misses its tolerance
    decoys: int = 32  # public decoy inputs kept with the edge artifacts
    verify_groups: int = 8  # groups of k each artifact is verified on


def tensor_spec(name: str, shape, dtype: str = "float32") -> dict:
    spec = {"name": name, "shape": [int(d) for d in shape], "dtype": dtype}
    per_sample = [d for d in shape[1:]]
    if all(d > 0 for d in per_sample):
        spec["bytes_per_sample"] = int(np.prod(per_sample, dtype=np.int64)) * 4
    return spec


def export_all(parts, exporters, export: ExportConfig, mixing, eval_seed, shapes, sample_shape, num_classes, held_x, folder: Path,
               calibration_x=None, held_y=None):
    """Export head/tail in every edge format and the cloud in every cloud format; verify each against PyTorch.
    ``shapes``: the per-sample (uplink, downlink) shapes: what the head sends (the bottleneck's code, if any) and the
    cloud returns. Formats verified by agreement (int8) are calibrated on ``calibration_x`` (fine-tuning inputs)
    and checked on the whole edge chain over the held-out inputs (and, given ``held_y``, its accuracy recorded)."""
    import torch

    from datamix_cli.protocol.edge_modules import HeadWithMix, TailWithDemix
    from exporters.torchscript import numpy_runner
    from exporters.verify import Check, max_abs_error

    k = mixing.k
    up, down = shapes
    head, tail = HeadWithMix(parts.head).eval(), TailWithDemix(parts.tail).eval()
    rng = coefficient_rng(eval_seed)
    picks = rng.choice(len(held_x), size=(export.verify_groups, k), replace=len(held_x) < export.verify_groups * k)
    cs = [draw_coefficients(rng, mixing).astype(np.float32) for _ in range(export.verify_groups)]

    head_cases = [(held_x[p], c) for p, c in zip(picks, cs)]
    mixtures = [numpy_runner(head)(*case) for case in head_cases]
    cloud_out = [numpy_runner(parts.cloud)(m) for m in mixtures]
    tail_cases = [(z, np.linalg.inv(c.astype(np.float64)).astype(np.float32)) for z, c in zip(cloud_out, cs)]
    cloud_cases = [(np.concatenate(mixtures),), (mixtures[0][:1],)]  # any batch size, including 1

    specs = {
        "head": (head, head_cases, [tensor_spec("x", (k, *sample_shape)), tensor_spec("C", (k, k))], [tensor_spec("mixtures", (k, *up))]),
        "tail": (tail, tail_cases, [tensor_spec("cloud_out", (k, *down)), tensor_spec("C_inv", (k, k))], [tensor_spec("scores", (k, num_classes))]),
        "cloud": (parts.cloud, cloud_cases, [tensor_spec("mixtures", (-1, *up))], [tensor_spec("cloud_out", (-1, *down))]),
    }
    # TorchScript edge parts are the PyTorch reference that serve-local checks the edge runtimes against.
    edge_formats = tuple(dict.fromkeys((*export.formats, REFERENCE_FORMAT)))  # the reference once, even if asked for
    plan = [(role, name) for name in edge_formats for role in ("head", "tail")] + [("cloud", name) for name in export.cloud_formats]
    artifacts, checks = [], []
    for role, name in plan:
        exporter = exporters[name]
        module, cases, inputs, outputs = specs[role]
        relative = f"{'cloud' if role == 'cloud' else 'edge'}/{role}{exporter.suffix}"
        path = folder / relative
        path.parent.mkdir(exist_ok=True)
        extra = {"calibration": _calibration(role, parts, mixing, calibration_x)} if getattr(exporter, "needs_calibration", False) else {}
        exporter.export(module, tuple(torch.from_numpy(a) for a in cases[0]), path, [i["name"] for i in inputs], outputs[0]["name"], **extra)
        error = max_abs_error(exporter.load(path), numpy_runner(module), cases)
        tolerance = export.atol if export.atol is not None else exporter.default_atol
        checks.append(Check(relative, error, tolerance))
        artifacts.append(
            {
                "path": relative,
                "format": name,
                "role": role,
                "sha256": sha256_file(path),
                "inputs": inputs,
                "outputs": outputs,
                "max_abs_error": error if np.isfinite(error) else 1e308,
                "tolerance": tolerance,
            }
        )
    for name in edge_formats:
        if getattr(exporters[name], "verification", "tolerance") == "agreement":
            agreement = _chain_agreement(folder, exporters[name], head, parts.cloud, tail, mixing, eval_seed, held_x, held_y)
            for record in artifacts:
                if record["format"] == name:
                    record["agreement"] = agreement
            note = f"held-out accuracy {agreement['accuracy']:.1%} against the PyTorch parts' {agreement['reference_accuracy']:.1%}" if held_y is not None else ""
            checks.append(Check(f"edge/*{exporters[name].suffix}", 1 - agreement["top1"], 1 - exporters[name].min_agreement, agreement["inputs"], note))
    return artifacts, checks


CALIBRATION_GROUPS = 64  # groups of k the int8 ranges are calibrated on
AGREEMENT_INPUTS = 512  # held-out inputs (at most) the int8 edge chain is checked on


def _calibration(role: str, parts, mixing, x) -> list[tuple]:
    """Inputs of the ``role`` artifact as the protocol feeds it: fine-tuning inputs in groups with fresh C (head),
    or their cloud outputs with C⁻¹ (tail)."""
    from datamix_cli.protocol.edge_modules import HeadWithMix
    from exporters.torchscript import numpy_runner

    k, rng = mixing.k, coefficient_rng(1)
    x = np.ascontiguousarray(x[: CALIBRATION_GROUPS * k], dtype=np.float32)
    cases = []
    for g in range(len(x) // k):
        c = draw_coefficients(rng, mixing).astype(np.float32)
        if role == "head":
            cases.append((x[g * k : (g + 1) * k], c))
        else:
            z = numpy_runner(parts.cloud)(numpy_runner(HeadWithMix(parts.head))(x[g * k : (g + 1) * k], c))
            cases.append((z, np.linalg.inv(c.astype(np.float64)).astype(np.float32)))
    return cases


def _chain_agreement(folder: Path, exporter, head, cloud, tail, mixing, eval_seed, held_x, held_y=None) -> dict:
    """Top-1 agreement and max logit error of head → cloud → tail with this format's edge parts against PyTorch's,
    on held-out inputs in groups of k with the evaluation C; with ``held_y``, both chains' accuracy on them."""
    from exporters.torchscript import numpy_runner

    k, rng = mixing.k, coefficient_rng(eval_seed)
    q_head, q_tail = (exporter.load(folder / f"edge/{role}{exporter.suffix}") for role in ("head", "tail"))
    run_head, run_cloud, run_tail = numpy_runner(head), numpy_runner(cloud), numpy_runner(tail)
    n = min(AGREEMENT_INPUTS, len(held_x)) // k * k
    ours, reference = [], []
    for g in range(n // k):
        x = np.ascontiguousarray(held_x[g * k : (g + 1) * k], dtype=np.float32)
        c = draw_coefficients(rng, mixing).astype(np.float32)
        c_inv = np.linalg.inv(c.astype(np.float64)).astype(np.float32)
        ours.append(q_tail(run_cloud(q_head(x, c)), c_inv))
        reference.append(run_tail(run_cloud(run_head(x, c)), c_inv))
    ours, reference = np.concatenate(ours), np.concatenate(reference)
    record = {"top1": float((ours.argmax(1) == reference.argmax(1)).mean()), "max_logit_error": float(np.abs(ours - reference).max()),
              "inputs": int(n), "against": "the PyTorch edge parts, with the same cloud part and C"}
    if held_y is not None:  # a miss on a weak model is mostly near ties: the accuracy says what the user loses
        y = np.asarray(held_y[:n])
        record.update(accuracy=float((ours.argmax(1) == y).mean()), reference_accuracy=float((reference.argmax(1) == y).mean()))
    return record


def write_side_files(folder: Path, parts, decoys, held_x, mixing) -> list[dict]:
    """The decoys (DECOYS_PATH) and test_vectors.npz (one fixed test C, never used for real data)."""
    from datamix_cli.protocol.edge_modules import HeadWithMix, TailWithDemix
    from exporters.torchscript import numpy_runner

    k = mixing.k
    np.savez(folder / DECOYS_PATH, x=decoys.astype(np.float32))
    rng = np.random.default_rng(12345)
    x = held_x[:k].astype(np.float32)
    c = draw_coefficients(rng, mixing).astype(np.float32)
    c_inv = np.linalg.inv(c.astype(np.float64)).astype(np.float32)
    mixtures = numpy_runner(HeadWithMix(parts.head))(x, c)
    cloud_out = numpy_runner(parts.cloud)(mixtures)
    scores = numpy_runner(TailWithDemix(parts.tail))(cloud_out, c_inv)
    np.savez(folder / "test_vectors.npz", x=x, C=c, C_inv=c_inv, mixtures=mixtures, cloud_out=cloud_out, scores=scores)
    return [
        {"path": DECOYS_PATH, "sha256": sha256_file(folder / DECOYS_PATH), "role": "decoys"},
        {"path": "test_vectors.npz", "sha256": sha256_file(folder / "test_vectors.npz"), "role": "test_vectors"},
    ]
