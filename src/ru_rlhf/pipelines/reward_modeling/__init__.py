"""The reward_modeling pipeline (not built yet: issue 5: multi-head and distributional reward models)."""

from ru_rlhf.pipelines.reward_modeling.pipeline import create_pipeline

__all__ = ["create_pipeline"]
