"""Gao et al.'s functional forms for gold reward against KL (Gao, Schulman & Hilton 2023, *Scaling laws for reward
model overoptimization*), fitted to a measured curve.

With ``d = √KL`` (KL to the reference, nats per sequence) and the gain ``R(d)`` = gold at ``d`` minus gold at the
curve's start (``d = 0``, the SFT policy):

* best-of-n (``form="bon"``): ``R(d) = d (α − β d)``, peak at ``d* = α / (2β)``;
* RL (``form="rl"``): ``R(d) = d (α − β log d)``, peak at ``d* = exp(α/β − 1)``.

Both are linear in ``(α, β)`` and pass through the origin, so :func:`fit_gao` is ordinary least squares with no
intercept (:func:`numpy.linalg.lstsq` on the columns ``[d, −d²]`` or ``[d, −d log d]``). A curve has a peak only
when ``β > 0`` (and, for best-of-n, ``α > 0``); otherwise the fit says so and reports no peak.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

FORMS = {"bon": "gold(d) - gold(0) = d (alpha - beta d)", "rl": "gold(d) - gold(0) = d (alpha - beta log d)"}


def gao_design(d, form: Literal["bon", "rl"]) -> np.ndarray:
    """The least-squares columns ``[d, −d²]`` (bon) or ``[d, −d log d]`` (rl) of the points ``d > 0``."""
    d = np.asarray(d, dtype=float)
    if form == "bon":
        return np.column_stack([d, -d * d])
    if form == "rl":
        return np.column_stack([d, -d * np.log(d)])
    raise ValueError(f"unknown form {form!r}: 'bon' or 'rl'")


def gao_gain(d, alpha: float, beta: float, form: Literal["bon", "rl"]) -> np.ndarray:
    """The fitted gain at ``d`` (0 at ``d = 0`` for both forms)."""
    d = np.asarray(d, dtype=float)
    out = np.zeros_like(d)
    pos = d > 0
    out[pos] = gao_design(d[pos], form) @ np.array([alpha, beta])
    return out


def fit_gao(d, gold_gain, form: Literal["bon", "rl"]) -> dict:
    """Fit ``form`` to the points ``(d, gold_gain)`` (``d = √KL``; the gain is gold minus the curve's gold at
    ``d = 0``).

    Points with ``d ≤ 0`` add nothing to either form (both are 0 there) and are left out, as are non-finite ones.

    Returns:
        ``form``, ``alpha``, ``beta`` (None with fewer than two points at ``d > 0``), ``r2`` (1 − residual / total
        sum of squares of the gains about their mean, on the fitted points; None when the gains do not vary),
        ``n_points``, ``d_max`` (the largest fitted ``d``), and the peak: ``peak_d``, ``peak_kl`` (= ``peak_d²``),
        ``peak_gain`` and ``peak_in_range`` (``0 < peak_d ≤ d_max``), all None when the fitted curve has no
        maximum at ``d > 0`` (``β ≤ 0``: the gain never turns down; best-of-n with ``α ≤ 0``: it falls from the
        start), ``no_peak`` then saying which.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}: 'bon' or 'rl'")
    d, y = np.asarray(d, dtype=float), np.asarray(gold_gain, dtype=float)
    keep = np.isfinite(d) & np.isfinite(y) & (d > 0)
    d, y = d[keep], y[keep]
    out: dict = {"form": form, "equation": FORMS[form], "alpha": None, "beta": None, "r2": None,
                 "n_points": int(len(d)), "d_max": float(d.max()) if len(d) else None, "peak_d": None,
                 "peak_kl": None, "peak_gain": None, "peak_in_range": None, "no_peak": None}
    if len(d) < 2:
        out["no_peak"] = f"{len(d)} point(s) at d > 0: nothing to fit"
        return out
    x = gao_design(d, form)
    (alpha, beta), *_ = np.linalg.lstsq(x, y, rcond=None)
    alpha, beta = float(alpha), float(beta)
    resid = y - x @ np.array([alpha, beta])
    total = float(((y - y.mean()) ** 2).sum())
    out.update(alpha=alpha, beta=beta, r2=1.0 - float((resid ** 2).sum()) / total if total > 0 else None)
    if beta <= 0:
        out["no_peak"] = "beta <= 0: the fitted gain never turns down"
        return out
    if form == "bon":
        if alpha <= 0:
            out["no_peak"] = "alpha <= 0: the fitted gain falls from d = 0"
            return out
        peak = alpha / (2 * beta)
    else:
        exponent = alpha / beta - 1
        if exponent > 700:  # exp would overflow: a peak far beyond any KL
            out["no_peak"] = "the fitted peak lies beyond exp(700)"
            return out
        peak = math.exp(exponent)
    out.update(peak_d=peak, peak_kl=peak * peak, peak_gain=float(gao_gain([peak], alpha, beta, form)[0]),
               peak_in_range=bool(peak <= out["d_max"]))
    return out
