"""Wiring of the publish pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.publish import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """This run's reports → one card per artifact → a folder per artifact, laid out for the hub."""
    return Pipeline(
        [
            Node(nodes.write_cards,
                 ["curation_summary", "agreement", "reward_metrics", "alignment_summary", "evaluation_summary",
                  "bias_summary", "reward_hacking_table", "sycophancy_table", "training_emissions", "sft_summary",
                  "params:publish"],
                 "publish_cards", name="write_cards"),
            Node(nodes.assemble_bundles, ["publish_cards", "params:publish"], "publish_manifest",
                 name="assemble_bundles"),
        ]
    )
