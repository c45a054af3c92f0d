"""The evaluation pipeline: automatic, simulated-expert and behavioural channels for the SFT policy and every
aligned one."""

from ru_rlhf.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
