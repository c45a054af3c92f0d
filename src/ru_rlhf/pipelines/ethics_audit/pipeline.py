"""Wiring of the ethics_audit pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.ethics_audit import nodes
from ru_rlhf.vocabulary import METHODS


def create_pipeline(**kwargs) -> Pipeline:
    """Probe sets → answers of every policy → bias, avoidance, reward hacking, sycophancy (tables and plots) → the
    Ethics Appendix, which also reports the over-optimisation curves and the reward–KL frontier (measured by the
    alignment pipeline, read through the catalog)."""
    policies = {"sft_policy": "sft_policy", **{m: f"alignment.{m}.policy" for m in METHODS}}
    return Pipeline(
        [
            Node(nodes.build_probe_sets, ["prompts", "facts", "documents", "bias_probes", "params:ethics_audit"],
                 ["audit_bias_pairs", "audit_hard_topics", "audit_sycophancy_prompts"], name="build_probe_sets"),
            Node(nodes.audit_generations,
                 {"bias_pairs": "audit_bias_pairs", "hard_topics": "audit_hard_topics",
                  "sycophancy_prompts": "audit_sycophancy_prompts", "policy_tokenizer": "policy_tokenizer",
                  "params": "params:ethics_audit", **policies},
                 "audit_generations", name="audit_generations"),
            Node(nodes.counterfactual_bias, ["audit_bias_pairs", "audit_generations", "reward_model",
                                             "params:ethics_audit"],
                 ["bias_pair_scores", "bias_summary"], name="counterfactual_bias"),
            Node(nodes.avoidance, ["audit_generations", "audit_hard_topics"], "avoidance_table", name="avoidance"),
            Node(nodes.reward_hacking, ["reward_model", "sft_generations", "alignment_prompts", "params:ethics_audit"],
                 "reward_hacking_table", name="reward_hacking"),
            Node(nodes.sycophancy, ["audit_generations", "audit_sycophancy_prompts"], "sycophancy_table",
                 name="sycophancy"),
            Node(nodes.plot_bias, "bias_summary", "bias_plot", name="plot_bias"),
            Node(nodes.plot_avoidance, "avoidance_table", "avoidance_plot", name="plot_avoidance"),
            Node(nodes.plot_hacking, "reward_hacking_table", "reward_hacking_plot", name="plot_hacking"),
            Node(nodes.plot_sycophancy, "sycophancy_table", "sycophancy_plot", name="plot_sycophancy"),
            Node(nodes.ethics_appendix,
                 ["bias_summary", "avoidance_table", "overoptimisation_curves", "overoptimisation_spearman",
                  "reward_kl_frontier", "reward_kl_frontier_fits", "reward_hacking_table", "sycophancy_table",
                  "agreement", "curation_summary", "annotators", "params:ethics_audit"],
                 ["ethics_appendix", "ethics_appendix_docs"], name="ethics_appendix"),
        ]
    )
