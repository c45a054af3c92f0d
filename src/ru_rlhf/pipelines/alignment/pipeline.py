"""Wiring of the alignment pipeline.

Not built yet (issue 6: PPO, DPO, IPO, CEM, REINFORCE). It is registered empty so that the project's graph and
`kedro run --pipelines alignment` exist; it runs no node and produces nothing.
"""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """An empty pipeline until its issue lands."""
    return Pipeline([])
