"""The ethics_audit pipeline as a slice on an in-memory catalog: tiny policies and reward model,
two saved "PPO checkpoints", every section's table, plot and the appendix."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.ethics_audit import create_pipeline
from ru_rlhf.vocabulary import METHODS
from tests.conftest import TINY_SIZE, bars, keep_catalog, tick_labels
from tests.params_helpers import base_params

ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def audit_run(world_tables, tmp_path_factory):
    from ru_rlhf.io.datasets import BiasProbesDataset, CheckpointsDataset
    from ru_rlhf.models.encoder import load_encoder, train_wordpiece_tokenizer
    from ru_rlhf.models.policy import load_policy, train_tokenizer
    from ru_rlhf.models.reward import RewardModel
    from ru_rlhf.pipelines.alignment.nodes import generate_sft_outputs, select_alignment_prompts

    docs, facts, prompts = world_tables
    tok = train_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    sft = load_policy(size=TINY_SIZE, tokenizer=tok, seed=0)
    ckpt = tmp_path_factory.mktemp("ckpt")
    for step, seed in ((2, 1), (4, 2)):  # stand-ins for PPO's saved states
        load_policy(size=TINY_SIZE, tokenizer=tok, seed=seed).save_pretrained(ckpt / "ppo" / f"step-{step:04d}")
    enc_tok = train_wordpiece_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    rm = (RewardModel(load_encoder(size=ENCODER, tokenizer=enc_tok, seed=0)), enc_tok)
    common = base_params("alignment.common", {
        "seed": 1, "checkpoint_dir": str(ckpt), "train_prompts": 5, "probe_prompts": 3, "test_prompts": 10,
        "test_samples": 1, "max_new_tokens_by_task": {"qa": 6, "dialogue": 6, "summarization": 6}})
    ap = select_alignment_prompts(prompts, facts, docs, common)
    sft_gen = generate_sft_outputs(sft, sft, tok, rm, ap, common)
    params = base_params("ethics_audit", {"seed": 1, "bias_policy_pairs": 8, "sycophancy_items": 6, "max_new_tokens": 6,
                                          "hacking_responses": 6, "overopt_prompts": 6, "bon_prompts": 3,
                                          "bon_ns": [1, 2, 4]})
    annotators = pd.DataFrame({"annotator_id": ["ann_01", "ann_02"], "careless": [False, True]})
    keep = ["bias_summary", "bias_pair_scores", "avoidance_table", "overoptimisation_curves", "overoptimisation_spearman",
            "reward_hacking_table", "sycophancy_table", "ethics_appendix", "ethics_appendix_docs", "audit_generations",
            "bias_plot", "avoidance_plot", "overoptimisation_plot", "reward_hacking_plot", "sycophancy_plot"]
    inputs = {"prompts": prompts, "facts": facts, "documents": docs, "bias_probes": BiasProbesDataset().load(),
              "policy_tokenizer": tok, "sft_policy": sft,
              "reference_policy": sft, **{f"alignment.{m}.policy": sft for m in METHODS}, "reward_model": rm,
              "alignment_prompts": ap, "sft_generations": sft_gen,
              # the saved states as the catalog loads them (REINFORCE saved none here)
              **{f"alignment.{m}.checkpoints": CheckpointsDataset(str(ckpt / m)).load() for m in ("ppo", "reinforce")},
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


def test_overoptimisation_follows_the_checkpoints_and_best_of_n(audit_run):
    c = audit_run.load("overoptimisation_curves")
    ppo = c[c["curve"] == "ppo"].sort_values("step_or_n")
    assert list(ppo["step_or_n"]) == [0, 2, 4]
    assert ppo.iloc[0]["kl"] == pytest.approx(0.0, abs=1e-6) and (ppo.iloc[1:]["kl"] > 0).all()
    bon = c[c["curve"] == "best_of_n"].sort_values("step_or_n")
    assert list(bon["step_or_n"]) == [1, 2, 4]
    assert (bon["proxy"].diff().dropna() >= -1e-9).all()  # best-of-n by the proxy never lowers the proxy
    assert "flag" in c.columns
    assert len(audit_run.load("overoptimisation_spearman")) == 6


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

    curves = audit_run.load("overoptimisation_curves")
    axes = audit_run.load("overoptimisation_plot").axes
    names = list(curves["curve"].unique())
    assert len(axes) == 2 * len(names)  # a panel per curve, the gold reward on its twin axis
    for name in names:
        (proxy,) = next(ax for ax in axes if ax.get_title() == name).get_lines()
        assert len(proxy.get_xdata()) == (curves["curve"] == name).sum()  # a point per KL step
    assert sorted(ax.get_ylabel() for ax in axes) == sorted(["RM score", "gold reward"] * len(names))

    h = audit_run.load("reward_hacking_table")
    (ax,) = audit_run.load("reward_hacking_plot").axes
    assert bars(ax) == h["perturbation"].nunique() * h["head"].nunique()
    assert sorted(tick_labels(ax)) == sorted(h["perturbation"].unique())

    syco = audit_run.load("sycophancy_table")
    (ax,) = audit_run.load("sycophancy_plot").axes
    assert tick_labels(ax) == list(syco.loc[syco["lang"] == "all", "model"]) and bars(ax) == len(tick_labels(ax))
