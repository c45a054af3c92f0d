"""The preference_curation pipeline as a slice on an in-memory catalog (variant candidates)."""

from __future__ import annotations

from kedro.runner import SequentialRunner

from ru_rlhf.io.datasets import HumanLabelsDataset
from ru_rlhf.pipelines.preference_curation import create_pipeline
from tests.conftest import keep_catalog, no_votes
from tests.params_helpers import base_params


def test_curation_slice(world_tables, variant_candidates):
    docs, facts, prompts = world_tables
    params = base_params("preference_curation", {"seed": 2})
    keep = ["preference_pairs", "preference_dataset", "agreement", "curation_summary", "preference_dataset_card",
            "annotation_bias", "gold_scores"]
    catalog = keep_catalog({"app_feedback": no_votes(), "human_labels": HumanLabelsDataset().load(),  # none
                            "candidates": variant_candidates, "prompts": prompts,
                            "facts": facts, "documents": docs,
                            "params:preference_curation": params}, keep=keep)
    SequentialRunner().run(create_pipeline(), catalog)
    pairs, summary = catalog.load("preference_pairs"), catalog.load("curation_summary")
    ds = catalog.load("preference_dataset")
    assert set(ds) == {"train", "validation", "test"}
    assert {"prompt", "chosen", "rejected"} <= set(ds["train"].column_names)
    assert ds["train"][0]["prompt"].startswith("<|user|>")
    overall = pairs[pairs["criterion"] == "overall"]
    assert sum(len(ds[s]) for s in ds) == len(overall) > 0
    assert (pairs["margin"] >= 0.5).all() and (pairs["chosen"] != pairs["rejected"]).all()
    assert summary["prompts_in_two_splits"] == 0
    # with reference / hedge / flattery / refusal / wrong fact / rude candidates, the panel prefers
    # the reference over the refusal in most overall pairs where both appear
    ref_vs_refusal = overall[overall["chosen_id"].str.endswith("#0") & overall["rejected_id"].str.endswith("#3")]
    assert len(ref_vs_refusal) > 0.5 * overall["prompt_id"].nunique() * 0.5
    agreement = catalog.load("agreement")
    assert set(agreement["before"]) == {"helpfulness", "truthfulness", "harmlessness"}
    card = catalog.load("preference_dataset_card")
    assert "simulated" in card.lower() and "α before" in card
    for c in ("helpfulness", "truthfulness", "harmlessness"):
        assert str(agreement["after"][c]) in card
    bias = catalog.load("annotation_bias")
    assert {"length", "sycophancy"} <= set(bias)
    pairs_by_crit = catalog.load("preference_pairs")["criterion"].value_counts().to_dict()
    assert {c: v["pairs"] for c, v in bias["by_criterion"].items()} == pairs_by_crit


def test_gold_label_agreement_by_hand():
    import pandas as pd

    from ru_rlhf.pipelines.preference_curation.nodes import gold_label_agreement

    pairs = pd.DataFrame({"criterion": ["helpfulness"] * 4 + ["truthfulness"] * 2,
                          "gold_margin": [0.0, 0.5, 0.2, -0.1, 0.0, 0.0]})
    out = gold_label_agreement(pairs)
    # helpfulness: 1 of 4 tied; of the 3 untied, 2 have the panel's chosen preferred by gold
    assert out["helpfulness"] == {"pairs": 4, "skipped_no_gold": 0, "gold_tied_share": 0.25,
                                  "panel_agrees_with_gold_on_untied": 0.6667}
    assert out["truthfulness"] == {"pairs": 2, "skipped_no_gold": 0, "gold_tied_share": 1.0,
                                   "panel_agrees_with_gold_on_untied": None}
