"""Inter-annotator agreement: Krippendorff's α on the long annotation table, and the gate.

α is computed by the ``krippendorff`` package, which takes a raters × units matrix; this
module builds that matrix from the long table (``item_id, annotator_id, criterion, score``), so
every caller (curation, the expert channel, the tests on published examples) goes through the
same orientation. Leave-one-out α per annotator measures each annotator's effect on agreement.
"""

from __future__ import annotations

import logging
import math

import krippendorff
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def reliability_matrix(long: pd.DataFrame, value_col: str = "score") -> np.ndarray:
    """The raters × units matrix of one criterion's ratings (NaN where a rater did not rate)."""
    wide = long.pivot_table(index="annotator_id", columns="item_id", values=value_col, aggfunc="first")
    return wide.to_numpy(dtype=float)


def alpha(long: pd.DataFrame, level: str = "ordinal", value_col: str = "score") -> float:
    """Krippendorff's α of one criterion's ratings; NaN when fewer than two raters share a unit."""
    if long.empty:
        return float("nan")
    matrix = reliability_matrix(long, value_col)
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    if matrix.shape[0] < 2 or not pairable.any():
        return float("nan")
    values = matrix[~np.isnan(matrix)]
    if len(np.unique(values)) < 2:
        return 1.0  # everyone gave the same value: perfect (and trivial) agreement
    return float(krippendorff.alpha(reliability_data=matrix[:, pairable], level_of_measurement=level))


def alpha_interval(long: pd.DataFrame, level: str = "ordinal", value_col: str = "score", n_boot: int = 1000,
                   seed: int = 0, confidence: float = 0.95) -> dict:
    """α with a bootstrap interval: the units (items) are resampled with replacement ``n_boot`` times and α is
    computed on each resample (each drawn unit keeps all its ratings); the interval is the percentile one.

    Written here because ``krippendorff`` computes α only; resampling units is the usual bootstrap for a
    reliability coefficient when units are the sampled population (raters are fixed).
    """
    point = alpha(long, level, value_col)
    matrix = reliability_matrix(long, value_col)
    matrix = matrix[:, (~np.isnan(matrix)).sum(axis=0) >= 2]
    if matrix.shape[1] < 2 or not np.isfinite(point) or n_boot <= 0:  # no interval asked for, or none possible
        return {"alpha": point, "ci_low": float("nan"), "ci_high": float("nan"), "units": int(matrix.shape[1]),
                "n_boot": 0, "level": level}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        sample = matrix[:, rng.integers(0, matrix.shape[1], matrix.shape[1])]
        if len(np.unique(sample[~np.isnan(sample)])) < 2:
            draws.append(1.0)
            continue
        draws.append(float(krippendorff.alpha(reliability_data=sample, level_of_measurement=level)))
    low, high = np.quantile(draws, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {"alpha": point, "ci_low": float(low), "ci_high": float(high), "units": int(matrix.shape[1]),
            "n_boot": n_boot, "level": level}


def alpha_table(long: pd.DataFrame, level: str = "ordinal", by: list[str] | None = None,
                value_col: str = "score") -> pd.DataFrame:
    """α per criterion (and per any extra grouping, e.g. ``lang``), with unit and rater counts."""
    keys = ["criterion", *(by or [])]
    rows = []
    for key, g in long.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), "alpha": alpha(g, level, value_col), "units": g["item_id"].nunique(),
                     "annotators": g["annotator_id"].nunique(), "ratings": len(g), "level": level})
    return pd.DataFrame(rows)


def leave_one_out(long: pd.DataFrame, level: str = "ordinal") -> pd.DataFrame:
    """For each annotator and criterion: α without that annotator and the change it makes.

    A positive ``delta`` (α rises when the annotator is left out) marks an annotator who lowers
    agreement.
    """
    rows = []
    for criterion, g in long.groupby("criterion"):
        base = alpha(g, level)
        for ann in sorted(g["annotator_id"].unique()):
            without = alpha(g[g["annotator_id"] != ann], level)
            rows.append({"annotator_id": ann, "criterion": criterion, "alpha_all": base,
                         "alpha_without": without, "delta": without - base,
                         "ratings": int((g["annotator_id"] == ann).sum())})
    return pd.DataFrame(rows)


def mean_alpha(long: pd.DataFrame, level: str) -> float:
    values = [alpha(g, level) for _, g in long.groupby("criterion")]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def drop_unreliable(long: pd.DataFrame, level: str, min_gain: float = 0.005, max_drop: int | None = None,
                    threshold: float | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Remove the least reliable annotators one at a time while agreement rises.

    At each step, the annotator whose removal raises the mean α over criteria the most is dropped,
    if it raises it by at least ``min_gain``; it stops when no removal does, or (with a
    ``threshold``) as soon as every criterion's α has reached it: the gate removes annotators
    only while it fails, never to polish agreement further. The caller checks again afterwards.

    Returns:
        ``(kept_long, dropped)``: ``dropped`` lists ``annotator_id``, the mean α before and after,
        and the reason, in the order they were dropped.
    """
    dropped: list[dict] = []
    current = long
    limit = max_drop if max_drop is not None else max(0, long["annotator_id"].nunique() - 2)
    while len(dropped) < limit:
        if threshold is not None and _passes(current, level, threshold):
            break
        base = mean_alpha(current, level)
        best, best_alpha = None, base
        for ann in sorted(current["annotator_id"].unique()):
            a = mean_alpha(current[current["annotator_id"] != ann], level)
            if a > best_alpha:
                best, best_alpha = ann, a
        if best is None or best_alpha - base < min_gain:
            break
        dropped.append({"annotator_id": best, "mean_alpha_before": round(base, 4),
                        "mean_alpha_after": round(best_alpha, 4),
                        "reason": f"leaving {best} out raises mean α from {base:.3f} to {best_alpha:.3f}"})
        log.info("gate: dropped %s (mean α %.3f → %.3f)", best, base, best_alpha)
        current = current[current["annotator_id"] != best]
    return current, dropped



def _passes(long: pd.DataFrame, level: str, threshold: float) -> bool:
    values = [alpha(g, level) for _, g in long.groupby("criterion")]
    return all(not math.isnan(v) and v >= threshold for v in values)
