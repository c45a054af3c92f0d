"""Corpus readers: every row comes back, bad rows carry the rule they broke, bad files raise."""

from __future__ import annotations

import json

import pytest

from ru_rlhf.io.datasets import CorpusDataset
from ru_rlhf.io.readers import (
    CorpusReadError,
    read_conllu_corpus,
    read_jsonl_corpus,
    read_squad_corpus,
    read_text_folder,
)

GOOD = {"doc_id": "d1", "lang": "ru", "source": "t", "title": "Т", "text": "Мост открыли в Казани.",
        "license": "MIT"}


def _line(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def test_jsonl_good_broken_non_utf8_missing_field(tmp_path):
    path = tmp_path / "c.jsonl"
    missing = {k: v for k, v in GOOD.items() if k != "lang"} | {"doc_id": "d3"}
    path.write_bytes(
        _line(GOOD)
        + b'{"doc_id": "d2", "lang": "ru", "text": "\xd0\x9c\xd0\xbe'  # truncated line («Мо), then a newline
        + b"\n"
        + _line(missing)
        + b'{"doc_id": "d4", "lang": "ru", "text": "\xff\xfe bad bytes"}\n'
        + b"[1, 2]\n"
        + b"\n"  # blank lines are not rows
    )
    recs = read_jsonl_corpus(path)
    assert [r["source_row"] for r in recs] == [1, 2, 3, 4, 5]
    assert [r["read_error"] for r in recs] == [None, "broken_json_line", "missing_field:lang", "non_utf8",
                                               "not_an_object"]
    assert recs[0]["text"] == GOOD["text"] and recs[0]["source_file"] == str(path)


def test_jsonl_defaults_fill_optional_fields_only(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_line({k: v for k, v in GOOD.items() if k not in ("license", "text")}))
    (rec,) = read_jsonl_corpus(path, defaults={"license": "MIT"})
    assert rec["read_error"] == "missing_field:text" and rec["license"] == "MIT"


def test_zero_byte_and_missing_files_raise_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(CorpusReadError, match=r"empty\.jsonl: zero-byte file \(rule: empty_file\)"):
        read_jsonl_corpus(empty)
    with pytest.raises(CorpusReadError, match="missing_file"):
        read_jsonl_corpus(tmp_path / "nope.jsonl")


def test_squad_one_document_per_paragraph_with_questions(tmp_path):
    path = tmp_path / "s.json"
    data = {"data": [{"title": "A", "paragraphs": [
        {"context": "\ufeffПервый абзац текста.", "qas": [{"id": "q", "question": "Что?",
                                                          "answers": [{"text": "абзац", "answer_start": 7}]}]},
        {"context": "Второй абзац.", "qas": []}]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    recs = read_squad_corpus(path, lang="ru", source="x", license="L", id_prefix="sq")
    assert [r["doc_id"] for r in recs] == ["sq-000-00", "sq-000-01"]
    assert json.loads(recs[0]["qas"]) == [{"id": "q", "question": "Что?", "answer": "абзац"}]
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CorpusReadError, match="broken_json"):
        read_squad_corpus(path, lang="ru", source="x", license="L")


def test_text_folder_and_wrong_encoding(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "n1.txt").write_text("Новость первая. Вторая фраза.", encoding="utf-8")
    (tmp_path / "a" / "n2.txt").write_bytes("Новость в cp1251.".encode("cp1251"))
    recs = read_text_folder(tmp_path, lang="ru", source="f", license="L", pattern="*/*.txt", id_prefix="f")
    assert [r["doc_id"] for r in recs] == ["f-a-n1", "f-a-n2"]
    assert recs[0]["read_error"] is None and recs[0]["title"] == "Новость первая"
    assert recs[1]["read_error"] == "non_utf8"


def test_conllu_one_document_per_sentence(tmp_path):
    path = tmp_path / "t.conllu"
    path.write_text(
        "# sent_id = s1\n# text = Бүген көн матур.\n1\tБүген\tбүген\tADV\t_\t_\t0\troot\t_\t_\n\n"
        "# sent_id = s2\n1\tЮк\tюк\tADJ\t_\t_\t0\troot\t_\t_\n\n",
        encoding="utf-8",
    )
    recs = read_conllu_corpus(path, lang="tt", source="ud", license="L", id_prefix="ud")
    assert [(r["doc_id"], r["text"], r["read_error"]) for r in recs] == [
        ("ud-s1", "Бүген көн матур.", None), ("ud-s2", None, "missing_field:text")]


def test_corpus_dataset_concatenates_sources(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_line(GOOD) + _line(GOOD | {"doc_id": "d2"}))
    ds = CorpusDataset([{"format": "jsonl", "path": str(path)}, {"format": "jsonl", "path": str(path)}])
    df = ds.load()
    assert len(df) == 4 and list(df["source_row"]) == [1, 2, 1, 2]
    with pytest.raises(Exception, match="unknown corpus format"):
        CorpusDataset([{"format": "xml", "path": "x"}])
