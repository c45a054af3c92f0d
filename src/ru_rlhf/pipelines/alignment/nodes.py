"""Nodes of the alignment pipeline: DPO, IPO, Chain of Hindsight, PPO, REINFORCE, GRPO, RLOO and CEM from the SFT
policy.

Shared nodes (one set, reused by every method): the prompt roles (training prompts, a validation
probe set, the test prompts), generation on the test prompts with the same seeds for every
method and for the SFT policy (gold, RM and KL per response), the training-curve plot and the
summary. Each method's training node returns its policy, a per-step log and an info dict.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ru_rlhf import distributed
from ru_rlhf.judges import context_table
from ru_rlhf.models.policy import format_prompt
from ru_rlhf.models.training import StageParams
from ru_rlhf.pipelines.alignment.params import (
    CemParams,
    CohGuards,
    CohParams,
    CommonParams,
    DpoParams,
    RLTrainParams,
    TrlRLParams,
)
from ru_rlhf.scoring import probe_policy, rm_scorer, score_policy
from ru_rlhf.vocabulary import AUDIT_RUNS, CRITERIA

log = logging.getLogger(__name__)

CONTEXT_EXTRA = ("source_text", "answer_key", "key_facts", "fact_surfaces", "message")


# --------------------------------------------------------------------------- shared: prompts and probes
def select_alignment_prompts(prompts: pd.DataFrame, facts: pd.DataFrame, documents: pd.DataFrame,
                             common: dict) -> pd.DataFrame:
    """Give prompts their alignment roles, with the judge context of each.

    ``train``: prompts of the train split that rollouts and CEM sample from; ``probe``: a fixed
    validation set, stratified by task and language, scored during training (β choice, early stop);
    ``test``: the test split, never looked at while training.
    """
    c = CommonParams.of(common)
    rng = np.random.default_rng(c.seed)
    parts = []
    train = prompts[prompts["split"] == "train"]
    if c.train_prompts and len(train) > c.train_prompts:
        train = train.iloc[np.sort(rng.choice(len(train), c.train_prompts, replace=False))]
    parts.append(train.assign(role="train"))
    val = prompts[prompts["split"] == "validation"]
    groups = list(val.groupby(["task_type", "lang"], sort=True))
    per = max(1, math.ceil(c.probe_prompts / max(1, len(groups))))
    probe = pd.concat([g.iloc[np.sort(rng.choice(len(g), min(per, len(g)), replace=False))] for _, g in groups])
    probe = probe.iloc[np.sort(rng.choice(len(probe), min(c.probe_prompts, len(probe)), replace=False))]
    parts.append(probe.assign(role="probe"))
    test = prompts[prompts["split"] == "test"]
    if c.test_prompts and len(test) > c.test_prompts:
        test = test.iloc[np.sort(rng.choice(len(test), c.test_prompts, replace=False))]
    parts.append(test.assign(role="test"))
    out = pd.concat(parts, ignore_index=True)[["prompt_id", "doc_id", "task_type", "lang", "split", "role",
                                               "prompt"]]
    ctx = context_table(prompts[prompts["prompt_id"].isin(out["prompt_id"])], facts, documents)
    out = out.merge(ctx[["prompt_id", *CONTEXT_EXTRA]], on="prompt_id", how="left", validate="many_to_one")
    log.info("select_alignment_prompts: %s", out["role"].value_counts().to_dict())
    return out


def _role(table: pd.DataFrame, role: str) -> pd.DataFrame:
    return table[table["role"] == role].reset_index(drop=True)


def _probe(policy, tokenizer, probe: pd.DataFrame, c: CommonParams, reference=None) -> tuple[dict, pd.DataFrame]:
    """Greedy answers on the probe set and their scores (:func:`ru_rlhf.scoring.probe_policy`); with
    ``reference``, their KL to it too."""
    return probe_policy(policy, tokenizer, probe, seed=c.seed, max_new_tokens=c.max_new_tokens_by_task,
                        batch_size=c.batch_size, reference=reference)


def probe_scores(policy, tokenizer, probe: pd.DataFrame, c: CommonParams) -> dict:
    """Greedy answers on the probe set: mean gold reward and the simulated expert panel's Likert mean."""
    return _probe(policy, tokenizer, probe, c)[0]


# --------------------------------------------------------------------------- shared: test generations
def generate_outputs(policy, reference_policy, policy_tokenizer, reward_model, alignment_prompts: pd.DataFrame,
                     common: dict, method: str) -> pd.DataFrame:
    """Generations on the test prompts (same prompts, samples and seeds for every method), each
    with its gold scores, the reward model's heads and scalar, and its per-token KL to the reference.
    """
    c = CommonParams.of(common)
    test = _role(alignment_prompts, "test")
    start = time.perf_counter()
    scored = score_policy(policy, policy_tokenizer, test, seed=c.seed, key=("test",), temperature=c.test_temperature,
                          top_p=c.test_top_p, samples=c.test_samples, max_new_tokens=c.max_new_tokens_by_task,
                          batch_size=c.batch_size, desc=f"{method} test", gold=True,
                          reward=rm_scorer(reward_model, c.reward_weights), reference=reference_policy)
    scores = [col for col in scored.columns if col not in {*test.columns, "sample", "response"}]  # gold_*, rm_*, kl…
    out = scored[["prompt_id", "sample", "task_type", "lang", "prompt", "response", *scores]].copy()
    out.insert(0, "method", method)
    log.info("%s test generations: %d rows, gold %.4f, rm %.4f, kl %.4f, %.1f s", method, len(out),
             out["gold"].mean(), out["rm_scalar"].mean(), out["kl"].mean(), time.perf_counter() - start)
    return out


def generate_method_outputs(policy, reference_policy, policy_tokenizer, reward_model,
                            alignment_prompts: pd.DataFrame, common: dict, train: dict) -> pd.DataFrame:
    """:func:`generate_outputs` for a method's policy (its name from its parameters)."""
    return generate_outputs(policy, reference_policy, policy_tokenizer, reward_model, alignment_prompts, common,
                            train["method"])


def generate_sft_outputs(sft_policy, reference_policy, policy_tokenizer, reward_model,
                         alignment_prompts: pd.DataFrame, common: dict) -> pd.DataFrame:
    """:func:`generate_outputs` for the SFT policy itself: the baseline every method is compared with."""
    return generate_outputs(sft_policy, reference_policy, policy_tokenizer, reward_model, alignment_prompts,
                            common, "sft")


def plot_curve(step_log: pd.DataFrame, train: dict):
    """The training curves of one method: reward (or loss), KL and the probe score per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    method = train["method"]
    units = {"reward": "reward-model score (z)", "loss": "training loss", "kl": "KL to reference (nats / token)",
             "probe_gold": "probe gold reward [0, 1]", "expert_score": "probe Likert 1–5 (simulated)",
             "entropy": "entropy (nats / token)"}
    panels = [(c, units[c]) for c in units if c in step_log.columns and step_log[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 3.0))
    axes = np.atleast_1d(axes)
    group = "grid_value" if "grid_value" in step_log.columns else None
    for ax, (col, title) in zip(axes, panels):
        for key, df in (step_log.groupby(group) if group else [(None, step_log)]):
            d = df[df[col].notna()]
            ax.plot(d["step"], d[col], marker="." if len(d) < 30 else None,
                    label=f"{group.split('_')[0]}={key}" if group else None)
        ax.set_title(col)
        ax.set_xlabel("step")
        ax.set_ylabel(title)
        if col == "kl":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if group:
            ax.legend(fontsize=7)
    fig.suptitle(f"{method} (simulated judges and experts)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- DPO / IPO
def _training_pairs(preference_pairs: pd.DataFrame, method: str, criterion: str, max_pairs: int,
                    seed: int) -> pd.DataFrame:
    """The train split's pairs of ``criterion``, at most ``max_pairs`` (a seeded sample): the same pairs for
    every preference method (DPO, IPO, Chain of Hindsight) with the same settings."""
    pairs = preference_pairs[(preference_pairs["criterion"] == criterion) & (preference_pairs["split"] == "train")]
    if pairs.empty:
        raise ValueError(f"{method}: no training pairs for criterion {criterion!r} in preference_pairs")
    return pairs.sample(n=max_pairs, random_state=seed) if len(pairs) > max_pairs else pairs


def _grid_tables(rows: list[dict], logs: list[pd.DataFrame], chosen, method: str,
                 columns: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A grid search's table (one row per point, ``chosen`` marked) and its step log (``columns`` in that
    order, ``/`` in names as ``_``), shared by the methods that choose a setting on the probe."""
    grid = pd.DataFrame(rows)
    grid["chosen"] = grid["grid_value"] == chosen
    step_log = pd.concat(logs, ignore_index=True)
    step_log = step_log[[c for c in columns if c in step_log.columns]].rename(columns=lambda s: s.replace("/", "_"))
    step_log.insert(0, "method", method)
    return grid, step_log


def train_dpo(sft_policy, reference_policy, policy_tokenizer, preference_pairs: pd.DataFrame,
              alignment_prompts: pd.DataFrame, common: dict, train: dict):
    """DPO (``loss_type=sigmoid``) or IPO (``ipo``) with TRL's DPOTrainer, β (τ) from a grid.

    Every grid point trains a fresh copy of the SFT policy on the same training pairs; the choice
    is the point whose greedy answers on the validation probe set have the highest mean gold
    reward. Every point's result is in the returned grid table and the choice is logged.

    Returns:
        ``(policy, step_log, grid, info)``.
    """
    from datasets import Dataset

    c, p = CommonParams.of(common), DpoParams.of(train)
    pairs = _training_pairs(preference_pairs, p.method, p.criterion, p.max_pairs, c.seed)
    ds = Dataset.from_pandas(pd.DataFrame({"prompt": pairs["prompt"].map(format_prompt), "chosen": pairs["chosen"],
                                           "rejected": pairs["rejected"]}), preserve_index=False)
    probe = _role(alignment_prompts, "probe")
    start = time.perf_counter()
    base = probe_scores(sft_policy, policy_tokenizer, probe, c)
    rows, logs, best = [], [], None
    for value in p.grid:
        t0 = time.perf_counter()
        model = copy.deepcopy(sft_policy)
        kwargs = dict(beta=value, loss_type=p.loss_type, epochs=p.epochs, max_steps=p.max_steps,
                      batch_size=p.batch_size, learning_rate=p.learning_rate, max_length=p.max_length, seed=c.seed,
                      output_dir=Path(c.checkpoint_dir) / p.method / f"beta_{value}", stage=p.method)
        model, hist = distributed.dpo(model, reference_policy, policy_tokenizer, ds, c.distributed, **kwargs)
        res = probe_scores(model, policy_tokenizer, probe, c)
        row = {"method": p.method, "grid_value": value, "pairs": len(ds), "steps": int(hist["step"].max()),
               "final_loss": float(hist["loss"].iloc[-1]), "probe_gold": res["probe_gold"],
               "probe_expert": res["probe_expert"], "seconds": round(time.perf_counter() - t0, 1)}
        for col in ("rewards/accuracies", "rewards/margins"):
            if col in hist.columns:
                row[col.replace("/", "_")] = float(hist[col].iloc[-1])
        rows.append(row)
        logs.append(hist.assign(grid_value=value))
        log.info("%s grid point %s: %s", p.method, value, row)
        if best is None or res["probe_gold"] > best[0]:
            best = (res["probe_gold"], value, model)
    grid, step_log = _grid_tables(rows, logs, best[1], p.method, (
        "grid_value", "step", "epoch", "loss", "learning_rate", "grad_norm", "rewards/chosen", "rewards/rejected",
        "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"))
    info = {"method": p.method, "loss_type": p.loss_type, "criterion": p.criterion, "pairs": len(ds),
            "chosen_value": best[1], "parameter": "tau" if p.loss_type == "ipo" else "beta",
            "sft_probe_gold": base["probe_gold"], "sft_probe_expert": base["probe_expert"],
            "best_probe_gold": best[0], "seconds": round(time.perf_counter() - start, 1)}
    log.info("%s: chose %s=%s (probe gold %.4f vs SFT %.4f)", p.method, info["parameter"], best[1], best[0],
             base["probe_gold"])
    return best[2].eval(), step_log, grid, info


# --------------------------------------------------------------------------- Chain of Hindsight
def _guard_label(g: CohGuards) -> str:
    return f"mask={g.mask_share:g},plain={g.plain_share:g}"


def hindsight_dataset(pairs: pd.DataFrame, tokenizer, p: CohParams, guards: CohGuards, seed: int):
    """One grid point's training sequences as a pre-tokenised dataset (``input_ids``, ``labels``).

    Every pair gives a hindsight sequence (:func:`ru_rlhf.hindsight.hindsight_text`) with the chosen answer
    first or second (a seeded coin per pair); ``plain_share`` × pairs plain sequences (prompt → chosen) are
    added; ``mask_share`` of the input tokens are masked (:func:`ru_rlhf.hindsight.mask_inputs`).

    Returns:
        ``(dataset, built)``: ``built`` has one row per sequence (``kind``, ``chosen_first``, ``tokens``,
        ``loss_tokens``, ``masked``) for the counts in the grid table and the tests.
    """
    from datasets import Dataset

    from ru_rlhf.hindsight import (
        for_language,
        hindsight_text,
        mask_inputs,
        mask_token_id,
        plain_text,
        tokenize_with_loss_spans,
    )
    from ru_rlhf.metrics import is_tatar

    rng = np.random.default_rng(seed)
    eos, protect = tokenizer.eos_token, set(tokenizer.all_special_ids)
    mask_id = mask_token_id(tokenizer) if guards.mask_share > 0 else None
    if guards.mask_share > 0 and mask_id is None:
        log.info("coh: %s has no special token to mask with besides its end of sequence: masked inputs get "
                 "random ordinary tokens", type(tokenizer).__name__)
    first = rng.random(len(pairs)) < 0.5
    seqs = []
    langs = pairs["lang"] if "lang" in pairs else pairs["prompt"].map(lambda t: "tt" if is_tatar(t) else "ru")
    for r, lang, chosen_first in zip(pairs.itertuples(index=False), langs, first):
        phr = for_language(p.feedback, lang)
        text, spans = hindsight_text(format_prompt(r.prompt), r.chosen, r.rejected, phr.positive, phr.negative,
                                     eos, bool(chosen_first))
        seqs.append(("hindsight", bool(chosen_first), text, spans))
    n_plain = round(guards.plain_share * len(pairs))
    for r in pairs.sample(n=n_plain, random_state=seed, replace=n_plain > len(pairs)).itertuples(index=False):
        seqs.append(("plain", None, *plain_text(format_prompt(r.prompt), r.chosen, eos)))
    ids, labels, built = [], [], []
    for kind, chosen_first, text, spans in seqs:
        x, y = tokenize_with_loss_spans(tokenizer, text, spans, p.max_length)
        xm = mask_inputs(x, guards.mask_share, mask_id, rng, protect, len(tokenizer))
        ids.append(xm)
        labels.append(y)
        built.append({"kind": kind, "chosen_first": chosen_first, "tokens": len(x),
                      "loss_tokens": sum(t != -100 for t in y), "masked": sum(a != b for a, b in zip(x, xm))})
    return Dataset.from_dict({"input_ids": ids, "labels": labels}), pd.DataFrame(built)


def _feedback_leak(responses: pd.Series, p: CohParams) -> float:
    """Share of responses that contain a feedback phrase (a sign of copying the training format)."""
    phrases = [x for f in p.feedback.values() for x in (f.positive, f.negative)]
    return float(responses.map(lambda t: any(x in str(t) for x in phrases)).mean()) if len(responses) else 0.0


def train_coh(sft_policy, reference_policy, policy_tokenizer, preference_pairs: pd.DataFrame,
              alignment_prompts: pd.DataFrame, common: dict, train: dict):
    """Chain of Hindsight with TRL's SFTTrainer: the SFT policy learns both answers of each pair, each after
    its feedback phrase, and answers after the positive phrase at inference (no reference model in the loss).

    Every grid point (a setting of the two guards) trains a fresh copy of the SFT policy; the choice is the
    point whose greedy answers on the validation probe set (given the positive phrase) have the highest mean
    gold reward. The grid table has each point's probe gold, its feedback-phrase leak rate and its counts.

    Returns:
        ``(policy, step_log, grid, info)``.
    """
    from ru_rlhf.hindsight import CUE_ATTRIBUTE

    c, p = CommonParams.of(common), CohParams.of(train)
    pairs = _training_pairs(preference_pairs, p.method, p.criterion, p.max_pairs, c.seed)
    cue = {lang: f.positive for lang, f in p.feedback.items()}
    probe = _role(alignment_prompts, "probe")
    start = time.perf_counter()
    base = probe_scores(sft_policy, policy_tokenizer, probe, c)
    rows, logs, best = [], [], None
    for guards in p.grid:
        t0, label = time.perf_counter(), _guard_label(guards)
        ds, built = hindsight_dataset(pairs, policy_tokenizer, p, guards, c.seed)
        total = math.ceil(len(ds) / p.batch_size * p.epochs)
        stage = StageParams(epochs=p.epochs, batch_size=p.batch_size, learning_rate=p.learning_rate,
                            lr_scheduler="linear", warmup_ratio=0.1, max_length=p.max_length,
                            logging_steps=max(1, min(5, total // 2)), save_steps=10 ** 9, group_by_length=False)
        model = copy.deepcopy(sft_policy)
        setattr(model.config, CUE_ATTRIBUTE, cue)  # saved with the policy: every generator conditions on it
        kwargs = {"seed": c.seed, "output_dir": Path(c.checkpoint_dir) / p.method / label.replace(",", "_"),
                  "stage": f"{p.method}_{label}"}
        model, hist = distributed.sft(model, policy_tokenizer, ds, stage, c.distributed, **kwargs)
        setattr(model.config, CUE_ATTRIBUTE, cue)
        res, gen = _probe(model, policy_tokenizer, probe, c)
        hs = built[built["kind"] == "hindsight"]
        row = {"method": p.method, "grid_value": label, "mask_share": guards.mask_share,
               "plain_share": guards.plain_share, "pairs": len(pairs), "sequences": len(built),
               "plain_sequences": int((built["kind"] == "plain").sum()),
               "chosen_first_share": round(float(hs["chosen_first"].mean()), 4),
               "masked_tokens_share": round(float(built["masked"].sum() / max(1, built["tokens"].sum())), 4),
               "loss_tokens_share": round(float(built["loss_tokens"].sum() / max(1, built["tokens"].sum())), 4),
               "steps": int(hist["step"].max()), "final_loss": float(hist["loss"].iloc[-1]),
               "probe_gold": res["probe_gold"], "probe_expert": res["probe_expert"],
               "probe_feedback_leak": round(_feedback_leak(gen["response"], p), 4),
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        logs.append(hist.assign(grid_value=label))
        log.info("%s grid point %s: %s", p.method, label, row)
        if best is None or res["probe_gold"] > best[0]:
            best = (res["probe_gold"], label, model)
    grid, step_log = _grid_tables(rows, logs, best[1], p.method,
                                  ("grid_value", "step", "epoch", "loss", "learning_rate", "grad_norm"))
    info = {"method": p.method, "criterion": p.criterion, "pairs": len(pairs), "chosen_value": best[1],
            "parameter": "guards", "inference_cue": cue, "sft_probe_gold": base["probe_gold"],
            "sft_probe_expert": base["probe_expert"], "best_probe_gold": best[0],
            "seconds": round(time.perf_counter() - start, 1)}
    log.info("%s: chose %s (probe gold %.4f vs SFT %.4f)", p.method, best[1], best[0], base["probe_gold"])
    return best[2].eval(), step_log, grid, info


# --------------------------------------------------------------------------- PPO / REINFORCE
def train_rl(sft_policy, reference_policy, policy_tokenizer, reward_model, alignment_prompts: pd.DataFrame,
             common: dict, train: dict):
    """PPO (our own, ``ru_rlhf.rl.ppo``) or REINFORCE against the multi-head RM's weighted scalar (``reward: rm``)
    or the gold judges' mean (``reward: gold``, the audit's oracle runs).

    Every ``eval_every`` steps the simulated expert panel scores greedy answers on the probe set;
    the best state by that score is the output. The run is :func:`ru_rlhf.rl.runner.run_rl`; with
    ``common.distributed.num_processes > 1`` it runs under ``accelerate launch`` (``ru_rlhf.distributed``).
    Returns ``(policy, step_log, info, checkpoints)``, ``checkpoints`` the ``{name: folder}`` of the evaluated
    states the trainer saved as it went (``step-NNNN`` under the checkpoint folder; the catalog's
    ``alignment.<method>.checkpoints``, which the over-optimisation curves follow).
    """
    from ru_rlhf.io.datasets import saved_checkpoints

    c = CommonParams.of(common)
    # the RL controls are typed once, by RLTrainParams (ranges, unknown keys refused); `method` names the run
    p = RLTrainParams.of(train)
    start = time.perf_counter()
    policy, step_log, info = distributed.rl(
        sft_policy, reference_policy, policy_tokenizer, reward_model, _role(alignment_prompts, "train"),
        _role(alignment_prompts, "probe"), c.distributed, method=p.method,
        rl=p.model_dump(exclude={"method", "reward"}), reward=p.reward,
        seed=c.seed, checkpoint_dir=str(Path(c.checkpoint_dir) / p.method), reward_weights=c.reward_weights,
        max_new_tokens=c.max_new_tokens_by_task, batch_size=c.batch_size, desc=f"alignment.{p.method}.train_rl")
    if c.distributed.num_processes > 1:
        info.update(processes=c.distributed.num_processes, seconds=round(time.perf_counter() - start, 1))
        policy = policy.eval()
    return policy, step_log, info, saved_checkpoints(Path(c.checkpoint_dir) / p.method)


# --------------------------------------------------------------------------- GRPO / RLOO (TRL's trainers)
def train_trl_rl(sft_policy, reference_policy, policy_tokenizer, reward_model, alignment_prompts: pd.DataFrame,
                 common: dict, train: dict):
    """GRPO or RLOO with TRL's own trainers (``trl.GRPOTrainer`` / ``trl.RLOOTrainer``) against the multi-head RM's
    weighted scalar (``reward: rm``) or the gold judges' mean (``reward: gold``).

    The run is :func:`ru_rlhf.rl.trl_online.run_trl_rl`: TRL samples, scores (our reward function), computes the
    advantages and the loss; our callback evaluates the probe set every ``eval_every`` steps, keeps the best state
    (as PPO's) and saves each evaluated state. With ``common.distributed.num_processes > 1`` it runs under
    ``accelerate launch`` (:func:`ru_rlhf.distributed.trl_rl`), where TRL's trainer distributes itself, as for the
    other methods. Returns ``(policy, step_log, info, checkpoints)`` as :func:`train_rl` does.
    """
    from ru_rlhf.io.datasets import saved_checkpoints

    c, p = CommonParams.of(common), TrlRLParams.of(train)
    start = time.perf_counter()
    folder = Path(c.checkpoint_dir) / p.method
    policy, step_log, info = distributed.trl_rl(
        sft_policy, reference_policy, policy_tokenizer, reward_model, _role(alignment_prompts, "train"),
        _role(alignment_prompts, "probe"), c.distributed, method=p.method, trl=p.trl(), reward=p.reward, seed=c.seed,
        checkpoint_dir=str(folder), reward_weights=c.reward_weights, max_new_tokens=c.max_new_tokens_by_task,
        batch_size=c.batch_size, desc=f"alignment.{p.method}.train_trl_rl")
    if c.distributed.num_processes > 1:
        info.update(processes=c.distributed.num_processes, seconds=round(time.perf_counter() - start, 1))
        policy = policy.eval()
    return policy, step_log, info, saved_checkpoints(folder)


# --------------------------------------------------------------------------- CEM
def train_cem(sft_policy, reference_policy, policy_tokenizer, reward_model, alignment_prompts: pd.DataFrame,
              common: dict, train: dict):
    """Cross-entropy method: sample N per training prompt, keep the RM's top-K, SFT on them, repeat.

    Returns ``(policy, step_log, info)``; the log has one row per iteration (sample and elite
    reward, SFT loss, probe gold and expert score, probe KL to the reference).
    """
    from datasets import Dataset

    c, p = CommonParams.of(common), CemParams.of(train)
    scorer = rm_scorer(reward_model, c.reward_weights)
    pool = _role(alignment_prompts, "train")
    probe = _role(alignment_prompts, "probe")
    policy = sft_policy
    start = time.perf_counter()
    base = probe_scores(policy, policy_tokenizer, probe, c)
    rows = [{"method": p.method, "step": 0, "probe_gold": base["probe_gold"], "expert_score": base["probe_expert"],
             "kl": 0.0, "seconds": 0.0}]
    stage = StageParams(epochs=p.epochs, batch_size=p.batch_size, learning_rate=p.learning_rate,
                        lr_scheduler="constant", warmup_ratio=0.0, max_length=p.max_length, logging_steps=1,
                        save_steps=10 ** 9, group_by_length=False)
    for it in range(1, p.iterations + 1):
        sel = pool.sample(n=min(p.prompts, len(pool)), random_state=c.seed + it)
        budgets = {t: min(v, p.max_new_tokens) for t, v in c.max_new_tokens_by_task.items()}
        gen = score_policy(policy, policy_tokenizer, sel, seed=c.seed, key=(f"cem{it}",), temperature=p.temperature,
                           top_p=p.top_p, samples=p.samples, max_new_tokens=budgets, batch_size=c.batch_size,
                           desc=f"cem {it}", reward=scorer)
        elite = (gen[gen["response"].str.len() > 0].sort_values(["prompt_id", "rm_scalar"], ascending=[True, False])
                 .groupby("prompt_id").head(p.elite))
        ds = Dataset.from_pandas(pd.DataFrame({"prompt": elite["prompt"].map(format_prompt),
                                               "completion": elite["response"]}), preserve_index=False)
        kwargs = {"seed": c.seed + it, "output_dir": Path(c.checkpoint_dir) / p.method / f"iter_{it}",
                  "stage": f"cem_{it}"}
        policy, hist = distributed.sft(policy, policy_tokenizer, ds, stage, c.distributed, **kwargs)
        res, pg = _probe(policy, policy_tokenizer, probe, c, reference=reference_policy)  # one greedy generation
        rows.append({"method": p.method, "step": it, "reward": float(gen["rm_scalar"].mean()),
                     "elite_reward": float(elite["rm_scalar"].mean()), "elite": len(elite), "samples": len(gen),
                     "loss": float(hist["loss"].mean()), "probe_gold": res["probe_gold"],
                     "expert_score": res["probe_expert"], "kl": float(np.mean(pg["kl"].to_numpy())),
                     "seconds": round(time.perf_counter() - start, 1)})
        log.info("cem iteration %d: %s", it, rows[-1])
    step_log = pd.DataFrame(rows)
    info = {"method": p.method, "iterations": p.iterations, "samples_per_prompt": p.samples, "elite": p.elite,
            "prompts_per_iteration": p.prompts, "sft_probe_gold": base["probe_gold"],
            "sft_probe_expert": base["probe_expert"], "best_probe_gold": float(step_log["probe_gold"].iloc[-1]),
            "seconds": round(time.perf_counter() - start, 1)}
    return policy.eval(), step_log, info


# --------------------------------------------------------------------------- summary
def alignment_summary(sft_generations: pd.DataFrame, frontier_fits: dict, *parts) -> dict:
    """Per method: ``gold_gain`` (mean gold reward on the test generations minus the SFT policy's),
    ``kl`` (mean per-token KL to the reference), and the numbers behind them; under ``frontier``, Gao et al.'s fit
    of each over-optimisation curve (``reward_kl_frontier_fits``: α, β, the KL where the fitted gold peaks …).

    ``beats_sft`` / ``worse_than_sft`` come from a test, not from the sign of the gain: the paired t-test of
    the per-response gold differences against SFT (same prompts and samples), two-sided, its p-values
    Holm-corrected across the methods of this summary, at ``metrics.ALPHA``; ``gold_gain_ci95`` is the 95 %
    t interval of the gain. ``parts`` are each method's ``(generations, info)`` in turn.
    """
    from ru_rlhf.metrics import ALPHA, holm, paired_test

    base = float(sft_generations["gold"].mean())
    out: dict[str, Any] = {"_note": "gold = mean of the three gold judges (equal weights) on the test prompts; "
                                    "kl = mean per-token KL(policy || SFT reference) along each response; "
                                    "the probe scores come from SIMULATED experts",
                           "sft": {"gold": round(base, 4), "rm": round(float(sft_generations["rm_scalar"].mean()), 4),
                                   "rows": len(sft_generations)}}
    tests = {}
    for gen, info in zip(parts[0::2], parts[1::2]):
        method = str(gen["method"].iloc[0])
        merged = gen.merge(sft_generations[["prompt_id", "sample", "gold"]], on=["prompt_id", "sample"],
                           suffixes=("", "_sft"))
        t = tests[method] = paired_test(merged["gold"] - merged["gold_sft"])
        out[method] = {
            "gold_gain": round(float(gen["gold"].mean()) - base, 4), "gold_gain_se": round(t["se"], 4),
            "gold_gain_ci95": [round(t["ci_low"], 4), round(t["ci_high"], 4)],
            "gold_gain_p": round(t["p_value"], 4),
            "kl": float(f"{float(gen['kl'].mean()):.4g}"), "gold": round(float(gen["gold"].mean()), 4),
            "gold_by_criterion": {cr: round(float(gen[f"gold_{cr}"].mean()), 4) for cr in CRITERIA},
            "rm": round(float(gen["rm_scalar"].mean()), 4),
            "kl_seq": float(f"{float(gen['kl_sum'].mean()):.4g}") if "kl_sum" in gen else None,
            "ci95_above_zero": bool(t["ci_low"] > 0), "gain_over_2se": bool(t["mean"] > 2 * t["se"]),
            "seconds": info.get("seconds"), "rows": len(gen),
            **{k: info[k] for k in ("chosen_value", "parameter", "inference_cue", "reward", "best_step", "steps_run",
                                    "stop_reason", "kl_at_best", "sft_probe_expert", "best_score") if k in info},
        }
    # the audit's runs (oracles, PPO past its budget) are reported apart and are not in the methods' Holm family
    audit_runs = {m: out.pop(m) for m in list(tests) if m in AUDIT_RUNS}
    tests = {m: t for m, t in tests.items() if m not in AUDIT_RUNS}
    adjusted = dict(zip(tests, holm([t["p_value"] for t in tests.values()])))
    for method, t in tests.items():
        p_holm = adjusted[method]
        significant = p_holm == p_holm and p_holm < ALPHA
        out[method].update({"gold_gain_p_holm": round(p_holm, 4), "beats_sft": bool(significant and t["mean"] > 0),
                            "worse_than_sft": bool(significant and t["mean"] < 0)})
    out["_test"] = (f"beats_sft / worse_than_sft: paired t-test of per-response gold differences against SFT on the "
                    f"same test prompts and samples, two-sided, Holm-corrected across the {len(tests)} methods, "
                    f"alpha = {ALPHA}; gold_gain_ci95 is the 95 % t interval of the gain (uncorrected)")
    out["sft"]["gold_by_criterion"] = {cr: round(float(sft_generations[f"gold_{cr}"].mean()), 4) for cr in CRITERIA}
    out["audit_runs"] = {"_note": "not in the method comparison: reward gold = the oracle run (the gold judges' mean "
                                  "as the reward, Gao et al.'s setup); ppo_long = PPO past its KL budget (the "
                                  "over-optimisation curve); gain_over_2se: gold_gain > 2 standard errors of the "
                                  "paired difference", **audit_runs}
    out["frontier"] = frontier_fits
    log.info("alignment_summary: %s", {k: v for k, v in out.items() if k != "_note"})
    return out
