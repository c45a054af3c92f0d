"""The ethics_audit pipeline as a slice on an in-memory catalog: tiny policies and reward model, every section's
table, plot and the appendix; the over-optimisation curves and the reward–KL frontier come in through the catalog
(the alignment pipeline measures them: tests/pipelines/alignment/test_frontier.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.ethics_audit import create_pipeline
from ru_rlhf.vocabulary import METHODS
from tests.conftest import bars, keep_catalog, tick_labels
from tests.params_helpers import base_params

ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "max_position_embeddings": 256}


def overoptimisation_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curves as the alignment pipeline writes them: PPO with gold = 0.5 + d (0.3 − 0.2 log d) at d = 0, 0.5, 1, 2,
    3 and best-of-n with gold = 0.4 + d (0.5 − 0.25 d) at n = 1, 2, 4, 8 (d = √KL), the proxy rising along both."""
    from ru_rlhf.audit import best_of_n_kl, overoptimisation_flags

    ppo = pd.DataFrame({"curve": "ppo", "step_or_n": [0, 10, 20, 30, 40], "sqrt_kl": [0.0, 0.5, 1.0, 2.0, 3.0]})
    ppo["gold"] = [0.5 + (0.0 if d == 0 else d * (0.3 - 0.2 * math.log(d))) for d in ppo["sqrt_kl"]]
    bon = pd.DataFrame({"curve": "best_of_n", "step_or_n": [1, 2, 4, 8]})
    bon["sqrt_kl"] = [math.sqrt(best_of_n_kl(n)) for n in bon["step_or_n"]]
    bon["gold"] = 0.4 + bon["sqrt_kl"] * (0.5 - 0.25 * bon["sqrt_kl"])
    curves = []
    for c in (ppo, bon):
        c = c.assign(kl=c["sqrt_kl"] ** 2, kl_token=c["sqrt_kl"] ** 2 / 10, proxy=np.arange(len(c), dtype=float),
                     gold_se=0.01, expert=3.0, items=6)
        curves.append(overoptimisation_flags(c))
    curves = pd.concat(curves, ignore_index=True)
    return curves, curves[["curve", "step_or_n", "kl"]].assign(spearman_rm_expert=0.5, items=6)


@pytest.fixture(scope="module")
def audit_run(world_tables, tmp_path_factory):
    from ru_rlhf.io.datasets import BiasProbesDataset
    from ru_rlhf.pipelines.alignment.frontier_nodes import reward_kl_frontier
    from ru_rlhf.pipelines.alignment.nodes import generate_sft_outputs, select_alignment_prompts
    from tests.pipelines.alignment.conftest import tiny_stack

    docs, facts, prompts = world_tables
    tok, sft, rm, common = tiny_stack(docs, tmp_path_factory.mktemp("ckpt"))
    ap = select_alignment_prompts(prompts, facts, docs, common)
    sft_gen = generate_sft_outputs(sft, sft, tok, rm, ap, common)
    params = base_params("ethics_audit", {"seed": 1, "bias_policy_pairs": 8, "sycophancy_items": 6, "max_new_tokens": 6,
                                          "hacking_responses": 6})
    curves, spearman = overoptimisation_tables()
    frontier, fits = reward_kl_frontier(sft_gen, curves, **{m: sft_gen.assign(method=m) for m in METHODS})
    annotators = pd.DataFrame({"annotator_id": ["ann_01", "ann_02"], "careless": [False, True]})
    keep = ["bias_summary", "bias_pair_scores", "avoidance_table", "reward_hacking_table", "sycophancy_table",
            "ethics_appendix", "ethics_appendix_docs", "audit_generations", "bias_plot", "avoidance_plot",
            "reward_hacking_plot", "sycophancy_plot"]
    inputs = {"prompts": prompts, "facts": facts, "documents": docs, "bias_probes": BiasProbesDataset().load(),
              "policy_tokenizer": tok, "sft_policy": sft,
              "reference_policy": sft, **{f"alignment.{m}.policy": sft for m in METHODS}, "reward_model": rm,
              "alignment_prompts": ap, "sft_generations": sft_gen,
              # what the alignment pipeline wrote (hand-made curves here)
              "overoptimisation_curves": curves, "overoptimisation_spearman": spearman,
              "reward_kl_frontier": frontier, "reward_kl_frontier_fits": fits,
              "params:ethics_audit": params, "agreement": {"before": {"helpfulness": 0.5}, "after": {"helpfulness": 0.9},
                                                           "dropped": []},
              "curation_summary": {"pairs": 123}, "annotators": annotators}
    catalog = keep_catalog(inputs, keep=keep)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_every_policy_answers_every_probe(audit_run):
    g = audit_run.load("audit_generations")
    assert set(g["model"]) == {"sft", *METHODS}
    assert set(g["probe"]) == {"bias", "avoidance", "sycophancy"}
    per_model = g.groupby("model").size()
    assert per_model.nunique() == 1


def test_bias_tables(audit_run):
    s = audit_run.load("bias_summary")
    assert {"reward_model", "sft", *METHODS} <= set(s["source"])
    assert {"rm_helpfulness", "rm_truthfulness", "rm_harmlessness", "harmlessness", "refusal", "length"} <= set(s["measure"])
    assert s["p_value"].between(0, 1).all()
    pairs = audit_run.load("bias_pair_scores")
    from ru_rlhf.audit import bias_pairs

    assert len(pairs) == len(bias_pairs()) > 40  # every bundled pair goes through the RM


def test_the_audit_reads_the_curves_and_the_frontier_and_writes_neither():
    p = create_pipeline()
    read = {"overoptimisation_curves", "overoptimisation_spearman", "reward_kl_frontier", "reward_kl_frontier_fits"}
    assert read <= p.inputs()
    assert not read & p.all_outputs() and "overoptimisation_plot" not in p.all_outputs()
    assert not any(i.endswith(".checkpoints") for i in p.inputs())


def test_the_appendix_reports_the_frontier_and_its_fits(audit_run):
    text = audit_run.load("ethics_appendix")
    assert "### The reward–KL frontier" in text
    # PPO's hand-made curve: gold = 0.5 + d (0.3 − 0.2 log d) → α 0.3, β 0.2, peak at KL = e = 2.72 (gold 0.830)
    assert "| ppo | rl | 0.3 | 0.2 | 2.72 | 0.830 | yes | 1.000 | 4 |" in text
    # best-of-n: gold = 0.4 + d (0.5 − 0.25 d) → α 0.5, β 0.25, peak at KL 1, gold 0.650
    assert "| best_of_n | bon | 0.5 | 0.25 | 1 | 0.650 | yes |" in text
    assert "- ppo: measured gold highest at step 30 (KL 4), 0.323 above its start" in text
    assert "gold changed by -0.082 while the proxy changed by 1.000. Fitted peak: KL 2.72." in text
    assert "- best_of_n: measured gold highest at n = 8" in text
    for m in METHODS:
        assert f"| method | {m} |" in text


def test_hacking_sycophancy_avoidance_and_appendix(audit_run):
    h = audit_run.load("reward_hacking_table")
    assert set(h["perturbation"]) == {"filler", "keywords", "flattery", "repeat", "safe_wrap"}
    assert h["gold_delta"].notna().sum() == 16  # gold beside the four plain perturbations × (3 heads + scalar)
    s = audit_run.load("sycophancy_table")
    assert set(s.loc[s["lang"] == "all", "model"]) == {"sft", *METHODS}
    assert s["agree_rate"].between(0, 1).all()
    a = audit_run.load("avoidance_table")
    assert set(a["topic"]) == {"politics", "religion", "ethnicity", "health"}
    text = audit_run.load("ethics_appendix")
    assert text == audit_run.load("ethics_appendix_docs")
    assert "SIMULATED" in text and "123" in text


def test_plots_draw_a_bar_or_point_per_row_of_their_tables(audit_run):
    b = audit_run.load("bias_summary")
    rm_panel, policy_panel = audit_run.load("bias_plot").axes
    assert bars(rm_panel) == (b["source"] == "reward_model").sum()  # a bar per head and group
    assert bars(policy_panel) == ((b["source"] != "reward_model") & (b["measure"] == "harmlessness")).sum()
    assert rm_panel.get_title().startswith("reward model") and policy_panel.get_title().startswith("policies")

    a = audit_run.load("avoidance_table")
    (ax,) = audit_run.load("avoidance_plot").axes
    assert bars(ax) == a["model"].nunique() * a["topic"].nunique()  # a bar per model and topic
    assert sorted(tick_labels(ax)) == sorted(a["model"].unique()) and ax.get_ylim() == (0, 1)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(a["topic"].unique())

    h = audit_run.load("reward_hacking_table")
    (ax,) = audit_run.load("reward_hacking_plot").axes
    assert bars(ax) == h["perturbation"].nunique() * h["head"].nunique()
    assert sorted(tick_labels(ax)) == sorted(h["perturbation"].unique())

    syco = audit_run.load("sycophancy_table")
    (ax,) = audit_run.load("sycophancy_plot").axes
    assert tick_labels(ax) == list(syco.loc[syco["lang"] == "all", "model"]) and bars(ax) == len(tick_labels(ax))
