"""Krippendorff's α through the project's import and agreement code, against published values."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ru_rlhf.agreement import alpha, alpha_table, drop_unreliable, leave_one_out
from ru_rlhf.io.annotations import read_reliability_matrix

CASES = [
    ("krippendorff_reference/krippendorff2011_4obs_12units.csv", "raters_by_units",
     {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}),
    ("krippendorff_reference/wikipedia_3coders_15units.csv", "raters_by_units",
     {"nominal": 0.691, "interval": 0.811}),
    ("nltk-krippendorff-validation/data/krippendorff-evaluation-dataset.csv", "units_by_raters",
     {"ordinal": 0.7598}),
]


@pytest.mark.shared_data
@pytest.mark.parametrize(("path", "orientation", "published"), CASES)
def test_published_alpha_values(shared_data, path, orientation, published):
    long = read_reliability_matrix(shared_data / path, orientation=orientation, criterion="helpfulness")
    for level, value in published.items():
        digits = len(str(value).split(".")[1])
        assert round(alpha(long, level), digits) == value, (path, level)
        table = alpha_table(long, level)
        assert round(table.loc[0, "alpha"], digits) == value


@pytest.mark.shared_data
def test_every_published_value_in_the_reference_json(shared_data):
    """Each published value listed in expected_alpha.json, recomputed through our importer and α."""
    expected = json.loads((shared_data / "krippendorff_reference/expected_alpha.json").read_text())
    checked = 0
    for name, entry in expected.items():
        path = (shared_data / "krippendorff_reference" / name).resolve()
        orientation = "units_by_raters" if entry["layout"].startswith("rows = units") else "raters_by_units"
        long = read_reliability_matrix(path, orientation=orientation)
        for level, value in entry["published"].items():
            digits = len(str(value).split(".")[1])
            assert round(alpha(long, level), digits) == value, (name, level)
            checked += 1
    assert checked == 7


@pytest.mark.shared_data
def test_wrong_orientation_gives_a_different_value(shared_data):
    """The matrix orientation matters: reading raters as units does not reproduce the value."""
    path = shared_data / CASES[0][0]
    right = read_reliability_matrix(path, "raters_by_units")
    wrong = read_reliability_matrix(path, "units_by_raters")
    assert round(alpha(right, "nominal"), 3) == 0.743
    assert round(alpha(wrong, "nominal"), 3) != 0.743


def _panel(careless: set[str]) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for u in range(300):
        truth = rng.integers(1, 6)
        for ann in rng.choice([f"a{i}" for i in range(8)], 5, replace=False):
            score = rng.integers(1, 6) if ann in careless else np.clip(truth + rng.normal(0, 0.4), 1, 5).round()
            for crit in ("helpfulness", "harmlessness"):
                rows.append({"item_id": f"u{u}", "annotator_id": ann, "criterion": crit, "score": float(score)})
    return pd.DataFrame(rows)


def test_leave_one_out_and_dropping_find_the_careless():
    long = _panel({"a2", "a5"})
    loo = leave_one_out(long, "ordinal")
    worst = loo.groupby("annotator_id")["delta"].mean().sort_values(ascending=False)
    assert set(worst.index[:2]) == {"a2", "a5"} and (worst.iloc[2:] < 0).all()
    kept, dropped = drop_unreliable(long, "ordinal", min_gain=0.005)
    assert {d["annotator_id"] for d in dropped} == {"a2", "a5"}
    assert set(kept["annotator_id"]) == {f"a{i}" for i in range(8)} - {"a2", "a5"}
    assert all(d["mean_alpha_after"] > d["mean_alpha_before"] for d in dropped)
