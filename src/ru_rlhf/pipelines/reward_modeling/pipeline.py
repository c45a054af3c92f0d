"""Wiring of the reward_modeling pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.reward_modeling import nodes

TRAIN_INPUTS = ["preference_pairs", "encoder", "sft_policy", "policy_tokenizer", "params:reward_modeling"]


def create_pipeline(**kwargs) -> Pipeline:
    """Encoder (MLM) → multi-head (on the SFT policy's backbone by default, and on the other backbone for
    comparison), distributional and Russian-only RMs → validation beside a TF-IDF baseline, best-of-n and
    hacking probes, calibration, UMAP projection, trade-off table, metrics."""
    return Pipeline(
        [
            Node(nodes.pretrain_encoder, ["documents", "doc_splits", "params:reward_modeling"],
                 ["encoder", "encoder_log"], name="pretrain_encoder", tags="training"),
            Node(nodes.train_multi_head_rm, TRAIN_INPUTS,
                 ["reward_model", "reward_model_log", "reward_training_pairs"], name="train_multi_head_rm",
                 tags="training"),
            Node(nodes.train_other_backbone_rm, TRAIN_INPUTS,
                 ["other_backbone_reward_model", "other_backbone_reward_model_log"],
                 name="train_other_backbone_rm", tags="training"),
            Node(nodes.train_distributional_rm, TRAIN_INPUTS,
                 ["distributional_reward_model", "distributional_reward_model_log"],
                 name="train_distributional_rm", tags="training"),
            Node(nodes.train_russian_only_rm, TRAIN_INPUTS,
                 ["russian_only_reward_model", "russian_only_reward_model_log"], name="train_russian_only_rm",
                 tags="training"),
            Node(nodes.tfidf_baseline, ["preference_pairs", "gold_scores", "params:reward_modeling"],
                 "reward_baseline", name="tfidf_baseline"),
            Node(nodes.validate_reward_models,
                 ["reward_model", "distributional_reward_model", "russian_only_reward_model",
                  "other_backbone_reward_model", "preference_pairs", "gold_scores", "annotations", "prompts",
                  "params:reward_modeling"],
                 ["reward_validation", "reward_scored_test_pairs"], name="validate_reward_models"),
            Node(nodes.reward_behaviour,
                 ["reward_model", "sft_policy", "policy_tokenizer", "prompts", "facts", "documents", "gold_scores",
                  "params:reward_modeling"],
                 ["reward_best_of_n", "reward_behaviour"], name="reward_behaviour"),
            Node(nodes.calibrate, ["reward_model", "preference_pairs", "params:reward_modeling"],
                 ["reward_calibration", "reward_reliability_plot"], name="calibrate_reward_model"),
            Node(nodes.project_umap, ["reward_model", "gold_scores", "prompts", "params:reward_modeling"],
                 "reward_umap_plot", name="project_umap"),
            Node(nodes.tradeoff_report, ["reward_model", "gold_scores", "prompts", "params:reward_modeling"],
                 "reward_tradeoff", name="tradeoff_report"),
            Node(nodes.reward_metrics_report,
                 ["reward_validation", "reward_calibration", "reward_model_log", "distributional_reward_model_log",
                  "other_backbone_reward_model_log", "reward_training_pairs", "preference_pairs", "reward_baseline",
                  "reward_behaviour"],
                 "reward_metrics", name="reward_metrics_report"),
        ]
    )
