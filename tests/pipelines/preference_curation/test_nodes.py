"""Unit tests of the preference_curation nodes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from ru_rlhf.io.annotations import AnnotationReadError, read_toloka_tsv
from ru_rlhf.io.datasets import HumanLabelsDataset
from ru_rlhf.judges import CRITERIA
from ru_rlhf.pipelines.preference_curation import nodes
from tests.params_helpers import base_params

PARAMS = base_params("preference_curation", {"seed": 3})


@pytest.fixture(scope="module")
def gold(variant_candidates, world_tables):
    docs, facts, prompts = world_tables
    return nodes.score_gold(variant_candidates, prompts, facts, docs)


def test_gold_orders_the_variants(gold):
    by_k = gold.groupby("k")[list(CRITERIA)].mean()
    assert by_k.loc[0, "helpfulness"] > by_k.loc[3, "helpfulness"]  # reference > refusal
    assert by_k.loc[0, "truthfulness"] > by_k.loc[4, "truthfulness"]  # reference > wrong fact
    assert by_k.loc[0, "harmlessness"] > by_k.loc[5, "harmlessness"]  # reference > rude
    assert gold.loc[gold["k"] == 2, "flattery"].all() and gold.loc[gold["k"] == 3, "refusal"].all()


def test_panel_is_seeded_and_labelled_simulated(gold):
    a1, a2 = nodes.draw_panel(PARAMS), nodes.draw_panel(PARAMS)
    pd.testing.assert_frame_equal(a1, a2)
    assert set(a1.loc[a1["careless"], "annotator_id"]) == {"ann_03", "ann_09"}
    s1, s2 = nodes.simulate_annotations(gold, a1, PARAMS), nodes.simulate_annotations(gold, a1, PARAMS)
    pd.testing.assert_frame_equal(s1, s2)
    assert (s1["source"] == "simulated").all() and s1["score"].between(1, 5).all()
    assert len(s1) == len(gold) * 5 * 3
    per_prompt = s1.groupby("prompt_id")["annotator_id"].nunique()
    assert (per_prompt == 5).all()  # the same five annotators rate all six candidates of a prompt
    other = nodes.simulate_annotations(gold, a1, base_params("preference_curation", {"seed": 4}))
    assert not other["score"].equals(s1["score"])


def _synthetic_gold(n_prompts: int = 300, seed: int = 0) -> pd.DataFrame:
    """Gold scores spread over [0, 1] (the panel's agreement needs items that differ)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for k in range(6):
            rows.append({"response_id": f"p{p}#{k}", "prompt_id": f"p{p}", "k": k, "lang": "ru" if p % 5 else "tt",
                         "task_type": "qa", "split": "train", "response": f"ответ {p} {k}",
                         "helpfulness": rng.uniform(), "truthfulness": rng.choice([0.0, 0.5, 1.0]),
                         "harmlessness": rng.choice([0.0, 0.5, 1.0, 1.0]), "n_words": int(rng.integers(2, 40)),
                         "flattery": bool(rng.random() < 0.2), "refusal": False})
    return pd.DataFrame(rows)


def test_the_gate_drops_exactly_the_careless_annotators():
    gold = _synthetic_gold()
    params = base_params("preference_curation", {"seed": 11})
    panel = nodes.draw_panel(params)
    ann = nodes.simulate_annotations(gold, panel, params).merge(gold[["response_id", "lang"]], on="response_id")
    gated, report, per_ann = nodes.apply_agreement_gate(ann, pd.DataFrame(), panel, params)
    careless = set(panel.loc[panel["careless"], "annotator_id"])
    assert min(report["before"].values()) < 0.65  # the careless annotators sink agreement
    dropped = {d["annotator_id"] for d in report["dropped"]}
    assert dropped and dropped <= careless  # only careless ones, and only until the gate passes
    assert min(report["after"].values()) >= 0.65
    assert set(report["by_lang_before"]) == {"ru", "tt"}
    loo = per_ann.set_index("annotator_id").filter(like="loo_delta_").mean(axis=1)
    assert set(loo.nlargest(2).index) == careless  # leaving a careless one out helps most
    assert (loo.drop(index=list(careless)) < loo[list(careless)].min()).all()
    assert not gated["annotator_id"].isin(list(dropped)).any()


def test_the_fail_policy_stops_with_alpha_per_criterion():
    gold = _synthetic_gold(100)
    params = base_params("preference_curation", {"seed": 11, "agreement": {"on_fail": "fail"}})
    panel = nodes.draw_panel(params)
    ann = nodes.simulate_annotations(gold, panel, params).merge(gold[["response_id", "lang"]], on="response_id")
    with pytest.raises(nodes.AgreementGateError, match=r"helpfulness α=0\.\d+.*policy: fail"):
        nodes.apply_agreement_gate(ann, pd.DataFrame(), panel, params)


def test_without_careless_annotators_nobody_is_dropped():
    gold = _synthetic_gold(150)
    params = base_params("preference_curation", {"seed": 11, "panel": {"careless": []}})
    panel = nodes.draw_panel(params)
    ann = nodes.simulate_annotations(gold, panel, params).merge(gold[["response_id", "lang"]], on="response_id")
    _, report, _ = nodes.apply_agreement_gate(ann, pd.DataFrame(), panel, params)
    assert report["dropped"] == [] and report["before"] == report["after"]


def test_pairs_margin_ties_identical_texts_and_weights():
    gold = pd.DataFrame({
        "response_id": ["p#0", "p#1", "p#2", "p#3"], "prompt_id": "p", "lang": "ru", "task_type": "qa",
        "split": "train", "response": ["хороший", "плохой", "средний", "хороший"],
        "helpfulness": [1.0, 0.0, 0.5, 1.0], "truthfulness": 1.0, "harmlessness": 1.0, "n_words": 1,
        "flattery": False})
    scores = {"p#0": 5, "p#1": 1, "p#2": 4.8, "p#3": 3}
    rows = [{"item_id": r, "response_id": r, "prompt_id": "p", "annotator_id": a, "criterion": c,
             "score": float(scores[r] if c == "helpfulness" else 3), "source": "simulated"}
            for r in scores for a in ("x", "y") for c in CRITERIA]
    prompts = pd.DataFrame({"prompt_id": ["p"], "prompt": ["Вопрос"]})
    pairs, counts = nodes.build_pairs(pd.DataFrame(rows), gold, prompts, base_params("preference_curation", {"pairs": {"margin": 0.5}}))
    h = pairs[pairs["criterion"] == "helpfulness"]
    assert set(zip(h["chosen_id"], h["rejected_id"])) == {("p#0", "p#1"), ("p#2", "p#1"), ("p#2", "p#3"),
                                                         ("p#3", "p#1")}
    assert counts["dropped_identical_texts"] == 2  # p#0 vs p#3 have the same text (helpfulness, overall)
    assert (h["agreement"] == 1.0).all() and (h["n_votes"] == 2).all()
    assert pairs[pairs["criterion"] == "truthfulness"].empty  # all tied
    overall = pairs[pairs["criterion"] == "overall"]
    assert set(overall["chosen_id"]) <= {"p#0", "p#2", "p#3"}


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_long_table_import_quarantines_bad_rows(tmp_path, gold):
    rid, rid2 = gold["response_id"].iloc[0], gold["response_id"].iloc[1]
    csv = _write(tmp_path / "labels.csv", "item_id,prompt_id,response_id,annotator_id,criterion,score\n"
                 f"{rid},p,{rid},h1,helpfulness,4\n"
                 f"{rid},p,{rid},h1,helpfulness,5\n"          # duplicate (item, annotator, criterion)
                 f"{rid},p,{rid},h2,helpfulness,7\n"          # out of range
                 f"{rid},p,{rid},h3,kindness,3\n"             # unknown criterion
                 f"{rid},p,{rid},h4,truthfulness,abc\n"       # not a number
                 "nope#1,p,nope#1,h5,helpfulness,3\n"          # a response this run did not produce
                 f"{rid2},p,{rid2},h1,helpfulness,3\n")       # h1's second item (one item alone is quarantined)
    human, control, q = nodes.import_human_labels(HumanLabelsDataset(long_tables=[csv]).load())
    panel = nodes.draw_panel(PARAMS)
    sim = nodes.simulate_annotations(gold.head(12), panel, PARAMS)
    kept, quarantine = nodes.validate_annotations(sim, human, q, gold, PARAMS)
    assert len(sim) + 7 == len(kept) + len(quarantine)
    assert (kept["source"] == "human").sum() == 2
    rules = dict(zip(quarantine["source_row"], quarantine["rule"]))
    assert rules == {3: "item_id+annotator_id+criterion:unique", 4: "score:score_in_range_1_5", 5: "criterion:known_criterion", 6: "score_not_a_number",
                     7: "unknown_item"}  # row 3 repeats row 2's (item, annotator, criterion): the first is kept


def test_long_table_missing_column_and_empty_file(tmp_path):
    bad = _write(tmp_path / "x.csv", "item_id,annotator_id,score\na,b,3\n")
    with pytest.raises(DatasetError, match=r"x\.csv: missing column\(s\) \['criterion'\]") as err:
        HumanLabelsDataset(long_tables=[bad]).load()
    assert isinstance(err.value.__cause__, AnnotationReadError)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match="zero-byte file") as err:
        HumanLabelsDataset(long_tables=[str(tmp_path / "empty.csv")]).load()
    assert isinstance(err.value.__cause__, AnnotationReadError)


def test_toloka_rejected_dropped_and_golden_used_as_control(tmp_path):
    header = "INPUT:item_id\tINPUT:prompt_id\tOUTPUT:helpfulness\tOUTPUT:harmlessness\tGOLDEN:helpfulness\t" \
             "ASSIGNMENT:worker_id\tASSIGNMENT:status\n"
    rows = ["r1\tp\t4\t5\t\tw1\tAPPROVED", "r1\tp\t2\t5\t\tw2\tREJECTED", "r2\tp\t5\t5\t5\tw1\tAPPROVED",
            "r2\tp\t3\t5\t5\tw2\tAPPROVED", "r1\tp\t4\t4\t\tw3\tSUBMITTED"]
    path = _write(tmp_path / "pool.tsv", header + "\n".join(rows) + "\n")
    labels, control, rejected = read_toloka_tsv(path)
    assert len(rejected) == 1 and rejected["rule"].eq("rejected_assignment").all()
    assert set(labels["item_id"]) == {"r1"} and len(labels) == 4  # 2 accepted assignments x 2 criteria
    assert "r2" not in set(labels["item_id"])  # control tasks stay out of the labels (α and pairs)
    acc = nodes.control_accuracy(control).set_index("annotator_id")
    assert acc.loc["w1", "control_accuracy"] == 1.0  # scored only where a golden answer exists
    assert acc.loc["w2", "control_accuracy"] == 0.0
    assert acc.loc["w1", "control_answers"] == 1

