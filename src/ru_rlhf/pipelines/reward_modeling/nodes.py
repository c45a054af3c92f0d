"""Nodes of the reward_modeling pipeline: encoder → multi-head and distributional RMs → validation,
calibration, projection and the trade-off report."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from ru_rlhf import distributed
from ru_rlhf.distributed import DistributedParams
from ru_rlhf.judges import CRITERIA
from ru_rlhf.metrics import expected_calibration_error, pairwise_metrics
from ru_rlhf.models.encoder import EncoderSize, load_encoder, load_encoder_tokenizer, train_wordpiece_tokenizer
from ru_rlhf.models.policy import format_prompt
from ru_rlhf.models.reward import RewardModel, score

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parameters
class EncoderParams(BaseModel):
    name_or_path: str | None = None
    size: EncoderSize = Field(default_factory=EncoderSize)
    vocab_size: int = 8000
    mlm_epochs: float = 2.0
    mlm_batch_size: int = 32
    mlm_learning_rate: float = 5e-4
    max_length: int = 256


class RMTrainParams(BaseModel):
    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 3e-4
    max_length: int = 256
    max_pairs_per_criterion: int = 6000
    save_steps: int = 500


class RewardParams(BaseModel):
    """Typed parameters of the reward_modeling pipeline (``parameters_reward_modeling.yml``)."""

    seed: int = 2024
    checkpoint_dir: str = "data/06_models/checkpoints"
    encoder: EncoderParams = Field(default_factory=EncoderParams)
    train: RMTrainParams = Field(default_factory=RMTrainParams)
    n_bins: int = 10
    weights: dict[str, float] = {"helpfulness": 0.4, "truthfulness": 0.3, "harmlessness": 0.3}
    tradeoff: dict[str, dict[str, float]] = {
        "equal": {"helpfulness": 1 / 3, "truthfulness": 1 / 3, "harmlessness": 1 / 3},
        "helpful_heavy": {"helpfulness": 0.7, "truthfulness": 0.15, "harmlessness": 0.15},
        "safety_heavy": {"helpfulness": 0.15, "truthfulness": 0.15, "harmlessness": 0.7},
    }
    cross_lingual: bool = True
    umap_points: int = 1500
    # num_processes > 1: each reward model's training loop runs under `accelerate launch` (DDP)
    distributed: DistributedParams = Field(default_factory=DistributedParams)


def _params(params: dict) -> RewardParams:
    return RewardParams.model_validate(params)


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

    p = _params(params)
    e = p.encoder
    if e.name_or_path:
        return (load_encoder(e.name_or_path, masked_lm=True), load_encoder_tokenizer(e.name_or_path)), \
            pd.DataFrame(columns=["stage", "step", "loss"])
    train_ids = set(doc_splits.loc[doc_splits["split"] == "train", "doc_id"])
    texts = documents.loc[documents["doc_id"].isin(train_ids), "text"].tolist()
    tok = train_wordpiece_tokenizer(documents["text"].tolist(), e.vocab_size, e.size.max_position_embeddings)
    model = load_encoder(size=e.size, tokenizer=tok, masked_lm=True, seed=p.seed)
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
    """The training split's per-criterion pairs, at most ``max_pairs_per_criterion`` per criterion.

    Pairs from people (``source`` other than ``panel``: the app's votes, imported labels) are always
    kept, since they are few and are the reason a retrain runs; the simulated panel's pairs fill the
    rest of each criterion's budget (a seeded sample).
    """
    train = pairs[(pairs["split"] == "train") & pairs["criterion"].isin(CRITERIA)]
    if lang:
        train = train[train["lang"] == lang]
    source = train["source"] if "source" in train else pd.Series("panel", index=train.index)
    parts = []
    for _, g in train.groupby("criterion"):
        people = g[source[g.index] != "panel"]
        panel = g[source[g.index] == "panel"]
        room = max(0, p.train.max_pairs_per_criterion - len(people))
        parts += [people, panel.sample(n=min(len(panel), room), random_state=p.seed)]
    out = pd.concat(parts, ignore_index=True) if parts else train.iloc[:0].copy()
    out["prompt"] = out["prompt"].map(format_prompt)
    return out


def _train(kind: str, pairs: pd.DataFrame, encoder, p: RewardParams, name: str, lang: str | None = None):
    """Train one reward model; returns ``((model, tokenizer), log, training_pairs)``."""
    model, tok = encoder
    base = getattr(model, "bert", model)  # the encoder inside a masked-LM model
    import torch

    torch.manual_seed(p.seed)  # the heads' initialisation is part of the run's seed, not of what ran before
    rm = RewardModel(copy.deepcopy(base), CRITERIA, kind, p.n_bins, p.weights)
    data = _training_pairs(pairs, p, lang)
    by_source = data["source"].value_counts().to_dict() if "source" in data else {}
    log.info("%s: %d training pairs %s, by source %s", name, len(data), data["criterion"].value_counts().to_dict(),
             by_source)
    t = p.train
    kwargs = {"epochs": t.epochs, "batch_size": t.batch_size, "learning_rate": t.learning_rate,
              "max_length": t.max_length, "seed": p.seed, "checkpoint_dir": Path(p.checkpoint_dir) / name,
              "save_steps": t.save_steps, "desc": name}
    rm, history = distributed.reward_model(rm, tok, data, p.distributed, **kwargs)  # here, or N processes
    norm = normalise_heads(rm, tok, data, p)
    log.info("%s: head normalisation %s", name, norm)
    return (rm, tok), history.assign(model=name), data


def normalise_heads(rm: RewardModel, tok, data: pd.DataFrame, p: RewardParams) -> dict:
    """Fit the scalar's per-head z-scoring on the training pairs' responses (up to 2 000, seeded)."""
    from ru_rlhf.models.reward import fit_normalisation

    texts = pd.DataFrame({"prompt": list(data["prompt"]) * 2, "response": list(data["chosen"]) + list(data["rejected"])})
    texts = texts.drop_duplicates()
    texts = texts.sample(n=min(2000, len(texts)), random_state=p.seed)
    return fit_normalisation(rm, tok, list(texts["prompt"]), list(texts["response"]), p.train.max_length)


TRAINING_PAIR_COLUMNS = ["pair_id", "prompt_id", "criterion", "source", "lang", "split", "margin"]


def train_multi_head_rm(pairs: pd.DataFrame, encoder, params: dict):
    """The multi-head reward model: Bradley–Terry per criterion on that criterion's pairs.

    Returns:
        ``(reward_model, log, training_pairs)``: ``training_pairs`` lists the pairs it trained on
        (ids, criterion, source, language), so a retrain shows which of the app's pairs went in.
    """
    rm, history, data = _train("multi_head", pairs, encoder, _params(params), "multi_head")
    return rm, history, data.reindex(columns=TRAINING_PAIR_COLUMNS).reset_index(drop=True)


def train_distributional_rm(pairs: pd.DataFrame, encoder, params: dict):
    """The distributional reward model: 10 rating bins per criterion, −log P(chosen ≻ rejected)."""
    rm, history, _ = _train("distributional", pairs, encoder, _params(params), "distributional")
    return rm, history


def train_russian_only_rm(pairs: pd.DataFrame, encoder, params: dict):
    """A multi-head reward model trained on Russian pairs only (for the cross-lingual report)."""
    p = _params(params)
    if not p.cross_lingual:
        return None, pd.DataFrame(columns=["step", "loss", "model"])
    rm, history, _ = _train("multi_head", pairs, encoder, p, "russian_only", lang="ru")
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


def validate_reward_models(multi_head, distributional, russian_only, pairs: pd.DataFrame, gold_scores: pd.DataFrame,
                           annotations: pd.DataFrame, prompts: pd.DataFrame, params: dict) -> tuple[dict, pd.DataFrame]:
    """Per head: pairwise accuracy against the gold ordering and against the annotators, ROC AUC of
    the reward difference, Spearman with the gold scores and with the annotators' mean score, on
    the validation and test splits, and per language and task; the Russian-only model on Tatar.

    Returns:
        ``(metrics, scored_test_pairs)``.
    """
    p = _params(params)
    metrics: dict[str, Any] = {}
    ann_mean = annotations.pivot_table(index="response_id", columns="criterion", values="score", aggfunc="mean")
    scored_test = None
    for name, model in (("multi_head", multi_head), ("distributional", distributional)):
        metrics[name] = {h: {} for h in CRITERIA}
        for split in ("validation", "test"):
            sp = pairs[(pairs["split"] == split) & pairs["criterion"].isin(CRITERIA)]
            sc = _score_pairs(model, sp, p)
            resp = gold_scores[gold_scores["split"] == split]
            rs = _score_responses(model, resp, prompts, p)
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
    if russian_only is not None:
        tt = pairs[(pairs["split"] == "test") & (pairs["lang"] == "tt") & pairs["criterion"].isin(CRITERIA)]
        metrics["cross_lingual"] = {"trained_on": "ru pairs only", "evaluated_on": "tt test pairs"}
        for name, model in (("russian_only", russian_only), ("multi_head", multi_head)):
            sc = _score_pairs(model, tt, p)
            metrics["cross_lingual"][name] = {
                h: pairwise_metrics(sc.loc[sc["criterion"] == h, f"{h}_chosen"]
                                    - sc.loc[sc["criterion"] == h, f"{h}_rejected"],
                                    sc.loc[sc["criterion"] == h, "gold_margin"]) for h in CRITERIA}
    log.info("reward model test metrics: %s", {n: {h: {k: v for k, v in metrics[n][h]["test"].items()
                                                         if not isinstance(v, dict)} for h in CRITERIA}
                                                  for n in ("multi_head", "distributional")})
    return metrics, scored_test


def _spearman(rs: pd.DataFrame, head: str, ann_mean: pd.DataFrame) -> dict:
    from scipy.stats import spearmanr

    gold = spearmanr(rs[f"rm_{head}"], rs[head]).statistic if rs[head].nunique() > 1 else float("nan")
    am = rs["response_id"].map(ann_mean[head]) if head in ann_mean else pd.Series(dtype=float)
    ok = am.notna()
    ann = spearmanr(rs.loc[ok, f"rm_{head}"], am[ok]).statistic if ok.sum() > 2 else float("nan")
    return {"spearman_gold": round(float(gold), 4), "spearman_annotators": round(float(ann), 4)}


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

    p = _params(params)
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
    """UMAP of the reward model's pooled hidden states on test responses, coloured by each gold score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap

    p = _params(params)
    test = gold_scores[gold_scores["split"] == "test"]
    test = test.sample(n=min(len(test), p.umap_points), random_state=p.seed)
    rs = _score_responses(multi_head, test, prompts, p, pooled=True)
    emb = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=p.seed, n_jobs=1).fit_transform(rs.attrs["pooled"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, h in zip(axes, CRITERIA):
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=rs[h], cmap="viridis", s=6, vmin=0, vmax=1)
        ax.set_title(f"gold {h}")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(sc, ax=ax, fraction=0.046)
    fig.suptitle("UMAP of the multi-head reward model's pooled states (test responses)")
    fig.tight_layout()
    return fig


def tradeoff_report(multi_head, gold_scores: pd.DataFrame, prompts: pd.DataFrame, params: dict) -> pd.DataFrame:
    """For each weight vector: how often the top-ranked candidate of a test prompt changes (against
    equal weights) and the mean gold scores of the chosen candidates."""
    p = _params(params)
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


def reward_metrics_report(validation: dict, calibration: dict, mh_log: pd.DataFrame, dist_log: pd.DataFrame,
                          training_pairs: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    """``08_reporting/reward_model/metrics.json``: per model and head, calibration, training summary.

    ``training.data`` counts the multi-head model's training pairs by source and criterion, and the
    app's votes behind them (``app_votes_in_training``, of ``app_votes`` in the pairs table).
    """
    def summary(df: pd.DataFrame) -> dict:
        if df.empty:
            return {}
        k = max(1, len(df) // 10)
        return {"steps": int(df["step"].max()), "loss_first": round(float(df["loss"].head(k).mean()), 4),
                "loss_last": round(float(df["loss"].tail(k).mean()), 4),
                "train_accuracy_last": round(float(df["accuracy"].tail(k).mean()), 4)}

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
    return {**validation, "calibration": calibration,
            "training": {"multi_head": summary(mh_log), "distributional": summary(dist_log), "data": data}}
