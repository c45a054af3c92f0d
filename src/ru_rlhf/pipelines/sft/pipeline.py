"""Wiring of the sft pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.sft import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Tokenizer → pre-trained policy → SFT policy → evaluation → 6 candidates per prompt → summary."""
    return Pipeline(
        [
            Node(nodes.build_tokenizer, ["documents", "demonstrations", "params:sft"], "policy_tokenizer",
                 name="build_tokenizer"),
            Node(nodes.pretrain_policy, ["documents", "doc_splits", "policy_tokenizer", "params:sft"],
                 ["pretrained_policy", "pretrain_log"], name="pretrain_policy", tags="training"),
            Node(nodes.sft_policy, ["pretrained_policy", "policy_tokenizer", "demonstrations", "params:sft"],
                 ["sft_policy", "sft_log"], name="sft_policy", tags="training"),
            Node(nodes.freeze_reference, "sft_policy", "reference_policy", name="freeze_reference"),
            Node(nodes.evaluate_sft,
                 ["pretrained_policy", "sft_policy", "policy_tokenizer", "demonstrations", "prompts", "params:sft"],
                 "sft_eval", name="evaluate_sft"),
            Node(nodes.generate_candidates, ["sft_policy", "policy_tokenizer", "prompts", "params:sft"],
                 ["candidates", "candidate_stats"], name="generate_candidates"),
            Node(nodes.write_candidates_jsonl, "candidates", "candidates_jsonl", name="write_candidates_jsonl"),
            Node(nodes.summarise_sft, ["pretrain_log", "sft_log", "sft_eval", "candidates", "candidate_stats"],
                 "sft_summary", name="summarise_sft"),
            Node(nodes.plot_sft_losses, ["pretrain_log", "sft_log"], "sft_loss_plot", name="plot_sft_losses"),
        ]
    )
