"""REINFORCE with a moving-average baseline and a KL penalty (the HelpSteer2 notebook's method, batched).

It reuses PPO's rollout, KL controller, evaluation and logging (``ru_rlhf.rl.ppo.train`` with
``algorithm="reinforce"``); only the update differs (``ru_rlhf.rl.ppo._reinforce_update``): no value
head, no clipping, one gradient step per rollout on −(R − b)·Σ log π.
"""

from __future__ import annotations

from dataclasses import replace

from ru_rlhf.rl.ppo import RLConfig, train


def train_reinforce(policy, ref_model, tokenizer, train_prompts, reward_fn, cfg: RLConfig, **kwargs):
    """:func:`ru_rlhf.rl.ppo.train` with the REINFORCE update."""
    return train(policy, ref_model, tokenizer, train_prompts, reward_fn, replace(cfg, algorithm="reinforce"),
                 **kwargs)
