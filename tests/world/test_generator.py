"""The bundled world: deterministic, varied, realistic in length, and its facts are in its text."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from ru_rlhf.text import split_sentences
from ru_rlhf.world import corpus_jsonl, facts_csv, generate_world, quantity_surface, ru_plural


def test_same_seed_same_bytes_and_other_seed_differs():
    a = generate_world(seed=5, n_ru=30, n_tt=10)
    b = generate_world(seed=5, n_ru=30, n_tt=10)
    c = generate_world(seed=6, n_ru=30, n_tt=10)
    assert corpus_jsonl(a[0]) == corpus_jsonl(b[0]) and facts_csv(a[1]) == facts_csv(b[1])
    assert corpus_jsonl(a[0]) != corpus_jsonl(c[0])


def test_committed_world_regenerates_byte_identically(project_root):
    docs, facts = generate_world()  # the CLI defaults
    for name, text in (("world_corpus.jsonl", corpus_jsonl(docs)), ("world_facts.csv", facts_csv(facts))):
        committed = (project_root / "data" / "01_raw" / name).read_bytes()
        assert hashlib.sha256(committed).hexdigest() == hashlib.sha256(text.encode("utf-8")).hexdigest(), name


def test_default_volumes_lengths_and_variety(project_root):
    lines = (project_root / "data" / "01_raw" / "world_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [json.loads(x) for x in lines]
    langs = Counter(d["lang"] for d in docs)
    assert langs["ru"] >= 600 and langs["tt"] >= 150
    n_sentences = Counter(len(split_sentences(d["text"])) for d in docs)
    assert set(n_sentences) <= set(range(3, 9)), n_sentences
    assert len(n_sentences) == 6  # every length from 3 to 8 occurs
    # many sentence shapes: the first three words of the opening sentence vary across documents
    openings = Counter(" ".join(d["text"].split()[:1]) for d in docs if d["lang"] == "ru")
    assert len({d["text"] for d in docs}) == len(docs)
    shapes = Counter(_shape(s) for d in docs for s in split_sentences(d["text"]))
    assert len(shapes) >= 60, len(shapes)
    assert len(openings) > 5


def _shape(sentence: str) -> str:
    """A sentence with digits and capitalised words masked: its template, roughly."""
    return " ".join("N" if w[:1].isdigit() else "X" if w[:1].isupper() else w for w in sentence.split())


def test_every_fact_is_stated_in_its_document():
    docs, facts = generate_world(seed=3, n_ru=80, n_tt=40)
    text = {d["doc_id"]: d["text"] for d in docs}
    for f in facts:
        if f["slot"] in ("event", "role"):
            continue  # stated through verbs and templates, not verbatim
        assert f["surface"] in text[f["doc_id"]], f
    slots = Counter(f["slot"] for f in facts)
    assert slots["date"] == slots["place"] == slots["q1"] == len(docs)
    assert 0 < slots["person"] < len(docs) and 0 < slots["org"] < len(docs)


def test_russian_plurals_and_tatar_units():
    forms = ("метр", "метра", "метров")
    assert [ru_plural(n, forms) for n in (1, 2, 5, 11, 12, 21, 22, 25, 111, 104)] == [
        "метр", "метра", "метров", "метров", "метров", "метр", "метра", "метров", "метров", "метра"]
    assert quantity_surface("cost", 351, "ru") == "351 миллион рублей"
    assert quantity_surface("cost", 353, "ru") == "353 миллиона рублей"
    assert quantity_surface("cost", 350, "tt") == "350 миллион сум"
