"""The A/B app's votes in preference_curation: pairs with ``source = "app"``, held-out prompts kept out of
training, identical texts never paired, and every report that needs gold skipping (and counting) the
app's answers, which have none."""

from __future__ import annotations

import pandas as pd
from kedro.runner import SequentialRunner

from ru_rlhf.feedback import votes_to_long
from ru_rlhf.io.datasets import FeedbackDataset, HumanLabelsDataset
from ru_rlhf.io.feedback_store import FeedbackStore
from ru_rlhf.pipelines.preference_curation import create_pipeline
from ru_rlhf.pipelines.preference_curation.nodes import add_app_votes, bias_report
from tests.conftest import keep_catalog
from tests.params_helpers import base_params

GOOD = [{"helpfulness": 5, "truthfulness": 4, "harmlessness": 5}, {"helpfulness": 2, "truthfulness": 4, "harmlessness": 5}]


def _store(tmp_path, votes: list[tuple[str | None, list[str]]]) -> str:
    store = FeedbackStore(tmp_path / "v.sqlite")
    for pid, texts in votes:
        tok = store.serve("Вопрос?", pid, ["dpo", "sft"], texts)
        store.vote(tok, "ann", GOOD, 0)
    store.close()
    return str(tmp_path / "v.sqlite")


def test_votes_join_the_panel_pairs_and_held_out_prompts_stay_out(tmp_path):
    path = _store(tmp_path, [(pid, ["Ответ один.", "Ответ два."]) for pid in ("p-train", "p-test", None)])
    long = FeedbackDataset(path).load()
    panel = pd.DataFrame([{"pair_id": "x", "prompt_id": "p0", "criterion": "overall", "prompt": "q", "chosen": "a",
                           "rejected": "b", "split": "train", "lang": "ru", "task_type": "qa", "gold_margin": 0.5}])
    prompts = pd.DataFrame({"prompt_id": ["p-train", "p-test"], "split": ["train", "test"], "lang": ["ru", "ru"],
                            "task_type": ["qa", "qa"]})
    pairs, ann, counts = add_app_votes(panel, long, prompts, {"pairs": 1, "dropped_identical_texts": 0},
                                       base_params("preference_curation"))
    assert set(pairs["source"]) == {"panel", "app"}
    app = pairs[pairs["source"] == "app"]
    assert len(app) == 3 * 2  # per vote: helpfulness 5 vs 2, and overall
    assert set(app.loc[app["prompt_id"] == "p-test", "split"]) == {"app_holdout"}
    assert set(app.loc[app["prompt_id"] != "p-test", "split"]) == {"train"}
    assert len(ann) == len(long)
    assert counts["app_votes"] == 3 and counts["app_pairs"] == 6
    assert counts["app_pairs_by_split"] == {"train": 4, "app_holdout": 2}


def test_a_held_out_prompt_typed_by_hand_stays_held_out(tmp_path):
    store = FeedbackStore(tmp_path / "v.sqlite")
    for typed in ("Что  открыли в Казани?\n", "Новый вопрос?"):  # the first is the test prompt, spaced differently
        store.vote(store.serve(typed, None, ["dpo", "sft"], ["Ответ один.", "Ответ два."]), "ann", GOOD, 0)
    long = votes_to_long(store.votes())
    prompts = pd.DataFrame({"prompt_id": ["p-test"], "split": ["test"], "lang": ["ru"], "task_type": ["qa"],
                            "prompt": ["Что открыли в Казани?"]})
    pairs, _, counts = add_app_votes(pd.DataFrame(columns=["pair_id", "prompt_id", "criterion", "prompt", "chosen",
                                                           "rejected", "split", "lang", "task_type", "gold_margin"]),
                                     long, prompts, {}, base_params("preference_curation"))
    assert set(pairs.loc[pairs["prompt_id"] == "p-test", "split"]) == {"app_holdout"}
    assert counts["app_pairs_by_split"] == {"app_holdout": 2, "train": 2}


def test_answers_that_read_the_same_never_make_a_pair(tmp_path):
    # an older store may hold a page whose two answers differ only in white space
    path = _store(tmp_path, [("p-train", ["Ответ  один.", " Ответ один. "]), ("p-train", ["Да.", "Нет."])])
    long = votes_to_long(FeedbackStore(path).votes())
    prompts = pd.DataFrame({"prompt_id": ["p-train"], "split": ["train"], "lang": ["ru"], "task_type": ["qa"]})
    panel = pd.DataFrame(columns=["pair_id", "prompt_id", "criterion", "prompt", "chosen", "rejected", "split",
                                  "lang", "task_type", "gold_margin"])
    pairs, _, counts = add_app_votes(panel, long, prompts,
                                     {"dropped_identical_texts": 1}, base_params("preference_curation"))
    assert len(pairs) == 2 and set(pairs["chosen"]) == {"Да."}
    assert counts["app_dropped_identical_texts"] == 2  # helpfulness and overall of the first vote
    assert counts["dropped_identical_texts"] == 1 + 2  # the panel's and the app's


def test_bias_report_skips_answers_without_gold_and_says_how_many():
    gold = pd.DataFrame({"response_id": ["p#0", "p#1"], "n_words": [3, 9], "flattery": [False, True]})
    pairs = pd.DataFrame([
        {"criterion": "overall", "chosen_id": "p#1", "rejected_id": "p#0", "gold_margin": -0.2, "lang": "ru",
         "chosen": "длинный льстивый ответ", "rejected": "короткий"},
        {"criterion": "overall", "chosen_id": "app:1:0", "rejected_id": "app:1:1", "gold_margin": float("nan"),
         "lang": "ru", "chosen": "Конечно! Рад помочь! Вот ответ.", "rejected": "Ответ."},
        {"criterion": "helpfulness", "chosen_id": "app:1:0", "rejected_id": "app:1:1", "gold_margin": float("nan"),
         "lang": "ru", "chosen": "a", "rejected": "b"},
    ])
    out = bias_report(pairs, gold)  # before: KeyError "['app:1:0'] not in index"
    assert out["overall_pairs"] == 2 and out["skipped_no_gold"] == 1
    assert out["length"] == {"pairs": 1, "panel_chooses_longer": 1.0, "gold_chooses_longer": 0.0}
    assert out["app"]["pairs"] == 1 and out["app"]["chooses_longer"] == 1.0 and out["app"]["chooses_flattering"] == 1.0
    assert out["by_criterion"]["helpfulness"] == {"pairs": 1, "skipped_no_gold": 1, "gold_tied_share": None,
                                                  "panel_agrees_with_gold_on_untied": None}
    assert out["by_criterion"]["overall"]["skipped_no_gold"] == 1
    assert out["by_criterion"]["overall"]["panel_agrees_with_gold_on_untied"] == 0.0


def test_one_vote_runs_through_the_whole_curation_slice(tmp_path, world_tables, variant_candidates):
    """The user's report: one ordinary vote made `bias_report` fail; now it is counted everywhere."""
    docs, facts, prompts = world_tables
    train_pid = prompts.loc[prompts["split"] == "train", "prompt_id"].iloc[0]
    path = _store(tmp_path, [(train_pid, ["Ответ один.", "Ответ два."])])
    keep = ["preference_pairs", "curation_summary", "annotation_bias", "preference_dataset"]
    catalog = keep_catalog({"app_feedback": FeedbackDataset(path).load(), "human_labels": HumanLabelsDataset().load(),
                            "candidates": variant_candidates,
                            "prompts": prompts, "facts": facts, "documents": docs,
                            "params:preference_curation": base_params("preference_curation", {"seed": 2})}, keep=keep)
    SequentialRunner().run(create_pipeline(), catalog)
    pairs, summary = catalog.load("preference_pairs"), catalog.load("curation_summary")
    assert summary["app_votes"] == 1 and summary["pairs_by_source"]["app"] == 2
    assert summary["biases"]["skipped_no_gold"] == 1
    app = pairs[pairs["source"] == "app"]
    assert set(app["split"]) == {"train"}
    train = catalog.load("preference_dataset")["train"].to_pandas()
    assert "app:1|overall|app:1:0|app:1:1" in set(train["pair_id"])  # the vote's overall pair trains DPO
