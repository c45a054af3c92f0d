"""The reward_modeling pipeline: encoder, multi-head and distributional reward models, validation."""

from ru_rlhf.pipelines.reward_modeling.pipeline import create_pipeline

__all__ = ["create_pipeline"]
