"""datamix's FLOPs for the torchvision zoo against torchvision's published figures.

    make .tv-venv/.installed && .tv-venv/bin/python benchmarks/bench_torchvision_flops.py [--models vit_b_16,resnet50]

Needs torchvision, so it runs in .tv-venv (torchvision does not import next to .venv's CPU torch 2.13.0).
Each model is built by ``datamix profile``'s own loader from ``torchvision.models:NAME`` with random weights
(nothing is downloaded) and profiled at 1x3x224x224. The published figure is ``weights.meta["_ops"]``, which
torchvision calls GFLOPS but counts one multiply-accumulate as one operation: it is compared with our MACs.
Our FLOPs are 2 x MACs (torch.utils.flop_counter's convention). Target (issue 9): within 3 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import record  # noqa: E402

ZOO = ("vit_b_16", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "swin_t", "regnet_y_400mf")
SHAPE = (1, 3, 224, 224)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated torchvision.models names")
    args = parser.parse_args()

    import torch
    import torchvision

    from datamix_cli.model.loading import ModelSource
    from datamix_cli.pipeline.profile import ProfileConfig, run_profile
    from partitioners.flops import FLOPS_RULE

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; input {'x'.join(map(str, SHAPE))}")
    print(f"convention: {FLOPS_RULE}; torchvision's published GFLOPS are GMACs")
    header = f"{'model':<20} {'weights':<42} {'our GFLOPs':>11} {'our GMACs':>10} {'published':>10} {'ratio':>7} {'s':>5}"
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.models.split(","):
        weights = torchvision.models.get_model_weights(name).DEFAULT
        published = float(weights.meta["_ops"])
        start = time.perf_counter()
        profile = run_profile(ProfileConfig(ModelSource(f"torchvision.models:{name}"), input_shape=SHAPE)).profile
        seconds = time.perf_counter() - start
        gmacs = profile.total_macs / 1e9
        ratio = gmacs / published
        print(f"{name:<20} {str(weights):<42} {profile.total_flops / 1e9:>11.3f} {gmacs:>10.3f} {published:>10.3f} {ratio:>7.4f} {seconds:>5.1f}")
        rows.append(
            (
                f"profile FLOPs vs torchvision published: {name} (1x3x224x224)",
                f"ratio {ratio:.4f} (ours {gmacs:.3f} GMACs = {profile.total_flops / 1e9:.3f} GFLOPs; "
                f"published {published:.3f} GMACs, {weights}; torchvision {torchvision.__version__})",
                "within 3 %",
            )
        )
    record(rows)


if __name__ == "__main__":
    main()
