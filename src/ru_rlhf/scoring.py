"""Scoring a policy: its sampled answers to a table of prompts, each with the scores asked for.

:func:`score_policy` is the one way the project measures a policy: alignment's test generations and CEM's
samples, the probe set that chooses a grid point or an RL step (:func:`probe_policy`, also run by
:mod:`ru_rlhf.rl.runner`), and the over-optimisation curves. A reward model takes part as a
*scorer* (``(prompts, responses) -> DataFrame`` with one column per head and ``scalar``; :func:`rm_scorer`), so
that the audit's probes can also be run on a toy scorer with a known bias.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from ru_rlhf import experts
from ru_rlhf.judges import contexts_from_table, gold_reward, score_all
from ru_rlhf.models.generation import generate, response_kl, stable_seed
from ru_rlhf.models.policy import format_prompt, policy_prompt
from ru_rlhf.vocabulary import CRITERIA

Scorer = Callable[[list[str], list[str]], pd.DataFrame]

DEFAULT_MAX_NEW_TOKENS = 64  # a task that has no budget of its own in a budget per task


def rm_scorer(reward_model, weights: dict[str, float] | None = None) -> Scorer:
    """A scorer from a ``(RewardModel, tokenizer)`` pair: the per-head scores and the scalar (``weights`` over
    the heads; None: the reward model's own), the prompts formatted as the reward model was trained."""
    from ru_rlhf.models.reward import score_prompts

    rm, tok = reward_model

    def fn(prompts: list[str], responses: list[str]) -> pd.DataFrame:
        return score_prompts(rm, tok, prompts, responses, weights=weights)

    return fn


def gold_scorer(table: pd.DataFrame) -> Scorer:
    """A scorer from the gold judges: each response's ``gold_<criterion>`` scores and ``scalar``, their equal-weight
    mean (the oracle reward of Gao et al.'s setup). ``table`` holds the judge context of every prompt the scorer
    will see (:func:`ru_rlhf.judges.context_table`'s columns and ``prompt``); a prompt is found by its text.

    Raises:
        ValueError: two rows of ``table`` with the same prompt text and different contexts (the text alone
            would not say which context to judge by), or, when called, a prompt ``table`` does not have.
    """
    contexts = contexts_from_table(table)
    by_text: dict[str, object] = {}
    for pid, text in zip(table["prompt_id"], table["prompt"]):
        ctx = contexts[pid]
        if by_text.get(text, ctx) != ctx:
            raise ValueError(f"gold_scorer: prompt {pid!r} has the text of another prompt with another judge "
                             "context; the gold reward cannot tell them apart")
        by_text[text] = ctx

    def fn(prompts: list[str], responses: list[str]) -> pd.DataFrame:
        missing = [p for p in prompts if p not in by_text]
        if missing:
            raise ValueError(f"gold_scorer: {len(missing)} prompt(s) without a judge context, e.g. {missing[0][:60]!r}")
        scores = [score_all(by_text[p], r) for p, r in zip(prompts, responses)]
        out = pd.DataFrame(scores, columns=list(CRITERIA))
        out["scalar"] = [gold_reward(s) for s in scores]
        return out

    return fn


REWARDS = ("rm", "gold")  # what an RL run optimises: the reward model's scalar, or the gold judges' (the oracle run)


def reward_scorer(reward: str, reward_model, weights: dict[str, float] | None, prompts: pd.DataFrame,
                  desc: str) -> Scorer:
    """The scorer an RL run optimises: ``rm`` (:func:`rm_scorer`, ``weights`` over the heads) or ``gold``
    (:func:`gold_scorer` on ``prompts``' judge context). Shared by PPO/REINFORCE and GRPO/RLOO.

    Raises:
        ValueError: another ``reward``, naming ``desc``.
    """
    if reward not in REWARDS:
        raise ValueError(f"{desc}: reward is {reward!r}; it must be one of {', '.join(REWARDS)}")
    return rm_scorer(reward_model, weights) if reward == "rm" else gold_scorer(prompts)


def sample_answers(policy, tokenizer, table: pd.DataFrame, *, seed: int, key: tuple = (), temperature: float,
                   top_p: float = 1.0, samples: int = 1, max_new_tokens: int | Mapping[str, int], batch_size: int,
                   desc: str = "generate") -> pd.DataFrame:
    """``samples`` answers of ``policy`` to every prompt of ``table`` (``prompt_id``, ``prompt``; ``task_type``
    for a budget per task; ``lang``, when there, picks a Chain of Hindsight policy's cue).

    Sample ``k`` of prompt ``pid`` has its own seed, ``stable_seed(seed, *key, pid, k)``, so an answer does not
    depend on the batch it was generated in. With a budget per task (``max_new_tokens`` a mapping; a task it
    does not name gets :data:`DEFAULT_MAX_NEW_TOKENS`) each task is one generation call, tasks in sorted order;
    with one budget every row is in one call, in the table's order.

    Returns:
        One row per (prompt, sample), in generation order: the table's columns, ``sample`` and ``response``.
    """
    if isinstance(max_new_tokens, Mapping):
        calls = [(grp, max_new_tokens.get(task, DEFAULT_MAX_NEW_TOKENS), f"{desc} ({task})")
                 for task, grp in table.groupby("task_type", sort=True)]
    else:
        calls = [(table, max_new_tokens, desc)]
    rows = []
    for grp, budget, label in calls:
        recs = [(r.prompt_id, r.prompt, getattr(r, "lang", None), k) for r in grp.itertuples(index=False)
                for k in range(samples)]
        texts, _ = generate(
            policy, tokenizer, [policy_prompt(policy, p, lang) for _, p, lang, _ in recs],
            temperatures=[temperature] * len(recs), top_ps=[top_p] * len(recs),
            seeds=[stable_seed(seed, *key, pid, k) for pid, _, _, k in recs],
            max_new_tokens=budget, batch_size=batch_size, progress=False, desc=label)
        rows += [{"prompt_id": pid, "sample": k, "response": t} for (pid, _, _, k), t in zip(recs, texts)]
    return table.merge(pd.DataFrame(rows, columns=["prompt_id", "sample", "response"]), on="prompt_id", how="right")


def score_policy(policy, tokenizer, table: pd.DataFrame, *, seed: int, key: tuple = (), temperature: float,
                 top_p: float = 1.0, samples: int = 1, max_new_tokens: int | Mapping[str, int], batch_size: int,
                 desc: str = "generate", gold: bool = False, reward: Scorer | None = None, expert: bool = False,
                 reference=None) -> pd.DataFrame:
    """Sample ``policy``'s answers to ``table``'s prompts (:func:`sample_answers`) and score each answer.

    Args:
        gold: the gold judges' scores (the table has the judge context of each prompt,
            :func:`ru_rlhf.judges.context_table`'s columns).
        reward: a scorer (:func:`rm_scorer`): its every column.
        expert: the simulated expert panel's mean Likert score (1–5) of the answer.
        reference: a reference policy: the per-token KL of the policy to it along the answer (the policy given
            its own prompt, cue included; the reference the formatted prompt alone).

    Returns:
        :func:`sample_answers`'s rows, then the scores asked for, in this order: ``gold_<criterion>`` and
        ``gold`` (their equal-weight mean); ``rm_<column>`` per column of the scorer; ``expert``; ``kl`` (mean
        per token), ``kl_sum`` and ``tokens``.
    """
    out = sample_answers(policy, tokenizer, table, seed=seed, key=key, temperature=temperature, top_p=top_p,
                         samples=samples, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc)
    ids, prompts, responses = list(out["prompt_id"]), list(out["prompt"]), list(out["response"])
    ctx = contexts_from_table(table) if gold or expert else {}
    if gold:
        scores = [score_all(ctx[p], r) for p, r in zip(ids, responses)]
        per_criterion = pd.DataFrame(scores, index=out.index)
        for c in CRITERIA:
            out[f"gold_{c}"] = per_criterion[c].to_numpy()
        out["gold"] = [gold_reward(s) for s in scores]
    if reward is not None:
        rm = reward(prompts, responses)
        for col in rm.columns:
            out[f"rm_{col}"] = rm[col].to_numpy()
    if expert:
        rated = experts.rate(ctx, ids, responses)
        out["expert"] = rated.groupby("row")["likert"].mean().reindex(range(len(out))).to_numpy()
    if reference is not None:
        langs = list(out["lang"]) if "lang" in out else [None] * len(out)
        kls = response_kl(policy, reference, tokenizer,
                          [policy_prompt(policy, p, lang) for p, lang in zip(prompts, langs)], responses,
                          ref_prompts=[format_prompt(p) for p in prompts])
        out["kl"] = [k["kl"] for k in kls]
        out["kl_sum"] = [k["kl_sum"] for k in kls]
        out["tokens"] = [k["tokens"] for k in kls]
    return out


def probe_policy(policy, tokenizer, probe: pd.DataFrame, *, seed: int, max_new_tokens: int | Mapping[str, int],
                 batch_size: int, reference=None) -> tuple[dict, pd.DataFrame]:
    """Greedy answers on a probe set (seed key ``probe``) and their gold scores, with the summary that chooses a
    grid point or an RL step: ``probe_gold`` (mean gold reward) and ``probe_expert`` (the simulated expert
    panel's mean Likert score, also ``score``). With ``reference``, the answers' KL to it as well
    (:func:`score_policy`'s ``kl`` columns), from the same generation.

    Returns:
        ``(summary, answers)``: ``answers`` as :func:`score_policy` returns them.
    """
    answers = score_policy(policy, tokenizer, probe, seed=seed, key=("probe",), temperature=0.0, top_p=1.0,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, desc="probe", gold=True,
                           reference=reference)
    panel = experts.panel_score(contexts_from_table(probe), list(answers["prompt_id"]), list(answers["response"]))
    return {"score": panel, "probe_gold": float(answers["gold"].mean()), "probe_expert": panel}, answers
