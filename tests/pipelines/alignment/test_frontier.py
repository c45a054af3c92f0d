"""The over-optimisation curves and the reward–KL frontier: the frontier node on a hand-made table (known points →
known rows and fits), and the alignment pipeline's shared frontier nodes as a slice on an in-memory catalog (tiny
policies, two saved stand-in "PPO checkpoints", a run that saved none)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.audit import best_of_n_kl
from ru_rlhf.pipelines.alignment import create_pipeline
from ru_rlhf.pipelines.alignment.frontier_nodes import FRONTIER_COLUMNS, reward_kl_frontier
from ru_rlhf.vocabulary import METHODS
from tests.conftest import TINY_SIZE, keep_catalog
from tests.params_helpers import base_params

FRONTIER_NODES = ["overoptimisation", "plot_overoptimisation", "frontier_method_points", "reward_kl_frontier",
                  "plot_reward_kl_frontier",
                  "alignment_summary"]


# --------------------------------------------------------------------------- the node on a hand-made table
def _generations(gold, rm, kl, kl_sum) -> pd.DataFrame:
    return pd.DataFrame({"prompt_id": range(len(gold)), "sample": 0, "gold": gold, "rm_scalar": rm, "kl": kl,
                         "kl_sum": kl_sum, "tokens": 5})


def _curves() -> pd.DataFrame:
    """PPO: gold = 0.5 + d (0.3 − 0.2 log d) at d = 0, 0.5, 1, 2, 3 (up, peak at KL e, down); best-of-n: gold =
    0.4 + d (0.5 − 0.25 d) at n = 1, 2, 4, 8 (KL log n − (n − 1)/n); the proxy rises along both."""
    rows = []
    for step, d in zip((0, 10, 20, 30, 40), (0.0, 0.5, 1.0, 2.0, 3.0)):
        gain = 0.0 if d == 0 else d * (0.3 - 0.2 * math.log(d))
        rows.append({"curve": "ppo", "step_or_n": step, "kl": d * d, "kl_token": d * d / 10, "sqrt_kl": d,
                     "proxy": 0.1 * step, "gold": 0.5 + gain, "gold_se": 0.01, "items": 6})
    for n in (1, 2, 4, 8):
        kl = best_of_n_kl(n)
        d = math.sqrt(kl)
        rows.append({"curve": "best_of_n", "step_or_n": n, "kl": kl, "kl_token": float("nan"), "sqrt_kl": d,
                     "proxy": float(n), "gold": 0.4 + d * (0.5 - 0.25 * d), "gold_se": 0.02, "items": 3})
    return pd.DataFrame(rows)


def test_frontier_table_and_fits_from_known_points():
    sft = _generations([0.4, 0.6], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    dpo = _generations([0.5, 0.7], [1.0, 3.0], [0.1, 0.3], [1.0, 3.0])
    table, fits = reward_kl_frontier(sft, _curves(), dpo=dpo)
    assert list(table.columns) == FRONTIER_COLUMNS
    assert list(table["source"]) == ["sft", "method"] + ["checkpoint"] * 5 + ["best_of_n"] * 4
    assert list(table["curve"]) == ["sft", "dpo"] + ["ppo"] * 5 + ["best_of_n"] * 4

    s, m = table.iloc[0], table.iloc[1]
    assert s["gold"] == pytest.approx(0.5) and s["kl_seq"] == 0.0 and pd.isna(s["step_or_n"])
    # dpo: mean kl_sum (1 + 3)/2 = 2, √2; gold 0.6 with standard error sd([0.5, 0.7]) / √2 = 0.1414 / 1.4142 = 0.1
    assert m["kl_seq"] == pytest.approx(2.0) and m["sqrt_kl"] == pytest.approx(math.sqrt(2))
    assert m["gold"] == pytest.approx(0.6) and m["gold_se"] == pytest.approx(0.1)
    assert m["proxy"] == pytest.approx(2.0) and m["kl_token"] == pytest.approx(0.2) and m["items"] == 2

    ppo = table[table["curve"] == "ppo"]
    assert list(ppo["step_or_n"]) == [0, 10, 20, 30, 40] and list(ppo["kl_seq"]) == [0.0, 0.25, 1.0, 4.0, 9.0]
    assert ppo["gold_fit"].to_numpy() == pytest.approx(ppo["gold"].to_numpy())  # exact points: the fit goes through
    bon = table[table["curve"] == "best_of_n"]
    assert list(bon["step_or_n"]) == [1, 2, 4, 8] and bon["kl_token"].isna().all()
    assert bon["kl_seq"].iloc[0] == 0.0 and bon["kl_seq"].iloc[2] == pytest.approx(math.log(4) - 0.75)

    f = fits["ppo"]
    assert f["form"] == "rl" and f["source"] == "checkpoint" and f["base_gold"] == pytest.approx(0.5)
    assert f["alpha"] == pytest.approx(0.3) and f["beta"] == pytest.approx(0.2)
    assert f["peak_kl"] == pytest.approx(math.e)  # d* = exp(0.3/0.2 − 1) = e^0.5
    assert f["peak_gold"] == pytest.approx(0.5 + 0.2 * math.exp(0.5)) and f["peak_in_range"] is True
    b = fits["best_of_n"]
    assert b["form"] == "bon" and b["alpha"] == pytest.approx(0.5) and b["beta"] == pytest.approx(0.25)
    assert b["peak_kl"] == pytest.approx(1.0) and b["peak_gold"] == pytest.approx(0.65) and b["points"] == 4
    # d_max = √(log 8 − 7/8) = 1.11 > 1: the peak was measured
    assert b["peak_in_range"] is True and b["items"] == 3
    assert set(fits) == {"_note", "ppo", "best_of_n"}
    # measured only up to d = 1 (before the peak at d = e^0.5): the fitted peak is beyond the range, no gold for it
    early = _curves()
    early = early[(early["curve"] != "ppo") | (early["sqrt_kl"] <= 1.0)]
    _, early_fits = reward_kl_frontier(sft, early, dpo=dpo)
    e = early_fits["ppo"]
    assert e["peak_kl"] == pytest.approx(math.e) and e["peak_in_range"] is False and e["peak_gold"] is None


def test_frontier_plot_marks_sft_methods_curves_and_fits():
    from ru_rlhf.figures import figure_problems
    from ru_rlhf.pipelines.alignment.frontier_nodes import plot_reward_kl_frontier

    sft = _generations([0.4, 0.6], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    method = _generations([0.5, 0.7], [1.0, 3.0], [0.1, 0.3], [1.0, 3.0])
    table, fits = reward_kl_frontier(sft, _curves(), dpo=method, ppo=method)  # PPO: a method and a curve
    fig = plot_reward_kl_frontier(table, fits)
    gold_ax, proxy_ax = fig.axes
    assert gold_ax.get_ylabel() == "test gold reward" and proxy_ax.get_ylabel().startswith("proxy")
    labels = [t.get_text() for t in gold_ax.get_legend().get_texts()]
    assert "SFT" in labels and "ppo checkpoints" in labels and any(x.startswith("ppo fit: α=0.3") for x in labels)
    assert any(x.startswith("best_of_n fit") for x in labels)
    assert [t.get_text() for t in gold_ax.texts] == ["dpo, ppo"]  # each method's point labelled, one label a place
    assert len(gold_ax.get_lines()) == 4 and len(proxy_ax.get_lines()) == 2  # two curves (+ two fits on gold)
    ppo = next(line for line in gold_ax.get_lines() if line.get_label() == "ppo checkpoints")
    assert list(ppo.get_xdata()) == [0.0, 0.5, 1.0, 2.0, 3.0]  # the checkpoints alone, not PPO's chosen point
    assert "own SFT point" in fig._suptitle.get_text()
    assert figure_problems(fig) == []


# --------------------------------------------------------------------------- the pipeline slice
@pytest.fixture(scope="module")
def frontier_run(world_tables, tmp_path_factory):
    from ru_rlhf.io.datasets import CheckpointsDataset
    from ru_rlhf.models.policy import load_policy
    from ru_rlhf.pipelines.alignment.nodes import generate_sft_outputs, select_alignment_prompts
    from tests.pipelines.alignment.conftest import tiny_stack

    docs, facts, prompts = world_tables
    ckpt = tmp_path_factory.mktemp("frontier_ckpt")
    tok, sft, rm, common = tiny_stack(docs, ckpt)
    for step, seed in ((2, 1), (4, 2)):  # stand-ins for PPO's saved states
        load_policy(size=TINY_SIZE, tokenizer=tok, seed=seed).save_pretrained(ckpt / "ppo" / f"step-{step:04d}")
    frontier = base_params("alignment.frontier", {"seed": 1, "overopt_methods": ["ppo", "reinforce"],
                                                  "overopt_prompts": 6, "bon_prompts": 3, "bon_ns": [1, 2, 4],
                                                  "max_new_tokens": 6})
    ap = select_alignment_prompts(prompts, facts, docs, common)
    sft_gen = generate_sft_outputs(sft, sft, tok, rm, ap, common)
    rng = np.random.default_rng(0)
    pipe = create_pipeline().only_nodes(*FRONTIER_NODES)
    checkpoint_inputs = sorted(i for i in pipe.inputs() if i.endswith(".checkpoints"))
    inputs = {"policy_tokenizer": tok, "sft_policy": sft, "reference_policy": sft, "reward_model": rm,
              "alignment_prompts": ap, "sft_generations": sft_gen,
              "params:alignment.frontier": frontier, "params:alignment.common": common,
              # the saved states as the catalog loads them (only PPO saved any here)
              **{name: CheckpointsDataset(str(ckpt / name.split(".")[1])).load() for name in checkpoint_inputs},
              # every run's test generations (the SFT answers, gold jittered) and info, as the summary reads them
              **{name: sft_gen.assign(method=name.split(".")[1], gold=sft_gen["gold"] + rng.normal(0, .05, len(sft_gen)))
                 for name in pipe.inputs() if name.endswith(".generations")},
              **{name: {"method": name.split(".")[1]} for name in pipe.inputs() if name.endswith(".info")},
              # every method's policy: the SFT policy here (the frontier measures each on the curves' axes)
              **{name: sft for name in pipe.inputs() if name.endswith(".policy")}}
    assert set(pipe.inputs()) == set(inputs)  # the slice reads nothing else
    keep = ["overoptimisation_curves", "overoptimisation_spearman", "overoptimisation_plot", "reward_kl_frontier",
            "reward_kl_frontier_points",
            "reward_kl_frontier_fits", "reward_kl_frontier_plot", "alignment_summary"]
    catalog = keep_catalog(inputs, keep=keep)
    SequentialRunner().run(pipe, catalog)
    return catalog


def test_the_curves_follow_every_saved_checkpoint_and_best_of_n(frontier_run):
    c = frontier_run.load("overoptimisation_curves")
    ppo = c[c["curve"] == "ppo"].sort_values("step_or_n")
    assert list(ppo["step_or_n"]) == [0, 2, 4]
    assert ppo.iloc[0]["kl"] == pytest.approx(0.0, abs=1e-6) and (ppo.iloc[1:]["kl"] > 0).all()
    assert list(c.loc[c["curve"] == "reinforce", "step_or_n"]) == [0]  # saved none: its SFT point alone
    bon = c[c["curve"] == "best_of_n"].sort_values("step_or_n")
    assert list(bon["step_or_n"]) == [1, 2, 4]
    assert (bon["proxy"].diff().dropna() >= -1e-9).all()  # best-of-n by the proxy never lowers the proxy
    assert {"flag", "gold_se", "kl_token"} <= set(c.columns) and c["gold_se"].notna().all()
    assert len(frontier_run.load("overoptimisation_spearman")) == 7


def test_the_frontier_has_sft_every_method_and_every_curve_point(frontier_run):
    table = frontier_run.load("reward_kl_frontier")
    curves = frontier_run.load("overoptimisation_curves")
    assert list(table.loc[table["source"] == "method", "curve"]) == list(METHODS)
    assert (table["source"] == "sft").sum() == 1
    assert len(table) == 1 + len(METHODS) + len(curves)
    assert set(table.loc[table["source"] == "checkpoint", "curve"]) == {"ppo", "reinforce"}
    # SFT and the methods are measured as the curves are (same prompts, temperature 1, same seeds): every
    # policy here is the SFT policy, so each point is each curve's step-0 point; the test answers' values are kept
    points = frontier_run.load("reward_kl_frontier_points").set_index("curve")
    start = curves[(curves["curve"] == "ppo") & (curves["step_or_n"] == 0)].iloc[0]
    for name in ("sft", *METHODS):
        row = table[table["curve"] == name].iloc[0]
        assert row["kl_seq"] == points.loc[name, "kl_seq"] == pytest.approx(start["kl"], abs=1e-6)
        assert row["gold"] == points.loc[name, "gold"] == pytest.approx(start["gold"])
    policies = table[table["source"].isin(["sft", "method"])]
    assert policies[["test_gold", "test_kl_seq"]].notna().all().all()
    assert table.loc[table["source"].isin(["checkpoint", "best_of_n"]), "test_gold"].isna().all()
    fits = frontier_run.load("reward_kl_frontier_fits")
    assert fits["ppo"]["form"] == "rl" and fits["best_of_n"]["form"] == "bon"
    assert fits["reinforce"]["alpha"] is None and fits["reinforce"]["n_points"] == 0  # nothing to fit
    assert fits["ppo"]["n_points"] == 2 and fits["ppo"]["alpha"] is not None
    summary = frontier_run.load("alignment_summary")
    assert summary["frontier"] == fits and set(summary) >= {"sft", *METHODS, "frontier"}


def test_the_plots_draw_every_curve(frontier_run):
    curves = frontier_run.load("overoptimisation_curves")
    axes = frontier_run.load("overoptimisation_plot").axes
    names = list(curves["curve"].unique())
    assert len(axes) == 2 * len(names)  # a panel per curve, the gold reward on its twin axis
    for name in names:
        (proxy,) = next(ax for ax in axes if ax.get_title() == name).get_lines()
        assert len(proxy.get_xdata()) == (curves["curve"] == name).sum()  # a point per KL step
    assert sorted(ax.get_ylabel() for ax in axes) == sorted(["RM score", "gold reward"] * len(names))
    gold_ax, proxy_ax = frontier_run.load("reward_kl_frontier_plot").axes
    assert sorted(name for t in gold_ax.texts for name in t.get_text().split(", ")) == sorted(METHODS)
    drawn = {line.get_label() for line in proxy_ax.get_lines()}
    assert {"ppo checkpoints", "reinforce checkpoints", "best_of_n (n = 1…4)"} <= drawn


def test_a_listed_run_that_saves_no_checkpoints_is_an_error():
    from ru_rlhf.pipelines.alignment.frontier_nodes import overoptimisation

    params = base_params("alignment.frontier", {"overopt_methods": ["dpo"]})
    with pytest.raises(ValueError, match=r"\['dpo'\] save no checkpoints"):
        overoptimisation(None, None, None, None, pd.DataFrame(), params, base_params("alignment.common"),
                         ppo={}, reinforce={})


def test_the_curves_follow_every_run_that_saves_checkpoints():
    """The node's inputs are built from the pipeline: every alignment.<m>.checkpoints a trainer writes."""
    pipe = create_pipeline()
    node = next(n for n in pipe.nodes if n.name == "overoptimisation")
    written = {o for n in pipe.nodes for o in n.outputs if o.endswith(".checkpoints")}
    assert written >= {"alignment.ppo.checkpoints", "alignment.reinforce.checkpoints"}
    assert written <= set(node.inputs) and "params:alignment.frontier" in node.inputs
    frontier = next(n for n in pipe.nodes if n.name == "reward_kl_frontier")
    assert {f"alignment.{m}.generations" for m in METHODS} <= set(frontier.inputs)
    points = next(n for n in pipe.nodes if n.name == "frontier_method_points")
    assert {f"alignment.{m}.policy" for m in METHODS} | {"sft_policy"} <= set(points.inputs)
