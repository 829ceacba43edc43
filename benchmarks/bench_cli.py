"""CLI start-up and profile wall time, measured as whole processes.

    .venv/bin/python benchmarks/bench_cli.py [--repeat 5]

Targets: `datamix --help` <= 0.3 s (issue 17; 0.5 s in issue 2) and imports no torch, reported beside a bare
`python -c "import typer"` measured in the same run (this machine is shared: the ratio is what to compare);
`datamix profile` on the ResNet example <= 10 s. Median of --repeat runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    datamix = shutil.which("datamix", path=str(Path(sys.executable).parent)) or "datamix"
    help_s = wall([datamix, "--help"], args.repeat)
    baseline_s = wall([sys.executable, "-c", "pass"], args.repeat)
    typer_s = wall([sys.executable, "-c", "import typer"], args.repeat)
    split_help_s = wall([datamix, "split", "--help"], args.repeat)
    profile_cmd = [datamix, "profile", "examples/models.py:resnet", "--input-shape", "1,1,32,32", "--json"]
    checkpoint = ROOT / "examples/checkpoints/resnet_digits.pt"
    if checkpoint.exists():
        profile_cmd += ["--weights", str(checkpoint)]
    profile_s = wall(profile_cmd, max(1, args.repeat // 2))
    record(
        [
            ("`datamix --help` wall (median)", f"{help_s:.3f} s = {help_s / typer_s:.2f}× bare `import typer` ({typer_s:.3f} s; "
             f"`python -c pass` {baseline_s:.3f} s)", "≤ 0.3 s"),
            ("`datamix split --help` wall (median)", f"{split_help_s:.3f} s = {split_help_s / typer_s:.2f}× bare `import typer`", "report"),
            ("`datamix profile` ResNet example, wall (median)", f"{profile_s:.2f} s", "≤ 10 s"),
        ]
    )


if __name__ == "__main__":
    main()
