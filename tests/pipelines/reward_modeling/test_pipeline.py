"""The reward_modeling pipeline as a slice on an in-memory catalog, with a tiny encoder."""

from __future__ import annotations

import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.preference_curation import create_pipeline as curation
from ru_rlhf.pipelines.reward_modeling import create_pipeline as reward
from tests.conftest import keep_catalog, no_votes

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def reward_run(world_tables, variant_candidates, tmp_path_factory):
    docs, facts, prompts = world_tables
    splits = docs[["doc_id", "lang"]].assign(split=docs["doc_id"].map(
        dict(zip(prompts["doc_id"], prompts["split"]))).fillna("train"))
    params = {"seed": 1, "checkpoint_dir": str(tmp_path_factory.mktemp("rm")),
              "encoder": {"size": TINY, "vocab_size": 600, "mlm_epochs": 1, "max_length": 128},
              "train": {"epochs": 1, "batch_size": 16, "max_length": 128, "max_pairs_per_criterion": 150},
              "umap_points": 60}
    keep = ["reward_metrics", "reward_tradeoff", "reward_reliability_plot", "reward_umap_plot", "reward_model",
            "reward_model_log", "encoder"]
    catalog = keep_catalog({"app_feedback": no_votes(), "candidates": variant_candidates, "prompts": prompts,
                            "facts": facts, "documents": docs,
                            "doc_splits": splits, "params:preference_curation": {"seed": 2},
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


def test_plots_tradeoff_and_model(reward_run):
    assert reward_run.load("reward_reliability_plot") is not None
    assert reward_run.load("reward_umap_plot") is not None
    t = reward_run.load("reward_tradeoff")
    assert set(t["weights"]) == {"equal", "helpful_heavy", "safety_heavy"}
    assert t.loc[t["weights"] == "equal", "top_changed_vs_equal"].item() == 0.0
    rm, tok = reward_run.load("reward_model")
    assert rm.kind == "multi_head" and rm.heads == ("helpfulness", "truthfulness", "harmlessness")
    log = reward_run.load("reward_model_log")
    assert log["loss"].notna().all() and len(log) > 1
