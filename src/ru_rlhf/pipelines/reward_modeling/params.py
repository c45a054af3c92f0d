"""Typed parameters of the reward_modeling pipeline (``conf/base/parameters_reward_modeling.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ru_rlhf.distributed import DistributedParams
from ru_rlhf.models.encoder import EncoderSize
from ru_rlhf.params import Params


class EncoderParams(Params):
    name_or_path: str | None
    dtype: str | None = None  # "auto": bf16 on a GPU that has it
    device: str | None = None  # "auto": CUDA when there is a GPU (else CPU)
    size: EncoderSize
    vocab_size: int = Field(gt=0)
    mlm_epochs: float = Field(gt=0)
    mlm_batch_size: int = Field(gt=0)
    mlm_learning_rate: float = Field(gt=0)
    max_length: int = Field(gt=8)


class RMTrainParams(Params):
    epochs: float = Field(gt=0)  # an upper bound: early stopping on validation accuracy
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(gt=8)  # prompt (cut from the left) + response (cut from the right)
    max_pairs_per_criterion: int | None = Field(gt=0)  # None: every training pair
    # the panel's pairs whose mean-score margin is below this are left out of training: on the base run
    # 85 % of helpfulness pairs with a margin <= 0.5 and 53 % of those in (0.5, 0.75] are gold ties, ordered
    # by the panel's simulated length and flattery biases (1 % above 1.0); 0 keeps every pair
    min_margin: float = Field(ge=0)
    # the comparison models (the other backbone, the distributional and the Russian-only model) train on at
    # most this many pairs per criterion (None: as many as the multi-head model), to keep the stage's time
    secondary_max_pairs_per_criterion: int | None = Field(gt=0)
    # and early-stop on at most this many validation pairs (None: validation_pairs, the base default); both budgets
    # are capped at the multi-head model's own
    secondary_validation_pairs: int | None = Field(gt=0)
    # each criterion weighs the same: in a batch's loss (true, or batch), or over the epoch's (epoch: each pair
    # weighted by the inverse of its criterion's share, for prompt batches that hold a rare criterion in few batches)
    balance_criteria: bool | Literal["batch", "epoch", "none"]
    group_by_length: bool  # batches of pairs of similar length (less padding); off: uniformly random batches
    # pairs: each batch a random draw of pairs (two sequences scored per pair); prompts: each batch the pairs of a few
    # prompts, each distinct answer scored once for all its pairs (InstructGPT's batching)
    batching: Literal["pairs", "prompts"]
    # each distinct prompt of a batch through the backbone once for all its answers (a causal backbone pooled over the
    # answer: the same loss as whole sequences, up to float rounding); off, or another backbone: whole sequences
    shared_prefix: bool
    save_steps: int = Field(gt=0)
    evals_per_epoch: int = Field(gt=0)
    patience: int = Field(gt=0)  # evaluations without a better validation accuracy
    validation_pairs: int = Field(gt=0)  # the seeded sample of validation pairs early stopping reads


class DebiasParams(Params):
    """A bias head trained jointly and left out of the scalar (ODIN), for the multi-head models."""

    enabled: bool = False
    weight: float = Field(1.0, ge=0)  # of the quality heads' squared correlation with length and flattery


class BehaviourParams(Params):
    """Best-of-n and the hacking probes (:func:`reward_behaviour`)."""

    prompts: int = Field(gt=0)  # validation prompts (a seeded sample)
    samples: int = Field(gt=0)  # SFT samples per prompt (best-of-n up to this n)
    max_new_tokens: int = Field(gt=0)
    max_new_tokens_by_task: dict[str, int] = {}
    batch_size: int = Field(gt=0)
    probe_responses: int = Field(gt=0)  # test candidates the hacking probes perturb


class RewardParams(Params):
    """Typed parameters of the reward_modeling pipeline (``parameters_reward_modeling.yml``)."""

    seed: int
    checkpoint_dir: str
    # `policy`: the SFT policy's transformer (no LM head) under the heads; `bert`: the separate encoder
    backbone: Literal["policy", "bert"]
    pooling: Literal["last", "mean", "response"]
    match_feature: bool  # DrQA's exact-match input feature on response tokens
    # the comparison models, for the report; each is off in base (the default run) and on in the `full` env
    compare_backbone: bool  # also train the multi-head model on the other backbone
    distributional: bool  # also train the distributional reward model (rating bins per criterion)
    encoder: EncoderParams
    train: RMTrainParams
    n_bins: int = Field(gt=1)  # rating bins per criterion of the distributional head
    weights: dict[str, float]
    tradeoff: dict[str, dict[str, float]]
    behaviour: BehaviourParams
    debias: DebiasParams = Field(default_factory=DebiasParams)  # not in the YAML: off
    cross_lingual: bool  # also train on Russian pairs only, evaluated on Tatar
    umap_points: int = Field(gt=0)
    # the 2-D map of the pooled states: UMAP, or PCA where UMAP's first call (numba compiling it, ~8 s) is too
    # dear for the run (the smoke env)
    projection: Literal["umap", "pca"]
    # num_processes > 1: each reward model's training loop runs under `accelerate launch` (DDP)
    distributed: DistributedParams
