"""Wiring of the user_pairs pipeline: a user's pairs → reward model, DPO, harmlessness scorer → evaluation."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.user_pairs import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Pairs (catalog) → validated, seeded split → harmlessness classifier, TF-IDF baseline, reward model, DPO →
    evaluation without gold → report."""
    return Pipeline(
        [
            Node(nodes.prepare_pairs, ["user_pairs_raw", "params:user_pairs"],
                 ["user_preference_pairs", "user_pairs_quarantine", "user_prompts"], name="prepare_pairs"),
            Node(nodes.train_harm_classifier, ["user_preference_pairs", "params:user_pairs"],
                 ["harm_classifier", "harm_classifier_report"], name="train_harm_classifier", tags="training"),
            Node(nodes.tfidf_baseline, ["user_preference_pairs", "params:user_pairs"], "user_reward_baseline",
                 name="tfidf_baseline"),
            Node(nodes.train_reward_model, ["user_preference_pairs", "sft_policy", "policy_tokenizer",
                                            "params:user_pairs"],
                 ["user_reward_model", "user_reward_model_log"], name="train_reward_model", tags="training"),
            Node(nodes.held_out_accuracy, ["user_reward_model", "user_preference_pairs", "user_reward_baseline",
                                           "params:user_pairs"], "user_reward_accuracy", name="held_out_accuracy"),
            Node(nodes.train_dpo, ["sft_policy", "reference_policy", "policy_tokenizer", "user_preference_pairs",
                                   "params:user_pairs"], ["user_dpo_policy", "user_dpo_log"], name="train_dpo",
                 tags="training"),
            Node(nodes.evaluate, ["user_reward_model", "user_dpo_policy", "sft_policy", "reference_policy",
                                  "policy_tokenizer", "harm_classifier", "user_preference_pairs",
                                  "user_reward_accuracy", "params:user_pairs"],
                 ["user_generations", "user_pairs_summary"], name="evaluate"),
            Node(nodes.user_pairs_report, ["user_pairs_summary", "harm_classifier_report", "user_pairs_quarantine"],
                 "user_pairs_report", name="user_pairs_report"),
        ]
    )
