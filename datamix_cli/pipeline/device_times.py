"""Edge times from the real device: ``profile --export-candidates DIR`` writes every candidate part as a standalone
file, the user times them there, and ``--device-times FILE`` reads the timings back.

The timings come in one of three forms, all checked against the model's cuts:

* JSON ``{"unit": "ms", "head": {CUT: ms, ...}, "tail": ms, "whole": ms}``;
* CSV lines ``PART,ms`` (PART a cut, ``tail`` or ``whole``);
* the log of TFLite's ``benchmark_model``, one run per exported file, concatenated (e.g.
  ``for f in *.tflite; do benchmark_model --graph=$f --num_threads=1; done > times.log``), read with the
  ``candidates.json`` beside it. Each run is the lines from its ``Graph: [FILE]`` to the next; its time is the
  median of the timed runs (``count=... median=...``, in µs), or, for releases that print no median, their mean
  (``Inference (avg)``, or ``Inference:`` in the older ``Average inference timings`` line);
* the log of ``onnxruntime_perf_test``, which does not print the model's name, so each run is introduced by a line
  naming its file (``for f in *.onnx; do echo "$f"; onnxruntime_perf_test -I -x 1 -r 100 $f; done > times.log``);
  its time is the median (``P50 Latency: ... s``), or, without ``P50``, the mean (``Average inference time cost``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from datamix_cli.errors import ConfigError
from datamix_cli.pipeline.latency import candidate_cuts, check_edge_runtime

LISTING = "candidates.json"
_HELP = ('JSON {"head": {CUT: ms}, "tail": ms, "whole": ms}, CSV lines PART,ms, or the log of benchmark_model or '
         f"onnxruntime_perf_test next to the {LISTING} it was exported with")


def export_candidates(traced, profile, decision, sample_shape: tuple[int, ...], folder: Path, runtime: str = "onnx") -> dict:
    """Every candidate head (with mixing) and the tail (with de-mixing) as standalone files of ``runtime``'s format
    at batch k, the whole model at batch 1, and ``candidates.json`` naming them."""
    import torch

    from datamix_cli.protocol.edge_modules import HeadWithMix, TailWithDemix
    from exporters import get_exporter
    from partitioners.partition import partition

    check_edge_runtime(runtime)
    exporter, k = get_exporter(runtime), decision.k
    suffix = exporter.suffix
    exporter.check_available()
    folder.mkdir(parents=True, exist_ok=True)
    x, c = torch.rand(k, *sample_shape), torch.eye(k)
    heads = []
    for i, cut in enumerate(candidate_cuts(profile, decision)):
        parts = partition(traced, cut, decision.tail_cut)
        exporter.export(HeadWithMix(parts.head).eval(), (x, c), folder / f"head-{i:02d}{suffix}", ["x", "C"], "mixtures")
        heads.append({"cut": cut.name, "file": f"head-{i:02d}{suffix}", "inputs": {"x": [k, *sample_shape], "C": [k, k]}})
    parts = partition(traced, decision.head_cut, decision.tail_cut)
    with torch.no_grad():
        z = parts.cloud(parts.head(x))
    exporter.export(TailWithDemix(parts.tail).eval(), (z, c), folder / f"tail{suffix}", ["cloud_out", "C_inv"], "scores")
    exporter.export(traced.module.eval(), (x[:1],), folder / f"whole{suffix}", ["x"], "scores")
    listing = {"k": k, "runtime": runtime, "tail_cut": decision.tail_cut.name, "heads": heads,
               "tail": {"file": f"tail{suffix}", "inputs": {"cloud_out": list(z.shape), "C_inv": [k, k]}},
               "whole": {"file": f"whole{suffix}", "inputs": {"x": [1, *sample_shape]}},
               "device_times": "time each file on the device, then pass --device-times: " + _HELP}
    (folder / LISTING).write_text(json.dumps(listing, indent=2) + "\n")
    return listing


def read_device_times(path: Path, profile, decision) -> dict:
    """Device timings as seconds: ``{"head": {cut: s}, "tail": s, "whole": s or None}``. Every named cut must be a
    candidate head cut, the tail must be given, and so must the cut the FLOPs budget (or --head-cut) chose."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --device-times {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if "Graph: [" in text or "inference time cost:" in text:
            data = _from_benchmark_log(text, Path(path).parent / LISTING, decision)
        elif text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = _from_csv(text)
        head, tail, whole = dict(data.get("head") or {}), data.get("tail"), data.get("whole")
        values = [*head.values(), tail] + ([whole] if whole is not None else [])
        if tail is None or not all(isinstance(v, (int, float)) and v > 0 and np.isfinite(v) for v in values):
            raise ValueError("the tail's time and every time must be positive numbers")
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--device-times {path}: {exc} ({_HELP})") from None
    known = {c.name for c in candidate_cuts(profile, decision)}
    unknown = sorted(set(head) - known)
    if unknown:
        raise ConfigError(f"--device-times names cuts the model has no candidate head at: {', '.join(unknown)}")
    if decision.head_cut.name not in head:
        raise ConfigError(f"--device-times misses the chosen cut {decision.head_cut.name!r}")
    unit = data.get("unit", "ms")
    if unit not in ("ms", "s"):
        raise ConfigError(f"--device-times {path}: unit must be ms or s, got {unit!r}")
    scale = 1e-3 if unit == "ms" else 1.0
    return {"head": {cut: ms * scale for cut, ms in head.items()}, "tail": tail * scale, "whole": None if whole is None else whole * scale}


def _from_csv(text: str) -> dict:
    import csv

    rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#") and r[0].strip().lower() != "part"]
    return {"head": {r[0].strip(): float(r[1]) for r in rows if r[0].strip() not in ("tail", "whole")},
            **{r[0].strip(): float(r[1]) for r in rows if r[0].strip() in ("tail", "whole")}}


_GRAPH = re.compile(r"Graph: \[([^\]]+)\]")
_TIMES = (  # (pattern, to ms), best first: medians, then means; the last match of the run is taken (after warm-up)
    (re.compile(r"count=\d+ .*?\bmedian=([0-9.eE+-]+)"), 1e-3),  # benchmark_model, µs
    (re.compile(r"P50 Latency: ([0-9.eE+-]+) s"), 1e3),  # onnxruntime_perf_test
    (re.compile(r"Inference \(avg\): ([0-9.eE+-]+)"), 1e-3),  # benchmark_model without medians, µs
    (re.compile(r"Average inference timings in us:.*?\bInference: ([0-9.eE+-]+)"), 1e-3),  # its older form
    (re.compile(r"Average inference time cost: ([0-9.eE+-]+) ms"), 1.0),
)


def _from_benchmark_log(text: str, listing_path: Path, decision) -> dict:
    """Milliseconds per part from concatenated benchmark_model or onnxruntime_perf_test runs, files named as in
    the listing."""
    try:
        listing = json.loads(listing_path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"a benchmark log is read with the {LISTING} it was exported with: put the log in the "
                         f"--export-candidates folder ({listing_path} is missing or unreadable)") from None
    if listing.get("tail_cut") != decision.tail_cut.name:
        raise ValueError(f"{listing_path} was exported for tail cut {listing.get('tail_cut')!r}, not {decision.tail_cut.name!r}")
    part_of = {h["file"]: h["cut"] for h in listing["heads"]} | {listing["tail"]["file"]: "tail", listing["whole"]["file"]: "whole"}
    if "Graph: [" in text:
        starts = list(_GRAPH.finditer(text))
    else:  # a line naming one of the listed files starts its run
        names = "|".join(re.escape(name) for name in sorted(part_of, key=len, reverse=True))
        starts = list(re.finditer(rf"^.*?(?<![\w.-])({names})(?![\w.-]).*$", text, re.M))
        if not starts:
            raise ValueError("onnxruntime_perf_test does not print the model's name: put a line naming each file before its run")
    head, times = {}, {}
    for start, end in zip(starts, [*starts[1:], None]):
        name = Path(start.group(1).strip()).name
        if name not in part_of:
            raise ValueError(f"the log times {name}, which {LISTING} does not list")
        run = text[start.end(): end.start() if end else None]
        found = next(((matches[-1], scale) for pattern, scale in _TIMES if (matches := pattern.findall(run))), None)
        if found is None:
            raise ValueError(f"the run of {name} has no inference timings (did it fail?)")
        ms = float(found[0]) * found[1]
        if part_of[name] in ("tail", "whole"):
            times[part_of[name]] = ms
        else:
            head[part_of[name]] = ms
    return {"unit": "ms", "head": head, **times}
