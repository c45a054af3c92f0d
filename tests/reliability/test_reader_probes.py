"""Probes of the readers reported by a user (issue 21, "Readers that account for every byte").

One test per probe. Each asserts either an error of the reader's class whose message names the
file, the row where there is one, and the rule, or a quarantine record with the reason; and that
every row of the file is accounted for on the true count of its lines: read = kept + quarantined.
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata

import pandas as pd
import pytest

from ru_rlhf.io.annotations import LONG_COLUMNS, AnnotationReadError, read_long_table, read_toloka_tsv
from ru_rlhf.io.datasets import HumanLabelsDataset
from ru_rlhf.io.pairs import PairsReadError, read_preference_pairs, validate_pairs
from ru_rlhf.io.readers import (
    RECORD_FIELDS,
    CorpusReadError,
    read_conllu_corpus,
    read_jsonl_corpus,
    read_squad_corpus,
    read_text_folder,
)
from ru_rlhf.pipelines.ingestion import nodes as ingest
from ru_rlhf.pipelines.preference_curation import nodes as curate
from tests.params_helpers import base_params

TEXTS = ["Казанский кремль стоит на левом берегу Волги и хранит историю города.",
         "В Елабуге открылся новый музей с картинами местных художников прошлого века.",
         "Футбольный клуб из Набережных Челнов выиграл домашний матч со счётом два ноль.",
         "Зимой в Альметьевске прошёл лыжный марафон, собравший почти тысячу участников."]
INGEST_PARAMS = base_params("ingestion", {"schema": {"min_chars": 20, "max_chars": 2000, "min_cyrillic_share": 0.5}})
GOLD = pd.DataFrame({"response_id": [f"r{i}" for i in range(8)] + ["док-й"], "lang": "ru", "task_type": "qa",
                     "split": "train"})
LONG_HEADER = "item_id,prompt_id,response_id,annotator_id,criterion,score\n"
TOLOKA_HEADER = "INPUT:item_id\tINPUT:response_id\tINPUT:text\tOUTPUT:helpfulness\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
NFD = unicodedata.normalize("NFD", "док-й")
NFC = unicodedata.normalize("NFC", "док-й")


def _doc(i, **kw):
    return {"doc_id": f"d{i}", "lang": "ru", "source": "test", "title": "T", "text": TEXTS[i],
            "license": "CC-BY-4.0", **kw}


def _pair(i, **kw):
    return {"pair_id": f"x{i}", "prompt": "Где стоит Казанский кремль?", "chosen": "На левом берегу Волги.",
            "rejected": f"Не знаю {i}.", **kw}


def _label(item, annotator="h1", score=4, **kw):
    return {"item_id": item, "prompt_id": "p", "response_id": item, "annotator_id": annotator,
            "criterion": "helpfulness", "score": score, **kw}


def _jsonl(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o, ensure_ascii=False).encode()) + b"\n"
                    for o in objs)


def _data_lines(data: bytes, header: bool) -> int:
    """The true count of rows: non-blank physical lines, less the header."""
    return sum(1 for ln in data.split(b"\n") if ln.strip()) - (1 if header else 0)


def ingest_corpus(raw_records):
    """The ingestion pipeline's documents branch: (raw, documents, quarantine); raises if a row is lost."""
    raw = pd.DataFrame(raw_records, columns=list(RECORD_FIELDS))
    valid, schema_q = ingest.validate_documents(ingest.normalise_documents(raw), INGEST_PARAMS)
    docs, dedup_q = ingest.deduplicate_documents(valid, INGEST_PARAMS)
    return raw, docs, ingest.collect_quarantine(raw, docs, schema_q, dedup_q)


def curate_labels(files: dict, params: dict):
    """Curation's import (the catalog's ``human_labels`` dataset, then the node) and validation of human labels:
    (kept, quarantine); raises if a row is lost."""
    human, _, import_q = curate.import_human_labels(HumanLabelsDataset(**files).load())
    return curate.validate_annotations(pd.DataFrame(columns=LONG_COLUMNS), human, import_q, GOLD,
                                       base_params("preference_curation", {"human_labels": params}))


class RecordingTokenizer:
    """The tiny tokenizer, recording the length of every text it is asked to tokenise."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def __call__(self, text, **kw):
        self.calls.append(len(text))
        return self.tokenizer(text, **kw)


# ------------------------------------------------------------------ 1. TSV: a quote cannot merge rows
def test_toloka_text_with_unmatched_quote_keeps_every_line(tmp_path):
    """Before: csv's default quoting read the `"` as an opening quote and swallowed four lines
    into one field; the run kept 2 of 6 labels."""
    rows = [f"r{i}\tr{i}\tтекст {i}\t{i % 5 + 1}\tw1\tAPPROVED" for i in range(6)]
    rows[1] = 'r1\tr1\t"Кавычка без пары, дальше текст\t2\tw1\tAPPROVED'
    data = (TOLOKA_HEADER + "\n".join(rows) + "\n").encode()
    path = tmp_path / "pool.tsv"
    path.write_bytes(data)
    labels, control, rejected = read_toloka_tsv(path)
    assert len(labels) + len(control) + len(rejected) == _data_lines(data, header=True) == 6
    assert labels["source_row"].tolist() == [2, 3, 4, 5, 6, 7]
    assert labels["score"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 1.0]
    kept, quarantine = curate_labels({"toloka": [str(path)]}, {"min_ratings_per_annotator": 1})
    assert len(kept) == 6 and quarantine.empty


def test_tsv_long_table_is_tab_separated_without_quoting(tmp_path):
    data = ("item_id\tannotator_id\tcriterion\tscore\tnote\n"
            'r0\th1\thelpfulness\t4\t"открыта\nr1\th1\thelpfulness\t3\tзакрыта"\nr2\th1\thelpfulness\t5\t-\n').encode()
    path = tmp_path / "labels.tsv"
    path.write_bytes(data)
    df = read_long_table(path)
    assert df["source_row"].tolist() == [2, 3, 4] and df["item_id"].tolist() == ["r0", "r1", "r2"]
    assert len(df) == _data_lines(data, header=True) and df["read_error"].isna().all()


# ------------------------------------------------------------------ 2. ids: NFC and white space
def test_ids_with_trailing_space_or_nfd_are_the_same_item_and_annotator(tmp_path):
    """Before: `r0 ` and `r0`, `h1 ` and `h1`, NFD and NFC `док-й` were different ids."""
    data = (LONG_HEADER + "r0 ,p,r0 ,h1 ,helpfulness,4\nr0,p,r0,h1,helpfulness,3\n"
            f"{NFD},p,{NFD},h1,helpfulness,4\n{NFC},p,{NFC},h1,helpfulness,4\n"
            "r1,p,r1,h1,helpfulness,2\n").encode()
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    df = read_long_table(path)
    assert set(df["item_id"]) == {"r0", NFC, "r1"} and set(df["annotator_id"]) == {"h1"}
    assert df["id_normalised"].tolist() == [True, False, True, False, False]
    human, _, import_q = curate.import_human_labels(HumanLabelsDataset(long_tables=[str(path)]).load())
    assert human["id_normalised"].sum() == 2  # the column survives for curation to count
    kept, quarantine = curate.validate_annotations(pd.DataFrame(columns=LONG_COLUMNS), human, import_q, GOLD,
                                                   base_params("preference_curation"))
    assert len(kept) + len(quarantine) == _data_lines(data, header=True)
    # the second rating of the same (item, annotator, criterion) is a duplicate once ids are normalised
    dup = quarantine.set_index("source_row")["rule"]
    assert dup[3] == dup[5] == "item_id+annotator_id+criterion:unique"
    assert len(kept) == 3
    summary = curate.curation_summary(pd.DataFrame(columns=["criterion", "lang", "split", "prompt_id", "source"]),
                                      {}, {"before": {}, "after": {}, "dropped": []}, {}, quarantine, kept)
    assert summary["ids_normalised"] == 2  # the curation report says how many ids the reader changed


def test_toloka_and_pair_and_corpus_ids_are_normalised(tmp_path):
    tsv = tmp_path / "pool.tsv"
    tsv.write_text(TOLOKA_HEADER + "r0 \tr0\tт\t4\th1 \tAPPROVED\nr0\tr0\tт\t3\th1\tAPPROVED\n", encoding="utf-8")
    labels, _, _ = read_toloka_tsv(tsv)
    assert labels[["item_id", "annotator_id"]].drop_duplicates().values.tolist() == [["r0", "h1"]]
    assert labels["id_normalised"].tolist() == [True, False]

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(_jsonl(_pair(1), _pair(2, pair_id="x1 ")))
    kept, quarantine = validate_pairs(read_preference_pairs(pairs))
    assert quarantine["rule"].tolist() == ["duplicate_pair_id"] and quarantine["source_row"].tolist() == [2]
    assert quarantine["id_normalised"].tolist() == [True]

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(_jsonl(_doc(0, doc_id=NFC), _doc(1, doc_id=NFD), _doc(2, doc_id=" d2\t")))
    recs = read_jsonl_corpus(corpus)
    assert [r["doc_id"] for r in recs] == [NFC, NFC, "d2"] and [r["id_normalised"] for r in recs] == [False, True, True]
    raw, docs, quarantine = ingest_corpus(recs)
    assert len(raw) == len(docs) + len(quarantine) == 3
    assert quarantine["rule"].tolist() == ["doc_id:unique"] and quarantine["source_row"].tolist() == [2]
    summary = ingest.summarise_ingestion(
        raw, docs, quarantine, pd.DataFrame({"doc_id": [], "split": []}),
        pd.DataFrame(columns=["doc_id", "split", "task_type", "lang"]), pd.DataFrame(columns=["variant"]))
    assert summary["documents"]["ids_normalised"] == 2


# ------------------------------------------------------------------ 3. duplicate columns
def test_duplicate_csv_column_names_file_column_and_rule(tmp_path):
    """Before: pandas renamed the second `score` to `score.1` and the run used the first silently."""
    path = tmp_path / "dup.csv"
    path.write_text("item_id,annotator_id,criterion,score,score\nr0,h1,helpfulness,4,5\n", encoding="utf-8")
    with pytest.raises(AnnotationReadError, match=rf"{path}: line 1: column 'score' appears twice in the header "
                                                  r"\(columns 4 and 5\) \(rule: duplicate_column\)"):
        read_long_table(path)


def test_duplicate_toloka_output_column_names_file_column_and_rule(tmp_path):
    """Before: csv.DictReader kept the last `OUTPUT:helpfulness` and counted it twice."""
    path = tmp_path / "pool.tsv"
    path.write_text("INPUT:item_id\tOUTPUT:helpfulness\tASSIGNMENT:worker_id\tASSIGNMENT:status\tOUTPUT:helpfulness\n"
                    "r0\t4\tw1\tAPPROVED\t2\n", encoding="utf-8")
    with pytest.raises(AnnotationReadError, match=rf"{path}: line 1: column 'OUTPUT:helpfulness' appears twice "
                                                  r"in the header \(columns 2 and 5\) \(rule: duplicate_column\)"):
        read_toloka_tsv(path)


# ------------------------------------------------------------------ 4. booleans are not scores
def test_boolean_score_in_jsonl_is_quarantined_not_one(tmp_path):
    """Before: `"score": true` became 1.0 and was kept."""
    data = _jsonl(_label("r0"), _label("r1", score=True), _label("r2", score=False), _label("r3"))
    path = tmp_path / "labels.jsonl"
    path.write_bytes(data)
    df = read_long_table(path)
    assert df["read_error"].tolist()[1:3] == ["score_is_boolean", "score_is_boolean"]
    kept, quarantine = curate_labels({"long_tables": [str(path)]}, {"min_ratings_per_annotator": 1})
    assert len(kept) + len(quarantine) == _data_lines(data, header=False) == 4
    assert quarantine.set_index("source_row")["rule"].to_dict() == {2: "score_is_boolean", 3: "score_is_boolean"}
    assert quarantine["source_file"].eq(str(path)).all()


def test_boolean_score_text_in_csv_and_toloka_is_quarantined(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(LONG_HEADER + "r0,p,r0,h1,helpfulness,true\nr1,p,r1,h1,helpfulness,False \n"
                    "r2,p,r2,h1,helpfulness,4\n", encoding="utf-8")
    assert read_long_table(path)["read_error"].tolist() == ["score_is_boolean", "score_is_boolean", None]
    tsv = tmp_path / "pool.tsv"
    tsv.write_text(TOLOKA_HEADER + "r0\tr0\tт\tTRUE\tw1\tAPPROVED\n", encoding="utf-8")
    assert read_toloka_tsv(tsv)[0]["read_error"].tolist() == ["score_is_boolean"]


# ------------------------------------------------------------------ 5. status values
def test_rejected_status_with_trailing_space_or_lower_case_is_rejected(tmp_path):
    """Before: `REJECTED ` (trailing space) did not equal `REJECTED` and its labels were kept."""
    data = (TOLOKA_HEADER + "r0\tr0\tт\t4\tw1\tREJECTED \nr1\tr1\tт\t4\tw1\trejected\nr2\tr2\tт\t4\tw1\t Rejected  \n"
            "r3\tr3\tт\t4\tw1\tAPPROVED\n").encode()
    path = tmp_path / "pool.tsv"
    path.write_bytes(data)
    labels, control, rejected = read_toloka_tsv(path)
    assert rejected["source_row"].tolist() == [2, 3, 4] and rejected["rule"].eq("rejected_assignment").all()
    assert labels["item_id"].tolist() == ["r3"]
    kept, quarantine = curate_labels({"toloka": [str(path)]}, {"min_ratings_per_annotator": 1})
    assert len(kept) + len(quarantine) == _data_lines(data, header=True) == 4


# ------------------------------------------------------------------ 6. files that are not files
def _every_reader(path):
    return [
        (lambda: read_jsonl_corpus(path), CorpusReadError),
        (lambda: read_squad_corpus(path, lang="ru", source="s", license="L"), CorpusReadError),
        (lambda: read_conllu_corpus(path, lang="tt", source="s", license="L"), CorpusReadError),
        (lambda: read_long_table(path), AnnotationReadError),
        (lambda: read_toloka_tsv(path), AnnotationReadError),
        (lambda: read_preference_pairs(path), PairsReadError),
    ]


def test_directory_where_a_file_is_expected(tmp_path):
    """Before: a bare IsADirectoryError from Python, naming no rule."""
    path = tmp_path / "labels.jsonl"
    path.mkdir()
    for call, err in _every_reader(path):
        with pytest.raises(err, match=rf"{path}: is a directory, not a file \(rule: is_a_directory\)"):
            call()
    folder = tmp_path / "news"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "n1.txt").write_text(TEXTS[0], encoding="utf-8")
    (folder / "a" / "n2.txt").mkdir()  # a directory the pattern matches
    recs = read_text_folder(folder, lang="ru", source="f", license="L", pattern="*/*.txt")
    assert [r["read_error"] for r in recs] == [None, "is_a_directory"]
    assert recs[1]["source_file"].endswith("n2.txt") and "is a directory" in recs[1]["detail"]


def test_symlink_loop(tmp_path):
    """Before: reported as `file not found (rule: missing_file)`."""
    path = tmp_path / "loop.jsonl"
    os.symlink(path, path)
    for call, err in _every_reader(path):
        with pytest.raises(err, match=rf"{path}: symlink loop .*\(rule: symlink_loop\)"):
            call()
    folder = tmp_path / "news"
    folder.mkdir()
    (folder / "n1.txt").write_text(TEXTS[0], encoding="utf-8")
    os.symlink(folder / "n2.txt", folder / "n2.txt")
    recs = read_text_folder(folder, lang="ru", source="f", license="L")
    assert [r["read_error"] for r in recs] == [None, "symlink_loop"]


# ------------------------------------------------------------------ 7. wrong JSON shape
@pytest.mark.parametrize("data, where", [
    ({"data": ["just a string"]}, r"data\[0\] is str, expected an article object"),
    ({"data": [{"title": "A", "paragraphs": "text"}]}, r"data\[0\]\.paragraphs is str"),
    ({"data": [{"title": "A", "paragraphs": [{"context": TEXTS[0]}, "a string"]}]},
     r"data\[0\]\.paragraphs\[1\] \(row 2: the file's paragraph 2\) is str, expected a paragraph object"),
    ({"data": [{"title": "A", "paragraphs": [{"context": TEXTS[0], "qas": ["Что?"]}]}]},
     r"data\[0\]\.paragraphs\[0\]\.qas \(row 1: the file's paragraph 1\) is list"),
    ({"data": [{"title": "A", "paragraphs": [{"context": TEXTS[0], "qas": [{"question": "Что?",
                                                                             "answers": ["абзац"]}]}]}]},
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers \(row 1: the file's paragraph 1\) is list"),
])
def test_squad_file_of_the_wrong_shape(tmp_path, data, where):
    """Before: AttributeError: 'str' object has no attribute 'get'."""
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CorpusReadError, match=rf"{path}: {where}.*\(rule: not_squad_format\)"):
        read_squad_corpus(path, lang="ru", source="s", license="L")


# ------------------------------------------------------------------ 8. CSV quoting and physical rows
def test_unmatched_quote_in_csv_names_file_row_and_rule(tmp_path):
    """Before: pandas ParserError `EOF inside string starting at row 2` (no file, a 0-based row)."""
    path = tmp_path / "labels.csv"
    path.write_text(LONG_HEADER + 'r0,p,r0,h1,helpfulness,4\n"r1,p,r1,h1,helpfulness,3\nr2,p,r2,h1,helpfulness,5\n',
                    encoding="utf-8")
    with pytest.raises(AnnotationReadError, match=rf"{path}: line 3: a quoted field .* never closed .*"
                                                  r"\(rule: unmatched_quote\)"):
        read_long_table(path)


def test_quote_that_merges_lines_is_an_error_and_a_stray_quote_a_bad_row(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(LONG_HEADER + 'r0,p,r0,h1,"helpfulness,4\nr1,p,r1,h1,help"fulness,3\n', encoding="utf-8")
    with pytest.raises(AnnotationReadError, match=rf"{path}: line 2: .*merges lines 2-3.*\(rule: unmatched_quote\)"):
        read_long_table(path)
    data = (LONG_HEADER + 'r0,p,r0,h1,helpfulness,4\nr1,p,r1,h1,"helpful"ness,3\nr2,p,r2,h1,helpfulness,5\n'
            "r3,p,r3,h1,helpfulness,5,extra\n").encode()
    path.write_bytes(data)
    df = read_long_table(path)
    assert df.set_index("source_row")["read_error"].to_dict() == {2: None, 3: "bad_quote", 4: None,
                                                                   5: "wrong_field_count"}
    assert len(df) == _data_lines(data, header=True)


def test_quoted_newline_keeps_physical_row_numbers(tmp_path):
    """Before: pandas numbered records, so every row after a quoted new line was reported one too early."""
    data = ("item_id,prompt_id,response_id,annotator_id,criterion,score,comment\n"
            'r0,p,r0,h1,helpfulness,4,"первая строка\nвторая строка"\n'
            "r1,p,r1,h1,helpfulness,3,\n"
            "\n"
            "r2,p,r2,h1,helpfulness,9,\n").encode()
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    assert read_long_table(path)["source_row"].tolist() == [2, 4, 6]
    kept, quarantine = curate_labels({"long_tables": [str(path)]}, {"min_ratings_per_annotator": 1})
    assert len(kept) + len(quarantine) == 3
    assert quarantine["source_row"].tolist() == [6] and quarantine["rule"].tolist() == ["score:score_in_range_1_5"]


# ------------------------------------------------------------------ 9. files no line of which can be read
def test_all_broken_jsonl_names_the_file_row_and_rule(tmp_path):
    """Before: every line quarantined, then a table-level schema error in validate_documents naming
    no file (the corpus), or a misleading `missing column(s)` (the long table)."""
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b'{"doc_id": "d1", \n\n[1, 2]\n{broken\n')
    for call, err in _every_reader(path)[:1] + [(lambda: read_long_table(path), AnnotationReadError),
                                                  (lambda: read_preference_pairs(path), PairsReadError)]:
        with pytest.raises(err, match=rf"{path}: line 1: none of its 3 line\(s\) is a readable JSON object "
                                      r"\(line 1: broken_json_line; line 3: not_an_object; line 4: broken_json_line\) "
                                      r"\(rule: no_readable_line\)"):
            call()
    # one readable line is enough: the file is read and every line accounted for
    data = b'{"doc_id": "d1", \n' + _jsonl(_doc(1)) + b"[1, 2]\n"
    path.write_bytes(data)
    raw, docs, quarantine = ingest_corpus(read_jsonl_corpus(path))
    assert len(raw) == len(docs) + len(quarantine) == _data_lines(data, header=False) == 3
    assert quarantine.set_index("source_row")["rule"].to_dict() == {1: "broken_json_line", 3: "not_an_object"}


@pytest.mark.parametrize("encoding, what", [("utf-16", "little-endian, BOM FF FE"),
                                            ("utf-16-be", "probably big-endian, no BOM"),
                                            ("utf-16-le", "probably little-endian, no BOM")])
def test_utf16_file_names_the_encoding(tmp_path, encoding, what):
    """Before: each line became `non_utf8` / `broken_json_line` (and, for the corpus, the
    table-level schema error); the CSV reader said `not UTF-8 at byte 0`."""
    data = _jsonl(_doc(0), _doc(1)).decode("utf-8")
    for name, call, err in (("c.jsonl", read_jsonl_corpus, CorpusReadError),
                            ("p.jsonl", read_preference_pairs, PairsReadError),
                            ("l.csv", read_long_table, AnnotationReadError),
                            ("t.tsv", read_toloka_tsv, AnnotationReadError)):
        path = tmp_path / name
        path.write_bytes((data if name.endswith(".jsonl") else LONG_HEADER).encode(encoding))
        with pytest.raises(err, match=rf"{path}: UTF-16 encoded \({what}.*\(rule: utf16\)"):
            call(path)


# ------------------------------------------------------------------ 10. gzip
def test_gzipped_files_are_decompressed(tmp_path):
    """Before: the gzip bytes were read as text: every line `non_utf8`, or `not UTF-8 at byte 1`."""
    corpus = tmp_path / "corpus.jsonl.gz"
    corpus.write_bytes(gzip.compress(_jsonl(_doc(0), _doc(1), b"{broken")))
    recs = read_jsonl_corpus(corpus)
    assert [r["read_error"] for r in recs] == [None, None, "broken_json_line"]
    assert recs[0]["source_file"] == str(corpus)
    pool = tmp_path / "pool.tsv.gz"
    pool.write_bytes(gzip.compress((TOLOKA_HEADER + "r0\tr0\t\"т\t4\tw1\tAPPROVED\nr1\tr1\tт\t5\tw1\tAPPROVED\n").encode()))
    labels, _, _ = read_toloka_tsv(pool)
    assert labels["score"].tolist() == [4.0, 5.0] and labels["source_row"].tolist() == [2, 3]
    table = tmp_path / "labels.csv.gz"
    table.write_bytes(gzip.compress((LONG_HEADER + "r0,p,r0,h1,helpfulness,4\n").encode()))
    assert read_long_table(table)["score"].tolist() == [4.0]
    pairs = tmp_path / "pairs.jsonl.gz"
    pairs.write_bytes(gzip.compress(_jsonl(_pair(1))))
    assert read_preference_pairs(pairs)["pair_id"].tolist() == ["x1"]
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"this is not gzip at all")
    with pytest.raises(CorpusReadError, match=rf"{bad}: not a valid gzip file .*\(rule: bad_gzip\)"):
        read_jsonl_corpus(bad)


# ------------------------------------------------------------------ 11. over-long lines
LONG = 3_000_000  # bytes: over the 1 MB default line limit


def test_long_line_in_pairs_is_quarantined_without_the_tokenizer(tmp_path, tiny_tokenizer):
    """Before: the 3 MB line was parsed, then tokenised (6 tokenizer calls, one of 1.5 M characters)."""
    data = _jsonl(_pair(1), _pair(2, chosen="я" * (LONG // 2)), _pair(3))
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(data)
    tok = RecordingTokenizer(tiny_tokenizer)
    pairs = read_preference_pairs(path)
    kept, quarantine = validate_pairs(pairs, max_tokens=256, tokenizer=tok)
    assert len(pairs) == len(kept) + len(quarantine) == _data_lines(data, header=False) == 3
    assert quarantine["source_row"].tolist() == [2] and quarantine["source_file"].tolist() == [str(path)]
    assert quarantine["rule"].iloc[0].startswith("line_too_long (line of 3000")
    assert tok.calls and max(tok.calls) < 100  # the tokenizer only saw the short pairs


def test_pair_over_the_character_budget_never_reaches_the_tokenizer(tmp_path, tiny_tokenizer):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_jsonl(_pair(1), _pair(2, chosen="ответ " * 5000)))  # 30 000 characters, one short line
    tok = RecordingTokenizer(tiny_tokenizer)
    kept, quarantine = validate_pairs(read_preference_pairs(path), max_tokens=256, tokenizer=tok, max_chars=20_000)
    assert quarantine["rule"].tolist() == ["over_context_length (> 20000 characters)"]
    assert len(kept) == 1 and max(tok.calls) < 100


def test_long_line_in_every_line_reader_is_quarantined_unparsed(tmp_path):
    filler = "я" * (LONG // 2)
    corpus = tmp_path / "corpus.jsonl"
    data = _jsonl(_doc(0), _doc(1, text=filler), _doc(2))
    corpus.write_bytes(data)
    recs = read_jsonl_corpus(corpus)
    assert [r["read_error"] for r in recs] == [None, "line_too_long", None]
    assert len(recs[1]["raw"]) == 500 and recs[1]["detail"].startswith("line of 3000")
    raw, docs, quarantine = ingest_corpus(recs)
    assert len(raw) == len(docs) + len(quarantine) == _data_lines(data, header=False)
    assert quarantine.set_index("source_row")["rule"].to_dict() == {2: "line_too_long"}

    table = tmp_path / "labels.csv"
    data = (LONG_HEADER + f"r0,p,r0,h1,helpfulness,4\nr1,p,r1,h1,{filler},3\nr2,p,r2,h1,helpfulness,5\n").encode()
    table.write_bytes(data)
    assert read_long_table(table).set_index("source_row")["read_error"].to_dict() == {2: None, 3: "line_too_long",
                                                                                      4: None}
    pool = tmp_path / "pool.tsv"
    pool.write_text(TOLOKA_HEADER + f"r0\tr0\tт\t4\tw1\tAPPROVED\nr1\tr1\t{filler}\t3\tw1\tAPPROVED\n", encoding="utf-8")
    labels, _, rejected = read_toloka_tsv(pool)
    assert labels["source_row"].tolist() == [2] and rejected[["source_row", "rule"]].values.tolist() == [
        [3, "line_too_long"]]
    conllu_path = tmp_path / "t.conllu"
    conllu_path.write_text("# sent_id = s1\n# text = Бүген көн матур.\n1\tБүген\tбүген\tADV\t_\t_\t0\troot\t_\t_\n\n"
                           f"# sent_id = s2\n# text = {filler}\n1\tЮк\tюк\tADJ\t_\t_\t0\troot\t_\t_\n\n",
                           encoding="utf-8")
    recs = read_conllu_corpus(conllu_path, lang="tt", source="ud", license="L", id_prefix="ud")
    assert [(r["doc_id"], r["read_error"]) for r in recs] == [("ud-s1", None), ("ud-s2", "line_too_long")]
    assert "line 6" in recs[1]["detail"]


def test_line_limit_is_an_argument(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(_jsonl(_label("r0"), _label("r1", note="x" * 300)))
    assert read_long_table(path)["read_error"].tolist() == [None, None]
    assert read_long_table(path, max_line_bytes=200)["read_error"].tolist() == [None, "line_too_long"]


def test_imported_pair_whose_answers_read_the_same_is_quarantined(tmp_path):
    """Pairs whose two texts are equal after normalisation are never made, from any source."""
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Вопрос?", "chosen": "Да,  это так.", "rejected": " Да, это так.\n"},
            {"prompt": "Вопрос?", "chosen": "Да.", "rejected": "Нет."}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    kept, quarantined = validate_pairs(read_preference_pairs(path))
    assert list(kept["chosen"]) == ["Да."]
    assert list(quarantined["rule"]) == ["identical_chosen_rejected"] and list(quarantined["source_row"]) == [1]
    assert len(kept) + len(quarantined) == 2


def test_a_quarantined_pair_never_makes_a_later_good_one_a_duplicate(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"pair_id": "p1", "prompt": "Вопрос?", "chosen": " ", "rejected": "Нет."},   # empty_text
            {"pair_id": "p1", "prompt": "Вопрос?", "chosen": "Да.", "rejected": "Нет."},  # the good p1
            {"pair_id": 0, "prompt": "Вопрос?", "chosen": "Да!", "rejected": "Нет!"},     # id 0 is an id
            {"pair_id": "p1", "prompt": "Вопрос?", "chosen": "Ага.", "rejected": "Нет."}]  # a real duplicate
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    kept, quarantined = validate_pairs(read_preference_pairs(path))
    assert list(kept["pair_id"]) == ["p1", "0"] and list(kept["source_row"]) == [2, 3]
    assert list(quarantined["rule"]) == ["empty_text", "duplicate_pair_id"]
    assert list(quarantined["source_row"]) == [1, 4]
