"""Wiring of the user_ratings pipeline (the agreement-only mode)."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.user_ratings import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """A user's rating exports → α per pool and criterion with its interval, the gate → report."""
    return Pipeline(
        [
            Node(nodes.rating_agreement, ["user_ratings_raw", "params:user_ratings"],
                 ["rating_agreement", "gated_ratings", "rating_workers"], name="rating_agreement"),
            Node(nodes.rating_report, "rating_agreement", "rating_report", name="rating_report"),
        ]
    )
