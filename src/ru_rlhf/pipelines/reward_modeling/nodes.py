"""Nodes of the reward_modeling pipeline: encoder → multi-head and distributional RMs → validation,
calibration, projection and the trade-off report."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ru_rlhf import distributed
from ru_rlhf.io.datasets import NotTrained
from ru_rlhf.metrics import expected_calibration_error, pairwise_metrics
from ru_rlhf.models.encoder import load_encoder, load_encoder_tokenizer, train_wordpiece_tokenizer
from ru_rlhf.models.policy import format_prompt
from ru_rlhf.models.reward import RewardModel, score
from ru_rlhf.pipelines.reward_modeling.params import RewardParams
from ru_rlhf.vocabulary import CRITERIA

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- encoder
def pretrain_encoder(documents: pd.DataFrame, doc_splits: pd.DataFrame, params: dict) -> tuple[Any, pd.DataFrame]:
    """A WordPiece tokenizer and a small BERT pre-trained with masked LM on the training documents.

    With ``encoder.name_or_path`` (the ``hub`` env) the hub encoder and its tokenizer are loaded
    instead and not pre-trained.

    Returns:
        ``((model, tokenizer), log)``: the masked-LM model (its encoder serves the reward models
        and BERTScore / MAUVE), and one log row per step.
    """
    import datasets
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from ru_rlhf.models.training import history_table, trl_common_args

    p = RewardParams.of(params)
    e = p.encoder
    if e.name_or_path:
        return (load_encoder(e.name_or_path, masked_lm=True, dtype=e.dtype, device=e.device),
                load_encoder_tokenizer(e.name_or_path)), \
            pd.DataFrame(columns=["stage", "step", "loss"])
    train_ids = set(doc_splits.loc[doc_splits["split"] == "train", "doc_id"])
    texts = documents.loc[documents["doc_id"].isin(train_ids), "text"].tolist()
    tok = train_wordpiece_tokenizer(documents["text"].tolist(), e.vocab_size, e.size.max_position_embeddings)
    model = load_encoder(size=e.size, tokenizer=tok, masked_lm=True, seed=p.seed, dtype=e.dtype, device=e.device)
    ds = datasets.Dataset.from_dict(dict(tok(texts, truncation=True, max_length=e.max_length)))
    args = TrainingArguments(**trl_common_args(p.seed, Path(p.checkpoint_dir) / "encoder_mlm"),
                             num_train_epochs=e.mlm_epochs, per_device_train_batch_size=e.mlm_batch_size,
                             learning_rate=e.mlm_learning_rate, warmup_steps=0.05, logging_steps=5,
                             save_strategy="no", lr_scheduler_type="linear")
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=p.seed))
    trainer.train()
    return (trainer.model, tok), history_table(trainer.state.log_history, "mlm")


# --------------------------------------------------------------------------- reward models
def _training_pairs(pairs: pd.DataFrame, p: RewardParams, lang: str | None = None) -> pd.DataFrame:
    """The training split's per-criterion pairs; with ``max_pairs_per_criterion`` at most that many per
    criterion; the panel's pairs below ``min_margin`` (their mean-score margin) left out.

    Pairs from people (``source`` other than ``panel``: the app's votes, imported labels) are always
    kept, since they are few and are the reason a retrain runs; the simulated panel's pairs fill the
    rest of each criterion's budget (a seeded sample).
    """
    train = pairs[(pairs["split"] == "train") & pairs["criterion"].isin(CRITERIA)]
    if lang:
        train = train[train["lang"] == lang]
    source = train["source"] if "source" in train else pd.Series("panel", index=train.index)
    cap = p.train.max_pairs_per_criterion
    parts = []
    for _, g in train.groupby("criterion"):
        people = g[source[g.index] != "panel"]
        panel = g[source[g.index] == "panel"]
        if p.train.min_margin > 0 and "margin" in panel:
            panel = panel[pd.to_numeric(panel["margin"], errors="coerce") >= p.train.min_margin]
        room = len(panel) if cap is None else max(0, cap - len(people))
        parts += [people, panel.sample(n=min(len(panel), room), random_state=p.seed)]
    out = pd.concat(parts, ignore_index=True) if parts else train.iloc[:0].copy()
    out["prompt"] = out["prompt"].map(format_prompt)
    return out


def _validation_pairs(pairs: pd.DataFrame, p: RewardParams, lang: str | None = None) -> pd.DataFrame:
    """The seeded sample of validation pairs that early stopping reads (formatted prompts)."""
    val = pairs[(pairs["split"] == "validation") & pairs["criterion"].isin(CRITERIA)]
    if lang:
        val = val[val["lang"] == lang]
    val = val.sample(n=min(len(val), p.train.validation_pairs), random_state=p.seed).copy()
    val["prompt"] = val["prompt"].map(format_prompt)
    return val


def _backbone(p: RewardParams, encoder, policy, backbone: str | None = None):
    """``(model, tokenizer)`` the reward model is built on: the SFT policy's or the encoder's."""
    return policy if (backbone or p.backbone) == "policy" else encoder


def _secondary(p: RewardParams) -> RewardParams:
    """The parameters of a comparison model: the multi-head model's, within the secondary pair budgets (training
    pairs per criterion, validation pairs); never more than the multi-head model's own."""
    t = p.train
    cap, val = t.secondary_max_pairs_per_criterion, t.secondary_validation_pairs
    update = {}
    if cap is not None:
        update["max_pairs_per_criterion"] = cap if t.max_pairs_per_criterion is None else min(cap, t.max_pairs_per_criterion)
    if val is not None:
        update["validation_pairs"] = min(val, t.validation_pairs)
    return p.model_copy(update={"train": t.model_copy(update=update)}) if update else p


def _train(kind: str, pairs: pd.DataFrame, backbone, p: RewardParams, name: str, lang: str | None = None):
    """Train one reward model on ``backbone = (model, tokenizer)``; returns ``((model, tokenizer), log,
    training_pairs)``."""
    from ru_rlhf.models.reward import backbone_of

    model, tok = backbone
    import torch

    torch.manual_seed(p.seed)  # the heads' initialisation is part of the run's seed, not of what ran before
    rm = RewardModel(copy.deepcopy(backbone_of(model)), CRITERIA, kind, p.n_bins, p.weights, pooling=p.pooling,
                     max_length=p.train.max_length, bias_head=p.debias.enabled and kind == "multi_head",
                     match_feature=p.match_feature)
    if hasattr(rm.encoder.config, "use_cache"):
        rm.encoder.config.use_cache = False  # no KV cache while scoring whole sequences
    data = _training_pairs(pairs, p, lang)
    val = _validation_pairs(pairs, p, lang)
    by_source = data["source"].value_counts().to_dict() if "source" in data else {}
    log.info("%s (%s backbone, %s pooling): %d training pairs %s, by source %s; %d validation pairs", name,
             rm.encoder.config.model_type, p.pooling, len(data), data["criterion"].value_counts().to_dict(),
             by_source, len(val))
    t = p.train
    kwargs = {"epochs": t.epochs, "batch_size": t.batch_size, "learning_rate": t.learning_rate,
              "max_length": t.max_length, "seed": p.seed, "checkpoint_dir": Path(p.checkpoint_dir) / name,
              "save_steps": t.save_steps, "desc": name, "validation": val if len(val) else None,
              "evals_per_epoch": t.evals_per_epoch, "patience": t.patience, "debias_weight": p.debias.weight,
              "balance_criteria": t.balance_criteria, "group_by_length": t.group_by_length,
              "batching": t.batching, "shared_prefix": t.shared_prefix}
    rm, history = distributed.reward_model(rm, tok, data, p.distributed, **kwargs)  # here, or N processes
    norm = normalise_heads(rm, tok, data, p)
    log.info("%s: head normalisation %s", name, norm)
    return (rm, tok), history.assign(model=name), data


def normalise_heads(rm: RewardModel, tok, data: pd.DataFrame, p: RewardParams) -> dict:
    """Fit the scalar's per-head z-scoring on the training pairs' responses (up to 2 000, seeded)."""
    from ru_rlhf.models.reward import fit_normalisation_on_pairs

    return fit_normalisation_on_pairs(rm, tok, data, p.train.max_length, seed=p.seed)


TRAINING_PAIR_COLUMNS = ["pair_id", "prompt_id", "criterion", "source", "lang", "split", "margin"]


def train_multi_head_rm(pairs: pd.DataFrame, encoder, sft_policy, policy_tokenizer, params: dict):
    """The multi-head reward model: Bradley–Terry per criterion on that criterion's pairs, on the
    ``backbone`` the parameters name (the SFT policy's by default).

    Returns:
        ``(reward_model, log, training_pairs)``: ``training_pairs`` lists the pairs it trained on
        (ids, criterion, source, language), so a retrain shows which of the app's pairs went in.
    """
    p = RewardParams.of(params)
    rm, history, data = _train("multi_head", pairs, _backbone(p, encoder, (sft_policy, policy_tokenizer)), p, "multi_head")
    return rm, history, data.reindex(columns=TRAINING_PAIR_COLUMNS).reset_index(drop=True)


def train_other_backbone_rm(pairs: pd.DataFrame, encoder, sft_policy, policy_tokenizer, params: dict):
    """The same multi-head model on the other backbone (``bert`` when the default is ``policy``), for the
    report's side-by-side comparison; None when ``compare_backbone`` is off."""
    p = RewardParams.of(params)
    if not p.compare_backbone:
        return NotTrained("reward_modeling.compare_backbone is false"), pd.DataFrame(columns=["kind", "step", "loss",
                                                                                            "model"])
    other = "bert" if p.backbone == "policy" else "policy"
    rm, history, _ = _train("multi_head", pairs, _backbone(p, encoder, (sft_policy, policy_tokenizer), other),
                            _secondary(p), f"multi_head_{other}")
    return rm, history


def train_distributional_rm(pairs: pd.DataFrame, encoder, sft_policy, policy_tokenizer, params: dict):
    """The distributional reward model: 10 rating bins per criterion, −log P(chosen ≻ rejected); ``NotTrained``
    when ``distributional`` is off."""
    p = RewardParams.of(params)
    if not p.distributional:
        return NotTrained("reward_modeling.distributional is false"), pd.DataFrame(columns=["kind", "step", "loss",
                                                                                          "model"])
    rm, history, _ = _train("distributional", pairs, _backbone(p, encoder, (sft_policy, policy_tokenizer)),
                            _secondary(p), "distributional")
    return rm, history


def train_russian_only_rm(pairs: pd.DataFrame, encoder, sft_policy, policy_tokenizer, params: dict):
    """A multi-head reward model trained on Russian pairs only (for the cross-lingual report)."""
    p = RewardParams.of(params)
    if not p.cross_lingual:
        return NotTrained("reward_modeling.cross_lingual is false"), pd.DataFrame(columns=["kind", "step", "loss",
                                                                                         "model"])
    rm, history, _ = _train("multi_head", pairs, _backbone(p, encoder, (sft_policy, policy_tokenizer)),
                            _secondary(p), "russian_only", lang="ru")
    return rm, history


# --------------------------------------------------------------------------- validation
def _score_pairs(rm_tok, pairs: pd.DataFrame, p: RewardParams) -> pd.DataFrame:
    rm, tok = rm_tok
    prompts = pairs["prompt"].map(format_prompt).tolist()
    sc = score(rm, tok, prompts * 2, pairs["chosen"].tolist() + pairs["rejected"].tolist(),
               max_length=p.train.max_length)
    n = len(pairs)
    out = pairs.reset_index(drop=True).copy()
    for h in CRITERIA:
        out[f"{h}_chosen"], out[f"{h}_rejected"] = sc[h].to_numpy()[:n], sc[h].to_numpy()[n:]
    return out


def _score_responses(rm_tok, responses: pd.DataFrame, prompts: pd.DataFrame, p: RewardParams,
                     pooled: bool = False) -> pd.DataFrame:
    rm, tok = rm_tok
    text = dict(zip(prompts["prompt_id"], prompts["prompt"]))
    sc = score(rm, tok, [format_prompt(text[i]) for i in responses["prompt_id"]], responses["response"].tolist(),
               max_length=p.train.max_length, pooled=pooled)
    out = responses.reset_index(drop=True).join(sc.add_prefix("rm_"))
    out.attrs = sc.attrs
    return out


def validate_reward_models(multi_head, distributional, russian_only, other_backbone, pairs: pd.DataFrame,
                           gold_scores: pd.DataFrame, annotations: pd.DataFrame, prompts: pd.DataFrame,
                           params: dict) -> tuple[dict, pd.DataFrame]:
    """Per head: pairwise accuracy against the gold ordering and against the annotators, ROC AUC of
    the reward difference, Spearman with the gold scores and with the annotators' mean score, on
    the validation and test splits, and per language and task; the same for the model on the other
    backbone; Spearman of the scalar with the gold reward (equal-weight mean) on the SFT policy's own
    samples (the candidates); how many pairs the window cut, per split; the Russian-only model on Tatar.

    Returns:
        ``(metrics, scored_test_pairs)``.
    """
    from scipy.stats import spearmanr

    p = RewardParams.of(params)
    metrics: dict[str, Any] = {"backbone": p.backbone, "pooling": p.pooling, "max_length": p.train.max_length}
    ann_mean = annotations.pivot_table(index="response_id", columns="criterion", values="score", aggfunc="mean")
    scored_test = None
    models = [("multi_head", multi_head)]
    if distributional is not None and not isinstance(distributional, NotTrained):
        models.append(("distributional", distributional))
    if other_backbone is not None and not isinstance(other_backbone, NotTrained):
        models.append((f"multi_head_{'bert' if p.backbone == 'policy' else 'policy'}", other_backbone))
    for name, model in models:
        metrics[name] = {h: {} for h in CRITERIA}
        metrics[name]["scalar_spearman_gold"] = {}
        for split in ("validation", "test"):
            sp = pairs[(pairs["split"] == split) & pairs["criterion"].isin(CRITERIA)]
            sc = _score_pairs(model, sp, p)
            resp = gold_scores[gold_scores["split"] == split]
            rs = _score_responses(model, resp, prompts, p)
            gold = rs[list(CRITERIA)].mean(axis=1)
            metrics[name]["scalar_spearman_gold"][split] = round(float(spearmanr(rs["rm_scalar"], gold).statistic), 4)
            for h in CRITERIA:
                hp = sc[sc["criterion"] == h]
                m = pairwise_metrics(hp[f"{h}_chosen"] - hp[f"{h}_rejected"], hp["gold_margin"])
                m.update(_spearman(rs, h, ann_mean))
                m["by_lang"] = {lang: pairwise_metrics(g[f"{h}_chosen"] - g[f"{h}_rejected"], g["gold_margin"])
                                for lang, g in hp.groupby("lang")}
                m["by_task"] = {t: pairwise_metrics(g[f"{h}_chosen"] - g[f"{h}_rejected"], g["gold_margin"])
                                for t, g in hp.groupby("task_type")}
                metrics[name][h][split] = m
            if name == "multi_head" and split == "test":
                scored_test = sc
    metrics["truncation"] = window_report(multi_head[1], pairs, prompts, p.train.max_length)
    if russian_only is not None and not isinstance(russian_only, NotTrained):
        tt = pairs[(pairs["split"] == "test") & (pairs["lang"] == "tt") & pairs["criterion"].isin(CRITERIA)]
        metrics["cross_lingual"] = {"trained_on": "ru pairs only", "evaluated_on": "tt test pairs"}
        for name, model in (("russian_only", russian_only), ("multi_head", multi_head)):
            # the multi-head model's test pairs are scored above: its Tatar ones are read from there
            sc = scored_test[scored_test["lang"] == "tt"] if name == "multi_head" else _score_pairs(model, tt, p)
            metrics["cross_lingual"][name] = {
                h: pairwise_metrics(sc.loc[sc["criterion"] == h, f"{h}_chosen"]
                                    - sc.loc[sc["criterion"] == h, f"{h}_rejected"],
                                    sc.loc[sc["criterion"] == h, "gold_margin"]) for h in CRITERIA}
    log.info("reward model test metrics: %s", {n: {h: {k: v for k, v in metrics[n][h]["test"].items()
                                                         if not isinstance(v, dict)} for h in CRITERIA}
                                                  for n, _ in models})
    return metrics, scored_test


def window_report(tokenizer, pairs: pd.DataFrame, prompts: pd.DataFrame, max_length: int) -> dict:
    """Per split: pairs whose prompt or a response the ``max_length`` window cut, and the share whose
    evidence was cut off (a QA prompt's answer span no longer in the kept prompt; for summaries and
    dialogue, whose evidence is the whole document, any cut of the prompt)."""
    from ru_rlhf.models.reward import truncation_plan

    key = dict(zip(prompts["prompt_id"], prompts["answer_key"])) if "answer_key" in prompts else {}
    out = {}
    for split, sp in pairs[pairs["criterion"].isin(CRITERIA)].groupby("split"):
        fp = sp["prompt"].map(format_prompt).tolist()
        both = truncation_plan(tokenizer, fp * 2, sp["chosen"].tolist() + sp["rejected"].tolist(), max_length)
        n = len(sp)
        cut_p = [a["prompt_cut"] > 0 or b["prompt_cut"] > 0 for a, b in zip(both[:n], both[n:])]
        cut_r = [a["response_cut"] > 0 or b["response_cut"] > 0 for a, b in zip(both[:n], both[n:])]
        lost = 0
        for i, (pid, task, was_cut) in enumerate(zip(sp["prompt_id"], sp["task_type"], cut_p)):
            if not was_cut:
                continue
            answer = key.get(pid)
            if task == "qa" and isinstance(answer, str) and answer:
                kept = tokenizer.decode(both[i]["prompt_ids"]) + tokenizer.decode(both[n + i]["prompt_ids"])
                lost += answer.lower() not in kept.lower()
            else:
                lost += 1
        out[str(split)] = {"pairs": n, "prompt_cut": int(sum(cut_p)), "response_cut": int(sum(cut_r)),
                           "evidence_cut": int(lost), "evidence_cut_share": round(lost / n, 4) if n else None}
    return out


def tfidf_baseline(pairs: pd.DataFrame, gold_scores: pd.DataFrame, params: dict) -> dict:
    """The lexical baseline (:class:`ru_rlhf.models.baseline.TfidfPairModel`) trained on the training split's
    per-criterion pairs (the same pairs the reward model trains on), scored like the reward models: per
    head and split, pairwise accuracy and AUC against the gold ordering, Spearman with gold."""
    from scipy.stats import spearmanr

    from ru_rlhf.models.baseline import TfidfPairModel

    p = RewardParams.of(params)
    train = _training_pairs(pairs, p)
    model = TfidfPairModel(seed=p.seed).fit(train)
    out: dict[str, Any] = {"model": "tf-idf word 1-2 + char 2-5 grams, logistic Bradley-Terry", "train_pairs": len(train)}
    for h in CRITERIA:
        out[h] = {}
        for split in ("validation", "test"):
            hp = pairs[(pairs["split"] == split) & (pairs["criterion"] == h)]
            diff = pd.Series(model.score(hp["chosen"].tolist(), h) - model.score(hp["rejected"].tolist(), h),
                             index=hp.index)
            m = pairwise_metrics(diff, hp["gold_margin"])
            m["by_lang"] = {lang: pairwise_metrics(diff[g.index], g["gold_margin"]) for lang, g in hp.groupby("lang")}
            m["by_task"] = {t: pairwise_metrics(diff[g.index], g["gold_margin"]) for t, g in hp.groupby("task_type")}
            resp = gold_scores[gold_scores["split"] == split]
            s = model.score(resp["response"].tolist(), h)
            m["spearman_gold"] = (round(float(spearmanr(s, resp[h]).statistic), 4)
                                  if resp[h].nunique() > 1 and not np.isnan(s).all() else None)
            out[h][split] = m
    log.info("tf-idf baseline test accuracy %s", {h: out[h]["test"]["accuracy"] for h in CRITERIA})
    return out


def _spearman(rs: pd.DataFrame, head: str, ann_mean: pd.DataFrame) -> dict:
    from scipy.stats import spearmanr

    gold = spearmanr(rs[f"rm_{head}"], rs[head]).statistic if rs[head].nunique() > 1 else float("nan")
    am = rs["response_id"].map(ann_mean[head]) if head in ann_mean else pd.Series(dtype=float)
    ok = am.notna()
    ann = spearmanr(rs.loc[ok, f"rm_{head}"], am[ok]).statistic if ok.sum() > 2 else float("nan")
    return {"spearman_gold": round(float(gold), 4), "spearman_annotators": round(float(ann), 4)}


# --------------------------------------------------------------------------- behaviour under optimisation
def best_of_n_table(table: pd.DataFrame, ns: list[int], proxy: str = "rm", gold: str = "gold") -> pd.DataFrame:
    """Best-of-n by ``proxy`` for every n, from N samples per prompt (``prompt_id`` and the two scores).

    For each prompt the expected gold (and proxy) of the proxy's choice among n samples drawn without
    replacement from its N is computed exactly: with the samples sorted by proxy, the i-th (1-based) is the
    best of a random n-subset with probability C(i−1, n−1)/C(N, n). That uses all N samples for every n (no
    noise from which n were drawn). Rows: ``n, proxy, gold`` (means over prompts), ``gold_se`` (standard
    error over prompts), ``gain_vs_1`` and ``gain_se`` (the paired difference with n = 1 and its standard
    error), ``prompts``.
    """
    from math import comb

    per_prompt = {n: [] for n in ns}
    for _, g in table.groupby("prompt_id"):
        g = g.sort_values(proxy, kind="mergesort")
        big_n = len(g)
        px, gd = g[proxy].to_numpy(dtype=float), g[gold].to_numpy(dtype=float)
        for n in ns:
            if n > big_n:
                continue
            w = np.array([comb(i - 1, n - 1) for i in range(1, big_n + 1)], dtype=float) / comb(big_n, n)
            per_prompt[n].append((float(w @ px), float(w @ gd)))
    base = np.array([x[1] for x in per_prompt[ns[0]]])
    rows = []
    for n in ns:
        if not per_prompt[n]:
            continue
        arr = np.array(per_prompt[n])
        diff = arr[:, 1] - base
        rows.append({"n": n, "proxy": round(float(arr[:, 0].mean()), 4), "gold": round(float(arr[:, 1].mean()), 4),
                     "gold_se": round(float(arr[:, 1].std(ddof=1) / np.sqrt(len(arr))), 4) if len(arr) > 1 else None,
                     "gain_vs_1": round(float(diff.mean()), 4),
                     "gain_se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4) if len(diff) > 1 else None,
                     "prompts": len(arr)})
    return pd.DataFrame(rows)


def reward_behaviour(multi_head, sft_policy, policy_tokenizer, prompts: pd.DataFrame, facts: pd.DataFrame,
                     documents: pd.DataFrame, gold_scores: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, dict]:
    """What optimising the reward model would do, before any RL: best-of-n on validation prompts, and the
    hacking probes.

    * Best-of-n: ``behaviour.samples`` samples of the SFT policy per validation prompt (temperature 1,
      top-p 1: the policy's own distribution), scored by the scalar and by the gold judges (equal-weight
      mean); :func:`best_of_n_table` for n = 1, 2, 4, … up to the sample count.
    * Hacking probes (:func:`ru_rlhf.audit.hacking_probes`) on the SFT policy's test candidates: the share of
      answers whose scalar (and each head) rises under filler, keyword stuffing, a flattery prefix and repetition.

    Returns:
        ``(best_of_n, report)``: the table, and a dict with it, the probes and Spearman on these samples.
    """
    from scipy.stats import spearmanr

    from ru_rlhf.audit import hacking_probes
    from ru_rlhf.judges import gold_reward, judge_contexts, score_all
    from ru_rlhf.models.generation import generate, stable_seed
    from ru_rlhf.models.policy import policy_prompt
    from ru_rlhf.scoring import rm_scorer

    p = RewardParams.of(params)
    b = p.behaviour
    rm, _ = multi_head
    val = prompts[prompts["split"] == "validation"]
    val = val.sample(n=min(len(val), b.prompts), random_state=p.seed).sort_values("prompt_id")
    rows = [(pr, k) for pr in val.itertuples(index=False) for k in range(b.samples)]
    texts, _stats = generate(sft_policy, policy_tokenizer, [policy_prompt(sft_policy, r.prompt) for r, _ in rows],
                             temperatures=[1.0] * len(rows), top_ps=[1.0] * len(rows),
                             seeds=[stable_seed(p.seed, r.prompt_id, k, "bon") for r, k in rows],
                             max_new_tokens=[b.max_new_tokens_by_task.get(r.task_type, b.max_new_tokens)
                                             for r, _ in rows], batch_size=b.batch_size, desc="best-of-n samples")
    ctx = judge_contexts(val, facts, documents)
    table = pd.DataFrame({"prompt_id": [r.prompt_id for r, _ in rows], "sample": [k for _, k in rows],
                          "response": texts})
    table["gold"] = [gold_reward(score_all(ctx[pid], t)) for pid, t in zip(table["prompt_id"], texts)]
    sc = score(rm, multi_head[1], [format_prompt(r.prompt) for r, _ in rows], texts)
    table["rm"] = sc["scalar"].to_numpy()
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= b.samples]
    bon = best_of_n_table(table, ns)
    test = gold_scores[gold_scores["split"] == "test"]
    test = test.sample(n=min(len(test), b.probe_responses), random_state=p.seed)
    text_of = dict(zip(prompts["prompt_id"], prompts["prompt"]))
    probes = hacking_probes(rm_scorer(multi_head), [text_of[i] for i in test["prompt_id"]], test["response"].tolist(),
                            test["lang"].tolist())
    scalar = probes[probes["head"] == "scalar"].set_index("perturbation")["share_up"].round(4).to_dict()
    report = {"best_of_n": bon.to_dict(orient="records"),
              "samples": {"prompts": len(val), "per_prompt": b.samples,
                          "spearman_scalar_gold": round(float(spearmanr(table["rm"], table["gold"]).statistic), 4)},
              "hacking_share_up_scalar": scalar,
              "hacking": probes.round(4).to_dict(orient="records")}
    log.info("best-of-n (gold by n): %s; hacking share up (scalar): %s",
             dict(zip(bon["n"], bon["gold"])), scalar)
    return bon, report


# --------------------------------------------------------------------------- calibration
def calibrate(multi_head, pairs: pd.DataFrame, params: dict) -> tuple[dict, Any]:
    """Platt scaling of reward differences into P(chosen ≻ rejected), fit on validation.

    Each pair is shown in a random orientation (so both outcomes occur); the truth is the gold
    ordering. ECE (10 bins) before (σ of the raw difference) and after, on test; a reliability
    diagram.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.linear_model import LogisticRegression

    p = RewardParams.of(params)
    rng = np.random.default_rng(p.seed)

    def oriented(split: str) -> tuple[np.ndarray, np.ndarray]:
        sp = pairs[(pairs["split"] == split) & pairs["criterion"].isin(CRITERIA) & (pairs["gold_margin"] != 0)]
        sc = _score_pairs(multi_head, sp, p)
        d = np.array([r[f"{r['criterion']}_chosen"] - r[f"{r['criterion']}_rejected"] for _, r in sc.iterrows()])
        y = (sc["gold_margin"].to_numpy() > 0).astype(int)
        flip = rng.random(len(d)) < 0.5
        return np.where(flip, -d, d), np.where(flip, 1 - y, y)

    d_val, y_val = oriented("validation")
    d_test, y_test = oriented("test")
    platt = LogisticRegression().fit(d_val.reshape(-1, 1), y_val)
    p_before = 1 / (1 + np.exp(-d_test))
    p_after = platt.predict_proba(d_test.reshape(-1, 1))[:, 1]
    ece_before, bins_before = expected_calibration_error(p_before, y_test)
    ece_after, bins_after = expected_calibration_error(p_after, y_test)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for bins, label in ((bins_before, f"raw σ(Δr), ECE {ece_before:.3f}"), (bins_after, f"Platt, ECE {ece_after:.3f}")):
        ok = bins["count"] > 0
        ax.plot(bins.loc[ok, "confidence"], bins.loc[ok, "accuracy"], "o-", label=label)
    ax.set_xlabel("predicted P(chosen ≻ rejected)")
    ax.set_ylabel("observed frequency (gold ordering)")
    ax.set_title("Reward model reliability (test)")
    ax.legend()
    fig.tight_layout()
    result = {"ece_before": round(ece_before, 4), "ece_after": round(ece_after, 4),
              "platt_coef": round(float(platt.coef_[0][0]), 4), "platt_intercept": round(float(platt.intercept_[0]), 4),
              "validation_pairs": len(d_val), "test_pairs": len(d_test)}
    log.info("calibration: %s", result)
    return result, fig


# --------------------------------------------------------------------------- projection, trade-off
def project_umap(multi_head, gold_scores: pd.DataFrame, prompts: pd.DataFrame, params: dict):
    """UMAP (or PCA: ``projection``) of the reward model's pooled hidden states on test responses, coloured by
    each gold score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = RewardParams.of(params)
    test = gold_scores[gold_scores["split"] == "test"]
    test = test.sample(n=min(len(test), p.umap_points), random_state=p.seed)
    rs = _score_responses(multi_head, test, prompts, p, pooled=True)
    if p.projection == "umap":
        import umap

        emb = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=p.seed, n_jobs=1).fit_transform(rs.attrs["pooled"])
    else:
        from sklearn.decomposition import PCA

        emb = PCA(n_components=2, random_state=p.seed).fit_transform(rs.attrs["pooled"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, h in zip(axes, CRITERIA):
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=rs[h], cmap="viridis", s=6, vmin=0, vmax=1)
        ax.set_title(f"gold {h}")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(sc, ax=ax, fraction=0.046)
    fig.suptitle(f"{p.projection.upper()} of the multi-head reward model's pooled states (test responses)")
    fig.tight_layout()
    return fig


def tradeoff_report(multi_head, gold_scores: pd.DataFrame, prompts: pd.DataFrame, params: dict) -> pd.DataFrame:
    """For each weight vector: how often the top-ranked candidate of a test prompt changes (against
    equal weights) and the mean gold scores of the chosen candidates."""
    p = RewardParams.of(params)
    test = gold_scores[gold_scores["split"] == "test"].reset_index(drop=True)
    rs = _score_responses(multi_head, test, prompts, p)
    rm = multi_head[0]
    # z-scored as the reward model's own scalar does, so that the weights mean what they say
    heads = ((rs[[f"rm_{h}" for h in CRITERIA]].to_numpy() - np.array([rm.norm_mean[h] for h in CRITERIA]))
             / np.array([rm.norm_std[h] for h in CRITERIA]))
    rows, top = [], {}
    for name, w in p.tradeoff.items():
        vec = np.array([w.get(h, 0.0) for h in CRITERIA])
        rs["_s"] = heads @ vec
        top[name] = rs.loc[rs.groupby("prompt_id")["_s"].idxmax()].set_index("prompt_id")
    base = top.get("equal", next(iter(top.values())))
    for name, t in top.items():
        changed = (t["response_id"] != base.loc[t.index, "response_id"]).mean()
        rows.append({"weights": name, **{f"w_{h}": p.tradeoff[name].get(h, 0.0) for h in CRITERIA},
                     "top_changed_vs_equal": round(float(changed), 4),
                     **{f"gold_{h}": round(float(t[h].mean()), 4) for h in CRITERIA}, "prompts": len(t)})
    return pd.DataFrame(rows)


def _training_summary(df: pd.DataFrame) -> dict:
    """Steps, first and last loss, last batch accuracy, and each evaluation's per-head train and
    validation accuracy (``best`` marks the state kept)."""
    if df is None or df.empty:
        return {}
    kind = df["kind"] if "kind" in df else pd.Series("step", index=df.index)
    steps, evals = df[kind == "step"], df[kind == "eval"]
    if steps.empty:
        return {}
    k = max(1, len(steps) // 10)
    out = {"steps": int(steps["step"].max()), "loss_first": round(float(steps["loss"].head(k).mean()), 4),
           "loss_last": round(float(steps["loss"].tail(k).mean()), 4),
           "train_batch_accuracy_last": round(float(steps["accuracy"].tail(k).mean()), 4)}
    if not evals.empty:
        cols = [c for c in evals.columns if c.startswith(("train_accuracy_", "validation_accuracy"))]
        out["evaluations"] = [
            {"step": int(r["step"]), "epoch": float(r["epoch"]), "best": bool(r.get("best", False)),
             **{c: (None if pd.isna(r[c]) else float(r[c])) for c in cols}} for _, r in evals.iterrows()]
        best = evals[evals["best"]] if "best" in evals else evals.tail(1)
        out["best_step"] = int(best["step"].iloc[0]) if len(best) else None
    return out


def reward_metrics_report(validation: dict, calibration: dict, mh_log: pd.DataFrame, dist_log: pd.DataFrame,
                          other_log: pd.DataFrame, training_pairs: pd.DataFrame, pairs: pd.DataFrame,
                          baseline: dict, behaviour: dict) -> dict:
    """``08_reporting/reward_model/metrics.json``: per model and head, the TF-IDF baseline and each head's
    margin over it, best-of-n and the hacking probes, calibration, and the training summary.

    ``training.data`` counts the multi-head model's training pairs by source and criterion, and the
    app's votes behind them (``app_votes_in_training``, of ``app_votes`` in the pairs table).
    """
    src = pairs["source"] if "source" in pairs else pd.Series("panel", index=pairs.index)
    app_pairs = pairs[src == "app"]
    app_train = training_pairs[training_pairs["source"] == "app"]

    def votes(df: pd.DataFrame) -> int:  # app pair ids are "app:<vote id>|criterion|a|b"
        return int(df["pair_id"].str.split("|").str[0].nunique()) if len(df) else 0

    data = {"pairs": len(training_pairs),
            "by_source": {str(k): int(v) for k, v in training_pairs["source"].value_counts().items()},
            "by_criterion": {str(k): int(v) for k, v in training_pairs["criterion"].value_counts().items()},
            "app_votes": votes(app_pairs), "app_pairs": len(app_pairs),
            "app_pairs_held_out": int((app_pairs["split"] == "app_holdout").sum()),
            "app_votes_in_training": votes(app_train), "app_pairs_in_training": len(app_train)}
    log.info("reward model trained on %d pairs %s; %d of %d app votes in training", data["pairs"], data["by_source"],
             data["app_votes_in_training"], data["app_votes"])
    over_baseline = {}
    for h in CRITERIA:
        rm_acc = validation.get("multi_head", {}).get(h, {}).get("test", {}).get("accuracy")
        bl_acc = baseline.get(h, {}).get("test", {}).get("accuracy")
        over_baseline[h] = (None if rm_acc is None or bl_acc is None
                            else {"reward_model": rm_acc, "baseline": bl_acc, "margin": round(rm_acc - bl_acc, 4)})
    other = [k for k in validation if k.startswith("multi_head_")]
    return {**validation, "baseline": baseline, "test_accuracy_over_baseline": over_baseline,
            "behaviour": {k: v for k, v in behaviour.items() if k != "hacking"}, "calibration": calibration,
            "training": {"multi_head": _training_summary(mh_log),
                         **({"distributional": _training_summary(dist_log)} if "distributional" in validation else {}),
                         **({other[0]: _training_summary(other_log)} if other else {}), "data": data},
            "not_trained": _not_trained(validation)}


def _not_trained(validation: dict) -> list[str]:
    """The comparison models the parameters switched off (the base env's default; the ``full`` env trains them)."""
    out = [] if "distributional" in validation else ["distributional (reward_modeling.distributional)"]
    if not any(k.startswith("multi_head_") for k in validation):
        out.append("other backbone (reward_modeling.compare_backbone)")
    if "cross_lingual" not in validation:
        out.append("Russian-only (reward_modeling.cross_lingual)")
    return out
