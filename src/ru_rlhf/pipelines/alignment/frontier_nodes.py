"""Shared nodes of the alignment pipeline after the methods: the over-optimisation curves (proxy and gold along the
RL runs' saved checkpoints and along best-of-n) and the reward–KL frontier of every method, with Gao et al.'s fits
(:mod:`ru_rlhf.frontier`).

The curves were the ethics audit's; they are measured here so that their fits reach ``alignment_summary.json``.
The audit reads ``overoptimisation_curves``, ``overoptimisation_spearman`` and the frontier through the catalog.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pandas as pd

from ru_rlhf import audit
from ru_rlhf.frontier import fit_gao, gao_gain
from ru_rlhf.pipelines.alignment.params import CommonParams, FrontierParams
from ru_rlhf.scoring import Scorer, rm_scorer, score_policy

log = logging.getLogger(__name__)

BEST_OF_N = "best_of_n"
FRONTIER_COLUMNS = ["source", "curve", "step_or_n", "kl_seq", "sqrt_kl", "gold", "gold_se", "proxy", "kl_token",
                    "items", "gold_fit"]


def _se(values) -> float:
    v = pd.Series(values, dtype=float).dropna()
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


# --------------------------------------------------------------------------- over-optimisation curves
def _score_set(policy, reference, tokenizer, scorer: Scorer, table: pd.DataFrame, temperature: float, seed: int,
               max_new_tokens: int, batch_size: int, samples: int = 1) -> pd.DataFrame:
    """Sample from ``policy`` on ``table``'s prompts (:func:`ru_rlhf.scoring.score_policy`: one generation call,
    top-p 1); per answer ``rm`` (the RM's scalar), ``gold``, ``expert`` (Likert) and, with a reference,
    ``kl_token`` and ``kl_seq``."""
    scored = score_policy(policy, tokenizer, table, seed=seed, temperature=temperature, samples=samples,
                          max_new_tokens=max_new_tokens, batch_size=batch_size, gold=True, reward=scorer,
                          expert=True, reference=reference)
    return scored.rename(columns={"rm_scalar": "rm", "kl": "kl_token", "kl_sum": "kl_seq"})


def curve_prompts(alignment_prompts: pd.DataFrame, p: FrontierParams) -> pd.DataFrame:
    """The test prompts every point of the frontier's curves is measured on: ``overopt_prompts`` of them, a
    sample seeded by ``frontier.seed``."""
    test = alignment_prompts[alignment_prompts["role"] == "test"]
    rng = np.random.default_rng(p.seed)
    return test.iloc[np.sort(rng.choice(len(test), min(p.overopt_prompts, len(test)), replace=False))]


def frontier_method_points(reward_model, policy_tokenizer, reference_policy, alignment_prompts: pd.DataFrame,
                           frontier: dict, common: dict, **policies) -> pd.DataFrame:
    """Each policy's point of the frontier measured as the curves' points are: one answer per curve prompt
    (:func:`curve_prompts`) sampled at temperature 1 with top-p 1 and ``frontier.max_new_tokens``, the same seeds
    as the curves; its mean sequence KL to the reference, gold and proxy. So a method sits on the same axes as
    the checkpoint and best-of-n curves (its test generations use the test temperature, nucleus and budgets per
    task, which give another KL). ``policies``: by name (``sft`` and each method), the policy.

    Returns:
        One row per policy: ``curve`` (its name), ``kl_seq``, ``sqrt_kl``, ``gold``, ``gold_se``, ``proxy``,
        ``kl_token``, ``items``.
    """
    p, c = FrontierParams.of(frontier), CommonParams.of(common)
    scorer = rm_scorer(reward_model, c.reward_weights)
    sel = curve_prompts(alignment_prompts, p)
    rows = []
    for name, policy in policies.items():
        s = _score_set(policy, reference_policy, policy_tokenizer, scorer, sel, 1.0, p.seed, p.max_new_tokens,
                       p.batch_size)
        kl = float(s["kl_seq"].mean())
        rows.append({"curve": name, "kl_seq": kl, "sqrt_kl": math.sqrt(max(kl, 0.0)), "gold": float(s["gold"].mean()),
                     "gold_se": _se(s["gold"]), "proxy": float(s["rm"].mean()), "kl_token": float(s["kl_token"].mean()),
                     "items": len(s)})
    log.info("frontier_method_points: %s", {r["curve"]: (round(r["kl_seq"], 3), round(r["gold"], 4)) for r in rows})
    return pd.DataFrame(rows)


def _load(saved):
    """A saved state: the catalog's loader (``CheckpointsDataset``), or the folder the trainer wrote (what a
    training node returns, as an in-memory run passes it on)."""
    if callable(saved):
        return saved()
    from ru_rlhf.models.policy import load_policy

    return load_policy(str(saved))


def overoptimisation(reward_model, policy_tokenizer, sft_policy, reference_policy, alignment_prompts: pd.DataFrame,
                     frontier: dict, common: dict, **checkpoints: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Proxy (RM) versus gold and expert scores along the saved checkpoints of ``frontier.overopt_methods`` and
    along best-of-n sampling from the SFT policy (KL of best-of-n = log n − (n−1)/n).

    ``checkpoints``: by RL run, the states its trainer saved (the catalog's ``alignment.<method>.checkpoints``:
    ``{"step-NNNN": load}``, each loaded when its point of the curve is scored; or the ``{"step-NNNN": folder}`` the
    trainer returned, in a run without the catalog); the pipeline passes those of every
    run that saves them, and ``overopt_methods`` says which to follow. A listed run that saved none gives its SFT
    point alone (logged); a listed name that saves no checkpoints at all is an error. The RM's scalar uses
    ``common.reward_weights``, as the test generations do.

    Returns:
        ``(curves, spearman)``: one row per point of each curve (``curve, step_or_n, kl, kl_token, sqrt_kl,
        proxy, gold, gold_se, expert, items`` and :func:`ru_rlhf.audit.overoptimisation_flags`' columns) and
        Spearman(RM, expert) per KL bucket.
    """
    from scipy.stats import spearmanr

    p, c = FrontierParams.of(frontier), CommonParams.of(common)
    unknown = [m for m in p.overopt_methods if m not in checkpoints]
    if unknown:
        raise ValueError(f"alignment.frontier.overopt_methods: {unknown} save no checkpoints; the runs that do: "
                         f"{sorted(checkpoints)}")
    start = time.perf_counter()
    scorer = rm_scorer(reward_model, c.reward_weights)
    sel = curve_prompts(alignment_prompts, p)
    curves, buckets = [], []
    for method in p.overopt_methods:
        saved = checkpoints.get(method) or {}
        points = [(0, sft_policy)] + [(int(name.split("-")[1]), load) for name, load in sorted(saved.items())]
        rows, items = [], {}
        for step, model in points:
            policy = model if step == 0 else _load(model).to(device=sft_policy.device, dtype=sft_policy.dtype)
            s = _score_set(policy, reference_policy, policy_tokenizer, scorer, sel, 1.0, p.seed, p.max_new_tokens,
                           p.batch_size)
            kl = float(s["kl_seq"].mean())
            items[step] = s[["rm", "gold"]].rename(columns={"rm": "proxy"})  # the same prompts at every step
            rows.append({"curve": method, "step_or_n": step, "kl": kl, "kl_token": float(s["kl_token"].mean()),
                         "sqrt_kl": math.sqrt(max(kl, 0.0)), "proxy": float(s["rm"].mean()),
                         "gold": float(s["gold"].mean()), "gold_se": _se(s["gold"]),
                         "expert": float(s["expert"].mean()), "items": len(s)})
            rho = spearmanr(s["rm"], s["expert"]).statistic if s["expert"].nunique() > 1 else float("nan")
            buckets.append({"curve": method, "step_or_n": step, "kl": kl, "spearman_rm_expert": float(rho),
                            "items": len(s)})
        if len(rows) == 1:
            log.warning("overoptimisation: no saved %s checkpoints (alignment.%s.checkpoints): its curve is the SFT "
                        "point alone", method, method)
        curves.append(audit.overoptimisation_flags(pd.DataFrame(rows), items=items, key="step_or_n", alpha=p.alpha))
    # best-of-n from the SFT policy
    bon_sel = sel.iloc[: p.bon_prompts]
    s = _score_set(sft_policy, None, policy_tokenizer, scorer, bon_sel, p.bon_temperature, p.seed + 1,
                   p.max_new_tokens, p.batch_size, samples=max(p.bon_ns))
    bon = audit.best_of_n(s, p.bon_ns, proxy="rm", columns=("gold", "expert")).rename(columns={"n": "step_or_n"})
    bon_items, bon_se = {}, []
    for n in p.bon_ns:
        sub = s[s["sample"] < n]
        best = sub.loc[sub.groupby("prompt_id")["rm"].idxmax()].sort_values("prompt_id")
        bon_items[n] = best[["rm", "gold"]].rename(columns={"rm": "proxy"})
        bon_se.append(_se(best["gold"]))
        rho = spearmanr(best["rm"], best["expert"]).statistic if best["expert"].nunique() > 1 else float("nan")
        buckets.append({"curve": BEST_OF_N, "step_or_n": n, "kl": audit.best_of_n_kl(n),
                        "spearman_rm_expert": float(rho), "items": len(best)})
    bon = bon.assign(curve=BEST_OF_N, items=bon["prompts"], gold_se=bon_se).drop(columns="prompts")
    curves.append(audit.overoptimisation_flags(bon, items=bon_items, key="step_or_n", alpha=p.alpha))
    out = pd.concat(curves, ignore_index=True)
    log.info("overoptimisation: %d points, %d flagged, %.1f s", len(out), int(out["flag"].sum()),
             time.perf_counter() - start)
    return out, pd.DataFrame(buckets)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_overoptimisation(curves: pd.DataFrame):
    """A panel per curve: the proxy (RM) and, on a twin axis, gold against √KL; a red ``!`` at a flagged step."""
    plt = _plt()
    names = list(curves["curve"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[curves["curve"] == name].sort_values("sqrt_kl")
        ax.plot(c["sqrt_kl"], c["proxy"], marker="o", color="tab:orange", label="proxy (RM)")
        ax.set_xlabel("√KL (nats, per sequence)")
        ax.set_ylabel("RM score")
        ax2 = ax.twinx()
        ax2.plot(c["sqrt_kl"], c["gold"], marker="s", color="tab:green", label="gold")
        ax2.set_ylabel("gold reward")
        for _, r in c[c["flag"]].iterrows():
            ax2.annotate("!", (r["sqrt_kl"], r["gold"]), color="red")
        ax.set_title(name)
        ax.locator_params(axis="x", nbins=4)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the reward–KL frontier
def _method_point(gen: pd.DataFrame, source: str, curve: str) -> dict:
    """A policy's point from its test generations: mean sequence KL (``kl_sum``), gold, its standard error over
    the generations, the RM scalar and the per-token KL."""
    kl_seq = gen["kl_sum"] if "kl_sum" in gen else gen["kl"] * gen["tokens"]
    kl = float(kl_seq.mean())
    return {"source": source, "curve": curve, "step_or_n": pd.NA, "kl_seq": kl, "sqrt_kl": math.sqrt(max(kl, 0.0)),
            "gold": float(gen["gold"].mean()), "gold_se": _se(gen["gold"]), "proxy": float(gen["rm_scalar"].mean()),
            "kl_token": float(gen["kl"].mean()), "items": len(gen), "gold_fit": float("nan")}


def reward_kl_frontier(sft_generations: pd.DataFrame, curves: pd.DataFrame, method_points: pd.DataFrame | None = None,
                       **generations: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Test gold against sequence KL to the reference for every policy and every curve, and Gao et al.'s fit of
    each curve (:func:`ru_rlhf.frontier.fit_gao`).

    ``generations``: each method's test generations (``alignment.<method>.generations``); ``curves``: the
    over-optimisation curves (``overoptimisation_curves``). The SFT and method points are on every test prompt
    (at the test temperature); a curve is on ``frontier.overopt_prompts`` of them (at temperature 1) and starts at
    its own SFT point (step 0 / n = 1), from which its gain is measured. With ``method_points``
    (:func:`frontier_method_points`) the SFT and method points are those instead, measured on the curves' prompts
    at temperature 1 like the curves, and the test generations' KL and gold are kept as ``test_kl_seq`` and
    ``test_gold``.

    Returns:
        ``(table, fits)``: one row per point (``source`` sft / method / checkpoint / best_of_n, ``curve``,
        ``step_or_n``, ``kl_seq``, ``sqrt_kl``, ``gold``, ``gold_se``, ``proxy``, ``kl_token``, ``items``,
        ``gold_fit``: the fitted curve's gold there), and per curve its fit (``form`` bon for best-of-n, rl for a
        checkpoint curve; ``alpha``, ``beta``, ``peak_kl`` …) with ``base_gold`` (its start) and ``peak_gold`` (None unless the peak is in the measured range).
    """
    rows = [_method_point(sft_generations, "sft", "sft")]
    rows += [_method_point(gen, "method", m) for m, gen in generations.items()]
    if method_points is not None:  # the frontier's own measurement of each policy, on the curves' axes
        measured = method_points.set_index("curve")
        for r in rows:
            r["test_kl_seq"], r["test_gold"] = r["kl_seq"], r["gold"]
            if r["curve"] in measured.index:
                m = measured.loc[r["curve"]]
                r.update({k: float(m[k]) for k in ("kl_seq", "sqrt_kl", "gold", "gold_se", "proxy", "kl_token")},
                         items=int(m["items"]))
    fits: dict = {"_note": "Gao et al. (2023) forms fitted by least squares (numpy.linalg.lstsq, no intercept) to "
                           "each curve's gold gain over its own start (step 0 / n = 1) against d = sqrt(KL), KL to "
                           "the reference in nats per sequence: best_of_n gain = d (alpha - beta d), RL gain = "
                           "d (alpha - beta log d); peak_kl = d*^2 at the fitted maximum (None: no maximum, "
                           "see no_peak); the curves are on a subset of the test prompts (items)"}
    for name, c in curves.groupby("curve", sort=False):
        c = c.sort_values("step_or_n")
        source, form = ("best_of_n", "bon") if name == BEST_OF_N else ("checkpoint", "rl")
        base = float(c["gold"].iloc[0])
        fit = fit_gao(c["sqrt_kl"], c["gold"] - base, form)
        fitted = base + gao_gain(c["sqrt_kl"], fit["alpha"], fit["beta"], form) if fit["alpha"] is not None \
            else np.full(len(c), np.nan)
        fits[name] = {**fit, "source": source, "base_gold": base, "points": len(c), "items": int(c["items"].iloc[0]),
                      # a peak beyond the measured range is an extrapolation: its gold is not reported
                      "peak_gold": base + fit["peak_gain"] if fit["peak_gain"] is not None and fit["peak_in_range"]
                      else None}
        for r, g in zip(c.itertuples(index=False), fitted):
            rows.append({"source": source, "curve": name, "step_or_n": int(r.step_or_n), "kl_seq": float(r.kl),
                         "sqrt_kl": float(r.sqrt_kl), "gold": float(r.gold),
                         "gold_se": float(getattr(r, "gold_se", float("nan"))), "proxy": float(r.proxy),
                         "kl_token": float(getattr(r, "kl_token", float("nan"))), "items": int(r.items),
                         "gold_fit": float(g)})
    table = pd.DataFrame(rows, columns=FRONTIER_COLUMNS + (["test_kl_seq", "test_gold"] if method_points is not None
                                                           else []))
    table["step_or_n"] = table["step_or_n"].astype("Int64")
    log.info("reward_kl_frontier: %d points; fits %s", len(table),
             {k: {x: v[x] for x in ("alpha", "beta", "peak_kl")} for k, v in fits.items() if not k.startswith("_")})
    return table, fits


def plot_reward_kl_frontier(table: pd.DataFrame, fits: dict):
    """Gold (left) and the proxy (right) against √KL: SFT a star, each method's chosen point labelled, the
    checkpoint and best-of-n curves as lines with their fitted Gao curves dashed."""
    plt = _plt()
    from ru_rlhf.figures import no_data

    fig, (gold_ax, proxy_ax) = plt.subplots(1, 2, figsize=(11, 4.6))
    if table.empty:
        for ax in (gold_ax, proxy_ax):
            no_data(ax, "no policy was scored")
        return fig
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    on_curves = table[table["source"].isin(["checkpoint", "best_of_n"])]  # a method's point may share its name
    for i, name in enumerate(on_curves["curve"].unique()):
        c = on_curves[on_curves["curve"] == name].sort_values("sqrt_kl")
        color = colors[i % len(colors)]
        label = f"{name} (n = 1…{int(c['step_or_n'].max())})" if name == BEST_OF_N else f"{name} checkpoints"
        gold_ax.plot(c["sqrt_kl"], c["gold"], marker="o", color=color, label=label)
        proxy_ax.plot(c["sqrt_kl"], c["proxy"], marker="o", color=color, label=label)
        fit = fits.get(name) or {}
        if fit.get("alpha") is not None:
            # drawn over the measured range (and to the peak when it lies within twice that range), never
            # extrapolated to a peak far beyond what was measured
            measured = float(c["sqrt_kl"].max())
            peak_d = fit["peak_d"] if fit.get("peak_d") is not None and fit["peak_d"] <= 2 * measured else 0.0
            d = np.linspace(0.0, max(measured, peak_d) * 1.05, 100)
            peak = (", no peak" if fit.get("peak_kl") is None else f", peak KL {fit['peak_kl']:.3g}"
                    + ("" if fit.get("peak_in_range") else " (beyond the measured range)"))
            gold_ax.plot(d, fit["base_gold"] + gao_gain(d, fit["alpha"], fit["beta"], fit["form"]), "--", color=color,
                         label=f"{name} fit: α={fit['alpha']:.3g}, β={fit['beta']:.3g}{peak}")
    points = table[table["source"].isin(["sft", "method"])]
    for ax, col in ((gold_ax, "gold"), (proxy_ax, "proxy")):
        m = points[points["source"] == "method"]
        ax.scatter(m["sqrt_kl"], m[col], color="black", marker="D", s=22, zorder=3, label="methods (chosen point)")
        # one label per place: methods at the same point (e.g. RL runs that kept their SFT start) share it
        for (x, y), at in m.groupby([m["sqrt_kl"].round(6), m[col].round(6)], sort=False):
            ax.annotate(", ".join(at["curve"]), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        s = points[points["source"] == "sft"]
        ax.scatter(s["sqrt_kl"], s[col], color="gold", edgecolor="black", marker="*", s=160, zorder=4, label="SFT")
        ax.set_xlabel("√KL to the reference (√nats, per sequence)")
    gold_ax.set_ylabel("test gold reward")
    gold_ax.set_title("gold (the judges)", fontsize=10)
    proxy_ax.set_ylabel("proxy: reward-model scalar")
    proxy_ax.set_title("proxy (the reward model being optimised)", fontsize=10)
    gold_ax.legend(fontsize=6.5, loc="lower right")
    sft = points[points["source"] == "sft"]
    curve_items = sorted({int(v) for v in on_curves["items"]})
    where = ("measured as the curves are (their prompts, temperature 1)" if "test_gold" in table.columns
             else "every test answer")
    fig.suptitle(f"Reward–KL frontier. SFT and methods: {where} ({int(sft['items'].iloc[0]) if len(sft) else 0} "
                 f"answers);\ncurves: a subset of the test prompts ({', '.join(map(str, curve_items)) or 'none'} answers "
                 f"per point), each from its own SFT point (step 0 / n = 1); dashed: Gao et al.'s fits over the "
                 f"measured range", fontsize=8.5)
    fig.tight_layout()
    return fig
