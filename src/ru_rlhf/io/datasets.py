"""Kedro datasets for the project's own formats."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from ru_rlhf.io.readers import READERS, RECORD_FIELDS


class CorpusDataset(AbstractDataset[None, pd.DataFrame]):
    """Reads one or more corpus sources into one raw document table (read-only).

    Each source names a ``format`` (``jsonl``, ``squad``, ``text_folder``, ``conllu``), a
    ``path``, and the reader's other arguments (``lang``, ``source``, ``license``, ...). Every row
    of every source comes back, good or bad (see :mod:`ru_rlhf.io.readers`).

    Example (``conf/external/catalog.yml``)::

        raw_corpus:
          type: ru_rlhf.io.datasets.CorpusDataset
          sources:
            - {format: squad, path: ../shared/data/xquad/xquad.ru.json, lang: ru, ...}
    """

    def __init__(self, sources: list[dict[str, Any]], metadata: dict | None = None) -> None:
        if not sources:
            raise DatasetError("CorpusDataset needs at least one source")
        for s in sources:
            if s.get("format") not in READERS:
                raise DatasetError(f"unknown corpus format {s.get('format')!r}; known: {sorted(READERS)}")
        self._sources = deepcopy(sources)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        records: list[dict] = []
        for s in self._sources:
            kwargs = {k: v for k, v in s.items() if k != "format"}
            records.extend(READERS[s["format"]](**kwargs))
        return pd.DataFrame.from_records(records, columns=list(RECORD_FIELDS))

    def save(self, data: None) -> None:
        raise DatasetError("CorpusDataset is read-only: corpora are inputs")

    def _describe(self) -> dict[str, Any]:
        return {"sources": [{"format": s["format"], "path": s["path"]} for s in self._sources]}

    def _exists(self) -> bool:
        from pathlib import Path

        return all(Path(s["path"]).exists() for s in self._sources)
