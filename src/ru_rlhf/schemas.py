"""Pandera schemas of the project's tables, and the quarantine split that uses them.

Each schema names its checks, so that a row that fails lands in quarantine with a readable
rule (``text:cyrillic_share``, ``doc_id:unique``). :func:`split_by_schema` is the one place
where a table is divided into kept and quarantined rows; every pipeline calls it.
"""

from __future__ import annotations

import re

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

LANGS = ("ru", "tt")
TASKS = ("qa", "dialogue", "summarization")
SPLITS = ("train", "validation", "test")
VARIANTS = ("reference", "hedge", "flattery", "refusal", "wrong_fact", "rude")

_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_CYRILLIC = re.compile(r"[\u0400-\u04FF\u0500-\u052F]")


def cyrillic_share(text: str) -> float:
    """Share of the letters in ``text`` that are Cyrillic (Russian and Tatar letters alike)."""
    letters = _LETTER.findall(text or "")
    if not letters:
        return 0.0
    return sum(1 for ch in letters if _CYRILLIC.match(ch)) / len(letters)


def _isin(allowed: tuple[str, ...], name: str) -> pa.Check:
    """``isin`` with a readable rule name (pandera reports built-in checks by their repr)."""
    return pa.Check(lambda s: s.isin(allowed), name=name)


def document_schema(min_chars: int = 20, max_chars: int = 20_000,
                    min_cyrillic_share: float = 0.5) -> pa.DataFrameSchema:
    """The document table's schema; the bounds come from ``parameters_ingestion.yml``."""
    return pa.DataFrameSchema(
        {
            "doc_id": pa.Column(str, nullable=False, unique=True, report_duplicates="exclude_first",
                                checks=pa.Check(lambda s: s.str.len() > 0, name="non_empty_id")),
            "lang": pa.Column(str, checks=_isin(LANGS, "known_lang"), nullable=False),
            "source": pa.Column(str, nullable=False),
            "title": pa.Column(str, nullable=True),
            "text": pa.Column(
                str,
                nullable=False,
                checks=[
                    pa.Check(lambda s: s.str.strip().str.len() > 0, element_wise=False,
                             name="non_empty_text"),
                    pa.Check(lambda s: s.str.len().between(min_chars, max_chars),
                             name=f"length_between_{min_chars}_{max_chars}"),
                    pa.Check(lambda s: s.map(cyrillic_share) >= min_cyrillic_share,
                             name=f"cyrillic_share_ge_{min_cyrillic_share}"),
                ],
            ),
            "license": pa.Column(str, nullable=False),
        },
        strict=False,
        coerce=False,
        name="documents",
    )


PROMPT_SCHEMA = pa.DataFrameSchema(
    {
        "prompt_id": pa.Column(str, unique=True),
        "doc_id": pa.Column(str),
        "task_type": pa.Column(str, _isin(TASKS, "known_task")),
        "lang": pa.Column(str, _isin(LANGS, "known_lang")),
        "split": pa.Column(str, _isin(SPLITS, "known_split")),
        "prompt": pa.Column(str, pa.Check(lambda s: s.str.strip().str.len() > 0, name="non_empty_prompt")),
        "reference": pa.Column(str, pa.Check(lambda s: s.str.strip().str.len() > 0,
                                             name="non_empty_reference")),
    },
    strict=False,
    name="prompts",
)

DEMONSTRATION_SCHEMA = pa.DataFrameSchema(
    {
        "demo_id": pa.Column(str, unique=True),
        "prompt_id": pa.Column(str),
        "variant": pa.Column(str, _isin(VARIANTS, "known_variant")),
        "response": pa.Column(str, pa.Check(lambda s: s.str.strip().str.len() > 0,
                                            name="non_empty_response")),
        "split": pa.Column(str, _isin(SPLITS, "known_split")),
    },
    strict=False,
    name="demonstrations",
)


def split_by_schema(df: pd.DataFrame, schema: pa.DataFrameSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate ``df`` lazily and split it into rows that pass and rows that fail.

    Returns:
        ``(kept, quarantined)``: ``quarantined`` has the failing rows with a ``rule`` column
        (``column:check`` for every check the row broke, joined with ``;``). Table-level
        failures (a missing column, a wrong dtype) cannot be pinned to rows and raise.
    """
    df = df.reset_index(drop=True)
    try:
        schema.validate(df, lazy=True)
        return df, df.iloc[0:0].assign(rule=pd.Series(dtype="str"))
    except SchemaErrors as err:
        cases = err.failure_cases
    row_cases = cases[cases["index"].notna()]
    table_cases = cases[cases["index"].isna()]
    if len(table_cases):
        problems = "; ".join(f"{c}: {k} ({f})" for c, k, f in
                             table_cases[["column", "check", "failure_case"]].itertuples(index=False))
        raise ValueError(f"{schema.name}: the table as a whole breaks its schema: {problems}")
    rules: dict[int, list[str]] = {}
    for col, check, idx in row_cases[["column", "check", "index"]].itertuples(index=False):
        if str(check) == "multiple_fields_uniqueness":  # a unique key of several columns
            col, check = "+".join(schema.unique), "unique"
        name = "unique" if str(check) == "field_uniqueness" else str(check)
        rules.setdefault(int(idx), [])
        rule = f"{col}:{name}"
        if rule not in rules[int(idx)]:
            rules[int(idx)].append(rule)
    bad = sorted(rules)
    quarantined = df.loc[bad].assign(rule=[";".join(rules[i]) for i in bad])
    kept = df.drop(index=bad).reset_index(drop=True)
    return kept, quarantined.reset_index(drop=True)


class TableError(ValueError):
    """A table that breaks its schema; the message names each failing row and rule."""


def check_table(df: pd.DataFrame, schema: pa.DataFrameSchema, id_column: str | None = None,
                source: str = "") -> pd.DataFrame:
    """Validate a table that must be whole (no quarantine): raise naming the rows and rules.

    Args:
        df: the table.
        schema: its schema.
        id_column: a column that identifies rows in the message (e.g. ``prompt_id``).
        source: where the table came from (a dataset name or file), for the message.

    Raises:
        TableError: ``<source>: row <i> (<id>): <column>:<rule>`` for up to 20 failures.
    """
    missing = [c for c, col in schema.columns.items() if c not in df.columns and col.required]
    if missing:
        raise TableError(f"{source or schema.name}: missing column(s) {missing}")
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as err:
        lines = []
        for col, check, idx in err.failure_cases[["column", "check", "index"]].itertuples(index=False):
            if pd.isna(idx):
                lines.append(f"{col}: {check}")
                continue
            ident = f" ({df.loc[idx, id_column]})" if id_column and id_column in df.columns else ""
            name = "unique" if str(check) == "field_uniqueness" else check
            lines.append(f"row {int(idx)}{ident}: {col}:{name}")
        more = f" … and {len(lines) - 20} more" if len(lines) > 20 else ""
        raise TableError(f"{source or schema.name} breaks its schema: " + "; ".join(lines[:20]) + more) from None
