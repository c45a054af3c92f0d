"""Nodes of the user_ratings pipeline: the agreement-only mode.

α, a 95 % bootstrap interval and the agreement gate on any rating export (a Toloka export as it comes, a long or a
wide table), with no candidates of this run: a label for an item this run never generated is the data here, not a
quarantine (the preference_curation stage accepts only labels of its own candidates). The gate is the panel's rule
(:func:`ru_rlhf.agreement.drop_unreliable`: leave out, one at a time, the annotator whose absence raises α the most,
while α is below the threshold), optionally after a control-task rule (workers below a control accuracy).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from ru_rlhf.agreement import alpha_interval, drop_unreliable
from ru_rlhf.io.annotations import control_accuracy
from ru_rlhf.pipelines.user_ratings.params import RatingsParams

log = logging.getLogger(__name__)


def _numeric(labels: pd.DataFrame, level: str) -> tuple[pd.DataFrame, str]:
    """Labels with a numeric ``score`` for α: a pairwise ``choice`` becomes a nominal code."""
    if level != "pairwise":
        return labels, level
    codes = {c: float(i) for i, c in enumerate(sorted(labels["choice"].dropna().unique()), start=1)}
    return labels.assign(score=labels["choice"].map(codes)), "nominal"


def _interval(long: pd.DataFrame, level: str, p: RatingsParams) -> dict:
    return alpha_interval(long, level, n_boot=p.bootstrap, seed=p.seed, confidence=p.confidence)


def rating_agreement(ratings: dict, params: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """α per pool and criterion with its bootstrap interval, the control accuracy of each worker, and the gate.

    Returns:
        ``(agreement, gated_labels, workers)``: ``agreement`` has one entry per (pool, criterion) with α, the
        interval, the counts, who was dropped and why, and α after the gate; and the accounting of every line
        read (labels kept, labels unreadable, control answers, lines that gave no label); ``gated_labels`` the
        labels that pass the gate; ``workers`` one row per (pool, worker): labels, control answers and accuracy,
        whether and why dropped.
    """
    p = RatingsParams.of(params)
    labels, control, rejected, levels = (ratings[k] for k in ("labels", "control", "rejected", "levels"))
    level_of = {(r.pool, r.criterion): r.level for r in levels.itertuples()}
    readable = labels[labels["read_error"].isna()]
    pools, kept_parts, worker_rows = [], [], []
    for (pool, criterion), g in readable.groupby(["pool", "criterion"], sort=True):
        level = level_of.get((pool, criterion), "ordinal")
        g, alpha_level = _numeric(g, level)
        ctl = control[(control["pool"] == pool) & (control["criterion"] == criterion)] if len(control) else control
        acc = control_accuracy(ctl) if len(ctl) else pd.DataFrame(columns=["annotator_id", "control_answers",
                                                                            "control_accuracy"])
        before = _interval(g, alpha_level, p)
        dropped_control: list[str] = []
        kept = g
        if p.min_control_accuracy is not None and len(acc):
            low = acc[(acc["control_answers"] >= p.min_control_answers)
                      & (acc["control_accuracy"] < p.min_control_accuracy)]
            dropped_control = sorted(low["annotator_id"])
            kept = kept[~kept["annotator_id"].isin(dropped_control)]
        dropped_alpha: list[dict] = []
        if p.max_drop and not (np.isfinite(before["alpha"]) and before["alpha"] >= p.threshold):
            kept, dropped_alpha = drop_unreliable(kept, alpha_level, p.min_gain, max_drop=p.max_drop,
                                                  threshold=p.threshold)
        after = _interval(kept, alpha_level, p) if len(kept) < len(g) else before
        entry = {
            "pool": pool, "criterion": criterion, "level": level, "items": int(g["item_id"].nunique()),
            "workers": int(g["annotator_id"].nunique()), "labels": int(len(g)),
            "labels_per_item": round(len(g) / max(1, g["item_id"].nunique()), 2),
            "alpha": before["alpha"], "ci_low": before["ci_low"], "ci_high": before["ci_high"],
            "bootstrap": before["n_boot"], "passes": bool(np.isfinite(before["alpha"]) and before["alpha"] >= p.threshold),
            "control_answers": int(len(ctl)),
            "control_accuracy": float(ctl["correct"].mean()) if len(ctl) else None,
            "dropped_by_control": dropped_control, "dropped_by_alpha": dropped_alpha,
            "labels_after": int(len(kept)), "alpha_after": after["alpha"], "ci_low_after": after["ci_low"],
            "ci_high_after": after["ci_high"],
            "passes_after": bool(np.isfinite(after["alpha"]) and after["alpha"] >= p.threshold),
        }
        pools.append(entry)
        log.info("user_ratings %s/%s: α %.4f [%.4f, %.4f] on %d items, %d workers; after the gate α %.4f (%d + %d "
                 "workers dropped)", pool, criterion, entry["alpha"], entry["ci_low"], entry["ci_high"],
                 entry["items"], entry["workers"], entry["alpha_after"], len(dropped_control), len(dropped_alpha))
        kept_parts.append(kept if level != "pairwise" else kept.assign(score=np.nan))  # choices keep no code
        why = {d["annotator_id"]: d["reason"] for d in dropped_alpha}
        why.update({a: f"control accuracy below {p.min_control_accuracy}" for a in dropped_control})
        counts = g.groupby("annotator_id").size()
        w = pd.DataFrame({"annotator_id": counts.index, "labels": counts.to_numpy()})
        w = w.merge(acc, on="annotator_id", how="left")
        w.insert(0, "criterion", criterion)
        w.insert(0, "pool", pool)
        w["dropped"] = w["annotator_id"].isin(why)
        w["reason"] = w["annotator_id"].map(why)
        worker_rows.append(w)
    gated = pd.concat(kept_parts, ignore_index=True) if kept_parts else readable.iloc[:0]
    workers = pd.concat(worker_rows, ignore_index=True) if worker_rows else pd.DataFrame()
    accounting = []
    for pool in sorted(set(labels["pool"]) | set(rejected.get("pool", pd.Series(dtype=str)))):
        lab = labels[labels["pool"] == pool]
        rej = rejected[rejected["pool"] == pool] if len(rejected) else rejected
        ctl = control[control["pool"] == pool] if len(control) else control
        accounting.append({
            "pool": pool, "labels_read": int(len(lab)), "labels_unreadable": int(lab["read_error"].notna().sum()),
            "unreadable_by_rule": lab["read_error"].dropna().map(lambda s: s.split(" ")[0]).value_counts().to_dict(),
            "control_answers": int(len(ctl)), "lines_without_labels": int(len(rej)),
            "lines_without_labels_by_rule": rej["rule"].value_counts().to_dict() if len(rej) else {},
            "labels_after_gate": int((gated["pool"] == pool).sum()) if len(gated) else 0,
        })
    agreement = {"threshold": p.threshold, "confidence": p.confidence, "pools": pools, "accounting": accounting,
                 "mode": "agreement-only: labels of items this run did not generate are kept (no candidates here)"}
    return agreement, gated.reset_index(drop=True), workers


def _fmt(v, nd: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def rating_report(agreement: dict) -> str:
    """The agreement report in Markdown: α per pool and criterion with its interval, the gate, the accounting."""
    conf = int(round(agreement["confidence"] * 100))
    lines = ["# Agreement on the rating exports", "",
             f"Krippendorff's α per pool and criterion, with a {conf} % bootstrap interval over items; the gate's "
             f"threshold is α ≥ {agreement['threshold']}. {agreement['mode'].capitalize()}.", "",
             f"| pool | criterion | level | items | workers | labels / item | α | {conf} % interval | passes | "
             "control accuracy | dropped | α after the gate |",
             "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|"]
    for e in agreement["pools"]:
        dropped = len(e["dropped_by_control"]) + len(e["dropped_by_alpha"])
        lines.append(f"| {e['pool']} | {e['criterion']} | {e['level']} | {e['items']} | {e['workers']} | "
                     f"{e['labels_per_item']} | {_fmt(e['alpha'])} | [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}] | "
                     f"{'yes' if e['passes'] else 'no'} | {_fmt(e['control_accuracy'], 3)} | {dropped} | "
                     f"{_fmt(e['alpha_after'])} [{_fmt(e['ci_low_after'])}, {_fmt(e['ci_high_after'])}] |")
    lines += ["", "## Every line accounted for", "",
              "| pool | labels read | unreadable | control answers | lines without labels | labels after the gate |",
              "|---|---:|---:|---:|---:|---:|"]
    for a in agreement["accounting"]:
        lines.append(f"| {a['pool']} | {a['labels_read']} | {a['labels_unreadable']} {a['unreadable_by_rule'] or ''} | "
                     f"{a['control_answers']} | {a['lines_without_labels']} {a['lines_without_labels_by_rule'] or ''} | "
                     f"{a['labels_after_gate']} |")
    return "\n".join(lines) + "\n"
