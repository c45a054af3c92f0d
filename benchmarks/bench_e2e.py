"""End to end: `kedro run` per pipeline and in total, wall time and peak RSS (make bench).

    python benchmarks/bench_e2e.py --env smoke            # target: total <= 90 s
    python benchmarks/bench_e2e.py --env base             # targets: total <= 15 min, peak RSS <= 6 GB

Runs the whole loop once as one `kedro run --env ENV` (the number the targets are about), timing
each pipeline inside that run from Kedro's own node log (first node start to last node end of the
pipeline's nodes) and sampling the process's RSS every 0.2 s (peak per pipeline and overall).
Checkpoints of the env are removed first, so nothing is resumed. Appends to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402

TARGETS = {"smoke": (90.0, None), "base": (15 * 60.0, 6.0)}
NODE_DONE = re.compile(r"Completed node: (\S+)")


def pipeline_of_nodes() -> dict[str, str]:
    from ru_rlhf.hooks import _all_pipelines

    out = {}
    for name, pl in _all_pipelines().items():
        for n in pl.nodes:
            out[n.name] = name
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="smoke")
    ap.add_argument("--profile", action="store_true",
                    help="sample the run with py-spy (out of process, 20 Hz) and summarise where the time went")
    args = ap.parse_args()
    data_root = ROOT / "data" / ("smoke" if args.env == "smoke" else "external" if args.env == "external" else "")
    shutil.rmtree(data_root / "06_models" / "checkpoints", ignore_errors=True)
    owner = pipeline_of_nodes()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
           "COLUMNS": "400"}
    kedro = str(Path(sys.executable).with_name("kedro"))
    start = time.perf_counter()
    cmd = [kedro, "run", "--env", args.env]
    raw = ROOT / "data" / f"profile_{args.env}.txt"
    if args.profile:
        pyspy = Path(sys.executable).with_name("py-spy")
        cmd = [str(pyspy), "record", "--rate", "20", "--format", "raw", "--output", str(raw), "--", *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    ps = psutil.Process(proc.pid)
    current = {"pipeline": "startup"}
    peak: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
            except psutil.Error:
                rss = 0
            key = current["pipeline"]
            peak[key] = max(peak.get(key, 0.0), rss / 2**30)
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    spent: dict[str, float] = {}  # seconds of node work per pipeline (Kedro interleaves pipelines' nodes)
    node_time: dict[str, float] = {}
    log_lines = []
    prev, startup = None, 0.0
    for line in proc.stdout:
        log_lines.append(line)
        m = NODE_DONE.search(line)
        if m:
            now = time.perf_counter() - start
            pl = owner.get(m.group(1), "?")
            if prev is None:
                startup = now
            else:
                spent[pl] = spent.get(pl, 0.0) + now - prev  # the sequential runner: since the last node ended
                node_time[m.group(1)] = now - prev
            prev = now
            current["pipeline"] = pl
    proc.wait()
    total = time.perf_counter() - start
    stop.set()
    t.join()
    if proc.returncode != 0:
        sys.stdout.write("".join(log_lines[-60:]))
        raise SystemExit(f"kedro run --env {args.env} failed (exit {proc.returncode})")
    (ROOT / "data" / f"bench_e2e_{args.env}.log").write_text("".join(log_lines), encoding="utf-8")
    rows = [(pl, sec, peak.get(pl, 0.0)) for pl, sec in sorted(spent.items(), key=lambda kv: -kv[1])]
    target_s, target_gb = TARGETS.get(args.env, (None, None))
    overall_peak = max(peak.values()) if peak else 0.0
    table = [("command", f"`kedro run --env {args.env}` (one process, checkpoints removed first)"),
             ("startup and first node", f"{startup:.1f} s")]
    table += [(f"pipeline {pl} (its nodes' time)", f"{sec:.1f} s, peak RSS while its nodes ran {gb:.2f} GB")
              for pl, sec, gb in rows]
    slowest = sorted(node_time.items(), key=lambda kv: -kv[1])[:8]
    table.append(("slowest nodes", ", ".join(f"{n} {sec:.1f} s" for n, sec in slowest)))
    table.append(("total wall time", f"{total:.1f} s = {total / 60:.1f} min"
                  + (f" (target <= {target_s:.0f} s: {'met' if total <= target_s else 'NOT met'})" if target_s else "")))
    table.append(("peak RSS (process tree)", f"{overall_peak:.2f} GB"
                  + (f" (target <= {target_gb} GB: {'met' if overall_peak <= target_gb else 'NOT met'})" if target_gb else "")))
    notes = ("Per-pipeline time is the sum of its nodes' times inside the one run (Kedro's sequential runner "
             "interleaves the pipelines' nodes; each node is timed from the previous node's end to its own); peak RSS "
             "is sampled every 0.2 s over the kedro process and its children.")
    if args.profile and raw.exists():
        notes += "\n\n" + profile_summary(raw)
    for k, v in table:
        print(f"{k}: {v}")
    print(notes)
    append_result(f"End to end, env {args.env}", table, notes)


def profile_summary(raw: Path, top: int = 15) -> str:
    """The project's functions by share of all samples (inclusive), from py-spy's raw stacks."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        seen = set()
        for frame in stack.split(";"):
            func, _, loc = frame.partition(" (")
            file = loc.split(":")[0]
            if "ru_rlhf" not in file and "trl/" not in file and "transformers/" not in file:
                continue
            short = file[file.find("ru_rlhf"):] if "ru_rlhf" in file else file.split("site-packages/")[-1]
            key = f"{func} ({short})"
            if key not in seen:
                seen.add(key)
                inclusive[key] = inclusive.get(key, 0) + count
    rows = sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
    lines = [f"py-spy profile ({total} samples at 20 Hz): functions by inclusive share of the run", "",
             "| function | share |", "|---|---|"]
    lines += [f"| `{k}` | {100 * v / max(1, total):.1f} % |" for k, v in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
