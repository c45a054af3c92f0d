"""Wiring of the alignment pipeline: one namespaced instance per method, shared nodes around them.

``kedro run --pipelines alignment`` runs every method; ``--namespaces alignment.dpo`` runs one
(its test generations included). The shared nodes outside the namespaces choose the prompt roles,
generate the SFT baseline on the test prompts and write ``alignment_summary.json``.
"""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.alignment import nodes
from ru_rlhf.vocabulary import METHODS

# a method's kind (ru_rlhf.vocabulary.METHODS) -> (training node function, the shared input it reads besides the
# policies, whether it writes a grid table)
TRAINERS = {
    "preference": (nodes.train_dpo, "preference_pairs", True),
    "hindsight": (nodes.train_coh, "preference_pairs", True),
    "rl": (nodes.train_rl, "reward_model", False),
    "cem": (nodes.train_cem, "reward_model", False),
}
SHARED = {"sft_policy", "reference_policy", "policy_tokenizer", "reward_model", "preference_pairs",
          "alignment_prompts"}


def method_template(method: str) -> Pipeline:
    """One method: train → generate on the test prompts (shared node) → plot the curve (shared node)."""
    func, data, has_grid = TRAINERS[METHODS[method]]
    # an RL method's evaluated states, saved by its trainer on the way, are a dataset too (the audit follows them)
    outputs = ["policy", "step_log", *(["grid"] if has_grid else []), "info",
               *(["checkpoints"] if METHODS[method] == "rl" else [])]
    return Pipeline([
        Node(func, ["sft_policy", "reference_policy", "policy_tokenizer", data, "alignment_prompts",
                    "params:alignment.common", "params:train"], outputs, name="train", tags="training"),
        Node(nodes.generate_method_outputs, ["policy", "reference_policy", "policy_tokenizer", "reward_model",
                                             "alignment_prompts", "params:alignment.common", "params:train"],
             "generations", name="generate_test_outputs"),
        Node(nodes.plot_curve, ["step_log", "params:train"], "curve", name="plot_curve"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    """Prompt roles → SFT baseline → DPO, IPO, Chain of Hindsight, PPO, REINFORCE, CEM (namespaced) → summary."""
    shared = Pipeline([
        Node(nodes.select_alignment_prompts, ["prompts", "facts", "documents", "params:alignment.common"],
             "alignment_prompts", name="select_alignment_prompts"),
        Node(nodes.generate_sft_outputs, ["sft_policy", "reference_policy", "policy_tokenizer", "reward_model",
                                          "alignment_prompts", "params:alignment.common"],
             "sft_generations", name="generate_sft_outputs"),
    ])
    methods = [
        Pipeline(t, namespace=f"alignment.{m}", inputs=SHARED & t.inputs(), parameters={"params:alignment.common"})
        for m, t in ((m, method_template(m)) for m in METHODS)
    ]
    summary_inputs = ["sft_generations"]
    for m in METHODS:
        summary_inputs += [f"alignment.{m}.generations", f"alignment.{m}.info"]
    summary = Pipeline([Node(nodes.alignment_summary, summary_inputs, "alignment_summary",
                             name="alignment_summary")])
    return shared + sum(methods, Pipeline([])) + summary
