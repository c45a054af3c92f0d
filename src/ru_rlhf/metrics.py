"""Text metrics shared by every pipeline (diversity, language identity)."""

from __future__ import annotations

import re

from ru_rlhf.text import words

_TATAR_LETTERS = re.compile(r"[әөүҗңһӘӨҮҖҢҺ]")
# Frequent Tatar words written without Tatar-specific letters.
_TATAR_WORDS = {"бу", "белән", "елның", "булды", "дип", "юк", "бар", "кеше", "сум", "мин", "сез", "ул", "да", "дә",
                "кайда", "кайчан", "ничә", "күпме", "рәхмәт", "яңалык", "буенча", "бирә", "килде", "узды", "ачылды"}


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct-n over a set of texts: unique word n-grams / all word n-grams (0 if there are none)."""
    grams = []
    for t in texts:
        toks = words(t)
        grams += [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def is_tatar(text: str) -> bool:
    """True when a text reads as Tatar: a Tatar-specific letter, or at least a third of its words
    among frequent Tatar words written without them (for short answers such as «35 кеше»)."""
    if not isinstance(text, str) or not text.strip():
        return False
    if _TATAR_LETTERS.search(text):
        return True
    toks = words(text)
    return bool(toks) and sum(t in _TATAR_WORDS for t in toks) / len(toks) >= 0.34


def pairwise_metrics(diff, gold_margin) -> dict:
    """How a reward difference (chosen − rejected) ranks pairs.

    Returns:
        ``accuracy`` (against the gold ordering, on pairs where gold is not tied),
        ``accuracy_annotators`` (the share of pairs where the annotators' chosen response scores
        higher), ``auc`` (ROC AUC of the difference for the gold ordering, each pair counted in
        both orientations so both classes occur) and the pair counts.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    d = np.asarray(diff, dtype=float)
    g = np.asarray(gold_margin, dtype=float)
    out = {"pairs": int(len(d)), "accuracy_annotators": round(float((d > 0).mean()), 4) if len(d) else None}
    ok = g != 0
    out["gold_untied_pairs"] = int(ok.sum())
    if ok.sum() == 0:
        return {**out, "accuracy": None, "auc": None}
    y = (g[ok] > 0).astype(int)
    out["accuracy"] = round(float(((d[ok] > 0).astype(int) == y).mean()), 4)
    scores = np.concatenate([d[ok], -d[ok]])
    labels = np.concatenate([y, 1 - y])
    out["auc"] = round(float(roc_auc_score(labels, scores)), 4)
    return out


def expected_calibration_error(probs, labels, n_bins: int = 10):
    """Expected calibration error with equal-width bins, and the per-bin table (for a reliability plot)."""
    import numpy as np
    import pandas as pd

    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    rows, ece = [], 0.0
    for b in range(n_bins):
        m = idx == b
        conf = float(p[m].mean()) if m.any() else float("nan")
        acc = float(y[m].mean()) if m.any() else float("nan")
        if m.any():
            ece += m.mean() * abs(acc - conf)
        rows.append({"bin": b, "count": int(m.sum()), "confidence": conf, "accuracy": acc})
    return float(ece), pd.DataFrame(rows)
