"""The typed parameters of a PPO or REINFORCE run: the fields of :class:`ru_rlhf.rl.ppo.PPOConfig` and
:class:`ru_rlhf.rl.reinforce.ReinforceConfig` with their ranges, shared by the alignment stage
(``alignment.ppo.train``) and the user_pairs stage (``user_pairs.rl``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ru_rlhf.params import Params

# the fields one algorithm alone reads: a section gives those of its algorithm (None: not given)
ALGORITHM_FIELDS = {"ppo": ("minibatch_size", "ppo_epochs", "gamma", "lam", "clip_ratio", "clip_value", "vf_coef",
                            "value_init"),
                    "reinforce": ("baseline_decay",)}


class RLParams(Params):
    """PPO or REINFORCE controls; :meth:`config` turns them into the algorithm's config.

    No default where the sections that use the model (``alignment.ppo.train``, ``alignment.reinforce.train``,
    ``user_pairs.rl`` in ``conf/base``) set the value, so the YAML holds it: a field every section sets is required,
    one algorithm's own fields (:data:`ALGORITHM_FIELDS`) are required when the section runs that algorithm. The
    configs (:class:`ru_rlhf.rl.loop.RLConfig` and its subclasses) have no defaults either.
    """

    algorithm: Literal["ppo", "reinforce"]
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    minibatch_size: int | None = Field(None, gt=0)
    ppo_epochs: int | None = Field(None, gt=0)
    learning_rate: float = Field(gt=0)
    max_new_tokens: int = Field(gt=0)
    gamma: float | None = Field(None, ge=0, le=1)
    lam: float | None = Field(None, ge=0, le=1)
    clip_ratio: float | None = Field(None, gt=0)
    clip_value: float | None = Field(None, gt=0)
    vf_coef: float | None = Field(None, ge=0)
    value_init: Literal["reward_model", "zero"] | None = None  # PPO's value model: a copy of the RM, or a zero head
    init_kl_coef: float = Field(ge=0)
    target_kl: float | None = Field(gt=0)  # None: a fixed KL coefficient
    kl_horizon: int = Field(gt=0)
    kl_budget: float = Field(gt=0)
    kl_window: int = Field(gt=0)
    best_max_kl: float | None = Field(gt=0)
    temperature: float = Field(gt=0)  # rollouts sampled at it; log-probabilities of the logits divided by it
    # z-scored against the reference's samples (overall, or each prompt against its own), per batch, or not
    reward_norm: Literal["reference", "reference_per_prompt", "batch", "none"]
    norm_samples: int = Field(gt=0)  # the reference's answers it is fitted on (reference_per_prompt: per prompt)
    reward_scale: float = Field(gt=0)
    missing_eos_penalty: float = Field(ge=0)  # subtracted from the score of an answer that never ended
    baseline_decay: float | None = Field(None, ge=0, lt=1)
    eval_every: int = Field(gt=0)
    patience: int = Field(gt=0)
    max_grad_norm: float = Field(gt=0)

    @model_validator(mode="after")
    def _algorithm_fields_given(self) -> RLParams:
        missing = [name for name in ALGORITHM_FIELDS[self.algorithm] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.algorithm} needs {', '.join(missing)}")
        if self.algorithm == "ppo" and self.minibatch_size > self.batch_size:
            raise ValueError(f"minibatch_size {self.minibatch_size} is larger than batch_size {self.batch_size}: a "
                             "minibatch is a part of one step's rollouts")
        if self.reward_norm in ("reference", "reference_per_prompt") and self.norm_samples < 2:
            raise ValueError(f"norm_samples is {self.norm_samples}: reward_norm {self.reward_norm} needs at least 2 "
                             "reference answers (per prompt for reference_per_prompt) to have a spread")
        return self

    def config(self, seed: int):
        """The config of ``algorithm`` (:class:`ru_rlhf.rl.ppo.PPOConfig` or
        :class:`ru_rlhf.rl.reinforce.ReinforceConfig`) from these parameters (the fields it has)."""
        from dataclasses import fields

        from ru_rlhf.rl.ppo import PPOConfig
        from ru_rlhf.rl.reinforce import ReinforceConfig

        cls = {"ppo": PPOConfig, "reinforce": ReinforceConfig}[self.algorithm]
        names = {f.name for f in fields(cls)} - {"seed"}
        return cls(**{k: v for k, v in self.model_dump().items() if k in names}, seed=seed)
