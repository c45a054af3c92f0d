"""Typed parameters of the user_pairs pipeline (``user_pairs`` in ``conf/base/parameters_user_pairs.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ru_rlhf.params import Params
from ru_rlhf.rl.params import RLParams


class SplitParams(Params):
    test_fraction: float = Field(gt=0, lt=1)  # held out: never seen by any training
    validation_fraction: float = Field(ge=0, lt=1)  # of the rest: early stopping of the reward model
    task_type: str
    max_chars: int = Field(gt=0)


class HarmParams(Params):
    enabled: bool  # trains on the toxic (rejected) and clean (chosen) sides
    criterion: str  # of this criterion's pairs
    C: float = Field(gt=0)
    max_false_positive_rate: float = Field(ge=0, lt=1)  # the threshold: chosen by cross-validation
    folds: int = Field(ge=2)


class RewardParams(Params):
    epochs: float = Field(gt=0)  # an upper bound: early stopping on validation accuracy
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(gt=8)
    pooling: Literal["last", "mean", "response"]
    evals_per_epoch: int = Field(gt=0)
    patience: int = Field(gt=0)
    save_steps: int = Field(gt=0)


class DpoParams(Params):
    """One preference method: DPO (``loss_type: sigmoid``) or IPO (``ipo``; ``beta`` is then τ)."""

    enabled: bool
    loss_type: Literal["sigmoid", "ipo"]
    beta: float = Field(gt=0)
    epochs: float = Field(gt=0)
    max_steps: int = Field(ge=-1)  # -1: epochs decide
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(gt=8)
    max_pairs: int | None = Field(gt=0)  # None: every training pair


class UserRLParams(RLParams):
    """PPO (our own, :mod:`ru_rlhf.rl.ppo`) or REINFORCE on the prompts of the training pairs, against the reward
    model's trained heads; the state kept is the one whose greedy answers on validation prompts score best by the
    reward model while the smoothed KL is within ``best_max_kl`` (no gold judge to choose by)."""

    enabled: bool
    probe_prompts: int = Field(gt=0)  # validation prompts the kept state is chosen on


class UserAuditParams(Params):
    """The audit without gold: counterfactual bias of the reward model and of the policies' answers (their
    harmlessness by the harmlessness scorer), and the policies on hard topics (refusals, flagged answers)."""

    enabled: bool
    rm_pairs: int = Field(gt=0)  # minimal pairs the reward model scores (a seeded sample)
    policy_pairs: int = Field(gt=0)  # minimal pairs the policies answer, both sides
    max_new_tokens: int = Field(gt=0)
    alpha: float = Field(gt=0, lt=1)
    correction: Literal["holm", "bh"]  # over every test of the audit, as one family


class EvalParams(Params):
    prompts: int = Field(gt=0)  # held-out prompts the policies answer (a seeded sample)
    max_new_tokens: int = Field(gt=0)
    batch_size: int = Field(gt=0)


class UserPairsParams(Params):
    """Typed parameters of the user_pairs pipeline (``parameters_user_pairs.yml``)."""

    seed: int
    checkpoint_dir: str
    split: SplitParams
    harmlessness: HarmParams
    reward_model: RewardParams
    dpo: DpoParams
    ipo: DpoParams
    rl: UserRLParams
    audit: UserAuditParams
    evaluation: EvalParams
