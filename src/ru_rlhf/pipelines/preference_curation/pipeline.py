"""Wiring of the preference_curation pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.preference_curation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Gold scores → simulated panel + human labels → α gate → pairs (+ the app's votes) → dataset and card."""
    return Pipeline(
        [
            Node(nodes.score_gold, ["candidates", "prompts", "facts", "documents"], "gold_scores", name="score_gold"),
            Node(nodes.draw_panel, "params:preference_curation", "annotators", name="draw_panel"),
            Node(nodes.simulate_annotations, ["gold_scores", "annotators", "params:preference_curation"],
                 "simulated_annotations", name="simulate_annotations"),
            Node(nodes.import_human_labels, "human_labels",
                 ["human_annotations", "control_answers", "import_quarantine"], name="import_human_labels"),
            Node(nodes.validate_annotations,
                 ["simulated_annotations", "human_annotations", "import_quarantine", "gold_scores",
                  "params:preference_curation"],
                 ["annotations", "annotation_quarantine"], name="validate_annotations"),
            Node(nodes.apply_agreement_gate, ["annotations", "control_answers", "annotators",
                                              "params:preference_curation"],
                 ["gated_annotations", "agreement", "annotator_agreement"], name="apply_agreement_gate"),
            Node(nodes.build_pairs, ["gated_annotations", "gold_scores", "prompts", "params:preference_curation"],
                 ["panel_preference_pairs", "panel_pair_counts"], name="build_pairs"),
            Node(nodes.add_app_votes, ["panel_preference_pairs", "app_feedback", "prompts", "panel_pair_counts",
                                       "params:preference_curation"],
                 ["preference_pairs", "app_annotations", "pair_counts"], name="add_app_votes"),
            Node(nodes.pairs_to_dataset, "preference_pairs", "preference_dataset", name="pairs_to_dataset"),
            Node(nodes.plot_agreement, "agreement", "agreement_plot", name="plot_agreement"),
            Node(nodes.bias_report, ["preference_pairs", "gold_scores"], "annotation_bias", name="bias_report"),
            Node(nodes.curation_summary,
                 ["preference_pairs", "pair_counts", "agreement", "annotation_bias", "annotation_quarantine",
                  "annotations"], "curation_summary", name="curation_summary"),
            Node(nodes.dataset_card, ["curation_summary", "agreement", "annotators", "params:preference_curation"],
                 "preference_dataset_card", name="dataset_card"),
        ]
    )
