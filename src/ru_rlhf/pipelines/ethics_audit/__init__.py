"""The ethics_audit pipeline: bias, avoidance, over-optimisation, reward hacking, sycophancy, the appendix."""

from ru_rlhf.pipelines.ethics_audit.pipeline import create_pipeline

__all__ = ["create_pipeline"]
