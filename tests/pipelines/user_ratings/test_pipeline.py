"""The user_ratings pipeline (agreement-only mode) as a slice on an in-memory catalog: simulated workers, one of
them careless, on items this run never generated."""

from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.user_ratings import create_pipeline
from tests.conftest import keep_catalog
from tests.params_helpers import base_params


def _ratings(seed: int = 0) -> dict:
    """Simulated ratings: 60 items, 6 workers on a 1-5 scale; w5 answers at random; control rows for w0 and w5."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, 60)
    rows = []
    for w in range(6):
        for i, t in enumerate(truth):
            score = rng.integers(1, 6) if w == 5 else int(np.clip(t + rng.integers(-1, 2), 1, 5))
            rows.append({"item_id": f"item{i}", "prompt_id": f"item{i}", "response_id": f"item{i}",
                         "annotator_id": f"w{w}", "criterion": "quality", "score": float(score), "choice": None,
                         "source": "toloka", "source_file": "x.tsv", "source_row": len(rows) + 2, "read_error": None,
                         "id_normalised": False})
    rows.append({**rows[0], "score": None, "read_error": "unknown_category ('maybe' not in [...])", "source_row": 999})
    labels = pd.DataFrame(rows).assign(pool="p1")
    control = pd.DataFrame([{"annotator_id": a, "criterion": "quality", "golden": "3", "correct": c, "pool": "p1"}
                            for a, c in [("w0", True), ("w0", True), ("w0", True), ("w5", False), ("w5", False),
                                         ("w5", True)]])
    rejected = pd.DataFrame([{"item_id": None, "annotator_id": "w1", "rule": "rejected_assignment", "pool": "p1"}])
    levels = pd.DataFrame([{"pool": "p1", "criterion": "quality", "level": "ordinal"}])
    return {"labels": labels, "control": control, "rejected": rejected, "levels": levels}


def _run(ratings, params):
    catalog = keep_catalog({"user_ratings_raw": ratings, "params:user_ratings": base_params("user_ratings", params)},
                           keep=["rating_agreement", "gated_ratings", "rating_workers", "rating_report"])
    SequentialRunner().run(create_pipeline(), catalog)
    return {k: catalog.load(k) for k in ("rating_agreement", "gated_ratings", "rating_workers", "rating_report")}


def test_alpha_interval_and_the_gate_drop_the_careless_worker():
    ratings = _ratings()
    out = _run(ratings, {"threshold": 0.8, "bootstrap": 200, "max_drop": 3})
    entry = out["rating_agreement"]["pools"][0]
    good = ratings["labels"][ratings["labels"]["read_error"].isna()]
    matrix = good.pivot(index="annotator_id", columns="item_id", values="score").to_numpy()
    direct = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
    assert round(entry["alpha"], 4) == round(direct, 4)
    assert entry["ci_low"] < entry["alpha"] < entry["ci_high"]
    assert not entry["passes"]
    assert entry["dropped_by_alpha"][0]["annotator_id"] == "w5"  # the random worker goes first
    assert entry["alpha_after"] > entry["alpha"]
    assert len(out["gated_ratings"]) == entry["labels_after"] < entry["labels"]
    acc = out["rating_workers"].set_index("annotator_id")
    assert acc.loc["w0", "control_accuracy"] == 1.0 and acc.loc["w5", "control_accuracy"] == pytest.approx(1 / 3, 1e-3)
    assert bool(acc.loc["w5", "dropped"]) and not bool(acc.loc["w0", "dropped"])
    a = out["rating_agreement"]["accounting"][0]
    assert (a["labels_read"], a["labels_unreadable"], a["lines_without_labels"], a["control_answers"]) == (361, 1, 1, 6)
    assert "| p1 | quality | ordinal | 60 | 6 |" in out["rating_report"]


def test_control_rule_drops_workers_first_and_a_passing_pool_keeps_everyone():
    ratings = _ratings()
    out = _run(ratings, {"threshold": 0.3, "bootstrap": 0, "max_drop": 3, "min_control_accuracy": 0.5})
    entry = out["rating_agreement"]["pools"][0]
    assert entry["dropped_by_control"] == ["w5"] and entry["dropped_by_alpha"] == []
    out = _run(ratings, {"threshold": 0.3, "bootstrap": 0, "max_drop": 3})
    entry = out["rating_agreement"]["pools"][0]
    assert entry["passes"] and entry["labels_after"] == entry["labels"]


def test_a_typo_in_the_parameters_stops_the_run():
    with pytest.raises(Exception, match="max_dorp"):
        _run(_ratings(), {"max_dorp": 3})
