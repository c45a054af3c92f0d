"""What the reward model trains on: people's pairs (the app's votes) always, the simulated panel's filling each
criterion's budget; and the report that counts them."""

from __future__ import annotations

import pandas as pd

from ru_rlhf.pipelines.reward_modeling.nodes import _secondary, _training_pairs, reward_metrics_report
from ru_rlhf.pipelines.reward_modeling.params import RewardParams
from tests.params_helpers import base_params


def _pairs() -> pd.DataFrame:
    rows = []
    for c in ("helpfulness", "truthfulness"):
        rows += [{"pair_id": f"p{i}|{c}", "criterion": c, "source": "panel", "split": "train", "lang": "ru",
                  "prompt": "q", "chosen": "a", "rejected": "b"} for i in range(10)]
        rows += [{"pair_id": f"app:{v}|{c}|app:{v}:0|app:{v}:1", "criterion": c, "source": "app", "split": "train",
                  "lang": "ru", "prompt": "q", "chosen": "a", "rejected": "b"} for v in (1, 2, 3)]
    rows += [{"pair_id": "app:4|helpfulness|app:4:0|app:4:1", "criterion": "helpfulness", "source": "app",
              "split": "app_holdout", "lang": "ru", "prompt": "q", "chosen": "a", "rejected": "b"},
             {"pair_id": "app:1|overall|app:1:0|app:1:1", "criterion": "overall", "source": "app", "split": "train",
              "lang": "ru", "prompt": "q", "chosen": "a", "rejected": "b"}]
    return pd.DataFrame(rows)


def _params(overrides: dict) -> RewardParams:
    return RewardParams.of(base_params("reward_modeling", overrides))


def test_every_app_pair_is_kept_and_the_panel_fills_the_budget():
    p = _params({"train": {"max_pairs_per_criterion": 5}})
    data = _training_pairs(_pairs(), p)
    for c in ("helpfulness", "truthfulness"):
        g = data[data["criterion"] == c]
        assert len(g) == 5 and (g["source"] == "app").sum() == 3  # all three votes, two panel pairs
    assert "app_holdout" not in set(data["split"]) and "overall" not in set(data["criterion"])
    # a budget smaller than the app's pairs still keeps them all (they are what a retrain is for)
    small = _training_pairs(_pairs(), _params({"train": {"max_pairs_per_criterion": 2}}))
    assert (small["source"] == "app").sum() == 6 and (small["source"] == "panel").sum() == 0


def test_the_report_counts_the_app_votes_in_training():
    pairs = _pairs()
    data = _training_pairs(pairs, _params({"train": {"max_pairs_per_criterion": 5}}))
    log = pd.DataFrame({"step": [1, 2], "loss": [0.7, 0.6], "accuracy": [0.5, 0.6]})
    m = reward_metrics_report({}, {}, log, log, log, data, pairs, {}, {})["training"]["data"]
    assert m["pairs"] == 10 and m["by_source"] == {"app": 6, "panel": 4}
    assert m["app_votes"] == 4 and m["app_pairs"] == 8 and m["app_pairs_held_out"] == 1
    assert m["app_votes_in_training"] == 3 and m["app_pairs_in_training"] == 6


def test_cross_lingual_false_saves_a_not_trained_marker_instead_of_a_model():
    from ru_rlhf.io.datasets import NotTrained
    from ru_rlhf.pipelines.reward_modeling.nodes import train_russian_only_rm

    model, log = train_russian_only_rm(_pairs(), None, None, None, base_params("reward_modeling", {"cross_lingual": False}))
    assert isinstance(model, NotTrained) and "cross_lingual is false" in model.reason and log.empty


def test_comparison_models_stay_within_both_budgets():
    """The secondary budgets bound the comparison models, and never give them more than the multi-head model."""
    base = _params({"train": {"max_pairs_per_criterion": None, "validation_pairs": 1500,
                              "secondary_max_pairs_per_criterion": 1000, "secondary_validation_pairs": 500}})
    assert (_secondary(base).train.max_pairs_per_criterion, _secondary(base).train.validation_pairs) == (1000, 500)
    small = _params({"train": {"max_pairs_per_criterion": 200, "validation_pairs": 100,
                               "secondary_max_pairs_per_criterion": 1000, "secondary_validation_pairs": 500}})
    assert (_secondary(small).train.max_pairs_per_criterion, _secondary(small).train.validation_pairs) == (200, 100)
    off = _params({"train": {"secondary_max_pairs_per_criterion": None, "secondary_validation_pairs": None}})
    assert _secondary(off) == off


def test_the_default_run_trains_no_comparison_model_and_the_report_names_each_one_left_out():
    """Base switches the three comparison models off (#28): each node returns its marker without training (no
    encoder or policy is touched: they are None here), and the report lists them; the full env trains them."""
    from ru_rlhf.io.datasets import NotTrained
    from ru_rlhf.pipelines.reward_modeling.nodes import (
        train_distributional_rm,
        train_other_backbone_rm,
        train_russian_only_rm,
    )

    params = base_params("reward_modeling")
    logs = []
    for node, switch in ((train_other_backbone_rm, "compare_backbone"), (train_distributional_rm, "distributional"),
                         (train_russian_only_rm, "cross_lingual")):
        model, log = node(_pairs(), None, None, None, params)
        assert isinstance(model, NotTrained) and f"reward_modeling.{switch} is false" in model.reason
        logs.append(log)
    pairs = _pairs()
    data = _training_pairs(pairs, _params({}))
    mh_log = pd.DataFrame({"step": [1, 2], "loss": [0.7, 0.6], "accuracy": [0.5, 0.6]})
    m = reward_metrics_report({"multi_head": {}}, {}, mh_log, logs[1], logs[0], data, pairs, {}, {})
    assert set(m["training"]) == {"multi_head", "data"}
    assert m["not_trained"] == ["distributional (reward_modeling.distributional)",
                                "other backbone (reward_modeling.compare_backbone)",
                                "Russian-only (reward_modeling.cross_lingual)"]
    # with the comparisons' results in the validation, nothing is listed
    full = reward_metrics_report({"multi_head": {}, "distributional": {}, "multi_head_bert": {}, "cross_lingual": {}},
                                 {}, mh_log, mh_log, mh_log, data, pairs, {}, {})
    assert full["not_trained"] == [] and {"distributional", "multi_head_bert"} <= set(full["training"])
