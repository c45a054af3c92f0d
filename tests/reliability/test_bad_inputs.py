"""The bad-input suite: malformed input of every kind the project reads, and what each gets.

Each case feeds one kind of bad input to the reader that would meet it in a run (the corpus
readers with the ingestion pipeline's validation, the annotation importers with curation's
validation, the preference-pair importer, the app's feedback store) and asserts either a clear
error that names the file (and row) and the rule, or a quarantine row with the reason, and that
every row read is accounted for: read = kept + quarantined.
"""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from kedro.io import DatasetError

from ru_rlhf.io.annotations import LONG_COLUMNS, AnnotationReadError, read_toloka_tsv
from ru_rlhf.io.datasets import HumanLabelsDataset
from ru_rlhf.io.pairs import PairsReadError, read_preference_pairs, validate_pairs
from ru_rlhf.io.readers import RECORD_FIELDS, CorpusReadError, read_jsonl_corpus
from ru_rlhf.pipelines.ingestion import nodes as ingest
from ru_rlhf.pipelines.preference_curation import nodes as curate
from tests.params_helpers import base_params

TEXT = "Казанский кремль стоит на левом берегу Волги и хранит историю города. "
TEXTS = ["Казанский кремль стоит на левом берегу Волги и хранит историю города.",
         "В Елабуге открылся новый музей с картинами местных художников прошлого века.",
         "Футбольный клуб из Набережных Челнов выиграл домашний матч со счётом два ноль.",
         "Зимой в Альметьевске прошёл лыжный марафон, собравший почти тысячу участников."]
INGEST_PARAMS = base_params("ingestion", {"schema": {"min_chars": 20, "max_chars": 2000, "min_cyrillic_share": 0.5}})


def _doc(i, **kw):
    return {"doc_id": f"d{i}", "lang": "ru", "source": "test", "title": "T", "text": TEXTS[i],
            "license": "CC-BY-4.0", **kw}


def _lines(*objs) -> bytes:
    return b"\n".join(o if isinstance(o, bytes) else json.dumps(o, ensure_ascii=False).encode() for o in objs)


def ingest_file(path):
    """The ingestion pipeline's documents branch on one JSONL file: (read, documents, quarantine)."""
    raw = pd.DataFrame(read_jsonl_corpus(path), columns=list(RECORD_FIELDS))
    valid, schema_q = ingest.validate_documents(ingest.normalise_documents(raw), INGEST_PARAMS)
    docs, dedup_q = ingest.deduplicate_documents(valid, INGEST_PARAMS)
    quarantine = ingest.collect_quarantine(raw, docs, schema_q, dedup_q)  # raises if a row went missing
    assert len(raw) == len(docs) + len(quarantine)
    return len(raw), docs, quarantine


def _rule_of(quarantine, row):
    return quarantine.set_index("source_row").loc[row, "rule"]


# ---------------------------------------------------------------------------------------- corpus
CORPUS_CASES = {
    # kind: (lines, row of the bad line, expected rule fragment)
    "truncated file": ([_doc(1), _doc(2), json.dumps(_doc(3), ensure_ascii=False).encode()[:40]], 3,
                       "broken_json_line"),
    "broken JSON line": ([_doc(1), b'{"doc_id": "d2", "lang": "ru",,}', _doc(3)], 2, "broken_json_line"),
    "wrong encoding": ([_doc(1), json.dumps(_doc(2), ensure_ascii=False).encode("cp1251"), _doc(3)], 2,
                       "non_utf8"),
    "missing column": ([_doc(1), {k: v for k, v in _doc(2).items() if k != "lang"}, _doc(3)], 2,
                       "missing_field:lang"),
    "wrong type": ([_doc(1), _doc(2, text=12345), _doc(3)], 2, "wrong_type:text"),
    "empty text": ([_doc(1), _doc(2, text="   "), _doc(3)], 2, "non_empty_text"),
    "unknown language": ([_doc(1), _doc(2, lang="en"), _doc(3)], 2, "lang:known_lang"),
    "duplicate ids": ([_doc(1), _doc(2), {**_doc(3), "doc_id": "d1"}], 3, "doc_id:unique"),
    "text far over the length limit": ([_doc(1), _doc(2, text=TEXT * 100), _doc(3)], 2, "length_between_20_2000"),
}


@pytest.mark.parametrize("kind", list(CORPUS_CASES))
def test_corpus_bad_line_is_quarantined_with_its_rule(tmp_path, kind):
    lines, row, rule = CORPUS_CASES[kind]
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(_lines(*lines))
    read, docs, quarantine = ingest_file(path)
    assert read == 3 and len(docs) == 2 and len(quarantine) == 1
    assert rule in _rule_of(quarantine, row)
    assert quarantine["source_file"].iloc[0] == str(path)


def test_corpus_extra_column_is_kept_and_noted(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(_lines(_doc(1), _doc(2, rating=5)))
    read, docs, quarantine = ingest_file(path)
    assert (read, len(docs), len(quarantine)) == (2, 2, 0)
    recs = read_jsonl_corpus(path)
    assert recs[1]["detail"] == "ignored extra fields: rating"


def test_zero_byte_files_raise_naming_the_file_for_every_reader(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    for call, err in ((lambda: read_jsonl_corpus(empty), CorpusReadError),
                      (lambda: read_preference_pairs(empty), PairsReadError),
                      (lambda: HumanLabelsDataset(long_tables=[str(empty)]).load(), DatasetError),  # its cause: an AnnotationReadError
                      (lambda: read_toloka_tsv(empty), AnnotationReadError)):
        with pytest.raises(err, match=rf"{empty}: zero-byte file \(rule: empty_file\)"):
            call()


# ----------------------------------------------------------------------------------- annotations
GOLD = pd.DataFrame({"response_id": [f"r{i}" for i in range(4)], "lang": "ru", "task_type": "qa",
                     "split": "train"})
HEADER = "item_id,prompt_id,response_id,annotator_id,criterion,score\n"


def _annotations(tmp_path, body: str, encoding="utf-8", name="labels.csv"):
    path = tmp_path / name
    path.write_bytes((HEADER + body).encode(encoding) if name.endswith(".csv") else body.encode(encoding))
    human, _, import_q = curate.import_human_labels(HumanLabelsDataset(long_tables=[str(path)]).load())
    sim = pd.DataFrame(columns=LONG_COLUMNS)
    kept, quarantine = curate.validate_annotations(sim, human, import_q, GOLD, base_params("preference_curation"))
    n_lines = len([ln for ln in body.splitlines() if ln.strip()])
    assert n_lines == len(kept) + len(quarantine)  # read = kept + quarantined
    return kept, quarantine


def _ok(a="h1"):
    return f"r0,p,r0,{a},helpfulness,4\nr1,p,r1,{a},helpfulness,3\n"


ANNOTATION_CASES = {
    "score out of range": ("r2,p,r2,h1,helpfulness,7\n", "score:score_in_range_1_5"),
    "unknown criterion": ("r2,p,r2,h1,kindness,3\n", "criterion:known_criterion"),
    "wrong type (score not a number)": ("r2,p,r2,h1,helpfulness,five\n", "score_not_a_number"),
    "duplicate ids (same item, annotator, criterion)": ("r1,p,r1,h1,helpfulness,5\n",
                                                         "item_id+annotator_id+criterion:unique"),
    "annotator with one rating": ("r2,p,r2,h9,helpfulness,3\n", "annotator_rated_fewer_than_2_items"),
    "unknown item": ("zz,p,zz,h1,helpfulness,3\n", "unknown_item"),
}


@pytest.mark.parametrize("kind", list(ANNOTATION_CASES))
def test_annotation_bad_row_is_quarantined_with_its_rule(tmp_path, kind):
    bad, rule = ANNOTATION_CASES[kind]
    kept, quarantine = _annotations(tmp_path, _ok() + bad)
    assert len(kept) == 2 and len(quarantine) == 1
    assert quarantine["rule"].iloc[0] == rule
    assert quarantine["source_row"].iloc[0] == 4  # header = line 1, two good rows, then the bad one
    assert quarantine["source_file"].iloc[0].endswith("labels.csv")


def test_annotation_broken_json_line_and_extra_column(tmp_path):
    body = (json.dumps({"item_id": "r0", "annotator_id": "h1", "criterion": "helpfulness", "score": 4,
                        "response_id": "r0", "shift": "night"}) + "\n"  # an extra column: ignored, kept
            + '{"item_id": "r1", "annotator_id": \n'
            + json.dumps({"item_id": "r1", "annotator_id": "h1", "criterion": "helpfulness", "score": 2,
                          "response_id": "r1"}) + "\n")
    kept, quarantine = _annotations(tmp_path, body, name="labels.jsonl")
    assert len(kept) == 2 and quarantine["rule"].tolist() == ["broken_json_line"]
    assert quarantine["source_row"].tolist() == [2]


def test_annotation_file_errors_name_the_file_and_rule(tmp_path):
    path = tmp_path / "cp1251.csv"
    path.write_bytes((HEADER + "r0,p,r0,Иван,helpfulness,4\n").encode("cp1251"))
    with pytest.raises(DatasetError, match=r"cp1251\.csv: not UTF-8 at byte \d+ \(rule: non_utf8\)") as err:
        HumanLabelsDataset(long_tables=[str(path)]).load()
    assert isinstance(err.value.__cause__, AnnotationReadError)
    path = tmp_path / "nocrit.csv"
    path.write_text("item_id,annotator_id,score\nr0,h1,4\n")
    with pytest.raises(DatasetError, match=r"nocrit\.csv: missing column\(s\) \['criterion'\] "
                                           r"\(rule: missing_column\)") as err:
        HumanLabelsDataset(long_tables=[str(path)]).load()
    assert isinstance(err.value.__cause__, AnnotationReadError)


def test_toloka_missing_column_and_truncated_export(tmp_path):
    path = tmp_path / "pool.tsv"
    path.write_text("INPUT:item_id\tOUTPUT:helpfulness\tASSIGNMENT:status\nr0\t4\tAPPROVED\n")
    with pytest.raises(AnnotationReadError, match=r"pool\.tsv: missing column\(s\) \['ASSIGNMENT:worker_id'\]"):
        read_toloka_tsv(path)
    # a truncated export: the last row stops after its first field
    path.write_text("INPUT:item_id\tINPUT:response_id\tOUTPUT:helpfulness\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
                    "r0\tr0\t4\tw1\tAPPROVED\nr1\tr1\t3\tw1\tAPPROVED\nr2")
    labels, control, rejected = read_toloka_tsv(path)
    assert len(labels) == 3
    kept, quarantine = curate.validate_annotations(pd.DataFrame(columns=LONG_COLUMNS),
                                                   labels.drop(columns=["read_error"]), rejected, GOLD,
                                                   base_params("preference_curation"))
    assert len(kept) + len(quarantine) == 3
    assert quarantine["source_row"].tolist() == [4]
    assert "score_or_choice" in quarantine["rule"].iloc[0]


# ---------------------------------------------------------------------------------- preference pairs
def _pair(i, **kw):
    return {"pair_id": f"x{i}", "prompt": "Где стоит Казанский кремль?", "chosen": "На левом берегу Волги.",
            "rejected": f"Не знаю {i}.", **kw}


PAIR_CASES = {
    "identical chosen and rejected": (_pair(2, rejected="На левом берегу Волги."), "identical_chosen_rejected"),
    "empty text": (_pair(2, chosen="  "), "empty_text"),
    "response far over the context length": (_pair(2, chosen="очень длинный ответ " * 400),
                                              "over_context_length"),
    "missing column": ({k: v for k, v in _pair(2).items() if k != "rejected"}, "missing_field:rejected"),
    "wrong type": (_pair(2, chosen={"text": "да"}), "wrong_type"),
    "broken JSON line": (b'{"prompt": "a", "chosen": ', "broken_json_line"),
    "duplicate ids": (_pair(1, rejected="Другое."), "duplicate_pair_id"),
}


@pytest.mark.parametrize("kind", list(PAIR_CASES))
def test_bad_pair_is_quarantined_with_its_rule(tmp_path, kind, tiny_tokenizer):
    bad, rule = PAIR_CASES[kind]
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_lines(_pair(1), bad, _pair(3)))
    pairs = read_preference_pairs(path)
    kept, quarantine = validate_pairs(pairs, max_tokens=256, tokenizer=tiny_tokenizer)
    assert len(pairs) == 3 == len(kept) + len(quarantine)
    assert len(quarantine) == 1 and rule in quarantine["rule"].iloc[0]
    assert quarantine["source_row"].iloc[0] == 2 and quarantine["source_file"].iloc[0] == str(path)


def test_conversational_pairs_are_read_as_text(tmp_path):
    path = tmp_path / "conv.jsonl"
    path.write_bytes(_lines({"prompt": [{"role": "user", "content": "Привет?"}],
                             "chosen": [{"role": "assistant", "content": "Здравствуйте."}],
                             "rejected": [{"role": "assistant", "content": "Чего?"}]}))
    kept, quarantine = validate_pairs(read_preference_pairs(path))
    assert kept[["prompt", "chosen", "rejected"]].iloc[0].tolist() == ["Привет?", "Здравствуйте.", "Чего?"]
    assert quarantine.empty


# ---------------------------------------------------------------------------------- feedback store
def test_feedback_store_refuses_bad_votes_with_the_rule(tmp_path):
    from ru_rlhf.io.feedback_store import FeedbackStore, VoteError

    store = FeedbackStore(tmp_path / "votes.sqlite")
    token = store.serve("Вопрос?", "p1", ["sft", "dpo"], ["Ответ один.", "Ответ два."])
    good = [{"helpfulness": 4, "truthfulness": 4, "harmlessness": 5}] * 2
    cases = [
        (dict(token="forged", ratings=good, choice=0), "unknown token"),
        (dict(token=token, ratings=[{**good[0], "helpfulness": 9}, good[1]], choice=0), "integer 1–5"),
        (dict(token=token, ratings=[{"helpfulness": 4}, good[1]], choice=0), "rating of truthfulness"),
        (dict(token=token, ratings=good, choice=5), "choice must be one of the 2"),
        (dict(token=token, ratings=good[:1], choice=0), "expected ratings for 2 responses"),
    ]
    for kwargs, message in cases:
        with pytest.raises(VoteError, match=message):
            store.vote(annotator="a", **kwargs)
    assert store.count() == 0  # nothing half-stored
    store.vote(token, "a", good, 1)
    with pytest.raises(VoteError, match="already been voted on"):  # a duplicate vote
        store.vote(token, "a", good, 0)
    assert store.count() == 1
    store.close()


def test_a_corrupt_or_truncated_store_names_the_file(tmp_path):
    from kedro.io import DatasetError

    from ru_rlhf.io.datasets import FeedbackDataset

    path = tmp_path / "votes.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatasetError, match=rf"{path}: not a readable SQLite vote store .*rule: corrupt_store"):
        FeedbackDataset(str(path)).load()
    # a store cut short mid-file
    from ru_rlhf.io.feedback_store import FeedbackStore

    good = tmp_path / "good.sqlite"
    store = FeedbackStore(good)
    tok = store.serve("В?", "p", ["a", "b"], ["x", "y"])
    store.vote(tok, "a", [{"helpfulness": 3, "truthfulness": 3, "harmlessness": 3}] * 2, 0)
    store.close()
    con = sqlite3.connect(good)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = good.read_bytes()
    cut = tmp_path / "cut.sqlite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match=rf"{cut}: not a readable SQLite vote store"):
        FeedbackDataset(str(cut)).load()
