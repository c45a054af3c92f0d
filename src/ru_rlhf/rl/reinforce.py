"""REINFORCE with a moving-average baseline and a KL penalty (the HelpSteer2 notebook's method, batched):
its config and update.

Train with ``ru_rlhf.rl.loop.train(..., ReinforceConfig(...))``: it shares PPO's loop (rollouts, KL
controller, evaluation, best state, early stops, resume); only the update differs: no value head, no
clipping, one gradient step per rollout on −(R − b)·Σ log π.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ru_rlhf.rl.loop import RLConfig, optimiser_step
from ru_rlhf.rl.losses import masked_mean
from ru_rlhf.rl.rollout import PolicyWithValue, Rollout, rescore


@dataclass(kw_only=True)
class ReinforceConfig(RLConfig):
    """REINFORCE's controls: the loop's (:class:`ru_rlhf.rl.loop.RLConfig`) and its baseline's decay."""

    algorithm: ClassVar[str] = "reinforce"
    baseline_decay: float  # the moving-average baseline

    def make_update(self) -> ReinforceUpdate:
        return ReinforceUpdate(self)


class ReinforceUpdate:
    """One REINFORCE step: −(R − b)·Σ log π over each response, R = score − β·Σ(log π − log π_ref).

    b is a moving average of the batch's mean return (the HelpSteer2 notebook's baseline, batched),
    carried from step to step in ``baseline`` (None before the first step).
    """

    # one gradient step on the rollout, before any other: it can use the rollout's forward pass (make_rollout's
    # keep_graph) instead of running it again
    uses_rollout_graph = True

    def __init__(self, cfg: ReinforceConfig):
        self.cfg = cfg
        self.baseline: float | None = None

    def __call__(self, model: PolicyWithValue, opt, r: Rollout, kl_coef: float, acc=None) -> dict:
        cfg = self.cfg
        seq_kl = ((r.logprobs - r.ref_logprobs) * r.mask).sum(1)
        ret = r.scores - kl_coef * seq_kl
        b = float(ret.mean()) if self.baseline is None else self.baseline
        adv = ret - b
        # the rollout's own forward pass, graph kept (make_rollout's keep_graph; the parameters have not changed
        # since): the same log-probabilities as running it again, one forward pass of the batch fewer per step
        logp = r.extra.pop("logprobs_graph", None)
        if logp is None:
            logp, _, _ = rescore(model, r, torch.arange(len(r.responses)))
        loss = -(adv.detach() * (logp * r.mask).sum(1)).mean() / max(1.0, float(r.mask.sum(1).mean()))
        optimiser_step(model, opt, loss, cfg.max_grad_norm, acc)
        with torch.no_grad():
            log_ratio = (logp - r.logprobs) * r.mask
            approx_kl = float(masked_mean(0.5 * log_ratio ** 2, r.mask))
        self.baseline = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * float(ret.mean())
        return {"loss": loss.item(), "policy_loss": loss.item(), "value_loss": float("nan"), "clipfrac": 0.0,
                "approx_kl": approx_kl, "advantage_var": float(adv.var()), "baseline": b}
