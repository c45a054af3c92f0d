"""The preference_curation pipeline: gold judges, annotator panel, human labels, the α gate, pairs."""

from ru_rlhf.pipelines.preference_curation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
