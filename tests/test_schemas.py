"""The document schema and the quarantine split: each bad row is quarantined with its rule."""

from __future__ import annotations

import pandas as pd
import pytest

from ru_rlhf.schemas import cyrillic_share, document_schema, split_by_schema

GOOD = dict(doc_id="d1", lang="ru", source="s", title="t", text="Мост открыли в Казани весной.", license="MIT")


def _frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{**GOOD, **r} for r in rows])


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        ({"doc_id": "e", "text": "   "}, "text:non_empty_text"),
        ({"doc_id": "l", "lang": "en"}, "lang:known_lang"),
        ({"doc_id": "lat", "text": "The bridge was opened in Kazan today."}, "text:cyrillic_share_ge_0.5"),
        ({"doc_id": "s", "text": "Мост."}, "text:length_between_20_20000"),
        ({"doc_id": "n", "text": None}, "text:not_nullable"),
    ],
)
def test_each_bad_row_lands_in_quarantine_with_its_rule(row, rule):
    kept, bad = split_by_schema(_frame({}, row), document_schema())
    assert list(kept["doc_id"]) == ["d1"]
    assert list(bad["doc_id"]) == [row["doc_id"]]
    assert rule in bad.loc[0, "rule"].split(";")


def test_duplicate_id_keeps_the_first():
    kept, bad = split_by_schema(_frame({}, {"text": "Другой текст про Казань и мост."}), document_schema())
    assert list(kept["text"]) == [GOOD["text"]]
    assert bad.loc[0, "rule"] == "doc_id:unique"


def test_a_row_breaking_two_rules_names_both():
    _, bad = split_by_schema(_frame({"doc_id": "x", "lang": "de", "text": "Latin only text here, long enough"}),
                             document_schema())
    assert set(bad.loc[0, "rule"].split(";")) == {"lang:known_lang", "text:cyrillic_share_ge_0.5"}


def test_missing_column_is_a_table_error_not_a_quarantine():
    with pytest.raises(ValueError, match="documents: the table as a whole"):
        split_by_schema(_frame({}).drop(columns=["lang"]), document_schema())


def test_cyrillic_share():
    assert cyrillic_share("Казан 2024") == 1.0
    assert cyrillic_share("abc где") == 0.5
    assert cyrillic_share("123 !!!") == 0.0
    assert cyrillic_share("Әлмәт һәм Түбән Кама") == 1.0
