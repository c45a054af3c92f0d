"""PPO for a causal LM against a reward model, our own (TRL 1.x ships no PPO trainer): its config and update.

Follows InstructGPT / Ziegler et al. (2019):

* rollouts sampled from the policy at a temperature, no nucleus cut, every log-probability of the logits divided
  by that temperature (:mod:`ru_rlhf.rl.rollout`), dropout off;
* the sequence score normalised against the reference policy's own samples, less a penalty for an answer that
  never ends (:meth:`ru_rlhf.rl.loop._Run.shape`);
* the sequence reward is the multi-head reward model's weighted scalar, added at the last token;
  every token also pays ``−β·(log π − log π_ref)``, a KL penalty to the frozen reference, with
  β set by an adaptive controller aimed at a target KL (:class:`ru_rlhf.rl.losses.AdaptiveKLController`);
* a value model initialised from the reward model (:class:`ru_rlhf.rl.rollout.Critic`; or a zero head on the
  policy's trunk); advantages by GAE(γ, λ) (:func:`ru_rlhf.rl.losses.gae`), whitened per minibatch;
* the clipped policy ratio (:func:`ru_rlhf.rl.losses.policy_loss`) and a clipped value loss
  (:func:`ru_rlhf.rl.losses.value_loss`); several minibatch epochs per rollout.

KL is measured per token: the exact KL between the policy's and the reference's next-token
distributions at each response position, averaged over the response's tokens (``kl`` in the logs;
the target 0.02 is in these units).

Train with ``ru_rlhf.rl.loop.train(..., PPOConfig(...))``: the loop (rollouts, KL controller, evaluation,
best state, early stops, resume) is shared with REINFORCE (:mod:`ru_rlhf.rl.reinforce`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ru_rlhf.rl.loop import RLConfig, optimiser_step
from ru_rlhf.rl.losses import gae, masked_var, policy_loss, value_loss, whiten
from ru_rlhf.rl.rollout import PolicyWithValue, Rollout, rescore, token_rewards


@dataclass(kw_only=True)
class PPOConfig(RLConfig):
    """PPO's controls: the loop's (:class:`ru_rlhf.rl.loop.RLConfig`) and its update's (no defaults either)."""

    algorithm: ClassVar[str] = "ppo"
    minibatch_size: int
    ppo_epochs: int
    gamma: float
    lam: float
    clip_ratio: float
    clip_value: float
    vf_coef: float
    value_init: str  # "reward_model": a value model of its own, a copy of the reward model; "zero": a head on the policy

    def make_update(self) -> PPOUpdate:
        return PPOUpdate(self)


class PPOUpdate:
    """PPO's step on a rollout: per-token rewards with the KL penalty, GAE advantages, then ``ppo_epochs`` passes
    over shuffled minibatches of the clipped policy loss (advantages whitened within the minibatch) plus
    ``vf_coef`` × the clipped value loss."""

    baseline = None  # the value head is PPO's baseline
    uses_rollout_graph = False  # it rescores minibatches, most of them after an update: the rollout's pass is stale

    def __init__(self, cfg: PPOConfig):
        self.cfg = cfg

    def __call__(self, model: PolicyWithValue, opt, r: Rollout, kl_coef: float, acc=None) -> dict:
        cfg = self.cfg
        rewards = token_rewards(r, kl_coef)
        adv, returns = gae(rewards, r.values, r.mask, cfg.gamma, cfg.lam)
        adv_var = float(masked_var(adv, r.mask))
        n = len(r.responses)
        stats = {"loss": [], "policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": []}
        g = torch.Generator().manual_seed(cfg.seed)
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(n, generator=g).split(cfg.minibatch_size):
                m = r.mask[idx]
                logp, _, values = rescore(model, r, idx)
                # advantages whitened per minibatch (Huang et al. 2024), over its real tokens
                pg, st = policy_loss(logp, r.logprobs[idx], whiten(adv[idx], m), m, cfg.clip_ratio)
                vf = value_loss(values, r.values[idx], returns[idx], m, cfg.clip_value)
                loss = pg + cfg.vf_coef * vf
                optimiser_step(model, opt, loss, cfg.max_grad_norm, acc)
                for k, v in (("loss", loss.item()), ("policy_loss", pg.item()), ("value_loss", vf.item()),
                             ("clipfrac", st["clipfrac"]), ("approx_kl", st["approx_kl"])):
                    stats[k].append(v)
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["advantage_var"] = adv_var
        return out
