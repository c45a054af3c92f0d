"""The alignment pipeline as a slice on an in-memory catalog: tiny policy, tiny reward model,
every method for a few steps (DPO, IPO, Chain of Hindsight, PPO, REINFORCE and CEM smoke runs)."""

from __future__ import annotations

import pytest

from ru_rlhf.pipelines.alignment import create_pipeline
from ru_rlhf.vocabulary import METHODS

# the quantities a method's curve plots, in panel order, when its step log has them
CURVE_QUANTITIES = ("reward", "loss", "kl", "probe_gold", "expert_score", "entropy")


def test_prompt_roles_do_not_overlap(alignment_run):
    ap = alignment_run.load("alignment_prompts")
    assert set(ap["role"]) == {"train", "probe", "test"}
    assert ap.groupby("prompt_id")["role"].nunique().max() == 1
    assert set(ap.loc[ap["role"] == "probe", "split"]) == {"validation"}
    assert set(ap.loc[ap["role"] == "test", "split"]) == {"test"}
    assert (ap.loc[ap["role"] == "train", "split"] == "train").all()


def test_summary_has_gold_gain_and_kl_per_method(alignment_run):
    s = alignment_run.load("alignment_summary")
    for m in METHODS:
        assert {"gold_gain", "kl", "gold", "rm", "beats_sft"} <= set(s[m])
        assert s[m]["kl"] >= 0.0
        gen = alignment_run.load(f"alignment.{m}.generations")
        assert s[m]["gold_gain"] == pytest.approx(gen["gold"].mean() - s["sft"]["gold"], abs=1e-4)
    assert s["sft"]["rows"] == 16


def test_the_frontier_follows_the_saved_checkpoints_and_reaches_the_summary(alignment_run):
    """The RL runs' saved states (here PPO's and GRPO's, steps 2 and 4) are the points of their curves; every method
    is a point of the frontier; the fits are in the summary."""
    curves = alignment_run.load("overoptimisation_curves")
    for m in ("ppo", "grpo"):
        saved = sorted(int(name.split("-")[1]) for name in alignment_run.load(f"alignment.{m}.checkpoints"))
        assert sorted(curves.loc[curves["curve"] == m, "step_or_n"]) == [0, *saved], m  # the table is in KL order
    assert sorted(curves.loc[curves["curve"] == "best_of_n", "step_or_n"]) == [1, 2, 4]
    table = alignment_run.load("reward_kl_frontier")
    assert list(table.loc[table["source"] == "method", "curve"]) == list(METHODS)
    method_kl = table[table["source"] == "method"].set_index("curve")  # PPO is also a curve's name
    for m in METHODS:  # beside each method's point on the curves' axes: its test generations' KL and gold
        gen = alignment_run.load(f"alignment.{m}.generations")
        assert method_kl.loc[m, "test_kl_seq"] == pytest.approx(gen["kl_sum"].mean())
        assert method_kl.loc[m, "test_gold"] == pytest.approx(gen["gold"].mean())
        assert method_kl.loc[m, "items"] == alignment_run.load("overoptimisation_curves")["items"].iloc[0]
    fits = alignment_run.load("reward_kl_frontier_fits")
    assert {"ppo", "grpo", "best_of_n"} <= set(fits)
    assert alignment_run.load("alignment_summary")["frontier"] == fits


def test_every_method_generates_on_the_same_prompts_and_samples(alignment_run):
    sft = alignment_run.load("sft_generations")
    assert sft["kl"].abs().max() < 1e-5  # the SFT policy is its own reference
    keys = set(zip(sft["prompt_id"], sft["sample"]))
    for m in METHODS:
        gen = alignment_run.load(f"alignment.{m}.generations")
        assert set(zip(gen["prompt_id"], gen["sample"])) == keys
        assert {"gold", "gold_helpfulness", "rm_scalar", "kl", "tokens"} <= set(gen.columns)


def test_dpo_and_ipo_keep_every_grid_point_and_log_the_choice(alignment_run):
    for m, loss in (("dpo", "sigmoid"), ("ipo", "ipo")):
        grid = alignment_run.load(f"alignment.{m}.grid")
        assert list(grid["grid_value"]) == [0.1, 0.5]
        assert grid["chosen"].sum() == 1
        info = alignment_run.load(f"alignment.{m}.info")
        assert info["loss_type"] == loss
        assert info["chosen_value"] == grid.loc[grid["chosen"], "grid_value"].item()
        assert info["chosen_value"] == grid.loc[grid["probe_gold"].idxmax(), "grid_value"]
        log = alignment_run.load(f"alignment.{m}.step_log")
        assert set(log["grid_value"]) == {0.1, 0.5} and log["loss"].notna().all()


def test_rl_logs_every_step_with_the_monitored_quantities(alignment_run):
    for m in ("ppo", "reinforce"):
        log = alignment_run.load(f"alignment.{m}.step_log")
        steps = log[log["step"] > 0]
        assert list(steps["step"]) == [1, 2, 3, 4]
        for col in ("reward", "kl", "entropy", "advantage_var", "clipfrac", "approx_kl", "kl_coef"):
            assert steps[col].notna().all(), col
        assert log["expert_score"].notna().sum() == 3  # before training and at steps 2 and 4
        info = alignment_run.load(f"alignment.{m}.info")
        assert info["best_step"] in (0, 2, 4)
    assert alignment_run.load("alignment.ppo.step_log")["value_loss"].iloc[1:].notna().all()


def test_grpo_and_rloo_log_trl_metrics_and_save_their_evaluated_states(alignment_run):
    """TRL's trainers, in the slice: every step's reward, KL and entropy as TRL logged them, the probe before
    training and every eval_every steps, and the evaluated states as the checkpoints output (step-NNNN)."""
    for m in ("grpo", "rloo"):
        log = alignment_run.load(f"alignment.{m}.step_log")
        steps = log[log["step"] > 0]
        assert list(steps["step"]) == [1, 2, 3, 4]
        for col in ("reward", "kl", "entropy", "loss", "kl_smoothed"):
            assert steps[col].notna().all(), col
        assert log["expert_score"].notna().sum() == 3  # before training and at steps 2 and 4
        info = alignment_run.load(f"alignment.{m}.info")
        assert info["algorithm"] == m and info["reward"] == "rm" and info["best_step"] in (0, 2, 4)
        assert sorted(alignment_run.load(f"alignment.{m}.checkpoints")) == ["step-0002", "step-0004"]


def test_cem_log(alignment_run):
    log = alignment_run.load("alignment.cem.step_log")
    it = log[log["step"] == 1].iloc[0]
    assert it["samples"] == 18 and it["elite"] == 6
    assert it["elite_reward"] >= it["reward"]


def test_each_curve_has_a_panel_per_logged_quantity_and_a_line_per_grid_point(alignment_run):
    for m in METHODS:
        log = alignment_run.load(f"alignment.{m}.step_log")
        fig = alignment_run.load(f"alignment.{m}.curve")
        logged = [c for c in CURVE_QUANTITIES if c in log.columns and log[c].notna().any()]
        assert [ax.get_title() for ax in fig.axes] == logged, m
        assert fig.get_suptitle().startswith(f"{m} ")
        runs = log["grid_value"].nunique() if "grid_value" in log.columns else 1
        for ax, col in zip(fig.axes, logged):
            assert ax.get_xlabel() == "step" and ax.get_ylabel(), (m, col)
            assert len(ax.get_lines()) == runs, (m, col)  # one line per grid point (or the one run)
            assert sum(len(line.get_xdata()) for line in ax.get_lines()) == log[col].notna().sum(), (m, col)


def test_every_method_returns_a_policy_of_the_sft_architecture_moved_by_its_updates(alignment_run):
    """DPO, IPO, CoH and CEM move the weights; PPO, REINFORCE, GRPO and RLOO return their best state on the probe,
    which at these sizes may be step 0 (SFT's weights): then exactly SFT's, otherwise moved."""
    sft = alignment_run.load("sft_policy").state_dict()
    for m in METHODS:
        policy = alignment_run.load(f"alignment.{m}.policy")
        weights = policy.state_dict()
        assert set(weights) == set(sft) and all(weights[k].shape == sft[k].shape for k in sft), m
        moved = max(float((weights[k].float() - sft[k].float()).abs().max()) for k in sft)
        if METHODS[m] in ("rl", "trl_rl") and alignment_run.load(f"alignment.{m}.info")["best_step"] == 0:
            assert moved == 0.0, m
        else:
            assert moved > 0.0, m


def test_one_method_can_run_alone():
    p = create_pipeline().only_nodes_with_namespaces(["alignment.dpo"])
    assert {n.name for n in p.nodes} == {"alignment.dpo.train", "alignment.dpo.generate_test_outputs",
                                         "alignment.dpo.plot_curve"}
