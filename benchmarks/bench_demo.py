"""`make demo` on a fresh clone, install included: the first thing a new user runs.

    python3 benchmarks/bench_demo.py [--keep DIR]

Clones this repository's HEAD into a temporary folder, runs `make demo` there (a new .venv, the shipped checkpoint,
profile, split, serve-local on ONNX and TFLite, the quick audit) and records its wall time.
Target (issue 17): <= 5 minutes on this machine, every step shown.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("datamix profile", "datamix split", "serve-local demo-out/resnet-split --runtime onnx",
         "serve-local demo-out/resnet-split --runtime tflite", "quick audit for the demo", "datamix audit")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clone = args.keep or Path(tmp) / "datamix"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        start = time.perf_counter()
        result = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode:
            sys.exit(f"make demo failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        shown = [step for step in STEPS if step in result.stdout]
        trained = "examples/train.py" in result.stdout
    record([(f"`make demo` on a fresh clone, install included ({len(shown)}/{len(STEPS)} steps shown"
             f"{', checkpoint trained' if trained else ', shipped checkpoint used'})", f"{seconds:.0f} s", "≤ 300 s")])


if __name__ == "__main__":
    main()
