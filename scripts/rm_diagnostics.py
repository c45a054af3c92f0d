"""Why a reward model ranks pairs as it does: label quality, and one training run in any setting.

    python scripts/rm_diagnostics.py                                   # the base env's own settings
    python scripts/rm_diagnostics.py --backbone bert --pooling mean    # the separate encoder
    python scripts/rm_diagnostics.py --max-pairs 4000 --epochs 1 --lr 3e-4 --max-length 384

1. Label quality (no training): per split and criterion, the share of pairs whose two responses
   the gold judges tie, and on the untied pairs the share where the (SIMULATED) panel chose the
   response the gold judges prefer. That share bounds what a model trained on the panel's labels
   can reach against gold.
2. One multi-head reward model trained exactly as the pipeline trains it (same code, data, seed;
   early stopping on validation accuracy) except for the settings given, evaluated on the test
   pairs with the pipeline's metric (``pairwise_metrics``), overall and per task; the train-split
   accuracy on a sample of its own pairs (under- or over-fitting); the per-evaluation train and
   validation accuracy; the window's truncation counts; the TF-IDF baseline on the same pairs.

Writes ``<data root>/08_reporting/reward_model/diagnostics_<tag>.json``. Reads the env's outputs
(``preference_pairs``, ``encoder``, ``sft_policy``, ``policy_tokenizer``, ``gold_scores``, ``prompts``);
nothing else is changed.
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
    ap.add_argument("--backbone", choices=["policy", "bert"])
    ap.add_argument("--pooling", choices=["last", "mean", "response"])
    ap.add_argument("--max-pairs", type=int, help="per criterion (default: the env's; 0 = every pair)")
    ap.add_argument("--epochs", type=float)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--evals-per-epoch", type=int)
    ap.add_argument("--min-margin", type=float)
    ap.add_argument("--match-feature", choices=["on", "off"])
    ap.add_argument("--debias", type=float, help="train with a bias head (ODIN) at this decorrelation weight")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RU_RLHF_MLFLOW", "off")
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from ru_rlhf.judges import CRITERIA
    from ru_rlhf.metrics import pairwise_metrics
    from ru_rlhf.pipelines.reward_modeling.nodes import (
        _backbone,
        _score_pairs,
        _train,
        _training_pairs,
        tfidf_baseline,
        window_report,
    )
    from ru_rlhf.pipelines.reward_modeling.params import RewardParams

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=args.env) as session:
        ctx = session.load_context()
        load = ctx.catalog.load
        pairs, gold, prompts = load("preference_pairs"), load("gold_scores"), load("prompts")
        params = json.loads(json.dumps(ctx.params["reward_modeling"]))
        backbone = args.backbone or params.get("backbone", "policy")
        encoder = load("encoder") if backbone == "bert" else None
        policy = (load("sft_policy"), load("policy_tokenizer")) if backbone == "policy" else None
    train_over = {"max_pairs_per_criterion": (args.max_pairs or None) if args.max_pairs is not None else None,
                  "epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
                  "max_length": args.max_length, "evals_per_epoch": args.evals_per_epoch,
                  "min_margin": args.min_margin}
    for k, v in train_over.items():
        if v is not None or (k == "max_pairs_per_criterion" and args.max_pairs is not None):
            params["train"][k] = v
    for k in ("backbone", "pooling"):
        if getattr(args, k):
            params[k] = getattr(args, k)
    if args.match_feature:
        params["match_feature"] = args.match_feature == "on"
    if args.debias is not None:
        params["debias"] = {"enabled": True, "weight": args.debias}
    p = RewardParams.of(params)
    t = p.train
    tag = (f"{p.backbone}_{p.pooling}_{t.max_pairs_per_criterion or 'all'}x{t.epochs:g}_lr{t.learning_rate:g}"
           f"_L{t.max_length}_m{t.min_margin:g}" + (f"_debias{p.debias.weight:g}" if p.debias.enabled else "") + ("_match" if p.match_feature else ""))
    params["checkpoint_dir"] = str(Path(p.checkpoint_dir) / "rm_diagnostics")
    p = RewardParams.of(params)
    report = {"label_quality": label_quality(pairs),
              "setting": {"backbone": p.backbone, "pooling": p.pooling, **t.model_dump()}}
    train = _training_pairs(pairs, p)
    report["setting"]["training_pairs"] = train["criterion"].value_counts().to_dict()
    backbone = _backbone(p, encoder, policy)
    report["truncation"] = window_report(backbone[1], pairs, prompts, t.max_length)
    start = time.perf_counter()
    model, history, _ = _train("multi_head", pairs, backbone, p, f"rm_diagnostics_{tag}")
    steps = history[history["kind"] == "step"]
    report["setting"].update(steps=int(steps["step"].max()), seconds=round(time.perf_counter() - start, 1))
    report["evaluations"] = history[history["kind"] == "eval"].drop(columns=["kind", "loss", "accuracy",
                                                                             "learning_rate", "model"],
                                                                    errors="ignore").to_dict(orient="records")
    report["test"], report["train_fit"] = {}, {}
    test = pairs[(pairs["split"] == "test") & pairs["criterion"].isin(CRITERIA)]
    sc = _score_pairs(model, test, p)
    fit = pairs[pairs["pair_id"].isin(train["pair_id"])].sample(n=min(1500, len(train)), random_state=0)
    tr = _score_pairs(model, fit, p)
    for h in CRITERIA:
        hp = sc[sc["criterion"] == h]
        m = pairwise_metrics(hp[f"{h}_chosen"] - hp[f"{h}_rejected"], hp["gold_margin"])
        m["by_task"] = {task: pairwise_metrics(g[f"{h}_chosen"] - g[f"{h}_rejected"], g["gold_margin"])
                        for task, g in hp.groupby("task_type")}
        report["test"][h] = m
        th = tr[tr["criterion"] == h]
        report["train_fit"][h] = pairwise_metrics(th[f"{h}_chosen"] - th[f"{h}_rejected"], th["gold_margin"])
    # the hacking probes on the SFT policy's test candidates (as the pipeline's reward_behaviour runs them)
    from ru_rlhf.audit import hacking_probes
    from ru_rlhf.scoring import rm_scorer

    cand = gold[gold["split"] == "test"].sample(n=min(300, int((gold["split"] == "test").sum())), random_state=p.seed)
    text_of = dict(zip(prompts["prompt_id"], prompts["prompt"]))
    probes = hacking_probes(rm_scorer(model), [text_of[i] for i in cand["prompt_id"]], cand["response"].tolist(),
                            cand["lang"].tolist())
    report["hacking_share_up_scalar"] = probes[probes["head"] == "scalar"].set_index("perturbation")[
        "share_up"].round(4).to_dict()
    print("hacking share up (scalar)", report["hacking_share_up_scalar"])
    if not args.no_baseline:
        report["baseline"] = tfidf_baseline(pairs, gold, params)
    out = Path(p.checkpoint_dir).parents[2] / "08_reporting" / "reward_model" / f"diagnostics_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({h: {k: report["test"][h][k] for k in ("accuracy", "auc")} for h in CRITERIA}))
    print("train fit", json.dumps({h: report["train_fit"][h]["accuracy"] for h in CRITERIA}), report["setting"])
    if "baseline" in report:
        print("baseline", json.dumps({h: report["baseline"][h]["test"]["accuracy"] for h in CRITERIA}))
    print("written", out)


if __name__ == "__main__":
    main()
