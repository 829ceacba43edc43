"""Appending measured figures to benchmarks/RESULTS.md, with command, machine and date."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "| date | benchmark | figure | target | machine | command |\n| --- | --- | --- | --- | --- | --- |\n"


def machine() -> str:
    cpus = os.cpu_count()
    return f"{platform.machine()} {cpus} CPU, {platform.system()} {platform.release().split('-')[0]}, Python {platform.python_version()}"


def record(rows: list[tuple[str, str, str]], device: str | None = None) -> None:
    """Append (benchmark, figure, target) rows; the command is this process's own command line.

    ``device`` names an accelerator the figures were measured on, added to the machine column.
    """
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEvery row was printed by the command in its last column.\n\n" + HEADER)
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    today = datetime.date.today().isoformat()
    with RESULTS.open("a") as out:
        for name, figure, target in rows:
            where = machine() + (f", {device}" if device else "")
            out.write(f"| {today} | {name} | {figure} | {target} | {where} | `{command}` |\n")
    for name, figure, target in rows:
        print(f"{name}: {figure} (target {target})")
