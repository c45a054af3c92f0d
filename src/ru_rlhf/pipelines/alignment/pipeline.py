"""Wiring of the alignment pipeline: one namespaced instance per method, shared nodes around them.

``kedro run --pipelines alignment`` runs every method; ``--namespaces alignment.dpo`` runs one
(its test generations included). The shared nodes outside the namespaces choose the prompt roles,
generate the SFT baseline on the test prompts, follow the RL runs' checkpoints and best-of-n (the over-optimisation
curves), draw the reward–KL frontier with Gao et al.'s fits and write ``alignment_summary.json``.
"""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.alignment import frontier_nodes, nodes
from ru_rlhf.vocabulary import METHODS, RUNS

# a method's kind (ru_rlhf.vocabulary.METHODS) -> (training node function, the shared input it reads besides the
# policies, whether it writes a grid table)
TRAINERS = {
    "preference": (nodes.train_dpo, "preference_pairs", True),
    "hindsight": (nodes.train_coh, "preference_pairs", True),
    "rl": (nodes.train_rl, "reward_model", False),
    "trl_rl": (nodes.train_trl_rl, "reward_model", False),
    "cem": (nodes.train_cem, "reward_model", False),
}
# the kinds whose trainer saves its evaluated states as it goes (step-NNNN: the alignment.<method>.checkpoints output)
SAVES_CHECKPOINTS = {"rl", "trl_rl"}
SHARED = {"sft_policy", "reference_policy", "policy_tokenizer", "reward_model", "preference_pairs",
          "alignment_prompts"}


def method_template(method: str) -> Pipeline:
    """One method: train → generate on the test prompts (shared node) → plot the curve (shared node)."""
    func, data, has_grid = TRAINERS[RUNS[method]]
    # an RL method's evaluated states, saved by its trainer on the way, are a dataset too (the audit follows them)
    outputs = ["policy", "step_log", *(["grid"] if has_grid else []), "info",
               *(["checkpoints"] if RUNS[method] in SAVES_CHECKPOINTS else [])]
    return Pipeline([
        Node(func, ["sft_policy", "reference_policy", "policy_tokenizer", data, "alignment_prompts",
                    "params:alignment.common", "params:train"], outputs, name="train", tags="training"),
        Node(nodes.generate_method_outputs, ["policy", "reference_policy", "policy_tokenizer", "reward_model",
                                             "alignment_prompts", "params:alignment.common", "params:train"],
             "generations", name="generate_test_outputs"),
        Node(nodes.plot_curve, ["step_log", "params:train"], "curve", name="plot_curve"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    """Prompt roles → SFT baseline → DPO, IPO, Chain of Hindsight, PPO, REINFORCE, GRPO, RLOO, CEM (namespaced) →
    summary."""
    shared = Pipeline([
        Node(nodes.select_alignment_prompts, ["prompts", "facts", "documents", "params:alignment.common"],
             "alignment_prompts", name="select_alignment_prompts"),
        Node(nodes.generate_sft_outputs, ["sft_policy", "reference_policy", "policy_tokenizer", "reward_model",
                                          "alignment_prompts", "params:alignment.common"],
             "sft_generations", name="generate_sft_outputs"),
    ])
    methods = [
        Pipeline(t, namespace=f"alignment.{m}", inputs=SHARED & t.inputs(), parameters={"params:alignment.common"})
        for m, t in ((m, method_template(m)) for m in RUNS)  # the methods, then the audit's runs
    ]
    runs = shared + sum(methods, Pipeline([]))
    summary_inputs = ["sft_generations", "reward_kl_frontier_fits"]
    for m in RUNS:  # the methods, then the audit's runs (the summary tells them apart)
        summary_inputs += [f"alignment.{m}.generations", f"alignment.{m}.info"]
    summary = Pipeline([Node(nodes.alignment_summary, summary_inputs, "alignment_summary",
                             name="alignment_summary")])
    return runs + frontier_pipeline(runs) + summary


def frontier_pipeline(runs: Pipeline) -> Pipeline:
    """The over-optimisation curves, then the reward–KL frontier of every method (shared nodes after the methods).

    The curves get the saved states of every run in ``runs`` that writes ``alignment.<m>.checkpoints`` (the
    trainer's step-NNNN folders, through the catalog), and follow those ``alignment.frontier.overopt_methods``
    names; the frontier gets every method's test generations (``vocabulary.METHODS``).
    """
    prefix, suffix = "alignment.", ".checkpoints"
    checkpoints = {name[len(prefix):-len(suffix)]: name for name in sorted(runs.all_outputs())
                   if name.startswith(prefix) and name.endswith(suffix)}
    return Pipeline([
        Node(frontier_nodes.overoptimisation,
             {"reward_model": "reward_model", "policy_tokenizer": "policy_tokenizer", "sft_policy": "sft_policy",
              "reference_policy": "reference_policy", "alignment_prompts": "alignment_prompts",
              "frontier": "params:alignment.frontier", "common": "params:alignment.common", **checkpoints},
             ["overoptimisation_curves", "overoptimisation_spearman"], name="overoptimisation"),
        Node(frontier_nodes.plot_overoptimisation, "overoptimisation_curves", "overoptimisation_plot",
             name="plot_overoptimisation"),
        Node(frontier_nodes.frontier_method_points,
             {"reward_model": "reward_model", "policy_tokenizer": "policy_tokenizer",
              "reference_policy": "reference_policy", "alignment_prompts": "alignment_prompts",
              "frontier": "params:alignment.frontier", "common": "params:alignment.common", "sft": "sft_policy",
              **{m: f"alignment.{m}.policy" for m in METHODS}},
             "reward_kl_frontier_points", name="frontier_method_points"),
        Node(frontier_nodes.reward_kl_frontier,
             {"sft_generations": "sft_generations", "curves": "overoptimisation_curves",
              "method_points": "reward_kl_frontier_points",
              **{m: f"alignment.{m}.generations" for m in METHODS}},
             ["reward_kl_frontier", "reward_kl_frontier_fits"], name="reward_kl_frontier"),
        Node(frontier_nodes.plot_reward_kl_frontier, ["reward_kl_frontier", "reward_kl_frontier_fits"],
             "reward_kl_frontier_plot", name="plot_reward_kl_frontier"),
    ])
