"""Wiring of the preference_curation pipeline.

Not built yet (issue 4: gold judges, annotator panel, the alpha gate, preference pairs). It is registered empty so that the project's graph and
`kedro run --pipelines preference_curation` exist; it runs no node and produces nothing.
"""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """An empty pipeline until its issue lands."""
    return Pipeline([])
