"""Wiring of the evaluation pipeline.

Not built yet (issue 7: automatic, expert and behavioural channels). It is registered empty so that the project's graph and
`kedro run --pipelines evaluation` exist; it runs no node and produces nothing.
"""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """An empty pipeline until its issue lands."""
    return Pipeline([])
