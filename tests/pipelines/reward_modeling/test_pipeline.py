"""The reward_modeling pipeline as a slice on an in-memory catalog, with a tiny encoder."""

from __future__ import annotations

import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.io.datasets import HumanLabelsDataset
from ru_rlhf.pipelines.preference_curation import create_pipeline as curation
from ru_rlhf.pipelines.reward_modeling import create_pipeline as reward
from tests.conftest import TINY_SIZE, keep_catalog, no_votes
from tests.params_helpers import base_params

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def reward_run(world_tables, variant_candidates, tmp_path_factory):
    from ru_rlhf.models.policy import load_policy, train_tokenizer

    docs, facts, prompts = world_tables
    tok = train_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    policy = load_policy(size=TINY_SIZE, tokenizer=tok, seed=0)
    splits = docs[["doc_id", "lang"]].assign(split=docs["doc_id"].map(
        dict(zip(prompts["doc_id"], prompts["split"]))).fillna("train"))
    params = base_params("reward_modeling", {
        "seed": 1, "checkpoint_dir": str(tmp_path_factory.mktemp("rm")), "pooling": "response", "match_feature": True,
        # the comparison models (off in base, on in the full env) are what this slice checks beside the default's
        "compare_backbone": True, "distributional": True, "cross_lingual": True,
        "encoder": {"size": TINY, "vocab_size": 600, "mlm_epochs": 1, "max_length": 128},
        "train": {"epochs": 1, "batch_size": 16, "max_length": 128, "max_pairs_per_criterion": 150,
                  "validation_pairs": 60, "balance_criteria": True},
        "behaviour": {"prompts": 4, "samples": 4, "max_new_tokens": 6, "batch_size": 16, "probe_responses": 12},
        "umap_points": 60})
    keep = ["reward_metrics", "reward_tradeoff", "reward_reliability_plot", "reward_umap_plot", "reward_model",
            "reward_model_log", "encoder", "other_backbone_reward_model", "reward_best_of_n", "reward_baseline"]
    catalog = keep_catalog({"app_feedback": no_votes(), "human_labels": HumanLabelsDataset().load(),  # none
                            "candidates": variant_candidates, "prompts": prompts,
                            "facts": facts, "documents": docs, "sft_policy": policy, "policy_tokenizer": tok,
                            "doc_splits": splits, "params:preference_curation": base_params("preference_curation", {"seed": 2}),
                            "params:reward_modeling": params}, keep=keep)
    SequentialRunner().run(curation() + reward(), catalog)
    return catalog


def test_metrics_laid_out_per_model_and_head(reward_run):
    m = reward_run.load("reward_metrics")
    for model in ("multi_head", "distributional"):
        for head in ("helpfulness", "truthfulness", "harmlessness"):
            for split in ("validation", "test"):
                entry = m[model][head][split]
                assert {"accuracy", "auc", "spearman_gold", "spearman_annotators", "by_lang", "by_task"} <= set(entry)
    assert {"ece_before", "ece_after"} <= set(m["calibration"])
    assert set(m["cross_lingual"]) >= {"russian_only", "multi_head"}
    assert m["training"]["multi_head"]["steps"] > 0
    assert m["backbone"] == "policy" and m["pooling"] == "response"
    # the other backbone's model is reported beside the default's, on the same heads and splits
    assert m["multi_head_bert"]["helpfulness"]["test"]["pairs"] == m["multi_head"]["helpfulness"]["test"]["pairs"]
    for split in ("validation", "test"):
        assert -1 <= m["multi_head"]["scalar_spearman_gold"][split] <= 1
        t = m["truncation"][split]
        assert t["pairs"] > 0 and 0 <= t["evidence_cut"] <= t["prompt_cut"] <= t["pairs"]
    # every evaluation logs per-head train and validation accuracy, and one of them is the state kept
    evals = m["training"]["multi_head"]["evaluations"]
    assert evals and sum(e["best"] for e in evals) == 1
    assert {"validation_accuracy_helpfulness", "train_accuracy_helpfulness"} <= set(evals[0])
    # the TF-IDF baseline is scored on the same test pairs, and the margin over it is reported
    for h in ("helpfulness", "truthfulness"):
        assert m["baseline"][h]["test"]["pairs"] == m["multi_head"][h]["test"]["pairs"]
        o = m["test_accuracy_over_baseline"][h]
        assert o["margin"] == pytest.approx(o["reward_model"] - o["baseline"], abs=1e-4)
    shares = m["behaviour"]["hacking_share_up_scalar"]
    assert set(shares) == {"filler", "keywords", "flattery", "repeat"} and all(0 <= v <= 1 for v in shares.values())


def test_plots_tradeoff_and_model(reward_run):
    calibration = reward_run.load("reward_metrics")["calibration"]
    (ax,) = reward_run.load("reward_reliability_plot").axes
    assert [line.get_label() for line in ax.get_lines()] == [  # the diagonal, then the ECE before and after
        "perfect", f"raw σ(Δr), ECE {calibration['ece_before']:.3f}", f"Platt, ECE {calibration['ece_after']:.3f}"]
    assert all(0 <= x <= 1 for line in ax.get_lines() for x in line.get_xdata())
    umap = reward_run.load("reward_umap_plot")
    assert umap._suptitle.get_text().startswith("UMAP of")  # base's projection (the smoke env's is PCA)
    panels = [ax for ax in umap.axes if ax.get_title()]  # the others are the colour bars
    assert [ax.get_title() for ax in panels] == ["gold helpfulness", "gold truthfulness", "gold harmlessness"]
    assert len(umap.axes) == 2 * len(panels)
    points = {len(ax.collections[0].get_offsets()) for ax in panels}
    assert len(points) == 1 and 0 < points.pop() <= 60  # the same test responses in every panel, at most umap_points
    t = reward_run.load("reward_tradeoff")
    assert set(t["weights"]) == {"equal", "helpful_heavy", "safety_heavy"}
    assert t.loc[t["weights"] == "equal", "top_changed_vs_equal"].item() == 0.0
    rm, tok = reward_run.load("reward_model")
    assert rm.kind == "multi_head" and rm.heads == ("helpfulness", "truthfulness", "harmlessness")
    assert rm.encoder.config.model_type == "llama" and rm.pooling == "response" and rm.max_length == 128
    assert rm.match_feature and rm.match.weight.abs().sum() > 0  # the exact-match feature was trained
    other, _ = reward_run.load("other_backbone_reward_model")
    assert other.encoder.config.model_type == "bert"
    log = reward_run.load("reward_model_log")
    steps = log[log["kind"] == "step"]
    assert steps["loss"].notna().all() and len(steps) > 1
    bon = reward_run.load("reward_best_of_n")
    assert list(bon["n"]) == [1, 2, 4] and bon.loc[0, "gain_vs_1"] == 0 and (bon["prompts"] == 4).all()
