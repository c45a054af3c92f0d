"""Nodes of the evaluation pipeline: the SFT policy and every aligned policy on the same test prompts.

Three channels, one comparison table:

* automatic: BERTScore and MAUVE (the project's encoder), Self-BLEU (sacrebleu), MTLD
  (lexicalrichness), length, distinct-n, factual consistency against the source;
* expert: the SIMULATED expert panel (``ru_rlhf.experts``): Likert 1–5 per criterion and A/B
  choices against SFT, with bootstrap confidence intervals and α among the experts;
* behavioural: trigger-phrase and refusal rates, length and MTLD shifts, the n-gram shift (JSD).

Plus interpretation: Captum attributions on the reward model and a before/after case table.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from ru_rlhf import experts
from ru_rlhf.agreement import alpha
from ru_rlhf.judges import contexts_from_table, factual_claims, has_flattery, is_refusal
from ru_rlhf.metrics import bertscore_f1, bootstrap_ci, distinct_n, mauve_score, mtld, ngram_shift, self_bleu
from ru_rlhf.pipelines.evaluation.params import EvaluationParams
from ru_rlhf.text import words
from ru_rlhf.vocabulary import CRITERIA

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- collect
def collect_generations(sft_generations: pd.DataFrame, *method_generations: pd.DataFrame) -> pd.DataFrame:
    """One long table of every model's test generations (``model`` = ``sft`` or the method)."""
    frames = [sft_generations, *method_generations]
    out = pd.concat(frames, ignore_index=True).rename(columns={"method": "model"})
    keys = out.groupby("model").apply(lambda g: frozenset(zip(g["prompt_id"], g["sample"])), include_groups=False)
    if keys.nunique() != 1:
        raise ValueError("evaluation: the models' test generations are not on the same prompts and samples; "
                         "re-run `kedro run --pipelines alignment`")
    out["response"] = out["response"].fillna("")
    out["empty"] = out["response"].str.strip() == ""
    log.info("collect_generations: %d rows, models %s, empty %d", len(out), sorted(out["model"].unique()),
             int(out["empty"].sum()))
    return out


# --------------------------------------------------------------------------- automatic
def _features(encoder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states of the encoder (MAUVE's features)."""
    import torch

    model, tok = encoder
    model.eval()
    out = []
    with torch.no_grad():
        for b in range(0, len(texts), batch_size):
            enc = tok(texts[b:b + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            enc = {k: v.to(model.device) for k, v in enc.items()}
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * m).sum(1) / m.sum(1).clamp_min(1)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


def automatic_metrics(generations: pd.DataFrame, prompts: pd.DataFrame, alignment_prompts: pd.DataFrame,
                      encoder, params: dict) -> pd.DataFrame:
    """Per model: BERTScore F1 against the reference answers, MAUVE against the references, Self-BLEU
    across each prompt's samples, MTLD, mean length, distinct-1/2, factual consistency, empty count."""
    p = EvaluationParams.of(params)
    start = time.perf_counter()
    ref = dict(zip(prompts["prompt_id"], prompts["reference"].fillna("")))
    ctx = contexts_from_table(alignment_prompts[alignment_prompts["role"] == "test"])
    model, _ = encoder
    layers = p.bertscore_num_layers or model.config.num_hidden_layers
    rng = np.random.default_rng(p.seed)
    ref_texts = [ref[x] for x in generations.drop_duplicates("prompt_id")["prompt_id"]]
    q = _features(encoder, ref_texts[: p.mauve_max_texts])
    rows = []
    for name, g in generations.groupby("model", sort=False):
        cands = [t if t.strip() else "" for t in g["response"]]
        f1 = bertscore_f1(cands, [ref[x] for x in g["prompt_id"]], p.bertscore_model, layers)
        texts = [t for t in cands if t.strip()] or [""]
        if len(texts) > p.mauve_max_texts:
            texts = list(rng.choice(texts, p.mauve_max_texts, replace=False))
        pf = _features(encoder, texts)
        sb = [self_bleu(list(s["response"])) for _, s in g.groupby("prompt_id") if len(s) > 1]
        claims = [factual_claims(ctx[pid], r) for pid, r in zip(g["prompt_id"], g["response"])]
        supported, total = sum(c[0] for c in claims), sum(c[1] for c in claims)
        rows.append({
            "model": name, "responses": len(g), "empty": int(g["empty"].sum()),
            "bertscore_f1": float(np.mean(f1)), "mauve": mauve_score(pf, q, seed=p.seed),
            "self_bleu": float(np.nanmean(sb)) if sb else float("nan"),
            "mtld": mtld(" ".join(cands)), "length_words": float(np.mean([len(words(t)) for t in cands])),
            "distinct_1": distinct_n(cands, 1), "distinct_2": distinct_n(cands, 2),
            # no checkable claim: nothing false was said (as the truthfulness judge counts it); `claims` = 0 shows it
            "factual_consistency": supported / total if total else 1.0, "claims": int(total),
        })
    out = pd.DataFrame(rows)
    log.info("automatic_metrics: %.1f s\n%s", time.perf_counter() - start, out.round(4).to_string())
    return out


# --------------------------------------------------------------------------- expert
def expert_channel(generations: pd.DataFrame, alignment_prompts: pd.DataFrame,
                   params: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The SIMULATED expert panel on the same ``expert_pairs`` random test items for every model.

    Returns:
        ``(likert, ab, summary)``: every expert's 1–5 scores per item and criterion; A/B choices
        against SFT with the order randomised per item (SFT against itself too); and per model the mean Likert per criterion
        with 95 % bootstrap CIs, the win rate against SFT with its CI, and α among the experts.
    """
    p = EvaluationParams.of(params)
    ctx = contexts_from_table(alignment_prompts[alignment_prompts["role"] == "test"])
    keys = generations[generations["model"] == "sft"][["prompt_id", "sample"]].drop_duplicates()
    rng = np.random.default_rng(p.seed)
    items = keys.iloc[np.sort(rng.choice(len(keys), min(p.expert_pairs, len(keys)), replace=False))]
    sel = generations.merge(items, on=["prompt_id", "sample"])
    likert_frames, ab_frames, rows = [], [], []
    sft = sel[sel["model"] == "sft"].set_index(["prompt_id", "sample"])
    for name, g in sel.groupby("model", sort=False):
        g = g.sort_values(["prompt_id", "sample"])
        lk = experts.rate(ctx, list(g["prompt_id"]), list(g["response"]))
        lk["sample"] = g["sample"].to_numpy()[lk["row"]]
        lk.insert(0, "model", name)
        likert_frames.append(lk)
        row: dict[str, Any] = {"model": name, "items": len(g)}
        for c in CRITERIA:
            per_item = lk.groupby("row")[c].mean()
            m, lo, hi = bootstrap_ci(per_item, p.bootstrap, p.seed)
            row.update({f"likert_{c}": m, f"likert_{c}_lo": lo, f"likert_{c}_hi": hi})
            long = lk.rename(columns={"expert_id": "annotator_id", c: "score"}).assign(
                item_id=lk["row"].astype(str))
            row[f"expert_alpha_{c}"] = alpha(long[["annotator_id", "item_id", "score"]], "ordinal")
        row["likert_mean"] = float(lk["likert"].mean())
        # the SFT policy is compared with itself too: every choice is a tie, its win rate 0.5 measured
        base = sft.loc[list(zip(g["prompt_id"], g["sample"])), "response"].tolist()
        flip = rng.random(len(g)) < 0.5  # the side each model is shown on, per item
        a = [b if f else r for r, b, f in zip(g["response"], base, flip)]
        b = [r if f else b for r, b, f in zip(g["response"], base, flip)]
        ch = experts.pairwise(ctx, list(g["prompt_id"]), a, b)
        shown_first = ~flip[ch["row"].to_numpy()]
        # map back to "model" / "sft" / "tie"
        ch["winner"] = np.where(ch["choice"] == "tie", "tie",
                                np.where((ch["choice"] == "a") == shown_first, "model", "sft"))
        ch.insert(0, "model", name)
        ab_frames.append(ch)
        wins = (ch["winner"] == "model") + 0.5 * (ch["winner"] == "tie")
        m, lo, hi = bootstrap_ci(wins.to_numpy(dtype=float), p.bootstrap, p.seed)
        row.update({"win_rate_vs_sft": m, "win_rate_lo": lo, "win_rate_hi": hi,
                    "ties": int((ch["winner"] == "tie").sum())})
        rows.append(row)
    likert = pd.concat(likert_frames, ignore_index=True)
    ab = pd.concat(ab_frames, ignore_index=True)
    summary = pd.DataFrame(rows)
    log.info("expert_channel (SIMULATED experts):\n%s", summary.round(3).to_string())
    return likert, ab, summary


# --------------------------------------------------------------------------- behavioural
def behavioural_channel(generations: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Trigger-phrase and refusal rates, length and MTLD shifts versus SFT, and the bigram shift.

    Returns:
        ``(table, shifts)``: one row per model; per model the JSD of its bigram distribution
        against SFT's and the bigrams whose share rose and fell most.
    """
    sft = generations[generations["model"] == "sft"]
    sft_len = float(np.mean([len(words(t)) for t in sft["response"]]))
    sft_mtld = mtld(" ".join(sft["response"]))
    rows, shifts = [], {}
    for name, g in generations.groupby("model", sort=False):
        length = float(np.mean([len(words(t)) for t in g["response"]]))
        m = mtld(" ".join(g["response"]))
        shift = ngram_shift(list(sft["response"]), list(g["response"]), n=2)
        shifts[name] = shift
        rows.append({
            "model": name,
            "trigger_rate": float(np.mean([has_flattery(t, lang) for t, lang in zip(g["response"], g["lang"])])),
            "refusal_rate": float(np.mean([is_refusal(t, lang) for t, lang in zip(g["response"], g["lang"])])),
            "empty_rate": float(g["empty"].mean()), "length_shift": length - sft_len,
            "mtld_shift": m - sft_mtld, "bigram_jsd_vs_sft": shift["jsd"],
        })
    return pd.DataFrame(rows), shifts


# --------------------------------------------------------------------------- interpretation
def reward_attributions(reward_model, preference_pairs: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, str]:
    """Captum LayerIntegratedGradients on the reward model's embeddings, per head: which tokens of a
    few chosen and rejected test responses push that head's score up or down.

    Returns:
        ``(table, markdown)``: one row per (pair, side, head) with the top tokens and their
        attributions, and the same as a short markdown report.
    """
    import torch
    from captum.attr import LayerIntegratedGradients

    from ru_rlhf.models.policy import format_prompt
    from ru_rlhf.models.reward import encode, model_inputs

    p = EvaluationParams.of(params)
    rm, tok = reward_model
    rm.eval()
    rows = []
    test = preference_pairs[preference_pairs["split"] == "test"]
    for h_idx, head in enumerate(rm.heads):
        pairs = test[test["criterion"] == head]
        if pairs.empty:
            continue
        pairs = pairs.sample(n=min(p.attribution_pairs, len(pairs)), random_state=p.seed)

        def forward(input_ids, attention_mask, response_mask, match, h=h_idx):
            return rm(input_ids, attention_mask, response_mask, match)["scores"][:, h]

        lig = LayerIntegratedGradients(forward, rm.encoder.get_input_embeddings())
        for pr in pairs.itertuples(index=False):
            for side, text in (("chosen", pr.chosen), ("rejected", pr.rejected)):
                enc = encode(tok, [format_prompt(pr.prompt)], [text], rm.max_length)  # as the RM was trained
                start = int(enc["response_start"][0])
                enc = model_inputs(enc, next(rm.parameters()).device)
                ids, mask = enc["input_ids"], enc["attention_mask"]
                baseline = torch.full_like(ids, tok.pad_token_id)
                attr = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask, enc["response_mask"], enc["match"]),
                                     n_steps=p.attribution_steps, internal_batch_size=p.attribution_steps)
                per_token = attr.sum(-1)[0]
                tokens = [tok.decode([i]).strip() or tok.convert_ids_to_tokens(i) for i in ids[0].tolist()]
                # the response part only
                specials = set(tok.all_special_tokens)
                resp = [(t, float(a)) for t, a in zip(tokens[start:], per_token[start:].tolist()) if t not in specials]
                top_up = sorted(resp, key=lambda x: -x[1])[:5]
                top_down = sorted(resp, key=lambda x: x[1])[:5]
                with torch.no_grad():
                    s = float(forward(ids, mask, enc["response_mask"], enc["match"]))
                rows.append({"head": head, "pair_id": pr.pair_id, "side": side, "score": s,
                             "response": text[:200], "top_positive": top_up, "top_negative": top_down})
    table = pd.DataFrame(rows)
    md = ["# Reward-model attributions (Captum LayerIntegratedGradients, embedding layer)", "",
          "Tokens of test responses that raise (+) or lower (−) each head's score. Pairs are drawn from the "
          "test split; the preferences behind them come from SIMULATED annotators.", ""]
    for head, g in table.groupby("head", sort=False) if len(table) else []:
        md += [f"## {head}", "", "| side | score | response | raises | lowers |", "|---|---|---|---|---|"]
        for r in g.itertuples(index=False):
            up = ", ".join(f"{t} ({a:+.3f})" for t, a in r.top_positive)
            down = ", ".join(f"{t} ({a:+.3f})" for t, a in r.top_negative)
            md.append(f"| {r.side} | {r.score:.3f} | {r.response.replace('|', '/')[:80]} | {up} | {down} |")
        md.append("")
    table["top_positive"] = table["top_positive"].map(lambda x: [f"{t} {a:+.4f}" for t, a in x]) if len(table) else []
    table["top_negative"] = table["top_negative"].map(lambda x: [f"{t} {a:+.4f}" for t, a in x]) if len(table) else []
    return table, "\n".join(md)


def case_table(generations: pd.DataFrame, params: dict) -> str:
    """Markdown: per method, the test prompts where it changed the answer most (by gold score)."""
    p = EvaluationParams.of(params)
    sft = generations[generations["model"] == "sft"].set_index(["prompt_id", "sample"])
    md = ["# Before / after cases", "",
          "Per method, the test items whose gold score (mean of the three judges) changed most against the SFT "
          "policy's answer to the same prompt and seed.", ""]
    for name, g in generations[generations["model"] != "sft"].groupby("model", sort=False):
        g = g.set_index(["prompt_id", "sample"])
        delta = (g["gold"] - sft.loc[g.index, "gold"]).rename("delta")
        top = delta.abs().sort_values(ascending=False).head(p.cases).index
        md += [f"## {name}", "", "| prompt | SFT answer | gold | aligned answer | gold | Δ |", "|---|---|---|---|---|---|"]
        for key in top:
            prompt = str(g.at[key, "prompt"]).replace("\n", " ").replace("|", "/")[:90]
            a = str(sft.at[key, "response"]).replace("\n", " ").replace("|", "/")[:90]
            b = str(g.at[key, "response"]).replace("\n", " ").replace("|", "/")[:90]
            md.append(f"| {prompt} | {a} | {sft.at[key, 'gold']:.2f} | {b} | {g.at[key, 'gold']:.2f} | "
                      f"{delta[key]:+.2f} |")
        md.append("")
    return "\n".join(md)


# --------------------------------------------------------------------------- report
# The comparison's channels: per metric its column, direction (↑ higher is better, ↓ lower, · no better side),
# unit and how it is measured. The markdown shows one table per channel with this legend under it.
CHANNELS: dict[str, list[tuple[str, str, str, str]]] = {
    "Gold judges, reward model and KL": [
        ("gold", "↑", "[0, 1]", "mean of the three gold judges (equal weights) on each answer"),
        ("rm", "↑", "z-score", "the multi-head reward model's scalar (weighted z-scored heads)"),
        ("kl", "↓", "nats / token", "mean per-token KL(policy ‖ SFT reference) along each answer"),
    ],
    "Automatic text metrics": [
        ("bertscore_f1", "↑", "[0, 1]", "BERTScore F1 against the reference answer"),
        ("mauve", "↑", "[0, 1]", "MAUVE of the answers against the references (encoder features)"),
        ("self_bleu", "↓", "[0, 100]", "mean sentence BLEU of each sample against the prompt's other samples"),
        ("mtld", "↑", "tokens", "MTLD lexical diversity of all answers joined"),
        ("distinct_2", "↑", "[0, 1]", "distinct bigrams / all bigrams"),
        ("length_words", "·", "words", "mean answer length"),
        ("factual_consistency", "↑", "[0, 1]", "checkable claims supported by the prompt's facts"),
        ("empty", "↓", "answers", "empty answers"),
    ],
    "Simulated expert panel (SIMULATED experts, not people)": [
        ("likert_helpfulness", "↑", "1–5", "mean Likert score"),
        ("likert_truthfulness", "↑", "1–5", "mean Likert score"),
        ("likert_harmlessness", "↑", "1–5", "mean Likert score"),
        ("win_rate_vs_sft", "↑", "[0, 1]", "blind A/B against SFT, ties count half; [95 % bootstrap interval]"),
    ],
    "Behaviour": [
        ("trigger_rate", "↓", "[0, 1]", "answers with a flattery / trigger phrase"),
        ("refusal_rate", "·", "[0, 1]", "answers that refuse"),
        ("length_shift", "·", "words", "mean length minus SFT's"),
        ("mtld_shift", "·", "tokens", "MTLD minus SFT's"),
        ("bigram_jsd_vs_sft", "·", "[0, 1]", "Jensen–Shannon divergence of bigram distributions from SFT's"),
    ],
}
# why a metric can be missing on a run (shown under its table when it is)
NOT_AVAILABLE = {
    "self_bleu": "needs two or more samples per prompt (`alignment.common.test_samples`; 1 in smoke)",
    "mauve": "needs answers with text (a model that answered nothing has no features)",
    "bertscore_f1": "needs reference answers",
    "win_rate_vs_sft": "needs the expert channel (SIMULATED experts)",
}


def _cell(col: str, value, row: dict) -> str:
    """One value at its metric's precision: KLs in scientific notation when tiny, rates and scores to 3
    decimals, counts as integers, a win rate with its interval; ``n/a`` for a missing value."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if col == "kl":
        return f"{value:.2e}" if value and abs(value) < 1e-3 else f"{value:.4f}"
    if col == "empty":
        return str(int(value))
    if col == "win_rate_vs_sft" and row.get("win_rate_lo") == row.get("win_rate_lo"):
        return f"{value:.3f} [{row['win_rate_lo']:.3f}, {row['win_rate_hi']:.3f}]"
    if col in ("mtld", "length_words", "length_shift", "mtld_shift"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def comparison_markdown(table: pd.DataFrame) -> list[str]:
    """The comparison as one markdown table per channel (:data:`CHANNELS`), each with its legend and a note on
    every metric that is not available on this run."""
    md = []
    rows = table.to_dict(orient="records")
    for channel, metrics in CHANNELS.items():
        cols = [m for m in metrics if m[0] in table.columns]
        if not cols:
            continue
        md += [f"## {channel}", "", "| model | " + " | ".join(f"{c} {d}" for c, d, _, _ in cols) + " |",
               "|---|" + "---|" * len(cols)]
        md += ["| " + " | ".join([str(r["model"]), *(_cell(c, r.get(c), r) for c, _, _, _ in cols)]) + " |"
               for r in rows]
        md += ["", "| metric | better | unit | what it measures |", "|---|---|---|---|"]
        md += [f"| {c} | {'higher' if d == '↑' else 'lower' if d == '↓' else 'no better side'} | {u} | {w} |"
               for c, d, u, w in cols]
        missing = [c for c, _, _, _ in cols if table[c].isna().any()]
        for c in missing:
            models = ", ".join(str(m) for m in table.loc[table[c].isna(), "model"])
            md += ["", f"n/a in `{c}` ({models}): {NOT_AVAILABLE.get(c, 'not computable for this model on this run')}."]
        md.append("")
    return md


def comparison_table(automatic: pd.DataFrame, expert_summary: pd.DataFrame, behaviour: pd.DataFrame,
                     generations: pd.DataFrame, emissions: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """Models × metrics (automatic, expert, behavioural, gold, RM and KL), as parquet and markdown.

    The markdown has one table per channel, each with a legend of metric, direction, unit and method
    (:func:`comparison_markdown`). ``emissions`` (CodeCarbon's per-training-node rows,
    :class:`ru_rlhf.hooks.CarbonHook`) adds a cost section: energy, CO₂ and wall time per alignment method
    and per earlier training stage.
    """
    base = generations.groupby("model", sort=False).agg(gold=("gold", "mean"), rm=("rm_scalar", "mean"),
                                                        kl=("kl", "mean")).reset_index()
    table = base.merge(automatic, on="model").merge(expert_summary, on="model", how="left").merge(
        behaviour, on="model")
    md = ["# Evaluation: every model on the same test prompts", "",
          "Gold comes from the bundled world's judges; the expert panel is SIMULATED. Whether a method beats SFT "
          "is decided by a test in `alignment_summary.json` (`beats_sft`, with its interval), not by these means.",
          "", *comparison_markdown(table)]
    md += cost_section(emissions)
    return table, "\n".join(md) + "\n"


def cost_section(emissions: pd.DataFrame | None) -> list[str]:
    """Markdown lines: energy, CO₂ and wall time of every training node that has been measured."""
    if emissions is None or emissions.empty:
        return ["", "## Cost", "", "No training node has been measured yet (CodeCarbon rows appear as nodes train)."]
    e = emissions.copy()
    e["order"] = ~e["node"].str.startswith("alignment.")
    e = e.sort_values(["order", "method"])
    lines = ["", "## Cost of training (CodeCarbon offline tracker; estimates)", "",
             f"Country for the grid's carbon intensity: {', '.join(sorted(e['country'].dropna().astype(str).unique()))}. "
             "CPU power is measured through RAPL where the machine exposes it, else estimated from the CPU's TDP.", "",
             "| method / stage | node | wall time (s) | energy (Wh) | CO₂ (g) | status |", "|---|---|---|---|---|---|"]
    for r in e.itertuples(index=False):
        lines.append(f"| {r.method} | {r.node} | {r.seconds:.1f} | {1000 * r.energy_kwh:.3f} | {1000 * r.co2_kg:.3f} "
                     f"| {r.status} |")
    return lines


def plot_criteria(expert_summary: pd.DataFrame):
    """Per-criterion expert Likert means with 95 % bootstrap CIs, one bar group per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    models = list(expert_summary["model"])
    width = 0.8 / len(CRITERIA)
    for k, c in enumerate(CRITERIA):
        m = expert_summary[f"likert_{c}"].to_numpy()
        err = np.vstack([m - expert_summary[f"likert_{c}_lo"].to_numpy(), expert_summary[f"likert_{c}_hi"].to_numpy() - m])
        ax.bar(np.arange(len(models)) + k * width, m, width, yerr=err, capsize=3, label=c)
    ax.set_xticks(np.arange(len(models)) + width)
    ax.set_xticklabels(models)
    ax.set_xlabel("model")
    ax.set_ylabel("Likert 1–5 (simulated experts)")
    ax.set_ylim(1, 5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_reward_vs_kl(generations: pd.DataFrame):
    """Mean RM reward and gold reward against mean KL to the reference, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = generations.groupby("model").agg(kl=("kl", "mean"), rm=("rm_scalar", "mean"), gold=("gold", "mean"))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3))
    for ax, col, unit in zip(axes, ("rm", "gold"), ("reward-model scalar (z)", "gold reward [0, 1]")):
        ax.scatter(agg["kl"], agg[col])
        # models at the same point share one label (PPO that kept SFT's weights sits on SFT)
        points: dict[tuple, list[str]] = {}
        for name, r in agg.iterrows():
            points.setdefault((round(float(r["kl"]), 12), round(float(r[col]), 6)), []).append(str(name))
        for (x, y), names in points.items():
            ax.annotate(", ".join(names), (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("mean per-token KL to SFT (nats)")
        ax.set_ylabel(f"mean {unit}")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.locator_params(axis="x", nbins=4)
    fig.tight_layout()
    return fig


def plot_shifts(behaviour: pd.DataFrame):
    """Length shift (words) and refusal / trigger-phrase rates per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 0.9 * len(behaviour)), 3.3))  # room for every model's name
    x = np.arange(len(behaviour))
    axes[0].bar(x, behaviour["length_shift"])
    axes[0].axhline(0, color="black", linewidth=0.5)
    axes[0].set_ylabel("length shift vs SFT (words)")
    axes[1].bar(x - 0.2, behaviour["refusal_rate"], 0.4, label="refusal")
    axes[1].bar(x + 0.2, behaviour["trigger_rate"], 0.4, label="trigger phrase")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("rate of answers")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, behaviour["model"], rotation=90, ha="center", fontsize=8)
        ax.set_xlabel("model")
        if not ax.patches or all(p.get_height() == 0 for p in ax.patches):
            ax.plot(x, [0] * len(x), "_", color="black", markersize=15)
            ax.text(0.5, 0.5, "every value is 0", transform=ax.transAxes, ha="center", fontsize=9)
    fig.tight_layout()
    return fig


def evaluation_summary(table: pd.DataFrame, shifts: dict, expert_ab: pd.DataFrame) -> dict:
    """The comparison table as JSON, with the n-gram shifts and the A/B counts (for the note and cards)."""
    return {"_note": "expert columns come from SIMULATED experts",
            "models": {r["model"]: {k: (None if isinstance(v, float) and np.isnan(v) else v)
                                    for k, v in r.items() if k != "model"}
                       for r in table.to_dict(orient="records")},
            "ngram_shift": shifts,
            "ab_counts": expert_ab.groupby(["model", "winner"]).size().unstack(fill_value=0).to_dict(orient="index")
            if len(expert_ab) else {}}
