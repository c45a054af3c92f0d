"""Typed parameters of the alignment pipeline (``alignment`` in ``conf/base/parameters_alignment.yml``): the shared
``alignment.common`` and each method's section ``alignment.<method>.train``.

The values live in the YAML; a field here has no default when the base YAML sets it (in every section the model
types), so the two cannot drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from ru_rlhf.distributed import DistributedParams
from ru_rlhf.params import Params
from ru_rlhf.rl.params import RLParams
from ru_rlhf.vocabulary import RUNS


class CommonParams(Params):
    """Shared by every method (``alignment.common``)."""

    seed: int
    checkpoint_dir: str
    train_prompts: int = Field(ge=0)  # from the train split (0: all)
    probe_prompts: int = Field(gt=0)  # from the validation split, stratified by task and language
    test_prompts: int = Field(ge=0)  # 0: every test prompt
    test_samples: int = Field(gt=0)
    test_temperature: float = Field(ge=0)
    test_top_p: float = Field(gt=0, le=1)
    max_new_tokens_by_task: dict[str, PositiveInt]
    batch_size: int = Field(gt=0)
    # num_processes > 1: the training step runs under `accelerate launch` (ru_rlhf.distributed)
    distributed: DistributedParams
    reward_weights: dict[str, float] | None  # None: the reward model's own weights


CRITERION = Literal["overall", "helpfulness", "truthfulness", "harmlessness"]


class DpoParams(Params):
    method: Literal["dpo", "ipo"]
    loss_type: Literal["sigmoid", "ipo"]
    criterion: CRITERION  # or a criterion's pairs
    grid: list[PositiveFloat] = Field(min_length=1)  # β (τ for IPO): each > 0
    max_pairs: int = Field(gt=0)
    epochs: float = Field(gt=0)
    max_steps: int = Field(-1, ge=-1)  # -1: epochs decide (not in the YAML)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(512, gt=16)  # not in the YAML


class FeedbackPhrases(Params):
    """Chain of Hindsight's feedback words for one language."""

    positive: str = Field(min_length=1)
    negative: str = Field(min_length=1)


class CohGuards(Params):
    """One point of Chain of Hindsight's guard grid."""

    mask_share: float = Field(ge=0, lt=0.5)  # share of input tokens masked (the paper: 0–5 %)
    plain_share: float = Field(ge=0, le=1)  # plain prompt → chosen sequences, per pair


class CohParams(Params):
    """Chain of Hindsight (``alignment.coh.train``): SFT on feedback-conditioned pair sequences."""

    method: Literal["coh"]
    criterion: CRITERION
    feedback: dict[str, FeedbackPhrases]  # by language: the phrases that introduce each answer
    grid: list[CohGuards] = Field(min_length=1)  # guard settings; the probe's gold chooses one
    max_pairs: int = Field(gt=0)
    epochs: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(gt=16)


class CemParams(Params):
    method: Literal["cem"]
    iterations: int = Field(gt=0)
    prompts: int = Field(gt=0)  # training prompts sampled per iteration
    samples: int = Field(gt=0)  # N per prompt
    elite: int = Field(gt=0)  # top-K per prompt by the RM's scalar
    temperature: float = Field(gt=0)
    top_p: float = Field(gt=0, le=1)
    max_new_tokens: int = Field(gt=0)
    epochs: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(512, gt=16)  # not in the YAML

    @model_validator(mode="after")
    def _elite_within_samples(self) -> CemParams:
        if self.elite > self.samples:
            raise ValueError(f"elite ({self.elite}) must not exceed samples ({self.samples})")
        return self


class RLTrainParams(RLParams):
    """PPO or REINFORCE (``alignment.ppo.train``, ``alignment.reinforce.train`` and the audit's runs): the RL
    controls, the run's name and what it optimises (``rm``: the reward model's scalar; ``gold``: the gold judges'
    mean, an oracle run)."""

    method: str = Field(min_length=1)
    reward: Literal["rm", "gold"]


class TrlRLParams(Params):
    """GRPO or RLOO with TRL's own trainers (``alignment.grpo.train``, ``alignment.rloo.train``; run by
    :func:`ru_rlhf.rl.trl_online.run_trl_rl`): TRL's controls we set, our evaluation frame (as PPO's), the run's
    name and what it optimises. ``loss_type`` and ``scale_rewards`` are GRPO's alone, ``normalize_advantages``
    RLOO's alone (:data:`ru_rlhf.rl.trl_online.ALGORITHM_FIELDS`): a section gives those of its algorithm."""

    method: str = Field(min_length=1)
    algorithm: Literal["grpo", "rloo"]
    reward: Literal["rm", "gold"]  # the reward model's scalar, or the gold judges' mean (an oracle run)
    steps: int = Field(gt=0)  # optimiser steps, one generation batch each
    batch_size: int = Field(gt=0)  # completions per step: batch_size / num_generations prompts
    num_generations: int = Field(ge=2)  # completions per prompt (GRPO's group, RLOO's leave-one-out)
    learning_rate: float = Field(gt=0)
    beta: float = Field(gt=0)  # KL coefficient, always set (TRL's GRPO default 0 would drop the reference and KL)
    max_new_tokens: int = Field(gt=0)
    temperature: float = Field(gt=0)
    epsilon: float = Field(gt=0)  # the ratio clip
    max_grad_norm: float = Field(gt=0)
    eval_every: int = Field(gt=0)
    patience: int = Field(gt=0)
    best_max_kl: float | None = Field(gt=0)  # None: every evaluated state is eligible as the best
    kl_window: int = Field(gt=0)  # steps in the smoothed KL that best_max_kl bounds
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] | None = None  # GRPO only
    scale_rewards: Literal["group", "batch", "none"] | None = None  # GRPO only
    normalize_advantages: bool | None = None  # RLOO only

    @model_validator(mode="after")
    def _fits_the_algorithm(self) -> TrlRLParams:
        from ru_rlhf.rl.trl_online import ALGORITHM_FIELDS

        missing = [f for f in ALGORITHM_FIELDS[self.algorithm] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{self.algorithm} needs {', '.join(missing)}")
        foreign = [f for a, fs in ALGORITHM_FIELDS.items() if a != self.algorithm for f in fs
                   if getattr(self, f) is not None]
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not an option of {self.algorithm}")
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                             f"({self.num_generations}): every prompt's completions are in one step")
        return self

    def trl(self) -> dict:
        """The run's controls as :func:`ru_rlhf.rl.trl_online.run_trl_rl` takes them (plain values)."""
        return self.model_dump(exclude={"method", "reward"})


class FrontierParams(Params):
    """The over-optimisation curves and the reward–KL frontier (``alignment.frontier``): proxy and gold along the
    saved checkpoints of ``overopt_methods`` and along best-of-n from the SFT policy, on ``overopt_prompts`` of the
    test prompts."""

    seed: int
    # whose saved checkpoints (the catalog's alignment.<method>.checkpoints) the curves follow; each must be a run
    # whose trainer saves them (checked by the node); one that saved none gives its SFT point alone
    overopt_methods: list[str] = Field(min_length=1)
    overopt_prompts: int = Field(gt=0)  # test prompts the curves are measured on (a seeded sample)
    bon_prompts: int = Field(gt=0)  # the first of those that best-of-n samples on
    bon_ns: list[PositiveInt] = Field(min_length=1)
    bon_temperature: float = Field(gt=0)
    max_new_tokens: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    alpha: float = Field(gt=0, lt=1)  # the level of the curves' step tests (Holm across each curve's steps)


class DpoSection(Params):
    train: DpoParams


class CohSection(Params):
    train: CohParams


class RLSection(Params):
    train: RLTrainParams


class CemSection(Params):
    train: CemParams


class TrlRLSection(Params):
    train: TrlRLParams


class AlignmentParams(Params):
    """Every method's section (``alignment.<method>.train``), ``alignment.common`` and ``alignment.frontier``,
    checked before a run; a
    section's ``method`` must be its name (it names the method's logs and checkpoints)."""

    common: CommonParams
    frontier: FrontierParams
    dpo: DpoSection
    ipo: DpoSection
    coh: CohSection
    ppo: RLSection
    reinforce: RLSection
    grpo: TrlRLSection
    rloo: TrlRLSection
    cem: CemSection
    # the audit's runs (ru_rlhf.vocabulary.AUDIT_RUNS): the oracles (reward: gold) and PPO past its budget
    ppo_gold: RLSection
    reinforce_gold: RLSection
    grpo_gold: TrlRLSection
    rloo_gold: TrlRLSection
    ppo_long: RLSection

    @model_validator(mode="after")
    def _method_is_the_section(self) -> AlignmentParams:
        for name in RUNS:
            section = getattr(self, name)
            if section.train.method != name:
                raise ValueError(f"{name}.train.method is {section.train.method!r}: a section's method must be "
                                 f"its name ({name!r})")
        return self
