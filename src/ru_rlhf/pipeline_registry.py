"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# Data-flow order of the loop (DESIGN §2); __default__ runs them all in this order.
ORDER = ["ingestion", "sft", "preference_curation", "reward_modeling", "alignment", "evaluation",
         "ethics_audit", "publish"]


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``find_pipelines`` loads only the pipelines a ``--pipelines`` run asks for (Kedro 1.7), so
    ``__default__`` is the sum of the ones loaded, in data-flow order.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    loaded = [pipelines[name] for name in ORDER if name in pipelines]
    pipelines["__default__"] = sum(loaded, Pipeline([]))
    return pipelines
