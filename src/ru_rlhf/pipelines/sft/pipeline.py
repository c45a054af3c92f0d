"""Wiring of the sft pipeline.

Not built yet (issue 3: tokenizer, SFT policy, 6 candidates per prompt). It is registered empty so that the project's graph and
`kedro run --pipelines sft` exist; it runs no node and produces nothing.
"""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """An empty pipeline until its issue lands."""
    return Pipeline([])
