"""Why the reward model's heads miss the bar: label quality, and a run with more training pairs.

    python scripts/rm_diagnostics.py                          # base env, 4 000 pairs per criterion, 1 epoch
    python scripts/rm_diagnostics.py --max-pairs 1000 --epochs 2   # the pipeline's own setting, for comparison

1. Label quality (no training): per split and criterion, the share of pairs whose two responses
   the gold judges tie, and on the untied pairs the share where the (SIMULATED) panel chose the
   response the gold judges prefer. If that share is high, the labels are not what limits the RM.
2. One multi-head reward model trained exactly as the pipeline trains it (same encoder, code,
   seed and settings) except for ``--max-pairs`` and ``--epochs``, evaluated on the test pairs
   with the pipeline's metric (``pairwise_metrics``), overall and per task, plus the train-split
   accuracy on the pairs it was trained on (under- or over-fitting).

Writes ``data/08_reporting/reward_model/diagnostics_<pairs>x<epochs>.json``. Reads the base run's
outputs (``preference_pairs``, ``encoder``); nothing else is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def label_quality(pairs) -> dict:
    """The curation report's label quality (:func:`gold_label_agreement`) per split, reward criteria only."""
    from ru_rlhf.judges import CRITERIA
    from ru_rlhf.pipelines.preference_curation.nodes import gold_label_agreement

    rated = pairs[pairs["criterion"].isin(CRITERIA)]
    return {split: gold_label_agreement(g) for split, g in rated.groupby("split")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="base")
    ap.add_argument("--max-pairs", type=int, default=4000)
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    os.environ.setdefault("RU_RLHF_MLFLOW", "off")
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from ru_rlhf.judges import CRITERIA
    from ru_rlhf.metrics import pairwise_metrics
    from ru_rlhf.pipelines.reward_modeling.nodes import _params, _score_pairs, _train, _training_pairs

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=args.env) as session:
        ctx = session.load_context()
        pairs, encoder = ctx.catalog.load("preference_pairs"), ctx.catalog.load("encoder")
        params = dict(ctx.params["reward_modeling"])
    params["train"] = {**params["train"], "max_pairs_per_criterion": args.max_pairs, "epochs": args.epochs}
    params["checkpoint_dir"] = str(ROOT / "data" / "06_models" / "checkpoints" / "rm_diagnostics")
    p = _params(params)
    report = {"label_quality": label_quality(pairs), "setting": {"max_pairs_per_criterion": args.max_pairs,
                                                                  "epochs": args.epochs}}
    train = _training_pairs(pairs, p)
    report["setting"]["training_pairs"] = train["criterion"].value_counts().to_dict()
    start = time.perf_counter()
    model, history, _ = _train("multi_head", pairs, encoder, p, f"rm_diagnostics_{args.max_pairs}x{args.epochs:g}")
    report["setting"].update(steps=len(history), seconds=round(time.perf_counter() - start, 1),
                             loss_last20=round(float(history["loss"].tail(20).mean()), 4))
    test = pairs[(pairs["split"] == "test") & pairs["criterion"].isin(CRITERIA)]
    sc = _score_pairs(model, test, p)
    tr = _score_pairs(model, train, p)
    report["test"], report["train_fit"] = {}, {}
    for h in CRITERIA:
        hp = sc[sc["criterion"] == h]
        m = pairwise_metrics(hp[f"{h}_chosen"] - hp[f"{h}_rejected"], hp["gold_margin"])
        m["by_task"] = {t: pairwise_metrics(g[f"{h}_chosen"] - g[f"{h}_rejected"], g["gold_margin"])
                        for t, g in hp.groupby("task_type")}
        report["test"][h] = m
        th = tr[tr["criterion"] == h]
        report["train_fit"][h] = pairwise_metrics(th[f"{h}_chosen"] - th[f"{h}_rejected"], th["gold_margin"])
    out = ROOT / "data" / "08_reporting" / "reward_model" / f"diagnostics_{args.max_pairs}x{args.epochs:g}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({h: {k: report["test"][h][k] for k in ("accuracy", "auc")} for h in CRITERIA}))
    print(json.dumps({h: report["train_fit"][h]["accuracy"] for h in CRITERIA}), report["setting"])
    print("written", out)


if __name__ == "__main__":
    main()
