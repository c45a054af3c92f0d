"""Nodes of the preference_curation pipeline.

candidates → gold scores → simulated annotator panel (+ imported human labels) → the α gate →
preference pairs (per criterion and overall) → a Hugging Face DatasetDict and its card.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pandera.pandas as pa

from ru_rlhf.agreement import alpha_table, drop_unreliable, leave_one_out
from ru_rlhf.feedback import long_to_pairs
from ru_rlhf.io.annotations import LONG_COLUMNS, control_accuracy
from ru_rlhf.judges import has_flattery, is_refusal, judge_contexts, score_all
from ru_rlhf.metrics import is_tatar
from ru_rlhf.models.policy import format_prompt
from ru_rlhf.pipelines.preference_curation.params import CurationParams
from ru_rlhf.schemas import split_by_schema
from ru_rlhf.templates import render
from ru_rlhf.text import comparison_key, same_text, words
from ru_rlhf.vocabulary import CRITERIA

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- responses and gold
def explode_candidates(candidates: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate response, ``response_id = <prompt_id>#<k>``, with its sampling."""
    rows = []
    for c in candidates.itertuples(index=False):
        for k, (resp, samp) in enumerate(zip(c.responses, c.sampling)):
            rows.append({"response_id": f"{c.prompt_id}#{k}", "prompt_id": c.prompt_id, "k": k,
                         "doc_id": c.doc_id, "task_type": c.task_type, "lang": c.lang, "split": c.split,
                         "response": resp, "temperature": samp["temperature"], "top_p": samp["top_p"]})
    return pd.DataFrame(rows)


def score_gold(candidates: pd.DataFrame, prompts: pd.DataFrame, facts: pd.DataFrame,
               documents: pd.DataFrame) -> pd.DataFrame:
    """Gold scores of every candidate on the three criteria, with the features biases act on.

    Returns:
        One row per response: ``response_id, prompt_id, lang, task_type, split, response``, the
        three gold scores, ``n_words``, ``flattery`` and ``refusal`` flags.
    """
    responses = explode_candidates(candidates)
    ctx = judge_contexts(prompts, facts, documents)
    scores = [score_all(ctx[r.prompt_id], r.response) for r in responses.itertuples(index=False)]
    out = pd.concat([responses, pd.DataFrame(scores)], axis=1)
    out["n_words"] = out["response"].map(lambda t: len(words(t)))
    out["flattery"] = [has_flattery(t, lang) for t, lang in zip(out["response"], out["lang"])]
    out["refusal"] = [is_refusal(t, lang) for t, lang in zip(out["response"], out["lang"])]
    log.info("score_gold: %d responses; mean gold %s", len(out), out[list(CRITERIA)].mean().round(3).to_dict())
    return out


# --------------------------------------------------------------------------- the simulated panel
def draw_panel(params: dict) -> pd.DataFrame:
    """The simulated annotators and their biases (seeded); ``careless`` ones rate at random."""
    p = CurationParams.of(params)
    rng = np.random.default_rng(p.seed)
    panel = p.panel
    ids = [f"ann_{i:02d}" for i in range(1, panel.pool_size + 1)]
    unknown = set(panel.careless) - set(ids)
    if unknown:
        raise ValueError(f"careless annotators {sorted(unknown)} are not in the pool {ids[0]}…{ids[-1]}")
    return pd.DataFrame({
        "annotator_id": ids,
        "noise_sd": rng.uniform(*panel.noise_sd, len(ids)).round(3),
        "leniency": rng.uniform(*panel.leniency, len(ids)).round(3),
        "length_bias": rng.uniform(*panel.length_bias, len(ids)).round(3),
        "sycophancy_bias": rng.uniform(*panel.sycophancy_bias, len(ids)).round(3),
        "careless": [a in panel.careless for a in ids],
        "careless_random_rate": [panel.careless_random_rate if a in panel.careless else 0.0 for a in ids],
        "source": "simulated",
    })


def simulate_annotations(gold: pd.DataFrame, annotators: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Simulated ratings 1–5 per criterion: gold through each annotator's own biases and noise.

    Each prompt's six candidates are rated by the same ``per_item`` annotators, drawn per prompt.
    Rating = round(1 + 4·gold + leniency + noise), the noise larger on borderline items (gold
    near 0.5) than on clear ones, plus, on helpfulness and truthfulness, a
    length bias (longer answers look better, up to +``length_bias`` at 40 words) and a
    sycophancy bias (+``sycophancy_bias`` when a flattery phrase is present); a careless
    annotator instead rates uniformly at random with probability ``careless_random_rate``.
    Every row is labelled ``source = "simulated"``.
    """
    p = CurationParams.of(params)
    rng = np.random.default_rng(p.seed + 7)
    ann = annotators.set_index("annotator_id")
    ids = ann.index.to_numpy()
    prompt_ids = gold["prompt_id"].unique()
    chosen = {pid: rng.choice(ids, size=p.panel.per_item, replace=False) for pid in prompt_ids}
    g = gold.reset_index(drop=True)
    rows_resp = np.repeat(np.arange(len(g)), p.panel.per_item)
    rows_ann = np.concatenate([chosen[pid] for pid in g["prompt_id"]])
    a = ann.loc[rows_ann]
    length = np.minimum(1.0, g["n_words"].to_numpy()[rows_resp] / 40.0)
    flat = g["flattery"].to_numpy()[rows_resp].astype(float)
    frames = []
    for criterion in CRITERIA:
        gold_c = g[criterion].to_numpy()[rows_resp]
        # annotators disagree more on borderline items than on clear ones: the noise is largest
        # at gold 0.5 and a third of that at gold 0 or 1
        sd = a["noise_sd"].to_numpy() * (1 / 3 + 2 / 3 * 4 * gold_c * (1 - gold_c))
        latent = 1 + 4 * gold_c + a["leniency"].to_numpy() + rng.normal(0, 1, len(rows_resp)) * sd
        if criterion != "harmlessness":
            latent += a["length_bias"].to_numpy() * length + a["sycophancy_bias"].to_numpy() * flat
        score = np.clip(np.rint(latent), 1, 5)
        random = rng.random(len(rows_resp)) < a["careless_random_rate"].to_numpy()
        score = np.where(random, rng.integers(1, 6, len(rows_resp)), score)
        frames.append(pd.DataFrame({
            "item_id": g["response_id"].to_numpy()[rows_resp], "prompt_id": g["prompt_id"].to_numpy()[rows_resp],
            "response_id": g["response_id"].to_numpy()[rows_resp], "annotator_id": rows_ann,
            "criterion": criterion, "score": score.astype(float), "choice": None, "source": "simulated",
        }))
    out = pd.concat(frames, ignore_index=True)
    log.info("simulate_annotations: %d ratings by %d annotators", len(out), out["annotator_id"].nunique())
    return out


# --------------------------------------------------------------------------- human labels
def annotation_schema(criteria: tuple[str, ...] = CRITERIA) -> pa.DataFrameSchema:
    """The long annotation table's schema: scores 1–5, known criterion, one rating per
    (item, annotator, criterion), a score or a choice."""
    known = (*criteria, "overall")
    return pa.DataFrameSchema(
        {
            "item_id": pa.Column(str, pa.Check(lambda s: s.str.len() > 0, name="non_empty_item_id")),
            "annotator_id": pa.Column(str, pa.Check(lambda s: s.str.len() > 0, name="non_empty_annotator")),
            "criterion": pa.Column(str, pa.Check(lambda s: s.isin(known), name="known_criterion")),
            "score": pa.Column(float, pa.Check(lambda s: s.between(1, 5), name="score_in_range_1_5"), nullable=True),
            "source": pa.Column(str),
        },
        checks=[pa.Check(lambda df: df["score"].notna() | df["choice"].notna(), name="score_or_choice")],
        unique=["item_id", "annotator_id", "criterion"], report_duplicates="exclude_first",
        strict=False, name="annotations",
    )


def import_human_labels(human_labels: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split the human label files the catalog read (``human_labels``, a
    :class:`~ru_rlhf.io.datasets.HumanLabelsDataset`: long tables and Toloka exports) into labels, control
    answers and the rows that cannot be used; with no files configured, the tables are empty.

    Returns:
        ``(labels, control, import_quarantine)``: labels in the long layout; control answers
        (golden tasks) with correctness; rows that could not be read or were rejected.
    """
    labels, control, quarantine = [], [], []
    for df in human_labels["long_tables"].values():
        bad = df[df["read_error"].notna()]
        quarantine.append(bad.rename(columns={"read_error": "rule"}))
        labels.append(df[df["read_error"].isna()].drop(columns=["read_error"]))
    for path, (lab, ctl, rej) in human_labels["toloka"].items():
        bad = lab[lab["read_error"].notna()]
        quarantine += [bad.rename(columns={"read_error": "rule"}), rej]
        labels.append(lab[lab["read_error"].isna()].drop(columns=["read_error"]))
        control.append(ctl)
        log.info("toloka %s: %d labels, %d control answers, %d rejected assignments dropped", path, len(lab),
                 len(ctl), len(rej))
    cols = [*LONG_COLUMNS, "source_file", "source_row"]
    lab = pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(columns=cols)
    ctl = pd.concat(control, ignore_index=True) if control else pd.DataFrame(columns=[*cols, "golden", "correct"])
    q = pd.concat(quarantine, ignore_index=True) if quarantine else pd.DataFrame(columns=[*cols, "rule"])
    return lab, ctl, q


def validate_annotations(simulated: pd.DataFrame, human: pd.DataFrame, import_quarantine: pd.DataFrame,
                         gold: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join simulated and human labels, check them against the schema, quarantine the failures.

    Human labels for responses this run did not produce are quarantined (``unknown_item``).
    Every row is accounted for: read = kept + quarantined.

    Returns:
        ``(annotations, quarantine)``; annotations carry ``lang``, ``task_type`` and ``split``.
    """
    human = human.copy()
    known = set(gold["response_id"])
    unknown = ~human["response_id"].isin(known)
    cols = [*LONG_COLUMNS, "source_file", "source_row", "id_normalised"]
    combined = pd.concat([simulated.reindex(columns=cols), human[~unknown].reindex(columns=cols)],
                         ignore_index=True)
    # the readers NFC-normalise and strip ids and names, and flag the rows they changed
    combined["id_normalised"] = combined["id_normalised"].fillna(False).astype(bool)
    combined["score"] = pd.to_numeric(combined["score"], errors="coerce").astype(float)
    kept, failed = split_by_schema(combined, annotation_schema())
    need = CurationParams.of(params).human_labels.min_ratings_per_annotator
    few = kept.groupby("annotator_id")["item_id"].transform("nunique") < need
    lonely = kept[few].assign(rule=f"annotator_rated_fewer_than_{need}_items")
    kept = kept[~few].reset_index(drop=True)
    quarantine = pd.concat([import_quarantine, human[unknown].assign(rule="unknown_item"), failed, lonely],
                           ignore_index=True)
    read = len(simulated) + len(human) + len(import_quarantine)
    if read != len(kept) + len(quarantine):
        raise RuntimeError(f"annotations lost rows: read {read} != kept {len(kept)} + quarantined {len(quarantine)}")
    meta = gold[["response_id", "lang", "task_type", "split"]]
    kept = kept.merge(meta, on="response_id", how="left")
    log.info("validate_annotations: %d kept (%s), %d quarantined", len(kept),
             kept["source"].value_counts().to_dict(), len(quarantine))
    return kept, quarantine[[c for c in quarantine.columns if c in
                             [*LONG_COLUMNS, "source_file", "source_row", "id_normalised", "rule"]]]


# --------------------------------------------------------------------------- the α gate
class AgreementGateError(RuntimeError):
    """Agreement below the threshold and the policy says stop."""


def agreement_schema(threshold: float) -> pa.DataFrameSchema:
    """The gate: every criterion's α at or above the threshold."""
    return pa.DataFrameSchema(
        {"criterion": pa.Column(str),
         "alpha": pa.Column(float, pa.Check(lambda s: s >= threshold, name=f"alpha_ge_{threshold}"))},
        strict=False, name="agreement")


def _alpha_dict(table: pd.DataFrame) -> dict:
    return {r.criterion: round(float(r.alpha), 4) for r in table.itertuples(index=False)}


def apply_agreement_gate(annotations: pd.DataFrame, control: pd.DataFrame, annotators: pd.DataFrame,
                         params: dict) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Krippendorff's α per criterion (and per language), the gate, and its policy.

    ``fail`` stops with α per criterion; ``drop_annotators`` removes the least reliable
    annotators one at a time while α rises, reports whom and why, and checks again.

    Returns:
        ``(gated_annotations, report, per_annotator)``: the report has ``before`` and ``after``
        α per criterion, by language too, and the dropped annotators; ``per_annotator`` has the
        leave-one-out change in α and control accuracy per annotator.
    """
    p = CurationParams.of(params).agreement
    scored = annotations[annotations["score"].notna()]
    before = alpha_table(scored, p.level)
    schema = agreement_schema(p.threshold)
    failing = before[before["alpha"] < p.threshold]
    loo = leave_one_out(scored, p.level)
    per_ann = loo.pivot_table(index="annotator_id", columns="criterion", values="delta").add_prefix("loo_delta_")
    per_ann = per_ann.reset_index().merge(control_accuracy(control), on="annotator_id", how="left")
    per_ann = per_ann.merge(annotators[["annotator_id", "careless"]], on="annotator_id", how="left")
    dropped: list[dict] = []
    kept = scored
    if len(failing):
        message = ", ".join(f"{r.criterion} α={r.alpha:.3f}" for r in before.itertuples())
        if p.on_fail == "fail":
            raise AgreementGateError(f"agreement below {p.threshold}: {message} (policy: fail)")
        kept, dropped = drop_unreliable(scored, p.level, p.min_gain, threshold=p.threshold)
    after = alpha_table(kept, p.level)
    try:
        schema.validate(after, lazy=True)
    except pa.errors.SchemaErrors as err:
        raise AgreementGateError(
            f"agreement below {p.threshold} after dropping {[d['annotator_id'] for d in dropped]}: "
            + ", ".join(f"{r.criterion} α={r.alpha:.3f}" for r in after.itertuples())) from err
    report = {
        "level": p.level, "threshold": p.threshold, "policy": p.on_fail,
        "before": _alpha_dict(before), "after": _alpha_dict(after),
        "by_lang_before": {lang: _alpha_dict(g) for lang, g in alpha_table(scored, p.level, by=["lang"]).groupby("lang")},
        "by_lang_after": {lang: _alpha_dict(g) for lang, g in alpha_table(kept, p.level, by=["lang"]).groupby("lang")},
        "dropped": dropped, "annotators_before": int(scored["annotator_id"].nunique()),
        "annotators_after": int(kept["annotator_id"].nunique()), "ratings_before": len(scored),
        "ratings_after": len(kept), "passed": True,
    }
    log.info("agreement gate: before %s, after %s, dropped %s", report["before"], report["after"],
             [d["annotator_id"] for d in dropped])
    return kept.reset_index(drop=True), report, per_ann


# --------------------------------------------------------------------------- pairs
def build_pairs(gated: pd.DataFrame, gold: pd.DataFrame, prompts: pd.DataFrame,
                params: dict) -> tuple[pd.DataFrame, dict]:
    """Preference pairs per prompt and criterion, and overall by weighted criteria.

    Candidates are ranked by mean annotator score; every two candidates whose mean differs by at
    least ``margin`` make a pair (ties and smaller margins are dropped); two texts that are the same
    after :func:`ru_rlhf.text.comparison_key` never make a pair (counted). ``agreement`` is the share of annotators who rated both and ordered them as
    the pair does.

    Returns:
        ``(pairs, counts)``.
    """
    p = CurationParams.of(params).pairs
    w = pd.Series(p.weights)
    crits = [*CRITERIA, "overall"]
    g = gold.set_index("response_id")
    gold_c = {c: g[c] for c in CRITERIA}
    gold_c["overall"] = (g[list(w.index)] * w).sum(axis=1) / w.sum()
    prompt_text = dict(zip(prompts["prompt_id"], prompts["prompt"]))
    rated = gated[gated["criterion"].isin(CRITERIA)]
    rows, identical, small = [], 0, 0
    for pid, grp in rated.groupby("prompt_id", sort=True):
        # scores[criterion] is an annotators × responses array (NaN where not rated)
        resp = sorted(grp["response_id"].unique())
        anns = sorted(grp["annotator_id"].unique())
        ri, ai = {r: i for i, r in enumerate(resp)}, {a: i for i, a in enumerate(anns)}
        scores = {c: np.full((len(anns), len(resp)), np.nan) for c in CRITERIA}
        for c, a, r, v in grp[["criterion", "annotator_id", "response_id", "score"]].itertuples(index=False):
            scores[c][ai[a], ri[r]] = v
        scores["overall"] = sum(scores[c] * wt for c, wt in w.items()) / w.sum()
        for criterion in crits:
            sc = scores[criterion]
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(sc, axis=0) if len(anns) else np.full(len(resp), np.nan)
            n = (~np.isnan(sc)).sum(axis=0)
            for i in range(len(resp)):
                for j in range(i + 1, len(resp)):
                    if np.isnan(mean[i]) or np.isnan(mean[j]):
                        continue
                    if abs(mean[i] - mean[j]) < p.margin:
                        small += 1
                        continue
                    a, b = (i, j) if mean[i] > mean[j] else (j, i)
                    ch, rj = resp[a], resp[b]
                    if same_text(g.at[ch, "response"], g.at[rj, "response"]):
                        identical += 1
                        continue
                    both = ~np.isnan(sc[:, a]) & ~np.isnan(sc[:, b])
                    agree = float((sc[both, a] > sc[both, b]).mean()) if both.any() else float("nan")
                    rows.append({
                        "pair_id": f"{pid}|{criterion}|{ch}|{rj}", "prompt_id": pid, "criterion": criterion,
                        "prompt": prompt_text[pid], "chosen": g.at[ch, "response"], "rejected": g.at[rj, "response"],
                        "chosen_id": ch, "rejected_id": rj, "margin": round(float(abs(mean[i] - mean[j])), 4),
                        "n_votes": int(min(n[a], n[b])), "agreement": round(agree, 4),
                        "lang": g.at[ch, "lang"], "task_type": g.at[ch, "task_type"], "split": g.at[ch, "split"],
                        "gold_margin": round(float(gold_c[criterion][ch] - gold_c[criterion][rj]), 4),
                    })
    pairs = pd.DataFrame(rows)
    counts = {"pairs": len(pairs), "dropped_small_margin_or_tie": small, "dropped_identical_texts": identical,
              "by_criterion": pairs["criterion"].value_counts().to_dict() if len(pairs) else {}}
    log.info("build_pairs: %s", counts)
    return pairs, counts


def add_app_votes(panel_pairs: pd.DataFrame, app_feedback: pd.DataFrame, prompts: pd.DataFrame,
                  pair_counts: dict, params: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Join the A/B app's real votes (``source = "app"``) to the panel's pairs.

    A vote becomes pairs per criterion (two answers whose ratings differ by at least
    ``app_votes.margin``) and overall (the chosen answer over each other one), by
    :func:`ru_rlhf.feedback.long_to_pairs`; two answers with the same text make no pair (counted). A
    vote on a validation or test prompt goes to split ``app_holdout`` (kept and counted, never trained
    on, so the held-out prompts stay held out); votes on other prompts join ``train``. App answers have
    no gold score: their ``gold_margin`` and ``agreement`` are empty, and the reports that need gold
    skip them and say how many they skipped.

    Returns:
        ``(preference_pairs, app_annotations, pair_counts)``: all pairs with a ``source`` column, the
        votes as the long annotation table, and the panel's pair counts with the app's added
        (``app_votes``, ``app_pairs``, ``app_pairs_by_split``, ``app_dropped_identical_texts``).
    """
    p = CurationParams.of(params)
    panel = panel_pairs.assign(source="panel")
    app, app_counts = long_to_pairs(app_feedback, p.app_votes.margin)
    counts = {**pair_counts, "app_votes": app_counts["votes"], "app_pairs": len(app),
              "app_dropped_identical_texts": app_counts["dropped_identical_texts"], "app_pairs_by_split": {}}
    counts["dropped_identical_texts"] = pair_counts.get("dropped_identical_texts", 0) + \
        app_counts["dropped_identical_texts"]
    if app.empty:
        log.info("add_app_votes: %d app votes, no app pairs (%d identical-text pairs dropped)",
                 app_counts["votes"], app_counts["dropped_identical_texts"])
        return panel, app_feedback, counts
    meta = prompts.set_index("prompt_id")
    # a typed prompt that is one of the run's prompts (same text after comparison_key, any split) is that
    # prompt: a held-out prompt typed by hand stays held out
    by_text = dict(zip(prompts["prompt"].map(comparison_key), prompts["prompt_id"])) if "prompt" in prompts else {}
    app["prompt_id"] = [pid if pid in meta.index else by_text.get(comparison_key(t), pid)
                        for pid, t in zip(app["prompt_id"], app["prompt"])]
    known = app["prompt_id"].isin(meta.index)
    app["lang"] = [meta.at[i, "lang"] if k else ("tt" if is_tatar(t) else "ru")
                   for i, k, t in zip(app["prompt_id"], known, app["prompt"])]
    app["task_type"] = [meta.at[i, "task_type"] if k else "app" for i, k in zip(app["prompt_id"], known)]
    app["split"] = ["app_holdout" if k and meta.at[i, "split"] != "train" else "train"
                    for i, k in zip(app["prompt_id"], known)]
    app["agreement"], app["gold_margin"] = float("nan"), float("nan")
    out = pd.concat([panel, app.reindex(columns=panel.columns)], ignore_index=True)
    counts["app_pairs_by_split"] = app["split"].value_counts().to_dict()
    log.info("add_app_votes: %d votes → %d pairs (%s); %d identical-text pairs dropped", app_counts["votes"],
             len(app), counts["app_pairs_by_split"], app_counts["dropped_identical_texts"])
    return out, app_feedback, counts


def pairs_to_dataset(pairs: pd.DataFrame, criterion: str = "overall"):
    """A ``DatasetDict`` (train / validation / test) in TRL's ``prompt / chosen / rejected`` format.

    The prompt is in the policy's prompt format; the other columns ride along.
    """
    import datasets

    sel = pairs[pairs["criterion"] == criterion].copy()
    sel["prompt"] = sel["prompt"].map(format_prompt)
    cols = ["prompt", "chosen", "rejected", "pair_id", "prompt_id", "criterion", "margin", "n_votes", "agreement",
            "lang", "task_type", "split", "gold_margin"]
    return datasets.DatasetDict({
        split: datasets.Dataset.from_pandas(sel[sel["split"] == split][cols].reset_index(drop=True),
                                            preserve_index=False)
        for split in ("train", "validation", "test")
    })


def _has_gold(pairs: pd.DataFrame) -> pd.Series:
    """Pairs whose two responses have gold scores (the panel's; the app's answers have none)."""
    return pairs["gold_margin"].notna()


def gold_label_agreement(pairs: pd.DataFrame) -> dict:
    """Per criterion: how many pairs, how many have no gold score (app votes: skipped here), the share
    of the rest whose two responses the gold judges tie (the panel decides those by its biases alone),
    and on the untied ones the share where the chosen response is the one gold prefers (the labels'
    quality)."""
    out = {}
    for crit, g in pairs.groupby("criterion"):
        graded = g[_has_gold(g)]
        untied = graded["gold_margin"] != 0
        out[crit] = {"pairs": int(len(g)), "skipped_no_gold": int(len(g) - len(graded)),
                     "gold_tied_share": round(float((~untied).mean()), 4) if len(graded) else None,
                     "panel_agrees_with_gold_on_untied":
                         round(float((graded.loc[untied, "gold_margin"] > 0).mean()), 4) if untied.any() else None}
    return out


def _choice_shares(longer_chosen: np.ndarray, diff: np.ndarray, fc: np.ndarray, fr: np.ndarray) -> dict:
    one = fc != fr
    return {"length_pairs": int(diff.sum()),
            "chooses_longer": round(float(longer_chosen[diff].mean()), 4) if diff.any() else None,
            "flattery_pairs": int(one.sum()),
            "chooses_flattering": round(float(fc[one].mean()), 4) if one.any() else None}


def bias_report(pairs: pd.DataFrame, gold: pd.DataFrame) -> dict:
    """How the panel's biases show in the pairs, against the gold judges' choice on the same pairs.

    For overall pairs whose two responses differ in length: the share where the chosen one is
    the longer, by the panel and by gold. For pairs where exactly one response flatters: the
    share where the flattering one is chosen, by the panel and by gold. Per criterion, the label
    quality of :func:`gold_label_agreement`. Pairs without gold scores (the app's votes) are skipped in
    the gold comparisons and counted (``skipped_no_gold``); their own length and flattery shares are
    under ``app`` (from the texts, no gold needed).
    """
    ov_all = pairs[pairs["criterion"] == "overall"]
    graded = _has_gold(ov_all) & ov_all["chosen_id"].isin(gold["response_id"]) & \
        ov_all["rejected_id"].isin(gold["response_id"])
    ov, ungraded = ov_all[graded], ov_all[~graded]
    out = {"overall_pairs": int(len(ov_all)), "skipped_no_gold": int(len(ungraded))}
    if len(ungraded):
        lc = np.array([len(words(t)) for t in ungraded["chosen"]])
        lr = np.array([len(words(t)) for t in ungraded["rejected"]])
        fc = np.array([has_flattery(t, lang) for t, lang in zip(ungraded["chosen"], ungraded["lang"])], dtype=bool)
        fr = np.array([has_flattery(t, lang) for t, lang in zip(ungraded["rejected"], ungraded["lang"])], dtype=bool)
        out["app"] = {"pairs": int(len(ungraded)), **_choice_shares(lc > lr, lc != lr, fc, fr)}
    out["by_criterion"] = gold_label_agreement(pairs)
    if ov.empty:
        log.info("bias report: %s", out)
        return out
    g = gold.set_index("response_id")
    lc, lr = g.loc[ov["chosen_id"], "n_words"].to_numpy(), g.loc[ov["rejected_id"], "n_words"].to_numpy()
    gold_prefers_chosen = ov["gold_margin"].to_numpy() > 0
    gold_tie = ov["gold_margin"].to_numpy() == 0
    diff = lc != lr
    longer_chosen = lc > lr
    out["length"] = {
        "pairs": int(diff.sum()),
        "panel_chooses_longer": round(float(longer_chosen[diff].mean()), 4) if diff.any() else None,
        "gold_chooses_longer": round(float(np.where(gold_prefers_chosen, longer_chosen, ~longer_chosen)
                                           [diff & ~gold_tie].mean()), 4) if (diff & ~gold_tie).any() else None,
    }
    fc, fr = g.loc[ov["chosen_id"], "flattery"].to_numpy(), g.loc[ov["rejected_id"], "flattery"].to_numpy()
    one = fc != fr
    out["sycophancy"] = {
        "pairs": int(one.sum()),
        "panel_chooses_flattering": round(float(fc[one].mean()), 4) if one.any() else None,
        "gold_chooses_flattering": round(float(np.where(gold_prefers_chosen, fc, fr)[one & ~gold_tie].mean()), 4)
        if (one & ~gold_tie).any() else None,
    }
    out["panel_agrees_with_gold"] = round(float(gold_prefers_chosen[~gold_tie].mean()), 4) if (~gold_tie).any() else None
    log.info("bias report: %s", out)
    return out


def curation_summary(pairs: pd.DataFrame, pair_counts: dict, agreement: dict, bias: dict,
                     annotation_quarantine: pd.DataFrame, annotations: pd.DataFrame) -> dict:
    """Counts for ``08_reporting/curation_summary.json``."""
    ov = pairs[pairs["criterion"] == "overall"]
    return {
        "ratings": len(annotations), "ratings_by_source": annotations["source"].value_counts().to_dict(),
        "quarantined_ratings": len(annotation_quarantine),
        # imported rows whose item, response or annotator id the reader NFC-normalised or stripped
        "ids_normalised": int(sum(t["id_normalised"].fillna(False).astype(bool).sum()
                                  for t in (annotations, annotation_quarantine) if "id_normalised" in t)),
        "quarantine_by_rule": annotation_quarantine["rule"].value_counts().to_dict() if len(annotation_quarantine) else {},
        **pair_counts,
        "pairs_by_source": pairs["source"].value_counts().to_dict() if "source" in pairs else {},
        "overall_pairs": len(ov), "overall_pairs_by_lang": ov["lang"].value_counts().to_dict(),
        "overall_pairs_by_split": ov["split"].value_counts().to_dict(),
        "prompts_in_two_splits": int(pairs[pairs["split"].isin(["train", "validation", "test"])]
                                     .groupby("prompt_id")["split"].nunique().gt(1).sum()),
        "alpha_before": agreement["before"], "alpha_after": agreement["after"],
        "dropped_annotators": [d["annotator_id"] for d in agreement["dropped"]], "biases": bias,
    }


def dataset_card(summary: dict, agreement: dict, annotators: pd.DataFrame, params: dict) -> str:
    """The preference dataset's Hugging Face card (``README.md`` beside the saved dataset), from
    ``templates/dataset_card.md.j2``."""
    from huggingface_hub import DatasetCard

    p = CurationParams.of(params)
    content = render(__package__, "dataset_card.md.j2", weights=p.pairs.weights, margin=p.pairs.margin,
                     per_item=p.panel.per_item, careless_random_rate=p.panel.careless_random_rate,
                     sizes=summary["overall_pairs_by_split"], annotators=list(annotators.itertuples(index=False)),
                     agreement=agreement, criteria=CRITERIA, summary=summary, biases=summary["biases"])
    return str(DatasetCard(content))


def plot_agreement(agreement: dict):
    """Krippendorff's α per criterion before and after the gate, with the threshold (for kedro-viz)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crits = sorted(agreement["before"])
    x = np.arange(len(crits))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(x - 0.2, [agreement["before"][c] for c in crits], 0.4, label="before the gate")
    ax.bar(x + 0.2, [agreement["after"][c] for c in crits], 0.4, label="after")
    ax.axhline(agreement["threshold"], color="k", linestyle="--", linewidth=1, label=f"threshold {agreement['threshold']}")
    ax.set_xticks(x)
    ax.set_xticklabels(crits)
    ax.set_ylabel(f"Krippendorff's α ({agreement['level']})")
    ax.set_xlabel("criterion")
    dropped = [d.get("annotator_id", str(d)) if isinstance(d, dict) else str(d) for d in agreement.get("dropped", [])]
    ax.set_title(f"annotator agreement (SIMULATED panel); dropped: {', '.join(dropped) or 'none'}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
