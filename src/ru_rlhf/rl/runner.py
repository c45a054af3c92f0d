"""One PPO or REINFORCE run against a reward model's scalar, evaluated on a probe set.

What the alignment stage's ``train_rl`` node runs in its own process, and what every worker of a distributed run
runs (:func:`ru_rlhf.distributed.rl`, ``python -m ru_rlhf.distributed_worker rl``): its arguments are plain values
(JSON across the process boundary) and two prompt tables.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ru_rlhf.rl.params import RLParams
from ru_rlhf.scoring import Scorer, probe_policy, reward_scorer


def reward_fn(scorer: Scorer):
    """The RL reward: ``(prompts, responses) -> tensor`` of a scorer's ``scalar`` (:func:`ru_rlhf.scoring.rm_scorer`:
    the reward model's weighted heads; :func:`ru_rlhf.scoring.gold_scorer`: the gold judges' mean)."""

    def fn(prompts: list[str], responses: list[str]):
        import torch

        return torch.tensor(scorer(prompts, responses)["scalar"].to_numpy())

    return fn


def reward_identity(reward: str, reward_model, weights: dict[str, float] | None) -> str:
    """What a resume state must match about the reward: ``gold``, or the reward model's weights and the head
    weights of its scalar (a state trained on another reward model is not resumed)."""
    from ru_rlhf.models.training import run_fingerprint, weights_fingerprint

    if reward != "rm":
        return reward
    rm = reward_model[0]  # (RewardModel, tokenizer), as rm_scorer takes it
    return run_fingerprint(reward=reward, weights=weights_fingerprint(rm), heads=weights or rm.weights)


def make_critic(cfg, reward_model, policy_tokenizer, weights: dict[str, float] | None = None):
    """PPO's value model for ``cfg`` (``value_init``): a :class:`ru_rlhf.rl.rollout.Critic` copied from the reward
    model (``(RewardModel, tokenizer)``), or None (a zero head on the policy; REINFORCE needs none).

    Raises:
        ValueError: ``value_init: reward_model`` with a reward model that does not read the policy's tokens (another
            tokenizer: a BERT encoder, say), naming the parameter.
    """
    from ru_rlhf.rl.rollout import Critic

    if getattr(cfg, "value_init", None) != "reward_model":
        return None
    rm, rm_tok = reward_model
    if rm_tok.get_vocab() != policy_tokenizer.get_vocab():
        raise ValueError("value_init: reward_model needs a reward model with the policy's tokenizer (its backbone "
                         f"reads the policy's tokens); this one has {type(rm_tok).__name__} with {len(rm_tok)} tokens "
                         f"against the policy's {len(policy_tokenizer)}: set value_init: zero")
    return Critic.from_reward_model(rm, weights)


def run_rl(sft_policy, reference_policy, tokenizer, reward_model, train_prompts: pd.DataFrame,
           probe_prompts: pd.DataFrame, *, method: str, rl: dict, seed: int, checkpoint_dir: str | Path,
           reward_weights: dict[str, float] | None, reward: str, max_new_tokens: int | Mapping[str, int], batch_size: int,
           desc: str):
    """PPO or REINFORCE (``rl``: :class:`ru_rlhf.rl.params.RLParams`'s fields) from ``sft_policy``.

    Rollouts are sampled from ``train_prompts``; every ``eval_every`` steps greedy answers on ``probe_prompts``
    are scored (:func:`ru_rlhf.scoring.probe_policy` with ``seed``, ``max_new_tokens`` and ``batch_size``) and
    the best state by the simulated expert panel's score is the output. Each evaluated state is saved under
    ``checkpoint_dir``; ``method`` names the run in its log and info. ``reward`` is ``rm`` (the reward model's
    scalar, ``reward_weights`` over its heads) or ``gold`` (the gold judges' mean, from the judge context of
    ``train_prompts``: the oracle run that tells the optimiser's share of a gap from the reward model's).

    Returns:
        ``(policy, step_log, info)``.
    """
    from ru_rlhf.rl.loop import train as rl_train

    cfg = RLParams.of(rl).config(seed)
    scorer = reward_scorer(reward, reward_model, reward_weights, train_prompts, desc)
    start = time.perf_counter()
    policy, step_log, info = rl_train(
        sft_policy, reference_policy, tokenizer, train_prompts, reward_fn(scorer), cfg,
        evaluate=lambda m: probe_policy(m, tokenizer, probe_prompts, seed=seed, max_new_tokens=max_new_tokens,
                                        batch_size=batch_size)[0],
        checkpoint_dir=Path(checkpoint_dir), desc=desc,
        critic=make_critic(cfg, reward_model, tokenizer, reward_weights),
        reward_id=reward_identity(reward, reward_model, reward_weights))
    step_log.insert(0, "method", method)
    first = step_log[step_log["step"] == 0].iloc[0] if (step_log["step"] == 0).any() else None
    best = step_log[step_log["step"] == info["best_step"]].iloc[0]
    info.update({"method": method, "algorithm": cfg.algorithm, "reward": reward, "seconds": round(time.perf_counter() - start, 1),
                 "sft_probe_expert": float(first["expert_score"]) if first is not None else None,
                 "sft_probe_gold": float(first["probe_gold"]) if first is not None else None,
                 "best_probe_gold": float(best["probe_gold"]),
                 "kl_at_best": float(best["kl"]) if "kl" in best and pd.notna(best["kl"]) else 0.0})
    return policy, step_log, info
