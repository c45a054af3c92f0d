"""Wiring of the user_pairs pipeline: a user's pairs → reward model, DPO and IPO, PPO, harmlessness scorer →
evaluation without gold.

DPO and IPO are namespaced instances of one template (``user_pairs.dpo.train``, ``user_pairs.ipo.train``), each with
its own parameters (``user_pairs.dpo``, ``user_pairs.ipo``).
"""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.user_pairs import nodes
from ru_rlhf.vocabulary import METHODS

PREFERENCE_METHODS = tuple(m for m, kind in METHODS.items() if kind == "preference")  # DPO, IPO
SHARED = {"sft_policy", "reference_policy", "policy_tokenizer", "user_preference_pairs"}


def preference_template() -> Pipeline:
    """One preference method: train from the SFT policy on the user's training pairs."""
    return Pipeline([Node(nodes.train_preference, ["sft_policy", "reference_policy", "policy_tokenizer",
                                                   "user_preference_pairs", "params:user_pairs", "params:method"],
                          ["policy", "log"], name="train", tags="training")])


def create_pipeline(**kwargs) -> Pipeline:
    """Pairs (catalog) → validated, seeded split → harmlessness classifier, TF-IDF baseline, reward model, DPO and
    IPO, PPO (or REINFORCE) on the pairs' prompts → evaluation and audit without gold → report."""
    methods = sum((Pipeline(preference_template(), namespace=m, inputs=SHARED,
                            outputs={"policy": f"user_{m}_policy", "log": f"user_{m}_log"},
                            parameters={"params:user_pairs": "params:user_pairs",
                                        "params:method": f"params:user_pairs.{m}"})
                   for m in PREFERENCE_METHODS), Pipeline([]))
    return methods + Pipeline(
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
            Node(nodes.train_rl, ["sft_policy", "reference_policy", "policy_tokenizer", "user_reward_model",
                                  "user_preference_pairs", "params:user_pairs"],
                 ["user_rl_policy", "user_rl_log", "user_rl_info"], name="train_rl", tags="training"),
            Node(nodes.evaluate, ["user_reward_model", "user_dpo_policy", "user_ipo_policy", "user_rl_policy",
                                  "sft_policy", "reference_policy", "policy_tokenizer", "harm_classifier",
                                  "user_preference_pairs", "user_reward_accuracy", "params:user_pairs"],
                 ["user_generations", "user_pairs_summary"], name="evaluate"),
            Node(nodes.audit_policies, ["user_reward_model", "user_dpo_policy", "user_ipo_policy", "user_rl_policy",
                                        "sft_policy", "policy_tokenizer", "harm_classifier", "bias_probes",
                                        "params:user_pairs"],
                 ["user_audit", "user_audit_table"], name="audit_policies"),
            Node(nodes.user_pairs_report, ["user_pairs_summary", "harm_classifier_report", "user_pairs_quarantine",
                                           "user_audit"], "user_pairs_report", name="user_pairs_report"),
        ]
    )
