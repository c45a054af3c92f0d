"""The ingestion pipeline: corpus → validated documents → prompts, demonstrations, splits."""

from ru_rlhf.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
