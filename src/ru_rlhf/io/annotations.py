"""Importers of human labels into the long annotation table.

The long table (documented in ``docs/data_formats.md``) has one row per rating::

    item_id, prompt_id, response_id, annotator_id, criterion, score | choice, source

* :func:`read_long_table`: CSV or JSONL in that layout (``source`` defaults to ``human``);
* :func:`read_toloka_tsv`: a Toloka export (``INPUT:*``, ``OUTPUT:*``, ``GOLDEN:*``,
  ``ASSIGNMENT:worker_id``, ``ASSIGNMENT:status``). Rejected assignments are dropped with a
  count (as quarantine rows); tasks whose ``GOLDEN:*`` is set are control tasks: they score each
  worker's accuracy and are kept out of α and of the pairs;
* :func:`read_reliability_matrix`: a raters × units (or units × raters) matrix, the layout of the
  published Krippendorff examples.

Every row read comes back as kept, control, or quarantined; a file that cannot be read at all
raises :class:`AnnotationReadError` naming it and the rule.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from ru_rlhf.io.readers import read_file_text

LONG_COLUMNS = ["item_id", "prompt_id", "response_id", "annotator_id", "criterion", "score", "choice", "source"]
REQUIRED = ("item_id", "annotator_id", "criterion")


class AnnotationReadError(ValueError):
    """An annotation file that cannot be read at all (names the file and the rule)."""


def _text(path: Path) -> str:
    return read_file_text(path, AnnotationReadError)


def empty_long_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in [*LONG_COLUMNS, "source_file", "source_row"]})


def read_long_table(path: str | Path, default_source: str = "human") -> pd.DataFrame:
    """Read a long annotation table from CSV (``.csv``) or JSON lines (``.jsonl``).

    Returns:
        The table with ``source_file`` and ``source_row`` (1-based data row) added; a JSONL line
        that does not parse comes back with ``read_error = "broken_json_line"``.

    Raises:
        AnnotationReadError: missing or empty file, not UTF-8, or a required column missing.
    """
    path = Path(path)
    text = _text(path)
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                rows.append({**obj, "source_row": i} if isinstance(obj, dict) else
                            {"source_row": i, "read_error": "not_an_object"})
            except json.JSONDecodeError:
                rows.append({"source_row": i, "read_error": "broken_json_line"})
        df = pd.DataFrame(rows)
        columns = set(df.columns)
    else:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        columns = set(df.columns)
        df["source_row"] = range(2, len(df) + 2)  # line numbers: the header is line 1
    missing = [c for c in REQUIRED if c not in columns]
    if "score" not in columns and "choice" not in columns:
        missing.append("score|choice")
    if missing and not (df.empty and path.suffix == ".jsonl"):
        raise AnnotationReadError(f"{path}: missing column(s) {missing} (rule: missing_column)")
    for c in LONG_COLUMNS:
        if c not in df.columns:
            df[c] = None
    df["source"] = df["source"].fillna(default_source)
    df["source_file"] = str(path)
    if "read_error" not in df.columns:
        df["read_error"] = None
    raw_scores = df["score"].tolist()
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    not_number = [_present(r) and pd.isna(n) for r, n in zip(raw_scores, df["score"])]
    df.loc[pd.Series(not_number, index=df.index) & df["read_error"].isna(), "read_error"] = "score_not_a_number"
    return df[[*LONG_COLUMNS, "source_file", "source_row", "read_error"]]


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and pd.isna(v)) and str(v).strip() != ""


def read_toloka_tsv(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read a Toloka TSV export.

    Returns:
        ``(labels, control, rejected)``: ``labels`` in the long layout (``source = "toloka"``);
        ``control`` has one row per golden task and criterion with the worker's answer and the
        golden one; ``rejected`` has the rows of rejected assignments (``rule =
        "rejected_assignment"``).
    """
    path = Path(path)
    text = _text(path)
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    header = reader.fieldnames or []
    need = ["INPUT:item_id", "ASSIGNMENT:worker_id", "ASSIGNMENT:status"]
    missing = [c for c in need if c not in header]
    outputs = [c for c in header if c.startswith("OUTPUT:")]
    if not outputs:
        missing.append("OUTPUT:*")
    if missing:
        raise AnnotationReadError(f"{path}: missing column(s) {missing} (rule: missing_column)")
    labels, control, rejected = [], [], []
    for i, row in enumerate(reader, start=2):
        base = {"item_id": row.get("INPUT:item_id"), "prompt_id": row.get("INPUT:prompt_id"),
                "response_id": row.get("INPUT:response_id") or row.get("INPUT:item_id"),
                "annotator_id": row.get("ASSIGNMENT:worker_id"), "source": "toloka",
                "source_file": str(path), "source_row": i}
        if (row.get("ASSIGNMENT:status") or "").upper() == "REJECTED":
            rejected.append({**base, "rule": "rejected_assignment"})
            continue
        golden = {c[len("GOLDEN:"):]: row[c] for c in header if c.startswith("GOLDEN:") and _present(row.get(c))}
        for col in outputs:
            criterion = col[len("OUTPUT:"):]
            value = row.get(col)
            rec = {**base, "criterion": criterion}
            if criterion == "choice":
                rec.update(criterion="overall", choice=value, score=None)
            else:
                rec.update(score=value, choice=None)
            if golden:
                control.append({**rec, "golden": golden.get(criterion)})
            else:
                labels.append(rec)
    labels_df = pd.DataFrame(labels, columns=[*LONG_COLUMNS, "source_file", "source_row"])
    raw_scores = labels_df["score"].tolist()
    labels_df["score"] = pd.to_numeric(labels_df["score"], errors="coerce")
    labels_df["read_error"] = [
        "score_not_a_number" if _present(raw) and pd.isna(num) else None
        for raw, num in zip(raw_scores, labels_df["score"])
    ]
    control_df = pd.DataFrame(control)
    if not control_df.empty:
        control_df["correct"] = [
            _present(g) and str(a if c != "overall" else ch).strip() == str(g).strip()
            for a, ch, g, c in zip(control_df["score"], control_df["choice"], control_df["golden"],
                                   control_df["criterion"])
        ]
    return labels_df, control_df, pd.DataFrame(rejected)


def control_accuracy(control: pd.DataFrame) -> pd.DataFrame:
    """Each worker's accuracy on control (golden) tasks."""
    if control.empty:
        return pd.DataFrame(columns=["annotator_id", "control_answers", "control_accuracy"])
    control = control[control["golden"].map(_present)]
    g = control.groupby("annotator_id")["correct"]
    return pd.DataFrame({"control_answers": g.size(), "control_accuracy": g.mean().round(4)}).reset_index()


def read_reliability_matrix(path: str | Path, orientation: str = "raters_by_units", criterion: str = "score",
                            missing: tuple[str, ...] = ("", ".", "*", "NA")) -> pd.DataFrame:
    """Read a reliability matrix (as in the published Krippendorff examples) into the long table.

    Args:
        orientation: ``raters_by_units`` (rows are raters, columns units; Krippendorff 2011,
            Wikipedia) or ``units_by_raters`` (rows are units; Hayes & Krippendorff 2007).
        criterion: the criterion name to give the ratings.
        missing: cell values that mean "not rated".
    """
    path = Path(path)
    df = pd.read_csv(io.StringIO(_text(path)), dtype=str, keep_default_na=False)
    first = df.columns[0]
    df = df.set_index(first)
    if orientation == "units_by_raters":
        df = df.T
    elif orientation != "raters_by_units":
        raise ValueError(f"unknown orientation {orientation!r}")
    rows = []
    for rater, rec in df.iterrows():
        for unit, value in rec.items():
            if str(value).strip() in missing:
                continue
            rows.append({"item_id": str(unit), "prompt_id": None, "response_id": str(unit),
                         "annotator_id": str(rater), "criterion": criterion, "score": float(value),
                         "choice": None, "source": "reference", "source_file": str(path), "source_row": None})
    return pd.DataFrame(rows)
