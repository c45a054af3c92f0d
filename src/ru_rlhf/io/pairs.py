"""Preference pairs brought from outside, in TRL's ``prompt / chosen / rejected`` format.

A JSONL file, one pair per line, plain (``"prompt": "…", "chosen": "…", "rejected": "…"``) or
conversational (each field a list of ``{"role", "content"}`` messages; the prompt's turns and the
chosen/rejected assistant turns are joined into text). ``pair_id`` is optional (the line number
otherwise). :func:`read_preference_pairs` returns one record per line it saw (bad lines carry
``read_error``); :func:`validate_pairs` splits the records into kept and quarantined rows with the
rule each broke, so that read = kept + quarantined. A file that cannot be read at all raises
:class:`PairsReadError` naming it and the rule (the file access rules, ``.gz``, UTF-16 and over-long
lines are those of :mod:`ru_rlhf.io.readers`); so does a file none of whose lines is a JSON object
(``no_readable_line``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ru_rlhf.io.readers import (
    MAX_LINE_BYTES,
    iter_file_lines,
    no_readable_line,
    normalise_id,
    too_long_detail,
)
from ru_rlhf.text import same_text

PAIR_FIELDS = ("prompt", "chosen", "rejected")
COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "source_file", "source_row", "read_error", "id_normalised"]


class PairsReadError(ValueError):
    """A pairs file that cannot be read at all (names the file and the rule)."""


def _as_text(value, field: str) -> str:
    """A plain string, or the contents of a conversational field's messages joined by new lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(str(m["content"]) for m in value)
    raise TypeError(f"{field} is neither text nor a list of {{role, content}} messages")


def read_preference_pairs(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> pd.DataFrame:
    """Read a JSONL file of preference pairs (``.jsonl`` or ``.jsonl.gz``); unreadable lines come back
    with ``read_error``.

    A line over ``max_line_bytes`` bytes is ``line_too_long`` and is never decoded or parsed. The
    ``pair_id`` is NFC-normalised and stripped (``id_normalised`` says when that changed it).

    Raises:
        PairsReadError: the file cannot be read (missing, a directory, a symlink loop, empty,
            UTF-16, ...), or none of its lines is a JSON object (``no_readable_line``).
    """
    path = Path(path)
    rows = []
    any_object = False
    for ln in iter_file_lines(path, PairsReadError, max_line_bytes):
        i, raw = ln.number, ln.data
        rec = {"pair_id": None, "prompt": None, "chosen": None, "rejected": None, "source_file": str(path),
               "source_row": i, "read_error": None, "id_normalised": False}
        if ln.too_long:
            rows.append({**rec, "read_error": f"line_too_long ({too_long_detail(ln, max_line_bytes)})"})
            continue
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            rows.append({**rec, "read_error": f"non_utf8 (byte {err.start})"})
            continue
        except json.JSONDecodeError:
            rows.append({**rec, "read_error": "broken_json_line"})
            continue
        if not isinstance(obj, dict):
            rows.append({**rec, "read_error": "not_an_object"})
            continue
        any_object = True
        missing = [f for f in PAIR_FIELDS if f not in obj or obj[f] is None]
        if missing:
            rows.append({**rec, "read_error": f"missing_field:{','.join(missing)}"})
            continue
        try:
            rec.update({f: _as_text(obj[f], f) for f in PAIR_FIELDS})
        except TypeError as err:
            rows.append({**rec, "read_error": f"wrong_type: {err}"})
            continue
        given = obj.get("pair_id")
        pair_id, rec["id_normalised"] = normalise_id(str(given) if given is not None else None)
        rec["pair_id"] = pair_id or f"{path.name}:{i}"
        rows.append(rec)
    if rows and not any_object:
        raise no_readable_line(PairsReadError, path, [(r["source_row"], r["read_error"]) for r in rows])
    return pd.DataFrame(rows, columns=COLUMNS)


def validate_pairs(pairs: pd.DataFrame, max_tokens: int | None = None, tokenizer=None,
                   max_chars: int = 20_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split pairs into kept and quarantined rows (``rule`` says why).

    Rules, in order: the reader's ``read_error``; ``empty_text`` (a field blank after stripping);
    ``identical_chosen_rejected`` (the same text after :func:`ru_rlhf.text.comparison_key`, as for
    every other source of pairs); ``over_context_length`` (prompt + longer answer over
    ``max_chars`` characters, checked first so that such a pair never reaches the tokenizer; then,
    with a ``tokenizer``, over ``max_tokens`` of its tokens);
    ``duplicate_pair_id`` (the first is kept).

    Raises:
        RuntimeError: if a row went missing (read ≠ kept + quarantined).
    """
    df = pairs.reset_index(drop=True).copy()
    rule = pd.Series([None] * len(df), index=df.index, dtype="object")
    rule[df["read_error"].notna()] = df["read_error"][df["read_error"].notna()]

    def unset(mask):
        return rule.isna() & mask

    blank = pd.Series(False, index=df.index)
    for f in PAIR_FIELDS:
        blank |= df[f].fillna("").astype(str).str.strip().eq("")
    rule[unset(blank)] = "empty_text"
    same = pd.Series([same_text(c, r) for c, r in zip(df["chosen"], df["rejected"])], index=df.index, dtype=bool)
    rule[unset(same)] = "identical_chosen_rejected"
    # characters first, for every pair: one over the character budget is quarantined without
    # ever being tokenised (a long text costs the tokenizer far more memory and time than its size)
    chars = pd.Series([len(str(p)) + max(len(str(c)), len(str(r))) for p, c, r in
                       zip(df["prompt"], df["chosen"], df["rejected"])], index=df.index, dtype="int64")
    rule[unset(chars > max_chars)] = f"over_context_length (> {max_chars} characters)"
    if tokenizer is not None and max_tokens:
        def n_tok(t):
            return len(tokenizer(str(t), add_special_tokens=False)["input_ids"])

        length = [n_tok(p) + max(n_tok(c), n_tok(r)) if rule[i] is None else 0
                  for i, (p, c, r) in enumerate(zip(df["prompt"], df["chosen"], df["rejected"]))]
        over = pd.Series(length, index=df.index) > max_tokens
        rule[unset(over)] = f"over_context_length (> {max_tokens} tokens)"
    # duplicates among the pairs still kept: a quarantined row never makes a later good one a duplicate
    ok = rule.isna() & df["pair_id"].notna() & df["pair_id"].astype(str).str.len().gt(0)
    rule[ok & df["pair_id"].where(ok).duplicated(keep="first")] = "duplicate_pair_id"
    bad = rule.notna()
    kept = df[~bad].drop(columns=["read_error"]).reset_index(drop=True)
    quarantined = df[bad].drop(columns=["read_error"]).assign(rule=rule[bad]).reset_index(drop=True)
    if len(kept) + len(quarantined) != len(pairs):
        raise RuntimeError(f"pairs lost rows: read {len(pairs)} != kept {len(kept)} + quarantined {len(quarantined)}")
    return kept, quarantined
