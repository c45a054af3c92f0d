"""Wiring of the evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.evaluation import nodes
from ru_rlhf.vocabulary import METHODS


def create_pipeline(**kwargs) -> Pipeline:
    """Generations of SFT and every method → automatic, expert and behavioural channels →
    attributions and cases → one comparison table and its plots."""
    return Pipeline(
        [
            Node(nodes.collect_generations, ["sft_generations", *[f"alignment.{m}.generations" for m in METHODS]],
                 "evaluation_generations", name="collect_generations"),
            Node(nodes.automatic_metrics, ["evaluation_generations", "prompts", "alignment_prompts", "encoder",
                                           "params:evaluation"], "automatic_metrics", name="automatic_metrics"),
            Node(nodes.expert_channel, ["evaluation_generations", "alignment_prompts", "params:evaluation"],
                 ["expert_likert", "expert_ab", "expert_summary"], name="expert_channel"),
            Node(nodes.behavioural_channel, "evaluation_generations", ["behavioural_metrics", "ngram_shifts"],
                 name="behavioural_channel"),
            Node(nodes.reward_attributions, ["reward_model", "preference_pairs", "params:evaluation"],
                 ["reward_attributions", "reward_attributions_md"], name="reward_attributions"),
            Node(nodes.case_table, ["evaluation_generations", "params:evaluation"], "evaluation_cases_md",
                 name="case_table"),
            Node(nodes.comparison_table, ["automatic_metrics", "expert_summary", "behavioural_metrics",
                                          "evaluation_generations", "training_emissions"],
                 ["evaluation_comparison", "evaluation_comparison_md"], name="comparison_table"),
            Node(nodes.plot_criteria, "expert_summary", "evaluation_criteria_plot", name="plot_criteria"),
            Node(nodes.plot_reward_vs_kl, "evaluation_generations", "evaluation_reward_kl_plot",
                 name="plot_reward_vs_kl"),
            Node(nodes.plot_shifts, "behavioural_metrics", "evaluation_shifts_plot", name="plot_shifts"),
            Node(nodes.evaluation_summary, ["evaluation_comparison", "ngram_shifts", "expert_ab"],
                 "evaluation_summary", name="evaluation_summary"),
        ]
    )
