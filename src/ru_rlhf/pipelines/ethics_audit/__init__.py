"""The ethics_audit pipeline (not built yet: issue 8: bias, avoidance, over-optimisation, reward hacking)."""

from ru_rlhf.pipelines.ethics_audit.pipeline import create_pipeline

__all__ = ["create_pipeline"]
