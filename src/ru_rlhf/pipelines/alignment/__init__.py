"""The alignment pipeline (not built yet: issue 6: PPO, DPO, IPO, CEM, REINFORCE)."""

from ru_rlhf.pipelines.alignment.pipeline import create_pipeline

__all__ = ["create_pipeline"]
