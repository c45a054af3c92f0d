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
raises :class:`AnnotationReadError` naming it (the line, where there is one) and the rule. CSV and
TSV files are read a physical line at a time by :func:`read_delimited` (a TSV with no quoting, so
that a ``"`` cannot merge lines; a header naming a column twice is ``duplicate_column``); ids and
annotator names are NFC-normalised and stripped (``id_normalised`` says which rows changed); the
file access rules (directories, symlink loops, gzip, UTF-16, over-long lines) are those of
:mod:`ru_rlhf.io.readers`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from ru_rlhf.io.readers import (
    MAX_LINE_BYTES,
    format_suffix,
    iter_file_lines,
    no_readable_line,
    non_utf8_error,
    normalise_id,
    normalise_ids,
    normalise_status,
    read_file_text,
)

LONG_COLUMNS = ["item_id", "prompt_id", "response_id", "annotator_id", "criterion", "score", "choice", "source"]
REQUIRED = ("item_id", "annotator_id", "criterion")
ID_FIELDS = ("item_id", "prompt_id", "response_id", "annotator_id", "choice")
"""Fields normalised as ids (NFC, surrounding white space stripped); ``choice`` names a response."""
BOOLEAN_WORDS = {"true", "false"}

_CSV_LIMIT = threading.Lock()  # guards the process-wide csv.field_size_limit while a file is read


class AnnotationReadError(ValueError):
    """An annotation file that cannot be read at all (names the file and the rule)."""


def _fail(path, message: str, rule: str, line: int | None = None) -> AnnotationReadError:
    where = f"line {line}: " if line is not None else ""
    exc = AnnotationReadError(f"{path}: {where}{message} (rule: {rule})")
    exc.rule = rule
    return exc


def _text(path: Path) -> str:
    return read_file_text(path, AnnotationReadError)


def empty_long_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in [*LONG_COLUMNS, "source_file", "source_row"]})


# --------------------------------------------------------------------------- delimited files
class Delimited(NamedTuple):
    """A CSV/TSV file as read: the header (names NFC-normalised and stripped) and one entry per
    record, ``(source_row, fields | None, read_error | None)``; ``source_row`` is the physical line
    the record starts on, ``fields`` is padded with None to the header's length."""

    header: list[str]
    rows: list[tuple[int, list | None, str | None]]


def read_delimited(path: str | Path, tsv: bool, max_line_bytes: int = MAX_LINE_BYTES) -> Delimited:
    """Read a CSV (``tsv=False``: comma, ``"`` quoting) or a TSV (tab, no quoting at all).

    The file is read a physical line at a time (:func:`ru_rlhf.io.readers.iter_file_lines`), so a
    record's row is the line it starts on even after a quoted field with new lines in it, and an
    over-long line is never parsed: its record is ``line_too_long``. A single-line record with more
    fields than the header is ``wrong_field_count``; one with a stray quote (``a,"b"c``) is
    ``bad_quote``; blank lines are not records.

    Raises:
        AnnotationReadError: the file cannot be read (see
            :func:`ru_rlhf.io.readers.open_checked`), a byte is not UTF-8 (``non_utf8``), there is no
            header (``missing_column``), a column appears twice (``duplicate_column``), or a quote
            is never closed or merges lines into one record (``unmatched_quote``).
    """
    path = Path(path)
    too_long: dict[int, object] = {}

    def lines():
        for ln in iter_file_lines(path, AnnotationReadError, max_line_bytes):
            if ln.too_long:
                too_long[ln.number] = ln
                yield "\n"  # a blank stand-in: the record it was in is marked below
                continue
            try:
                text = ln.data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise non_utf8_error(AnnotationReadError, path, ln.offset + err.start, ln.number) from err
            yield text + "\n"

    if tsv:
        reader = csv.reader(lines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines(), delimiter=",", quotechar='"', strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, list | None, str | None]] = []
    end = 0
    _CSV_LIMIT.acquire()  # csv.field_size_limit is process-wide: one delimited read at a time
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 16 * max_line_bytes))
    try:
        while True:
            start = end + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                end = reader.line_num
                if "unexpected end of data" in str(err):
                    raise _fail(path, f"a quoted field opened in the record that starts on this line is never "
                                      f"closed (it runs to the end of the file, line {end})", "unmatched_quote",
                                line=start) from err
                if end > start:
                    raise _fail(path, f"a quoted field merges lines {start}-{end} into one record and then breaks "
                                      f"({err})", "unmatched_quote", line=start) from err
                if header is None:
                    raise _fail(path, f"header cannot be parsed ({err})", "bad_quote", line=start) from err
                rows.append((start, None, "bad_quote"))
                continue
            end = reader.line_num
            longs = [n for n in too_long if start <= n <= end]
            if longs:
                if header is None:
                    raise _fail(path, f"header line is over {max_line_bytes} bytes", "line_too_long", line=start)
                rows.append((start, None, "line_too_long"))
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if header is None:
                header = [normalise_id(f)[0] for f in fields]
                seen: dict[str, int] = {}
                for k, name in enumerate(header, start=1):
                    if name in seen:
                        raise _fail(path, f"column {name!r} appears twice in the header (columns {seen[name]} "
                                          f"and {k})", "duplicate_column", line=start)
                    seen[name] = k
                continue
            if end > start and len(fields) != len(header):
                raise _fail(path, f"a quoted field merges lines {start}-{end} into one record of {len(fields)} "
                                  f"fields (the header has {len(header)})", "unmatched_quote", line=start)
            if len(fields) > len(header):
                rows.append((start, None, "wrong_field_count"))
                continue
            rows.append((start, fields + [None] * (len(header) - len(fields)), None))
    finally:
        csv.field_size_limit(old_limit)
        _CSV_LIMIT.release()
    if header is None:
        raise _fail(path, "no header row", "missing_column")
    return Delimited(header, rows)


def _score_rule(raw, number) -> str | None:
    """``score_is_boolean`` for ``true``/``false`` (JSON or text), ``score_not_a_number`` for other
    text that is not a number; None when the score is a number or absent."""
    if isinstance(raw, bool) or (isinstance(raw, str) and raw.strip().lower() in BOOLEAN_WORDS):
        return "score_is_boolean"
    if _present(raw) and pd.isna(number):
        return "score_not_a_number"
    return None


def read_long_table(path: str | Path, default_source: str = "human",
                    max_line_bytes: int = MAX_LINE_BYTES) -> pd.DataFrame:
    """Read a long annotation table: CSV (``.csv``), TSV (``.tsv``: tab-separated, no quoting) or JSON
    lines (``.jsonl``); any of them may be gzipped (``.csv.gz`` ...).

    Returns:
        The table with ``source_file``, ``source_row`` (the physical line the row starts on; the
        header is line 1), ``read_error`` (``broken_json_line``, ``non_utf8``, ``not_an_object``,
        ``line_too_long``, ``wrong_field_count``, ``bad_quote``, ``score_is_boolean``,
        ``score_not_a_number``) and ``id_normalised`` (an id changed by NFC or stripping).

    Raises:
        AnnotationReadError: the file cannot be read (missing, a directory, empty, UTF-16, ...),
            a CSV is not UTF-8, a required column is missing or one appears twice, a quote is
            never closed, or no JSON line is an object (``no_readable_line``).
    """
    path = Path(path)
    fmt = format_suffix(path)
    rows: list[dict] = []
    if fmt == ".jsonl":
        any_object = False
        for ln in iter_file_lines(path, AnnotationReadError, max_line_bytes):
            i = ln.number
            if ln.too_long:
                rows.append({"source_row": i, "read_error": "line_too_long"})
                continue
            if not ln.data.strip():
                continue
            try:
                obj = json.loads(ln.data.decode("utf-8"))
            except UnicodeDecodeError:
                rows.append({"source_row": i, "read_error": "non_utf8"})
                continue
            except json.JSONDecodeError:
                rows.append({"source_row": i, "read_error": "broken_json_line"})
                continue
            if not isinstance(obj, dict):
                rows.append({"source_row": i, "read_error": "not_an_object"})
                continue
            any_object = True
            rows.append({**obj, "source_row": i, "read_error": None})
        if rows and not any_object:
            raise no_readable_line(AnnotationReadError, path, [(r["source_row"], r["read_error"]) for r in rows])
        columns = {c for r in rows for c in r} - {"source_row", "read_error"}
    else:
        table = read_delimited(path, tsv=fmt == ".tsv", max_line_bytes=max_line_bytes)
        for row, fields, error in table.rows:
            if fields is None:
                rows.append({"source_row": row, "read_error": error})
            else:
                rows.append({**{h: (v if v != "" else None) for h, v in zip(table.header, fields)},
                             "source_row": row, "read_error": None})
        columns = set(table.header)
    missing = [c for c in REQUIRED if c not in columns]
    if "score" not in columns and "choice" not in columns:
        missing.append("score|choice")
    if missing and not (not rows and fmt == ".jsonl"):
        raise AnnotationReadError(f"{path}: missing column(s) {missing} (rule: missing_column)")
    for r in rows:
        r["id_normalised"] = normalise_ids(r, ID_FIELDS)
    df = pd.DataFrame(rows)
    for c in [*LONG_COLUMNS, "source_row", "read_error", "id_normalised"]:
        if c not in df.columns:
            df[c] = None
    df["id_normalised"] = df["id_normalised"].map(lambda v: v is True)
    df["source"] = df["source"].fillna(default_source)
    df["source_file"] = str(path)
    raw_scores = df["score"].tolist()
    df["score"] = pd.to_numeric(df["score"].map(lambda v: None if isinstance(v, bool) else v), errors="coerce")
    rules = [_score_rule(r, n) for r, n in zip(raw_scores, df["score"])]
    bad_score = pd.Series([r is not None for r in rules], index=df.index) & df["read_error"].isna()
    df.loc[bad_score, "read_error"] = pd.Series(rules, index=df.index)[bad_score]
    df["read_error"] = pd.Series([e if isinstance(e, str) else None for e in df["read_error"]], index=df.index,
                                 dtype="object")
    return df[[*LONG_COLUMNS, "source_file", "source_row", "read_error", "id_normalised"]]


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and pd.isna(v)) and str(v).strip() != ""


TOLOKA_IDS = (("item_id", "INPUT:item_id"), ("prompt_id", "INPUT:prompt_id"),
              ("response_id", "INPUT:response_id"), ("annotator_id", "ASSIGNMENT:worker_id"))


def read_toloka_tsv(path: str | Path,
                    max_line_bytes: int = MAX_LINE_BYTES) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read a Toloka TSV export (tab-separated, no quoting: a ``"`` is an ordinary character).

    Returns:
        ``(labels, control, rejected)``: ``labels`` in the long layout (``source = "toloka"``) with
        ``read_error`` and ``id_normalised``; ``control`` has one row per golden task and
        criterion with the worker's answer and the golden one; ``rejected`` has one row per line
        that gives no labels: rejected assignments (``rule = "rejected_assignment"``; the status
        is compared stripped and in upper case) and lines that cannot be read (``line_too_long``,
        ``wrong_field_count``). Every data line is in exactly one of them (once per ``OUTPUT:``
        column in ``labels`` and ``control``).

    Raises:
        AnnotationReadError: the file cannot be read, a column is missing or appears twice
            (``duplicate_column``), or it is not UTF-8.
    """
    path = Path(path)
    table = read_delimited(path, tsv=True, max_line_bytes=max_line_bytes)
    header = table.header
    need = ["INPUT:item_id", "ASSIGNMENT:worker_id", "ASSIGNMENT:status"]
    missing = [c for c in need if c not in header]
    outputs = [c for c in header if c.startswith("OUTPUT:")]
    if not outputs:
        missing.append("OUTPUT:*")
    if missing:
        raise AnnotationReadError(f"{path}: missing column(s) {missing} (rule: missing_column)")
    labels, control, rejected = [], [], []
    for i, fields, error in table.rows:
        if fields is None:
            rejected.append({"item_id": None, "prompt_id": None, "response_id": None, "annotator_id": None,
                             "source": "toloka", "source_file": str(path), "source_row": i, "id_normalised": False,
                             "rule": error})
            continue
        row = dict(zip(header, fields))
        base: dict = {}
        changed = False
        for key, col in TOLOKA_IDS:
            base[key], c = normalise_id(row.get(col))
            changed |= c
        base["response_id"] = base["response_id"] or base["item_id"]
        base.update(source="toloka", source_file=str(path), source_row=i, id_normalised=changed)
        if normalise_status(row.get("ASSIGNMENT:status")) == "REJECTED":
            rejected.append({**base, "rule": "rejected_assignment"})
            continue
        golden = {c[len("GOLDEN:"):]: row[c] for c in header if c.startswith("GOLDEN:") and _present(row.get(c))}
        for col in outputs:
            criterion = col[len("OUTPUT:"):]
            value = row.get(col)
            rec = {**base, "criterion": criterion}
            if criterion == "choice":
                choice, c = normalise_id(value)
                rec.update(criterion="overall", choice=choice, score=None, id_normalised=changed or c)
            else:
                rec.update(score=value, choice=None)
            if golden:
                control.append({**rec, "golden": golden.get(criterion)})
            else:
                labels.append(rec)
    labels_df = pd.DataFrame(labels, columns=[*LONG_COLUMNS, "source_file", "source_row", "id_normalised"])
    raw_scores = labels_df["score"].tolist()
    labels_df["score"] = pd.to_numeric(labels_df["score"], errors="coerce")
    labels_df["read_error"] = [_score_rule(raw, num) for raw, num in zip(raw_scores, labels_df["score"])]
    labels_df["id_normalised"] = labels_df["id_normalised"].astype(bool)
    labels_df = labels_df[[*LONG_COLUMNS, "source_file", "source_row", "read_error", "id_normalised"]]
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


# --------------------------------------------------------------------------- Toloka exports as they come
class OutputSpec(NamedTuple):
    """How one ``OUTPUT:<name>`` column of an export is read.

    ``criterion``: the name its labels get. ``level``: ``nominal`` or ``ordinal`` (scores: a category's
    position in ``categories``, from 1) or ``pairwise`` (``choice``: the category itself; list
    ``categories`` as ``[a, b]`` or ``[a, b, tie]``). ``categories``: every answer the column may hold,
    compared stripped and lower-cased; for an ordinal scale, in order from worst to best."""

    criterion: str
    level: str
    categories: tuple[str, ...]

    @classmethod
    def of(cls, value) -> OutputSpec:
        """From a parameters mapping ``{criterion, level, categories}`` (or an OutputSpec)."""
        if isinstance(value, cls):
            return value
        level = str(value.get("level", "nominal"))
        if level not in ("nominal", "ordinal", "pairwise"):
            raise ValueError(f"output level {level!r} is not nominal, ordinal or pairwise")
        cats = tuple(str(c).strip().lower() for c in value.get("categories") or ())
        if len(cats) < 2 or len(set(cats)) != len(cats):
            raise ValueError(f"output {value.get('criterion')!r}: categories must be two or more distinct answers")
        return cls(str(value["criterion"]), level, cats)


def toloka_item_id(values: list[str]) -> str:
    """A stable id for an item known only by its ``INPUT:*`` values (a real export has no item id column)."""
    import hashlib

    blob = json.dumps([str(v).strip() for v in values], ensure_ascii=False)
    return "toloka:" + hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def read_toloka_export(path: str | Path, outputs: dict, item_columns: list[str] | None = None,
                       delimiter: str | None = None,
                       max_line_bytes: int = MAX_LINE_BYTES) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read a Toloka export as Toloka writes it: no ``INPUT:item_id`` column, categorical outputs.

    Args:
        outputs: ``{"OUTPUT:<name>": {criterion, level, categories}}`` for every ``OUTPUT:*`` column of the
            file (:class:`OutputSpec`); a column not named here stops the read (``unmapped_output``), so no
            labels are dropped unseen.
        item_columns: the columns that identify an item (default: every ``INPUT:*`` column); the item id is
            a hash of their values (:func:`toloka_item_id`), ``prompt_id`` and ``response_id`` are set to it.
        delimiter: ``"tab"`` or ``"comma"``; default from the extension (``.tsv``/``.tsv.gz``: tab, else comma).

    Returns:
        ``(labels, control, rejected)`` as :func:`read_toloka_tsv`: ``labels`` in the long layout
        (``score`` for nominal and ordinal outputs, ``choice`` for pairwise ones; ``read_error`` is
        ``unknown_category`` for an answer not in the column's categories); ``control`` one row per
        golden task and output with ``golden`` and ``correct``; ``rejected`` the lines that give no labels
        (``rejected_assignment`` after the status is normalised, and unreadable lines). Every data line is
        in exactly one of them (once per output in ``labels`` and ``control``).

    Raises:
        AnnotationReadError: the file cannot be read, ``ASSIGNMENT:worker_id`` or an item column is missing
            (``missing_column``), or an ``OUTPUT:*`` column has no mapping (``unmapped_output``).
    """
    path = Path(path)
    specs = {col: OutputSpec.of(spec) for col, spec in outputs.items()}
    if delimiter is None:
        tsv = ".tsv" in "".join(path.suffixes).lower()
    elif delimiter in ("tab", "comma"):
        tsv = delimiter == "tab"
    else:
        raise ValueError(f"delimiter {delimiter!r} is not 'tab' or 'comma'")
    table = read_delimited(path, tsv=tsv, max_line_bytes=max_line_bytes)
    header = table.header
    items = list(item_columns) if item_columns else [c for c in header if c.startswith("INPUT:")]
    missing = [c for c in ["ASSIGNMENT:worker_id", *items, *specs] if c not in header] or ([] if items else ["INPUT:*"])
    if missing:
        raise AnnotationReadError(f"{path}: missing column(s) {missing} (rule: missing_column)")
    unmapped = [c for c in header if c.startswith("OUTPUT:") and c not in specs]
    if unmapped:
        raise AnnotationReadError(f"{path}: output column(s) {unmapped} have no mapping to a criterion "
                                  "(rule: unmapped_output); name each with its criterion, level and categories")
    labels, control, rejected = [], [], []
    for i, fields, error in table.rows:
        if fields is None:
            rejected.append({"item_id": None, "annotator_id": None, "source": "toloka", "source_file": str(path),
                             "source_row": i, "rule": error})
            continue
        row = dict(zip(header, fields))
        item = toloka_item_id([row.get(c) for c in items])
        annotator, changed = normalise_id(row.get("ASSIGNMENT:worker_id"))
        base = {"item_id": item, "prompt_id": item, "response_id": item, "annotator_id": annotator,
                "source": "toloka", "source_file": str(path), "source_row": i, "id_normalised": changed}
        if normalise_status(row.get("ASSIGNMENT:status")) == "REJECTED":
            rejected.append({**base, "rule": "rejected_assignment"})
            continue
        for col, spec in specs.items():
            answer = str(row.get(col) or "").strip().lower()
            golden_raw = row.get("GOLDEN:" + col[len("OUTPUT:"):])
            rec = {**base, "criterion": spec.criterion, "score": None, "choice": None, "read_error": None}
            if answer not in spec.categories:
                rec["read_error"] = f"unknown_category ({answer!r} not in {list(spec.categories)})"
            elif spec.level == "pairwise":
                rec["choice"] = answer
            else:
                rec["score"] = float(spec.categories.index(answer) + 1)
            if _present(golden_raw):
                golden = str(golden_raw).strip().lower()
                control.append({**rec, "golden": golden, "correct": answer == golden})
            else:
                labels.append(rec)
    cols = [*LONG_COLUMNS, "source_file", "source_row", "read_error", "id_normalised"]
    labels_df = pd.DataFrame(labels, columns=cols)
    labels_df["score"] = pd.to_numeric(labels_df["score"])
    return labels_df, pd.DataFrame(control), pd.DataFrame(rejected)


# --------------------------------------------------------------------------- wide annotator tables
def _wide_columns(header: list[str], annotators) -> list[tuple[str, str | None]]:
    """``[(value column, id column | None)]`` from a list of ``{value, id}`` or one ``{value, id}`` pattern with
    ``{n}`` (``annotator{n}`` / ``annotator{n}_id``), matched against the header in the order of ``n``."""
    if isinstance(annotators, dict):
        value, ident = str(annotators["value"]), annotators.get("id")
        if "{n}" not in value:
            raise ValueError("a wide-table annotator pattern needs {n} in its value column (annotator{n})")
        rx = re.compile("^" + re.escape(value).replace(r"\{n\}", r"(\d+)") + "$")
        found = sorted(((int(m.group(1)), h) for h in header if (m := rx.match(h))), key=lambda t: t[0])
        return [(h, str(ident).replace("{n}", str(n)) if ident else None) for n, h in found]
    return [(str(a["value"]), a.get("id")) for a in annotators]


def read_wide_table(path: str | Path, item_column: str, annotators, criterion: str, level: str = "ordinal",
                    categories: list | None = None, delimiter: str | None = None,
                    source: str = "human", max_line_bytes: int = MAX_LINE_BYTES) -> pd.DataFrame:
    """Read a wide annotation table (one row per item, one column per annotator) into the long layout.

    The usual export: ``item, annotator1, annotator1_id, annotator2, annotator2_id, …``. Each annotator slot is a
    value column and, optionally, the column holding who filled it (without one, the value column's name is the
    annotator). ``annotators`` lists the slots (``[{value: r1, id: r1_id}, …]``) or gives one pattern with ``{n}``
    (``{value: "annotator{n}", id: "annotator{n}_id"}``).

    Args:
        level: ``nominal``/``ordinal`` with ``categories`` (an answer's position, from 1, is its score) or
            without (the value must be a number); ``pairwise``: the value is a ``choice`` among ``categories``.
        delimiter: ``"tab"`` or ``"comma"``; by default from the extension (``.tsv``/``.tsv.gz``: tab).

    Returns:
        The long table (:data:`LONG_COLUMNS` with ``source_file``, ``source_row``, ``read_error``,
        ``id_normalised``), one row per filled slot; a slot left empty is not a label. A row that gives no label
        at all (all slots empty, or a line the file's rules reject) is one row with ``read_error``
        (``no_labels``, ``wrong_field_count``, …), so every data row of the file is accounted for. An answer
        outside ``categories`` is ``unknown_category``, a non-number without categories ``score_not_a_number``,
        a filled value with an empty id column ``missing_annotator_id``.

    Raises:
        AnnotationReadError: the file cannot be read, or the item column or a slot's columns are not in the
            header (``missing_column``), or no slot matches the pattern.
    """
    path = Path(path)
    if level not in ("nominal", "ordinal", "pairwise", "interval"):
        raise ValueError(f"level {level!r} is not nominal, ordinal, interval or pairwise")
    if delimiter not in (None, "tab", "comma"):
        raise ValueError(f"delimiter {delimiter!r} is not 'tab' or 'comma'")
    tsv = ".tsv" in "".join(path.suffixes).lower() if delimiter is None else delimiter == "tab"
    table = read_delimited(path, tsv=tsv, max_line_bytes=max_line_bytes)
    slots = _wide_columns(table.header, annotators)
    if not slots:
        raise AnnotationReadError(f"{path}: no annotator column matches {annotators} in the header {table.header} "
                                  "(rule: missing_column)")
    missing = [c for c in [item_column, *(v for v, _ in slots), *(i for _, i in slots if i)] if c not in table.header]
    if missing:
        raise AnnotationReadError(f"{path}: missing column(s) {missing} (rule: missing_column)")
    cats = [str(c).strip().lower() for c in categories] if categories else None
    if level == "pairwise" and not cats:
        raise ValueError("a pairwise wide table needs its categories (the choices)")
    rows = []
    base = {"criterion": criterion, "source": source, "source_file": str(path), "prompt_id": None,
            "response_id": None}
    for i, fields, error in table.rows:
        if fields is None:
            rows.append({**base, "item_id": None, "annotator_id": None, "score": None, "choice": None,
                         "source_row": i, "read_error": error, "id_normalised": False})
            continue
        row = dict(zip(table.header, fields))
        item, item_changed = normalise_id(row.get(item_column))
        n_before = len(rows)
        for value_col, id_col in slots:
            raw = (row.get(value_col) or "").strip()
            if not raw:
                continue
            ann_raw = row.get(id_col) if id_col else value_col
            ann, ann_changed = normalise_id(ann_raw)
            rec = {**base, "item_id": item, "prompt_id": item, "response_id": item, "annotator_id": ann,
                   "score": None, "choice": None, "source_row": i, "read_error": None,
                   "id_normalised": bool(item_changed or ann_changed)}
            answer = raw.lower()
            if not ann:
                rec["read_error"] = f"missing_annotator_id ({id_col} is empty)"
            elif cats and answer not in cats:
                rec["read_error"] = f"unknown_category ({answer!r} not in {cats})"
            elif level == "pairwise":
                rec["choice"] = answer
            elif cats:
                rec["score"] = float(cats.index(answer) + 1)
            else:
                try:
                    rec["score"] = float(raw)
                except ValueError:
                    rec["read_error"] = "score_not_a_number"
            rows.append(rec)
        if len(rows) == n_before:
            rows.append({**base, "item_id": item, "annotator_id": None, "score": None, "choice": None,
                         "source_row": i, "read_error": "no_labels", "id_normalised": bool(item_changed)})
    df = pd.DataFrame(rows, columns=[*LONG_COLUMNS, "source_file", "source_row", "read_error", "id_normalised"])
    df["score"] = pd.to_numeric(df["score"])
    return df
