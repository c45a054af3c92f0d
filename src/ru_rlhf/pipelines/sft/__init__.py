"""The sft pipeline: tokenizer, pre-trained and SFT policy, and 6 candidate answers per prompt."""

from ru_rlhf.pipelines.sft.pipeline import create_pipeline

__all__ = ["create_pipeline"]
