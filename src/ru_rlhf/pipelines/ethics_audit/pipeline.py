"""Wiring of the ethics_audit pipeline.

Not built yet (issue 8: bias, avoidance, over-optimisation, reward hacking). It is registered empty so that the project's graph and
`kedro run --pipelines ethics_audit` exist; it runs no node and produces nothing.
"""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """An empty pipeline until its issue lands."""
    return Pipeline([])
