"""The ingestion pipeline as a slice on an in-memory DataCatalog, with bad rows mixed in."""

from __future__ import annotations

import pandas as pd
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.ingestion import create_pipeline
from tests.conftest import keep_catalog
from tests.params_helpers import base_params

PARAMS = base_params("ingestion", {"seed": 3, "prompts": {"per_task": 24, "min_tatar_share": 0.25}})


def _bad_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """Seven kinds of bad row, each with the rule it should be quarantined under."""
    t = raw.iloc[0].to_dict()
    bad = [
        t | {"doc_id": "bad-empty", "text": "   ", "source_row": 1001},
        t | {"doc_id": "bad-lang", "lang": "kk", "source_row": 1002},
        t | {"source_row": 1003},  # duplicate doc_id and duplicate text
        t | {"doc_id": "bad-latin", "text": "Only Latin letters in this document, none Cyrillic.", "source_row": 1004},
        t | {"doc_id": None, "text": None, "read_error": "broken_json_line", "source_row": 1005},
        t | {"doc_id": None, "text": None, "read_error": "non_utf8", "source_row": 1006},
        t | {"doc_id": "bad-missing", "lang": None, "read_error": "missing_field:lang", "source_row": 1007},
        t | {"doc_id": "dup-text", "source_row": 1008},  # same text, new id → exact duplicate
    ]
    return pd.concat([raw, pd.DataFrame(bad)], ignore_index=True)


def test_ingestion_slice_accounts_for_every_row(small_world):
    raw, world_facts = small_world
    raw = _bad_rows(raw)
    catalog = keep_catalog({"raw_corpus": raw, "world_facts": world_facts, "params:ingestion": PARAMS},
                           keep=["documents", "document_quarantine", "ingestion_summary", "demonstrations"])
    SequentialRunner().run(create_pipeline(), catalog)
    docs, quarantine = catalog.load("documents"), catalog.load("document_quarantine")
    summary = catalog.load("ingestion_summary")

    assert len(raw) == len(docs) + len(quarantine) == summary["documents"]["read"]
    rules = {row: rule.split(";")[0] for row, rule in zip(quarantine["source_row"], quarantine["rule"])}
    assert rules == {
        1001: "text:non_empty_text",
        1002: "lang:known_lang",
        1003: "doc_id:unique",
        1004: "text:cyrillic_share_ge_0.5",
        1005: "broken_json_line",
        1006: "non_utf8",
        1007: "missing_field:lang",
        1008: f"exact_duplicate_of:{raw.loc[0, 'doc_id']}",
    }
    assert summary["prompts"]["by_task"] == {"dialogue": 24, "qa": 24, "summarization": 24}
    assert summary["prompts"]["tatar_share"] == 0.25
    assert summary["prompts"]["documents_in_two_splits"] == 0
    assert summary["documents"]["quarantine_by_rule"]["exact_duplicate_of"] == 1
    assert len(catalog.load("demonstrations")) >= 72
