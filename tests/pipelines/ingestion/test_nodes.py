"""Unit tests of the ingestion nodes."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from ru_rlhf.io.readers import RECORD_FIELDS
from ru_rlhf.pipelines.ingestion import nodes
from tests.params_helpers import base_params

PARAMS = base_params("ingestion", {"seed": 1, "prompts": {"per_task": 20, "min_tatar_share": 0.25}})


def _raw(*rows: dict) -> pd.DataFrame:
    base = {k: None for k in RECORD_FIELDS} | {"lang": "ru", "source": "t", "title": "", "license": "MIT",
                                              "source_file": "f.jsonl"}
    return pd.DataFrame([base | {"source_row": i + 1} | r for i, r in enumerate(rows)], columns=list(RECORD_FIELDS))


def test_normalise_nfc_bom_and_spaces():
    raw = _raw({"doc_id": "a", "text": "\ufeffМост  открыли\u00a0в Казани.\r\n\n\n\nЙ", "title": " T "})
    out = nodes.normalise_documents(raw)
    assert out.loc[0, "text"] == "Мост открыли в Казани.\n\nЙ"
    assert out.loc[0, "text"][-1] == "\u0419"  # «Й» composed (NFC), not И + breve
    assert out.loc[0, "title"] == "T"


def test_validate_quarantines_unreadable_and_schema_failures():
    raw = _raw(
        {"doc_id": "ok", "text": "Мост открыли в Казани весной этого года."},
        {"read_error": "broken_json_line", "detail": "Expecting value"},
        {"doc_id": "lat", "text": "Only Latin letters are in this text."},
        {"doc_id": "ok", "text": "Другой документ с тем же идентификатором."},
    )
    valid, bad = nodes.validate_documents(raw, PARAMS)
    assert list(valid["doc_id"]) == ["ok"]
    assert list(bad["rule"]) == ["broken_json_line", "text:cyrillic_share_ge_0.5", "doc_id:unique"]
    assert list(bad["source_row"]) == [2, 3, 4] and set(bad["source_file"]) == {"f.jsonl"}
    assert list(bad["stage"]) == ["read", "schema", "schema"]


def test_deduplicate_exact_and_near_duplicates():
    text = ("В Казани открыли новый мост через реку, его длина составляет четыреста метров, "
            "а стоимость работ превысила двести миллионов рублей, сообщили в администрации города.")
    near = text.replace("сообщили в администрации города", "сообщили в мэрии города")
    other = "В Елабуге прошёл фестиваль народной музыки, на сцене выступили сорок коллективов из региона."
    valid = _raw({"doc_id": "a", "text": text}, {"doc_id": "b", "text": text},
                 {"doc_id": "c", "text": near}, {"doc_id": "d", "text": other})
    docs, dup = nodes.deduplicate_documents(valid, base_params("ingestion", {"seed": 1, "dedup": {"near_duplicate_threshold": 0.7}}))
    assert list(docs["doc_id"]) == ["a", "d"]
    assert list(dup["rule"]) == ["exact_duplicate_of:a", "near_duplicate_of:a"]


def test_collect_quarantine_checks_accounting():
    raw = _raw({"doc_id": "a", "text": "x"}, {"doc_id": "b", "text": "y"})
    q = nodes._to_quarantine(raw.iloc[[1]], "schema", ["r"])
    assert len(nodes.collect_quarantine(raw, raw.iloc[[0]], q, q.iloc[0:0])) == 1
    with pytest.raises(RuntimeError, match="lost rows: read 2 != kept 0 \\+ quarantined 1"):
        nodes.collect_quarantine(raw, raw.iloc[0:0], q, q.iloc[0:0])


@pytest.fixture(scope="module")
def ingested(small_world):
    raw, world_facts = small_world
    valid, q1 = nodes.validate_documents(nodes.normalise_documents(raw), PARAMS)
    docs, _ = nodes.deduplicate_documents(valid, PARAMS)
    splits = nodes.split_documents(docs, PARAMS)
    facts = nodes.build_facts(docs, world_facts)
    prompts = nodes.build_prompts(docs, facts, splits, PARAMS)
    return docs, splits, facts, prompts


def test_split_by_document_and_language(ingested):
    docs, splits, _, prompts = ingested
    assert len(splits) == len(docs) and splits["doc_id"].is_unique
    assert splits["split"].value_counts().to_dict() == {"train": 64, "validation": 8, "test": 8}
    assert set(splits.loc[splits["lang"] == "tt", "split"]) == {"train", "validation", "test"}
    assert prompts.groupby("doc_id")["split"].nunique().max() == 1


def test_prompts_counts_tatar_quota_and_judge_fields(ingested):
    docs, _, facts, prompts = ingested
    assert prompts["task_type"].value_counts().to_dict() == {"dialogue": 20, "qa": 20, "summarization": 20}
    for _task, g in prompts.groupby("task_type"):
        assert (g["lang"] == "tt").sum() == 5
    qa = prompts[prompts["task_type"] == "qa"]
    text = dict(zip(docs["doc_id"], docs["text"]))
    assert qa["answer"].notna().all()
    assert all(k in text[d] for k, d in zip(qa["answer_key"], qa["doc_id"]))  # answers are in the text
    known = set(facts["fact_id"])
    assert all(len(ids) and set(ids) <= known for ids in prompts["fact_ids"])
    assert prompts.loc[prompts["lang"] == "tt", "prompt"].str.startswith(("Текст буенча", "Бу хәбәргә", "Яңалыкның")).all()
    assert prompts.loc[prompts["lang"] == "ru", "prompt"].str.startswith(
        ("Ответь на вопрос по тексту", "Как вежливо ответить на это сообщение?", "Напиши кратко суть новости")).all()
    dialogue = prompts[prompts["task_type"] == "dialogue"]
    assert dialogue["input"].str.len().gt(0).all()  # the message being replied to


def test_too_few_documents_for_the_tatar_quota_is_logged_not_hidden(ingested, caplog):
    docs, splits, facts, _ = ingested
    prompts = nodes.build_prompts(docs, facts, splits, base_params("ingestion", {"seed": 1, "prompts": {"per_task": 500}}))
    assert caplog.text.count("prompts available") == 3
    assert len(prompts) < 1500


def test_demonstrations_variants_are_labelled(ingested):
    prompts = ingested[3]
    rates = {"hedge": 1.0, "flattery": 1.0, "refusal": 1.0, "wrong_fact": 1.0, "rude": 1.0}
    demos = nodes.build_demonstrations(prompts, base_params("ingestion", {"seed": 1, "demonstrations": {"rates": rates}}))
    assert (demos["variant"] == "reference").sum() == len(prompts)
    by = demos.set_index("demo_id")
    pid = prompts.loc[(prompts["task_type"] == "qa") & (prompts["lang"] == "ru"), "prompt_id"].iloc[0]
    ref = by.loc[f"{pid}#reference", "response"]
    assert by.loc[f"{pid}#flattery", "response"].endswith(ref)
    assert by.loc[f"{pid}#rude", "response"].startswith(ref)
    assert by.loc[f"{pid}#refusal", "response"].startswith(("Я не могу", "Извините, я не могу"))
    if f"{pid}#wrong_fact" in by.index:
        assert by.loc[f"{pid}#wrong_fact", "response"] != ref and "->" in by.loc[f"{pid}#wrong_fact", "detail"]
    zero = nodes.build_demonstrations(prompts, {**base_params("ingestion", {"seed": 1}), "demonstrations": {"rates": {}}})
    assert set(zero["variant"]) == {"reference"}


def test_wrong_fact_changes_a_number_or_a_place():
    rng = random.Random(0)
    changed, detail = nodes.make_variant("wrong_fact", "Длина — 360 метров.", "ru", rng)
    assert changed != "Длина — 360 метров." and detail.startswith("number 360 -> ")
    changed, detail = nodes.make_variant("wrong_fact", "В Казани.", "ru", rng)
    assert "Казани" not in changed and detail.startswith("place Казани -> ")
    assert nodes.make_variant("wrong_fact", "Спасибо!", "ru", rng) is None
