"""The sft pipeline (not built yet: issue 3: tokenizer, SFT policy, 6 candidates per prompt)."""

from ru_rlhf.pipelines.sft.pipeline import create_pipeline

__all__ = ["create_pipeline"]
