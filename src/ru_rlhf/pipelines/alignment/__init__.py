"""The alignment pipeline: DPO, IPO, Chain of Hindsight, PPO, REINFORCE, GRPO, RLOO and CEM (namespaced instances
of one template)."""

from ru_rlhf.pipelines.alignment.pipeline import create_pipeline

__all__ = ["create_pipeline"]
