"""Wiring of the reward_modeling pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.reward_modeling import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Encoder (MLM) → multi-head, distributional and Russian-only RMs → validation, calibration,
    UMAP projection, trade-off table, metrics."""
    return Pipeline(
        [
            Node(nodes.pretrain_encoder, ["documents", "doc_splits", "params:reward_modeling"],
                 ["encoder", "encoder_log"], name="pretrain_encoder", tags="training"),
            Node(nodes.train_multi_head_rm, ["preference_pairs", "encoder", "params:reward_modeling"],
                 ["reward_model", "reward_model_log", "reward_training_pairs"], name="train_multi_head_rm",
                 tags="training"),
            Node(nodes.train_distributional_rm, ["preference_pairs", "encoder", "params:reward_modeling"],
                 ["distributional_reward_model", "distributional_reward_model_log"],
                 name="train_distributional_rm", tags="training"),
            Node(nodes.train_russian_only_rm, ["preference_pairs", "encoder", "params:reward_modeling"],
                 ["russian_only_reward_model", "russian_only_reward_model_log"], name="train_russian_only_rm", tags="training"),
            Node(nodes.validate_reward_models,
                 ["reward_model", "distributional_reward_model", "russian_only_reward_model", "preference_pairs",
                  "gold_scores", "annotations", "prompts", "params:reward_modeling"],
                 ["reward_validation", "reward_scored_test_pairs"], name="validate_reward_models"),
            Node(nodes.calibrate, ["reward_model", "preference_pairs", "params:reward_modeling"],
                 ["reward_calibration", "reward_reliability_plot"], name="calibrate_reward_model"),
            Node(nodes.project_umap, ["reward_model", "gold_scores", "prompts", "params:reward_modeling"],
                 "reward_umap_plot", name="project_umap"),
            Node(nodes.tradeoff_report, ["reward_model", "gold_scores", "prompts", "params:reward_modeling"],
                 "reward_tradeoff", name="tradeoff_report"),
            Node(nodes.reward_metrics_report,
                 ["reward_validation", "reward_calibration", "reward_model_log", "distributional_reward_model_log",
                  "reward_training_pairs", "preference_pairs"],
                 "reward_metrics", name="reward_metrics_report"),
        ]
    )
