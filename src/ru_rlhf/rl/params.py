"""The typed parameters of a PPO or REINFORCE run: :class:`ru_rlhf.rl.ppo.RLConfig`'s fields with their ranges, shared
by the alignment stage (``alignment.ppo.train``) and the user_pairs stage (``user_pairs.rl``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ru_rlhf.params import Params


class RLParams(Params):
    """PPO or REINFORCE controls; :meth:`config` turns them into :class:`ru_rlhf.rl.ppo.RLConfig`."""

    algorithm: Literal["ppo", "reinforce"] = "ppo"
    steps: int = Field(200, gt=0)
    batch_size: int = Field(16, gt=0)
    minibatch_size: int = Field(8, gt=0)
    ppo_epochs: int = Field(4, gt=0)
    learning_rate: float = Field(1e-5, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip_ratio: float = Field(0.2, gt=0)
    clip_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    init_kl_coef: float = Field(0.1, ge=0)
    target_kl: float | None = Field(0.02, gt=0)  # None: a fixed KL coefficient
    kl_horizon: int = Field(1000, gt=0)
    kl_budget: float = Field(0.05, gt=0)
    kl_window: int = Field(5, gt=0)
    best_max_kl: float | None = Field(0.02, gt=0)
    whiten_rewards: bool = False
    reward_scale: float = Field(1.0, gt=0)
    baseline_decay: float = Field(0.9, ge=0, lt=1)
    eval_every: int = Field(10, gt=0)
    patience: int = Field(6, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)

    def config(self, seed: int):
        """The :class:`ru_rlhf.rl.ppo.RLConfig` of these parameters (fields of subclasses left out)."""
        from dataclasses import fields

        from ru_rlhf.rl.ppo import RLConfig

        names = {f.name for f in fields(RLConfig)} - {"seed"}
        return RLConfig(**{k: v for k, v in self.model_dump().items() if k in names}, seed=seed)
