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
from ru_rlhf.vocabulary import METHODS


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
    """PPO or REINFORCE (``alignment.ppo.train``, ``alignment.reinforce.train``): the RL controls and the run's
    name."""

    method: Literal["ppo", "reinforce"]


class DpoSection(Params):
    train: DpoParams


class CohSection(Params):
    train: CohParams


class RLSection(Params):
    train: RLTrainParams


class CemSection(Params):
    train: CemParams


class AlignmentParams(Params):
    """Every method's section (``alignment.<method>.train``) and ``alignment.common``, checked before a run; a
    section's ``method`` must be its name (it names the method's logs and checkpoints)."""

    common: CommonParams
    dpo: DpoSection
    ipo: DpoSection
    coh: CohSection
    ppo: RLSection
    reinforce: RLSection
    cem: CemSection

    @model_validator(mode="after")
    def _method_is_the_section(self) -> AlignmentParams:
        for name in METHODS:
            section = getattr(self, name)
            if section.train.method != name:
                raise ValueError(f"{name}.train.method is {section.train.method!r}: a section's method must be "
                                 f"its name ({name!r})")
        return self
