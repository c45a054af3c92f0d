"""The RL runs' patience (#28, item 2: steps a run spends after its best state), replayed on an earlier run's logs.

    python benchmarks/bench_patience.py [--data-root DIR] [--patience 2 3 4 6 8]

Every RL run of the alignment stage (PPO, REINFORCE, GRPO, RLOO and the audit's oracle runs) evaluates its policy on
the probe every ``eval_every`` steps, keeps the best state (:class:`ru_rlhf.rl.selection.BestState`) and stops after
``patience`` evaluations without a better one, or when its smoothed KL leaves ``kl_budget``. Everything a run does
after its best state is spent on states it does not keep.

This benchmark does not train: it replays each run's logged evaluations (``08_reporting/alignment/<run>_log.parquet``
and ``_info.json`` of an earlier ``kedro run``) through ``BestState`` itself, with each ``--patience`` in turn, and
gives the step the run would have stopped at, the state it would have kept, and the run's logged clock at that step
(the seconds it would have taken). A run whose policy, seeds and data are the same takes the same steps up to the
earlier stop, so where the kept state is the same, the run's results are the same and only the time differs (the
base run after the change checks that). The KL-budget stop and the step limit are kept as the run logged them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402

RUNS = ("ppo", "reinforce", "grpo", "rloo", "ppo_gold", "reinforce_gold", "grpo_gold", "rloo_gold")


class _Stateless:
    """What ``BestState.evaluate`` needs of a policy when nothing is saved: an empty state dict."""

    @staticmethod
    def state_dict() -> dict:
        return {}


def replay(log: pd.DataFrame, info: dict, patience: int) -> tuple[int, int]:
    """``(stop step, kept step)`` of the run of ``log`` had its patience been ``patience``: its evaluations (rows with
    a probe score) fed in order to ``BestState`` with the run's ``best_max_kl`` and ``kl_window``, the log rows up to
    and with each evaluation's as its KL history. A run that did not stop early stops where it stopped."""
    from ru_rlhf.rl.selection import BestState

    rows = log.to_dict("records")
    scores = iter(log["probe_expert"].dropna().tolist())
    best = BestState(lambda _policy: {"score": next(scores)}, None, best_max_kl=info["best_max_kl"],
                     kl_window=info["kl_window"], patience=patience)
    for i, row in enumerate(rows):
        if isinstance(row.get("probe_expert"), float) and not math.isnan(row["probe_expert"]):
            step = int(row["step"])  # the log so far: nothing at step 0, else every row up to this one (as rl.loop)
            best.evaluate(_Stateless(), step, rows[:i + 1] if step > 0 else [])
            if best.stop_reason():
                return int(row["step"]), best.step
    return int(rows[-1]["step"]), best.step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=None, help="the earlier run's data root (default: the base env's)")
    ap.add_argument("--env", default="base", help="the env whose parameters the runs had (best_max_kl, kl_window)")
    ap.add_argument("--patience", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    args = ap.parse_args()
    data = Path(args.data_root or os.environ.get("RU_RLHF_DATA_ROOT", str(ROOT / "data")))
    import bench_repeated_work as brw

    params = brw._params(args.env)["alignment"]
    reports = data / "08_reporting" / "alignment"
    header = "| run | logged: stop, kept step, seconds, why it stopped | " + " | ".join(
        f"patience {p}: stop, kept, s" for p in args.patience) + " |"
    lines = [header, "|---|---|" + "---|" * len(args.patience)]
    totals = {p: 0.0 for p in args.patience}
    logged_total = 0.0
    for run in RUNS:
        log_path = reports / f"{run}_log.parquet"
        if not log_path.exists():
            continue
        log = pd.read_parquet(log_path)
        spec = params[run]["train"]
        info = {**json.loads((reports / f"{run}_info.json").read_text()),
                "best_max_kl": spec["best_max_kl"], "kl_window": spec["kl_window"]}
        clock = dict(zip(log["step"], log["seconds"]))
        logged_s = float(log["seconds"].iloc[-1])
        logged_total += logged_s
        cells = []
        for p in args.patience:
            stop, kept = replay(log, info, p)
            totals[p] += clock[stop]
            mark = "" if kept == info["best_step"] else " **(another state)**"
            cells.append(f"{stop}, {kept}{mark}, {clock[stop]:.0f}")
        lines.append(f"| `{run}` | {info['steps_run']}, {info['best_step']}, {logged_s:.0f}, {info['stop_reason']} | "
                     + " | ".join(cells) + " |")
    lines.append(f"| all | {logged_total:.0f} s | " + " | ".join(f"{totals[p]:.0f} s" for p in args.patience) + " |")
    table = "\n".join(lines)
    print(table)
    append_result("RL patience replayed on a run's logs", [], markdown=table,
                  notes=(f"The RL runs' logs under `{data}`, replayed through `ru_rlhf.rl.selection.BestState` (no "
                         "training): for each patience, the step each run would have stopped at, the state it would "
                         "have kept (**another state** where it differs from the logged run's) and the run's logged "
                         "clock at that step, evaluations included. KL-budget stops and step limits as logged."))


if __name__ == "__main__":
    main()
