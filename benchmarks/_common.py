"""Shared helpers of the benchmarks: the machine description and the results file."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks.md"


def timed(cmd: list[str], env: dict, cwd: Path = ROOT) -> float:
    """Wall seconds of one command in a fresh process; a failing command stops the benchmark with its output."""
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return took


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


HEADER = ("# Benchmarks\n\nWritten by `make bench`. **Current figures** holds the newest run of each benchmark; "
          "**History** keeps every earlier run, oldest first, for comparison. Every figure was measured on the "
          "machine its section names. The base env's end-to-end run (`benchmarks/bench_e2e.py --env base`: every "
          "stage's and node's wall time, CPU time and peak memory) comes first.\n")
CURRENT, HISTORY = "## Current figures", "## History"
FIRST = "End to end, env base"
SUMMARY = "Every change of #28 and its ratio"  # an undated, hand-kept index of the sections below; second in the file
_SECTION = re.compile(r"^#{2,3} (?P<title>.+?)(?: \((?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d UTC)\))?$")


def _sections(text: str) -> list[tuple[str, str, str]]:
    """``(title, stamp, body)`` of every benchmark section in ``text`` (stamp ``""`` for undated notes)."""
    out: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        if line.strip() in (CURRENT, HISTORY):
            continue
        m = _SECTION.match(line)
        if m:
            out.append((m["title"], m["stamp"] or "", ""))
        elif out:
            title, stamp, body = out[-1]
            out[-1] = (title, stamp, body + line + "\n")
    return out


def render(sections: list[tuple[str, str, str]]) -> str:
    """The results file: the newest section of each title first (newest first), then the older ones."""
    latest: dict[str, tuple[str, str, str]] = {}
    for sec in sections:
        if sec[0] not in latest or sec[1] >= latest[sec[0]][1]:
            latest[sec[0]] = sec
    # the base env's end-to-end budget (per stage and node) opens the file, the index of changes follows; then the
    # newest first
    current = sorted(sorted(latest.values(), key=lambda s: s[1], reverse=True),
                     key=lambda s: (s[0] != FIRST, s[0] != SUMMARY))
    older = sorted((s for s in sections if s not in current), key=lambda s: s[1])

    def block(sec: tuple[str, str, str]) -> str:
        title, stamp, body = sec
        return f"### {title}{f' ({stamp})' if stamp else ''}\n{body.rstrip()}\n"

    parts = [HEADER, f"{CURRENT}\n", *(block(s) + "\n" for s in current), f"{HISTORY}\n",
             *(block(s) + "\n" for s in older)]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def append_result(title: str, table: list[tuple[str, str]], notes: str = "", markdown: str = "") -> None:
    """Add one benchmark's result (a two-column table, or ready ``markdown``) to docs/benchmarks.md, where it
    becomes that benchmark's current figures and the run it replaces moves to the history."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    sections = _sections(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else []
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["", f"Machine: {machine()}", ""]
    if table:
        lines += ["| figure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in table]]
    if markdown:
        lines += ["", markdown.rstrip()]
    if notes:
        lines += ["", notes]
    sections.append((title, stamp, "\n".join(lines) + "\n"))
    RESULTS.write_text(render(sections), encoding="utf-8")
