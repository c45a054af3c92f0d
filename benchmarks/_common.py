"""Shared helpers of the benchmarks: the machine description and the results file."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    """CPU model, cores and memory of this machine, and the library versions that matter."""
    import torch
    import transformers

    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, torch threads {torch.get_num_threads()}")


def append_result(title: str, table: list[tuple[str, str]], notes: str = "") -> None:
    """Append one benchmark's result (a two-column table) to docs/benchmarks.md."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmarks\n\nWritten by `make bench` (each benchmark appends its run).\n",
                           encoding="utf-8")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {title} ({stamp})\n", f"Machine: {machine()}\n", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table]
    if notes:
        lines += ["", notes]
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
