"""Wiring of the publish pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.publish import nodes
from ru_rlhf.vocabulary import METHODS

# the saved folders a bundle may publish (its `source`), each read as its `<dataset>_folder` catalog entry: the
# folder's path, so that the files are copied byte for byte
FOLDERS = ("preference_dataset", "reward_model", "sft_policy", "policy_tokenizer",
           *(f"alignment.{m}.policy" for m in METHODS))


def create_pipeline(**kwargs) -> Pipeline:
    """This run's reports → one card per artifact → a folder per artifact, laid out for the hub."""
    return Pipeline(
        [
            Node(nodes.write_cards,
                 ["curation_summary", "agreement", "reward_metrics", "alignment_summary", "evaluation_summary",
                  "bias_summary", "reward_hacking_table", "sycophancy_table", "training_emissions", "sft_summary",
                  "params:publish"],
                 "publish_cards", name="write_cards"),
            Node(nodes.assemble_bundles,
                 {"cards": "publish_cards", "params": "params:publish", **{f: f"{f}_folder" for f in FOLDERS}},
                 ["publish_bundles", "publish_manifest"], name="assemble_bundles"),
        ]
    )
