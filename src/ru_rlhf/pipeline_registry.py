"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# Data-flow order of the loop; __default__ runs them all in this order.
ORDER = ["ingestion", "sft", "preference_curation", "reward_modeling", "alignment", "evaluation",
         "ethics_audit", "publish"]


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``find_pipelines`` loads only the pipelines a ``--pipelines`` run asks for (Kedro 1.7), so
    ``__default__`` is the sum of the ones loaded, in data-flow order.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = {name: _stage(name, pipeline) for name, pipeline in find_pipelines(raise_errors=True).items()}
    loaded = [pipelines[name] for name in ORDER if name in pipelines]
    pipelines["__default__"] = sum(loaded, Pipeline([]))
    return pipelines


def _stage(name: str, pipeline: Pipeline) -> Pipeline:
    """A stage's nodes under the namespace ``name`` (``sft.pretrain_policy``): kedro-viz draws each stage of
    ``__default__`` as one collapsible box, and ``--namespaces sft`` selects a stage. The datasets keep their
    names (``prefix_datasets_with_namespace=False``): the catalog is the same. The alignment stage is left as
    it is: its methods are namespaces of their own (``alignment.dpo`` ...)."""
    if name == "alignment":
        return pipeline
    return Pipeline(pipeline, namespace=name, prefix_datasets_with_namespace=False)
