"""The publish pipeline: Hugging Face model and dataset cards, and folders ready for ``push_to_hub``."""

from ru_rlhf.pipelines.publish.pipeline import create_pipeline

__all__ = ["create_pipeline"]
