"""A stage run on a checkout whose earlier stages have not run stops at once, naming them."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset

from ru_rlhf.hooks import MissingInputsError, MissingInputsHook
from ru_rlhf.pipelines.preference_curation import create_pipeline as curation
from ru_rlhf.pipelines.reward_modeling import create_pipeline as reward


def test_missing_inputs_name_the_pipeline_to_run_first():
    catalog = DataCatalog({"prompts": MemoryDataset(pd.DataFrame()), "facts": MemoryDataset(pd.DataFrame()),
                           "documents": MemoryDataset(pd.DataFrame()), "candidates": MemoryDataset()})
    with pytest.raises(MissingInputsError, match=r"candidates: run `kedro run --pipelines sft` first"):
        MissingInputsHook().before_pipeline_run({}, curation(), catalog)


def test_several_missing_stages_are_all_named():
    with pytest.raises(MissingInputsError) as err:
        MissingInputsHook().before_pipeline_run({}, reward(), DataCatalog({"documents": MemoryDataset()}))
    msg = str(err.value)
    assert "preference_pairs: run `kedro run --pipelines preference_curation` first" in msg
    assert "documents: run `kedro run --pipelines ingestion` first" in msg
    assert "sft_policy: run `kedro run --pipelines sft` first" in msg  # the reward model's backbone
    assert msg.endswith("run first: kedro run --pipelines ingestion,sft,preference_curation")  # data-flow order


def test_present_inputs_pass():
    names = ("prompts", "facts", "documents", "candidates", "app_feedback", "human_labels")
    catalog = DataCatalog({n: MemoryDataset(pd.DataFrame()) for n in names})
    assert MissingInputsHook().before_pipeline_run({}, curation(), catalog) is None  # every input there: no error
    # the same check with one input gone names it
    without_facts = DataCatalog({n: MemoryDataset(pd.DataFrame()) for n in names if n != "facts"})
    with pytest.raises(MissingInputsError, match="facts: run `kedro run --pipelines ingestion` first"):
        MissingInputsHook().before_pipeline_run({}, curation(), without_facts)


def test_alignment_on_a_fresh_checkout_names_the_stages_to_run_first():
    from ru_rlhf.pipelines.alignment import create_pipeline as alignment

    with pytest.raises(MissingInputsError) as err:
        MissingInputsHook().before_pipeline_run({}, alignment(), DataCatalog({}))
    msg = str(err.value)
    assert "sft_policy: run `kedro run --pipelines sft` first" in msg
    assert "reward_model: run `kedro run --pipelines reward_modeling` first" in msg
    assert "preference_pairs: run `kedro run --pipelines preference_curation` first" in msg


def test_curation_metrics_include_label_quality_per_criterion():
    from ru_rlhf.tracking import metrics_of

    summary = {"pairs": 10, "quarantined_ratings": 2, "biases": {"by_criterion": {
        "helpfulness": {"pairs": 4, "gold_tied_share": 0.25, "panel_agrees_with_gold_on_untied": 0.6667},
        "truthfulness": {"pairs": 2, "gold_tied_share": 1.0, "panel_agrees_with_gold_on_untied": None}}}}
    assert metrics_of("curation_summary", summary) == {
        "curation.pairs": 10.0, "curation.quarantined_ratings": 2.0, "curation.helpfulness.gold_tied_share": 0.25,
        "curation.helpfulness.panel_agrees_with_gold": 0.6667, "curation.truthfulness.gold_tied_share": 1.0}
