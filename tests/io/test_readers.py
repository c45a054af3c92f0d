"""Corpus readers: every row comes back, bad rows carry the rule they broke, bad files raise."""

from __future__ import annotations

import json

import pytest

from ru_rlhf.io.datasets import CorpusDataset
from ru_rlhf.io.readers import (
    CorpusReadError,
    format_suffix,
    iter_file_lines,
    read_conllu_corpus,
    read_file_text,
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


def test_iter_file_lines_numbers_offsets_and_long_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\xef\xbb\xbfab\r\n" + b"z" * 50 + b"\n\ncd")
    lines = list(iter_file_lines(path, max_line_bytes=10))  # a long line keeps only its head
    assert [(ln.number, ln.offset, ln.size, ln.too_long) for ln in lines] == [
        (1, 3, 3, False), (2, 7, 50, True), (3, 58, 0, False), (4, 59, 2, False)]
    assert lines[0].data == b"ab\r" and lines[1].data == b"z" * 11 and lines[3].data == b"cd"


def test_format_suffix_looks_through_gz():
    assert [format_suffix(p) for p in ("a.csv.gz", "a.TSV", "a.jsonl", "a.gz")] == [".csv", ".tsv", ".jsonl", ""]


def test_non_utf8_file_names_byte_and_line(tmp_path):
    path = tmp_path / "x.conllu"
    path.write_bytes("# text = Бүген\n".encode() + "# text = Юк\n".encode("cp1251"))
    with pytest.raises(CorpusReadError, match=r"x\.conllu: not UTF-8 at byte 29 \(rule: non_utf8\); "
                                              r"the first bad byte is on line 2"):
        read_file_text(path)
    with pytest.raises(CorpusReadError, match=r"not UTF-8 at byte 29 .*on line 2"):
        read_conllu_corpus(path, lang="tt", source="ud", license="L")


def test_text_folder_path_must_be_a_directory(tmp_path):
    (tmp_path / "f.txt").write_text("Текст.", encoding="utf-8")
    with pytest.raises(CorpusReadError, match=r"f\.txt: is a file; .* \(rule: not_a_directory\)"):
        read_text_folder(tmp_path / "f.txt", lang="ru", source="f", license="L")


def test_squad_context_of_the_wrong_type_is_a_bad_record(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"data": [{"title": "A", "paragraphs": [{"context": 5}, {"context": "Текст."}]}]}))
    recs = read_squad_corpus(path, lang="ru", source="x", license="L")
    assert [(r["source_row"], r["read_error"]) for r in recs] == [(1, "wrong_type:text"), (2, None)]


def test_conllu_bad_and_long_sentences_are_records(tmp_path):
    path = tmp_path / "t.conllu"
    path.write_text(
        "# sent_id = s1\n# text = Бүген.\n1\tБүген\tбүген\tADV\t_\t_\t0\troot\t_\t_\n\n"
        f"# sent_id = s2\n# text = {'ы' * 40}\n1\tЮк\tюк\tADJ\t_\t_\t0\troot\t_\t_\n\n"
        "# sent_id = s3\n# text = Юк.\n1\tЮк\tюк\tADJ\t_\t_\tnot-a-number\troot\t_\t_\n",
        encoding="utf-8",
    )
    recs = read_conllu_corpus(path, lang="tt", source="ud", license="L", id_prefix="ud", max_line_bytes=60)
    assert [(r["source_row"], r["doc_id"], r["read_error"]) for r in recs] == [
        (1, "ud-s1", None), (2, "ud-s2", "line_too_long"), (3, "ud-s3", "bad_conllu")]
    assert recs[1]["detail"].startswith("sentence from line 5: line 6:")


def test_corpus_dataset_has_id_normalised_and_passes_reader_arguments(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_line(GOOD | {"doc_id": " d1 "}) + _line(GOOD | {"doc_id": "d2", "text": "Т" * 200}))
    df = CorpusDataset([{"format": "jsonl", "path": str(path), "max_line_bytes": 300}]).load()
    assert df["doc_id"].tolist()[0] == "d1" and df["id_normalised"].tolist() == [True, False]
    assert df["read_error"].isna().tolist() == [True, False] and df["read_error"].iloc[1] == "line_too_long"
