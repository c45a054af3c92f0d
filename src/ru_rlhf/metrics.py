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


# --------------------------------------------------------------------------- evaluation metrics
def self_bleu(texts: list[str]) -> float:
    """Self-BLEU of a set of samples (sacrebleu): the mean sentence BLEU of each text against the
    others as references. 100 for identical texts; NaN for fewer than two texts."""
    import sacrebleu

    if len(texts) < 2:
        return float("nan")
    scores = []
    for i, t in enumerate(texts):
        refs = [r for j, r in enumerate(texts) if j != i]
        scores.append(sacrebleu.sentence_bleu(t, refs).score)
    return float(sum(scores) / len(scores))


def mtld(text: str, threshold: float = 0.72) -> float:
    """MTLD (McCarthy & Jarvis 2010) of a text, from the ``lexicalrichness`` library; NaN without words.

    Words are our own tokenisation (``ru_rlhf.text.words``, Cyrillic-aware), joined so the library
    splits them back exactly.
    """
    from lexicalrichness import LexicalRichness

    toks = words(text)
    if not toks:
        return float("nan")
    lex = LexicalRichness(" ".join(toks), preprocessor=None, tokenizer=str.split)
    return float(lex.mtld(threshold=threshold))


def ngram_counts(texts: list[str], n: int = 2):
    from collections import Counter

    c: Counter = Counter()
    for t in texts:
        toks = words(t)
        c.update(" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return c


def ngram_shift(before: list[str], after: list[str], n: int = 2, top: int = 10) -> dict:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between the n-gram distributions of two sets of
    texts, and the n-grams whose share rose and fell most."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    a, b = ngram_counts(before, n), ngram_counts(after, n)
    vocab = sorted(set(a) | set(b))
    if not vocab:
        return {"jsd": 0.0, "increased": [], "decreased": []}
    pa = np.array([a[g] for g in vocab], dtype=float)
    pb = np.array([b[g] for g in vocab], dtype=float)
    pa = pa / pa.sum() if pa.sum() else np.full(len(vocab), 1 / len(vocab))
    pb = pb / pb.sum() if pb.sum() else np.full(len(vocab), 1 / len(vocab))
    jsd = float(jensenshannon(pa, pb, base=2) ** 2)
    delta = pb - pa
    order = np.argsort(delta)
    return {"jsd": round(jsd, 6),
            "increased": [(vocab[i], round(float(delta[i]), 5)) for i in order[::-1][:top] if delta[i] > 0],
            "decreased": [(vocab[i], round(float(delta[i]), 5)) for i in order[:top] if delta[i] < 0]}


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile bootstrap confidence interval of ``values``."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(v.mean()), float(lo), float(hi)


ALPHA = 0.05  # the level of every "beats" / "flagged" decision in the reports


def paired_test(diff, level: float = 0.95) -> dict:
    """The paired difference of two systems on the same items: mean, standard error, the t interval at
    ``level`` and the two-sided one-sample t-test p-value of mean 0 (``scipy.stats.ttest_1samp``).

    With fewer than two differences, or all of them equal, there is no spread to test: the interval is
    the mean itself when all are equal (p = 1 if it is 0, else 0) and NaN with fewer than two."""
    import numpy as np
    from scipy import stats

    d = np.asarray(diff, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "se": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "p_value": float("nan")}
    se = float(d.std(ddof=1) / np.sqrt(n))
    if se == 0:
        return {"n": n, "mean": mean, "se": 0.0, "ci_low": mean, "ci_high": mean,
                "p_value": 1.0 if mean == 0 else 0.0}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return {"n": n, "mean": mean, "se": se, "ci_low": mean - half, "ci_high": mean + half,
            "p_value": float(stats.ttest_1samp(d, 0.0).pvalue)}


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (family-wise error control); NaN stays NaN.

    Written here because scipy (1.17) has Benjamini–Hochberg (:func:`benjamini_hochberg`) but not Holm, and
    statsmodels is not a dependency: sort ascending, multiply the i-th smallest by (m − i), take the
    running maximum, cap at 1."""
    import numpy as np

    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
        out[order] = adjusted
    return out.tolist()


def benjamini_hochberg(p_values) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), via ``scipy.stats.false_discovery_control``;
    NaN stays NaN."""
    import numpy as np
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out.tolist()


def _bertscore_model_path(model_path) -> tuple[str, str | None]:
    """A path bert-score loads as the encoder it is: bert-score 0.3.13 chooses the model class from the name it is
    given, and loads any name containing ``t5`` as a T5 encoder (and one starting with ``scibert`` from its own
    cache). A data root such as ``/tmp/smoke_run-x1t5ab`` then failed the run. Such a path is linked, as ``encoder``,
    from a fresh temporary folder whose path has neither; returns the path and that folder (None: not needed)."""
    import tempfile
    from pathlib import Path

    path = str(model_path)
    if "t5" not in path and not path.startswith("scibert"):
        return path, None
    for _ in range(50):
        folder = tempfile.mkdtemp(prefix="ru_rlhf_bertscore_")
        if "t5" not in folder:
            break
        Path(folder).rmdir()
    else:
        raise RuntimeError(f"bert-score would load {path} as a T5 model (its name holds 't5'), and every temporary "
                           f"folder's does too: set TMPDIR to a folder whose path holds no 't5'")
    (Path(folder) / "encoder").symlink_to(Path(path).resolve(), target_is_directory=True)
    return str(Path(folder) / "encoder"), folder


def bertscore_f1(candidates: list[str], references: list[str], model_path: str, num_layers: int,
                 batch_size: int = 64) -> list[float]:
    """BERTScore F1 of each candidate against its reference, with a local encoder directory.

    bert-score 0.3.13 needs ``num_layers`` for a model it does not know, and a tokenizer with
    ``model_max_length`` set (ours is saved with it). An empty candidate scores 0 (it matches
    nothing) and an empty reference gives NaN; bert-score is not asked about either (with
    transformers 5 its empty-text path calls a tokenizer method that no longer exists).
    """
    import torch
    from bert_score import score

    device = "cuda" if torch.cuda.is_available() else "cpu"  # bert-score loads its own copy of the encoder
    out = [0.0 if not c.strip() else float("nan") for c in candidates]
    idx = [i for i, (c, r) in enumerate(zip(candidates, references)) if c.strip() and r.strip()]
    if idx:
        from transformers.utils import logging as hf_logging

        # bert-score loads the encoder's masked-LM checkpoint as a bare BertModel on every call: transformers'
        # load report (the MLM head unused, the pooler new) and its progress bar say nothing here
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path, link_dir = _bertscore_model_path(model_path)
        try:
            _, _, f1 = score([candidates[i] for i in idx], [references[i] for i in idx], model_type=path,
                             num_layers=num_layers, batch_size=batch_size, lang=None, verbose=False, device=device)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
            if link_dir is not None:
                import shutil

                shutil.rmtree(link_dir, ignore_errors=True)
        for i, v in zip(idx, f1.tolist()):
            out[i] = float(v)
    return out


def mauve_score(p_features, q_features, seed: int = 0) -> float:
    """MAUVE between two sets of text features (``mauve-text`` with precomputed features, as it
    needs for an encoder other than GPT-2)."""
    import mauve

    out = mauve.compute_mauve(p_features=p_features, q_features=q_features, seed=seed, verbose=False,
                              device_id=-1, num_buckets="auto")
    return float(out.mauve)
