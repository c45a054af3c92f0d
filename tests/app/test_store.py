"""The feedback store, its Kedro dataset, and the votes joining preference_curation."""

from __future__ import annotations

import pandas as pd
import pytest

from ru_rlhf.feedback import long_to_pairs, votes_to_long
from ru_rlhf.io.feedback_store import FeedbackStore, VoteError
from tests.params_helpers import base_params

GOOD = [{"helpfulness": 5, "truthfulness": 4, "harmlessness": 5}, {"helpfulness": 2, "truthfulness": 4, "harmlessness": 5}]


def test_a_vote_is_one_row_with_hidden_ids(tmp_path):
    store = FeedbackStore(tmp_path / "v.sqlite")
    tok = store.serve("Вопрос?", "p1", ["dpo", "sft"], ["Ответ один.", "Ответ два."])
    vid = store.vote(tok, "ann", GOOD, 0, "хорошо <b>очень</b>")
    v = store.votes().iloc[0]
    assert vid == v["id"] == 1 and v["models"] == ["dpo", "sft"] and v["chosen_model"] == "dpo"
    assert v["comment"] == "хорошо <b>очень</b>"  # stored as typed; escaped where it is shown
    assert store._con().execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("ratings,choice,comment,rule", [
    ([{"helpfulness": 6, "truthfulness": 4, "harmlessness": 5}, GOOD[1]], 0, "", "integer 1–5"),
    ([{"helpfulness": 3, "truthfulness": 4}, GOOD[1]], 0, "", "integer 1–5"),
    ([{"helpfulness": 2.5, "truthfulness": 4, "harmlessness": 5}, GOOD[1]], 0, "", "integer 1–5"),
    (GOOD[:1], 0, "", "expected ratings for 2"),
    (GOOD, 2, "", "choice"),
    (GOOD, 0, "x" * 1001, "comment longer"),
])
def test_bad_votes_are_refused_with_the_rule(tmp_path, ratings, choice, comment, rule):
    store = FeedbackStore(tmp_path / "v.sqlite")
    tok = store.serve("Вопрос?", None, ["dpo", "sft"], ["a", "b"])
    with pytest.raises(VoteError, match=rule):
        store.vote(tok, "ann", ratings, choice, comment)
    assert store.count() == 0


def test_votes_for_unserved_or_already_voted_responses_are_rejected(tmp_path):
    store = FeedbackStore(tmp_path / "v.sqlite")
    with pytest.raises(VoteError, match="not served"):
        store.vote("forged-token", "ann", GOOD, 0)
    tok = store.serve("Вопрос?", None, ["dpo", "sft"], ["a", "b"])
    store.vote(tok, "ann", GOOD, 0)
    with pytest.raises(VoteError, match="already been voted"):
        store.vote(tok, "ann", GOOD, 1)
    assert store.count() == 1


def test_the_dataset_reads_the_long_table_and_an_absent_store_is_empty(tmp_path):
    from ru_rlhf.io.datasets import FeedbackDataset

    empty = FeedbackDataset(str(tmp_path / "none.sqlite")).load()
    assert empty.empty and {"item_id", "annotator_id", "criterion", "score", "source"} <= set(empty.columns)
    store = FeedbackStore(tmp_path / "v.sqlite")
    tok = store.serve("Вопрос?", "p1", ["dpo", "sft"], ["Ответ один.", "Ответ два."])
    store.vote(tok, "ann", GOOD, 0)
    long = FeedbackDataset(str(tmp_path / "v.sqlite")).load()
    assert len(long) == 2 * 3 + 1 and set(long["source"]) == {"app"}
    assert long.loc[long["criterion"] == "overall", "choice"].item() == "app:1:0"
    pairs, counts = long_to_pairs(long, margin=1.0)
    assert counts == {"votes": 1, "pairs": 2, "dropped_identical_texts": 0}
    # helpfulness 5 vs 2 → one pair; truthfulness and harmlessness tie → none; overall: chosen over the other
    assert sorted(pairs["criterion"]) == ["helpfulness", "overall"]
    assert (pairs["chosen"] == "Ответ один.").all()


def test_votes_join_preference_curation(tmp_path):
    from ru_rlhf.pipelines.preference_curation.nodes import add_app_votes

    store = FeedbackStore(tmp_path / "v.sqlite")
    for pid in ("p-train", "p-test", None):
        tok = store.serve("Вопрос?", pid, ["dpo", "sft"], ["Ответ один.", "Ответ два."])
        store.vote(tok, "ann", GOOD, 0)
    long = votes_to_long(store.votes())
    panel = pd.DataFrame([{"pair_id": "x", "prompt_id": "p0", "criterion": "overall", "prompt": "q", "chosen": "a",
                           "rejected": "b", "split": "train", "lang": "ru", "task_type": "qa", "gold_margin": 0.5}])
    prompts = pd.DataFrame({"prompt_id": ["p-train", "p-test"], "split": ["train", "test"], "lang": ["ru", "ru"],
                            "task_type": ["qa", "qa"]})
    pairs, ann, counts = add_app_votes(panel, long, prompts, {}, base_params("preference_curation"))
    assert set(pairs["source"]) == {"panel", "app"}
    app = pairs[pairs["source"] == "app"]
    assert len(app) == 3 * 2
    # a vote on a test prompt never joins training
    assert set(app.loc[app["prompt_id"] == "p-test", "split"]) == {"app_holdout"}
    assert set(app.loc[app["prompt_id"] != "p-test", "split"]) == {"train"}
    assert len(ann) == len(long)
    assert counts["app_votes"] == 3 and counts["app_pairs"] == len(app)


def test_export_writes_parquet_a_datasets_reader_loads(tmp_path):
    import datasets

    from ru_rlhf.app.export import export_votes

    store = FeedbackStore(tmp_path / "v.sqlite")
    tok = store.serve("Вопрос?", "p1", ["dpo", "sft"], ["Ответ один.", "Ответ два."])
    store.vote(tok, "ann", GOOD, 0, "A <b>лучше</b>")
    info = export_votes(tmp_path / "v.sqlite", tmp_path / "out")
    assert info == {"votes": 1, "ratings_rows": 7, "pairs": 2, "dropped_identical_texts": 0,
                    "out": str(tmp_path / "out")}
    pairs = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "pairs.parquet"))["train"]
    assert set(pairs.column_names) >= {"prompt", "chosen", "rejected", "criterion", "comment"} and len(pairs) == 2
    assert set(pairs["comment"]) == {"A <b>лучше</b>"}
    ratings = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "ratings.parquet"))["train"]
    assert set(ratings["comment"]) == {"A <b>лучше</b>"}


def test_only_one_retraining_run_at_a_time(tmp_path):
    import json
    import sys
    import time

    from ru_rlhf.app.service import Retrainer

    report = tmp_path / "08_reporting" / "reward_model"
    report.mkdir(parents=True)
    (report / "metrics.json").write_text(json.dumps(
        {"multi_head": {"helpfulness": {"test": {"accuracy": 0.7, "auc": 0.75}}}}), encoding="utf-8")
    r = Retrainer(data_root=str(tmp_path), command=[sys.executable, "-c", "import time; time.sleep(1.5)"])
    assert r.start() is True
    assert r.start() is False  # a second run while the first is going is refused
    while r.running():
        time.sleep(0.1)
    assert r.state["status"] == "done" and r.state["returncode"] == 0
    assert r.state["metrics"] == {"helpfulness": {"accuracy": 0.7, "auc": 0.75}}
    assert r.start() is True  # and allowed again afterwards
    while r.running():
        time.sleep(0.1)
