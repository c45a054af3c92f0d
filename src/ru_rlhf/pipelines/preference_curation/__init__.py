"""The preference_curation pipeline (not built yet: issue 4: gold judges, annotator panel, the alpha gate, preference pairs)."""

from ru_rlhf.pipelines.preference_curation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
