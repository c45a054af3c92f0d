"""End to end: one `kedro run --env ENV`, its wall time and peak RSS, and every stage's and node's share (make bench).

    python benchmarks/bench_e2e.py --env smoke            # target: total <= 60 s
    python benchmarks/bench_e2e.py --env base --profile   # targets: total <= 30 min, peak RSS <= 6 GB

Runs the whole loop once as one `kedro run --env ENV` (the number the targets are about) with every output written to
an empty data root (``RU_RLHF_DATA_ROOT``, a fresh ``/tmp/ru_rlhf_bench_<env>`` unless ``--data-root``; the bundled raw
data is read where it is), so nothing is resumed or loaded from an earlier run. The per-stage and per-node table comes from the project's
NodeTimingHook (``08_reporting/node_timings.csv``: each node's wall time, CPU time and peak RSS, its inputs' loading
and outputs' saving included); the whole process tree's RSS is also sampled every 0.2 s. With ``--profile`` the run is
sampled by py-spy (20 Hz, out of process) and the project's and libraries' functions that took the most of each of
the slowest nodes are listed. The section is written to docs/benchmarks.md; the base env's opens the file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402

TARGETS = {"smoke": (60.0, None), "base": (30 * 60.0, 6.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="smoke")
    ap.add_argument("--profile", action="store_true",
                    help="sample the run with py-spy (out of process, 20 Hz) and list where the slowest nodes spent it")
    ap.add_argument("--data-root", default=None,
                    help="where the run writes (RU_RLHF_DATA_ROOT); default a fresh /tmp/ru_rlhf_bench_<env>, "
                         "emptied first")
    args = ap.parse_args()
    root = Path(args.data_root or f"/tmp/ru_rlhf_bench_{args.env}")
    if args.data_root is None:
        shutil.rmtree(root, ignore_errors=True)
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
           "COLUMNS": "400", "RU_RLHF_DATA_ROOT": str(root)}
    kedro = str(Path(sys.executable).with_name("kedro"))
    cmd = [kedro, "run", "--env", args.env]
    raw = root.parent / f"ru_rlhf_profile_{args.env}.txt"
    if args.profile:
        pyspy = Path(sys.executable).with_name("py-spy")
        cmd = [str(pyspy), "record", "--rate", "20", "--format", "raw", "--output", str(raw), "--", *cmd]
    # the commit the run's code comes from: checked out now, before the run (a later checkout must not rename it)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    ps = psutil.Process(proc.pid)
    peak = {"gb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
            except psutil.Error:
                rss = 0
            peak["gb"] = max(peak["gb"], rss / 2**30)
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    log_lines = list(proc.stdout)
    proc.wait()
    total = time.perf_counter() - start
    stop.set()
    t.join()
    log_path = root.parent / f"ru_rlhf_bench_e2e_{args.env}.log"
    log_path.write_text("".join(log_lines), encoding="utf-8")
    # with --profile the exit status is py-spy's, which is 0 even when the run was killed: Kedro's own last words
    finished = any("Pipeline execution completed successfully" in line for line in log_lines)
    if proc.returncode != 0 or not finished:
        sys.stdout.write("".join(log_lines[-60:]))
        raise SystemExit(f"kedro run --env {args.env} failed (exit {proc.returncode}); log: {log_path}")
    nodes = pd.read_csv(root / "08_reporting" / "node_timings.csv")
    md, summary = budget_tables(nodes, total, peak["gb"], args.env)
    if args.profile and raw.exists():
        md += "\n\n" + profile_by_node(raw, nodes)
    print(md)
    notes = (f"One `kedro run --env {args.env}` from an empty data root (`RU_RLHF_DATA_ROOT`), commit {commit}, "
             "MLflow tracking on (the default), on this machine with nothing else running. Wall time and peak RSS "
             "of the whole process tree: the benchmark's own clock and 0.2 s RSS samples. The stages' and nodes' "
             "figures: the NodeTimingHook's rows (a node's wall time includes loading its inputs and saving its "
             "outputs; CPU time is every thread's; peak RSS is the process's own while the node ran). Start-up "
             "(imports, configuration, catalog) and the end of the run are the total less the nodes' sum.")
    append_result(f"End to end, env {args.env}", summary, notes, markdown=md)


def budget_tables(nodes: pd.DataFrame, total: float, peak_gb: float, env: str) -> tuple[str, list]:
    """The run's summary rows, and the per-stage and per-node tables (markdown) from the NodeTimingHook's rows."""
    target_s, target_gb = TARGETS.get(env, (None, None))
    in_nodes = float(nodes["seconds"].sum())
    summary = [
        ("total wall time", f"{total:.1f} s = {total / 60:.1f} min"
         + (f" (target <= {target_s / 60:.0f} min: {'met' if total <= target_s else 'NOT met'})" if target_s else "")),
        ("peak RSS, process tree", f"{peak_gb:.2f} GB"
         + (f" (target <= {target_gb} GB: {'met' if peak_gb <= target_gb else 'NOT met'})" if target_gb else "")),
        ("nodes", f"{len(nodes)}, {in_nodes:.1f} s in all; start-up and end of run {total - in_nodes:.1f} s"),
    ]
    stages = (nodes.groupby("stage", sort=False)
              .agg(nodes=("node", "size"), seconds=("seconds", "sum"), cpu=("cpu_seconds", "sum"),
                   io=("io_seconds", "sum"), peak=("peak_rss_gb", "max"))
              .sort_values("seconds", ascending=False))
    lines = ["Per stage (share of the run's total wall time):", "",
             "| stage | nodes | wall, s | share | CPU, s | cores busy | loading and saving, s | peak RSS, GB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for stage, r in stages.iterrows():
        lines.append(f"| {stage} | {int(r['nodes'])} | {r['seconds']:.1f} | {100 * r['seconds'] / total:.1f} % | "
                     f"{r['cpu']:.1f} | {r['cpu'] / max(r['seconds'], 1e-9):.2f} | {r['io']:.1f} | {r['peak']:.2f} |")
    lines.append(f"| start-up and end of run | | {total - in_nodes:.1f} | {100 * (total - in_nodes) / total:.1f} % "
                 "| | | | |")
    lines += ["", "Every node, slowest first:", "",
              "| node | stage | wall, s | share | CPU, s | cores busy | loading and saving, s | peak RSS, GB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in nodes.sort_values("seconds", ascending=False).iterrows():
        lines.append(f"| `{r['node']}` | {r['stage']} | {r['seconds']:.1f} | {100 * r['seconds'] / total:.1f} % | "
                     f"{r['cpu_seconds']:.1f} | {r['cores_busy']:.2f} | {r['io_seconds']:.1f} | "
                     f"{r['peak_rss_gb']:.2f} |")
    return "\n".join(lines), summary


def profile_by_node(raw: Path, nodes: pd.DataFrame, top_nodes: int = 5, top: int = 6) -> str:
    """For each of the ``top_nodes`` slowest nodes: the functions (the project's, TRL's, transformers', torch's)
    with the largest inclusive share of that node's py-spy samples. A sample belongs to the node whose function is
    on its stack (py-spy's stacks name no node, only functions: nodes that run one function, as DPO and IPO run
    ``train_dpo``, share its samples)."""
    from ru_rlhf.hooks import _all_pipelines

    func_of = {n.name: getattr(n.func, "__name__", "") for pl in _all_pipelines().values() for n in pl.nodes}
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit():
            stacks.append((stack.split(";"), int(n)))
    out = [f"py-spy (20 Hz) on the {top_nodes} slowest nodes: the functions with the largest share of each node's "
           "samples (inclusive)", ""]
    for _, r in nodes.sort_values("seconds", ascending=False).head(top_nodes).iterrows():
        func = func_of.get(r["node"])
        if not func:
            continue
        mine = [(fr, n) for fr, n in stacks if any(f.split(" (")[0] == func for f in fr)]
        total = sum(n for _, n in mine)
        if not total:
            continue
        inclusive: dict[str, int] = {}
        for frames, n in mine:
            seen = set()
            for f in frames:
                name, _, loc = f.partition(" (")
                file = loc.split(":")[0]
                if not any(k in file for k in ("ru_rlhf", "trl/", "transformers/", "torch/", "datasets/")):
                    continue
                key = f"{name} ({file.split('site-packages/')[-1].split('src/')[-1]})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] = inclusive.get(key, 0) + n
        best = sorted(inclusive.items(), key=lambda kv: -kv[1])
        best = [kv for kv in best if kv[1] < 0.98 * total][:top]  # below the node's own frames
        out.append(f"- `{r['node']}` (`{func}`, {r['seconds']:.0f} s, {total} samples): "
                   + "; ".join(f"`{k}` {100 * v / total:.0f} %" for k, v in best))
    return "\n".join(out)


if __name__ == "__main__":
    main()
