"""Wiring of the reward_modeling pipeline.

Not built yet (issue 5: multi-head and distributional reward models). It is registered empty so that the project's graph and
`kedro run --pipelines reward_modeling` exist; it runs no node and produces nothing.
"""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """An empty pipeline until its issue lands."""
    return Pipeline([])
