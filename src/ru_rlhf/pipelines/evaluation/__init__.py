"""The evaluation pipeline (not built yet: issue 7: automatic, expert and behavioural channels)."""

from ru_rlhf.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
