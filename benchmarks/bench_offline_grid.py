"""DPO and IPO: the grid against the value it chose, side by side in one run (#28, item 2).

    python benchmarks/bench_offline_grid.py [--data-root DIR] [--nodes alignment.dpo.train alignment.ipo.train]

Before: the nodes with their grids, as ``--env full`` runs them (β 0.05, 0.1, 0.5 for DPO; τ 0.1, 0.5, 1.0 for
IPO). After: as ``--env base`` runs them since this change, with the one value each grid chose on base. Each side is
one ``kedro run --nodes ...`` of its env, in a fresh process, on its own copy of an earlier base run's data root
(the SFT policy, the reference, the preference pairs, the alignment prompts); the sides run one after the other.
The figures are each node's own clock (``<method>_info.json``'s ``seconds``) and the process's wall time; the check
compares what the methods hand on: the chosen value, its probe score, and the trained policy's weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402

SIDES = (("before", "full"), ("after", "base"))
COPY = ("02_intermediate", "03_primary", "05_model_input", "06_models/tokenizer", "06_models/sft_policy", "06_models/reference_policy")


def weights_equal(a: Path, b: Path) -> tuple[bool, float]:
    """Whether two saved models' tensors are equal, and the largest absolute difference."""
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if x.keys() != y.keys():
        return False, float("inf")
    diff = max(float((x[k].float() - y[k].float()).abs().max()) for k in x)
    return diff == 0.0, diff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default="/tmp/ru_rlhf_bench_base", help="an earlier base run's data root")
    ap.add_argument("--nodes", nargs="+", default=["alignment.dpo.train", "alignment.ipo.train"])
    args = ap.parse_args()
    source = Path(args.data_root)
    work = Path(tempfile.mkdtemp(prefix="bench-offline-grid-"))
    out: dict[str, dict] = {}
    try:
        for side, env in SIDES:
            root = work / side
            for part in COPY:
                if (source / part).exists():
                    shutil.copytree(source / part, root / part)
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "kedro", "run", "--env", env, "--nodes", ",".join(args.nodes)],
                                 cwd=ROOT, env={**os.environ, "RU_RLHF_DATA_ROOT": str(root)},
                                 capture_output=True, text=True)
            wall = time.perf_counter() - start
            if run.returncode:
                raise SystemExit(f"{side} ({env}) failed:\n{run.stderr[-3000:]}")
            methods = {n.split(".")[1] for n in args.nodes}
            out[side] = {"wall": wall, "root": root,
                         **{m: json.loads((root / "08_reporting" / "alignment" / f"{m}_info.json").read_text())
                            for m in methods}}
            print(side, env, f"{wall:.1f} s", {m: out[side][m]["seconds"] for m in methods}, flush=True)
        rows = []
        for m in sorted({n.split(".")[1] for n in args.nodes}):
            b, a = out["before"][m], out["after"][m]
            same, diff = weights_equal(out["before"]["root"] / "06_models" / "policies" / m,
                                       out["after"]["root"] / "06_models" / "policies" / m)
            rows.append(f"| `alignment.{m}.train`: the grid (before) against its chosen {a['parameter']} (after) | "
                        f"{b['seconds']:.1f} | {a['seconds']:.1f} | {a['seconds'] / b['seconds']:.3f} | chosen "
                        f"{b['parameter']} {b['chosen_value']} and {a['chosen_value']}; probe gold "
                        f"{b['best_probe_gold']:.4f} and {a['best_probe_gold']:.4f}; policy weights "
                        f"{'identical' if same else f'differ (largest {diff:.2e})'} |")
        rows.append(f"| the whole `kedro run` of these nodes, start-up included | {out['before']['wall']:.1f} | "
                    f"{out['after']['wall']:.1f} | {out['after']['wall'] / out['before']['wall']:.3f} | |")
        table = "\n".join(["| change | before, s | after, s | after / before | check |", "|---|---:|---:|---:|---|",
                           *rows])
        print(table)
        append_result("DPO and IPO: the grid against the value it chose", [], markdown=table,
                      notes=(f"Each side one `kedro run --nodes {','.join(args.nodes)}` in a fresh process on its own "
                             f"copy of the artifacts under `{source}` (before: `--env full`, the grids; after: "
                             "`--env base`, the chosen values), one after the other; seconds from each node's info "
                             "(the SFT probe, the grid's training and probes) and the process's wall clock."))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
