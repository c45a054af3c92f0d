"""Preference pairs brought from outside, in TRL's ``prompt / chosen / rejected`` format.

A JSONL file (or ``.jsonl.gz``), one pair per line: TRL's standard format (``"prompt": "…", "chosen": "…",
"rejected": "…"``); TRL's conversational format (each field a list of ``{"role", "content"}`` messages, or
``chosen``/``rejected`` whole conversations with an implicit prompt): the prompt's turns are rendered with
their roles in the project's chat format (:func:`render_prompt`), the answers are the assistant's turns; or
Anthropic HH text (``"chosen": "\n\nHuman: …\n\nAssistant: …"``, :func:`hh_pair`). ``pair_id`` is optional (the line number
otherwise). :func:`read_preference_pairs` returns one record per line it saw (bad lines carry
``read_error``); :func:`validate_pairs` splits the records into kept and quarantined rows with the
rule each broke, so that read = kept + quarantined. A file that cannot be read at all raises
:class:`PairsReadError` naming it and the rule (the file access rules, ``.gz``, UTF-16 and over-long
lines are those of :mod:`ru_rlhf.io.readers`); so does a file none of whose lines is a JSON object
(``no_readable_line``).
"""

from __future__ import annotations

import json
import re
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


ROLES = ("system", "user", "assistant")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def render_prompt(messages: list[dict]) -> str:
    """A conversation before the answer, in the project's prompt format with its roles kept.

    :func:`ru_rlhf.models.policy.format_prompt` wraps a prompt as ``<|user|>{prompt}\n<|assistant|>``; the text
    returned here makes that the whole transcript: ``u1\n<|assistant|>a1\n<|user|>u2`` becomes
    ``<|user|>u1\n<|assistant|>a1\n<|user|>u2\n<|assistant|>``. A single user turn is its own text; a
    system message opens the first user turn, followed by a blank line.

    Raises:
        TypeError: a message without ``role``/``content``, a role other than system/user/assistant, or a
            conversation that does not end with a user turn.
    """
    from ru_rlhf.models.policy import ASSISTANT, USER

    if not messages or not all(isinstance(m, dict) and "content" in m and "role" in m for m in messages):
        raise TypeError("a conversation is a non-empty list of {role, content} messages")
    roles = [str(m["role"]) for m in messages]
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise TypeError(f"unknown role(s) {unknown} (roles are {list(ROLES)})")
    system = [str(m["content"]) for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if not turns or turns[-1]["role"] != "user":
        raise TypeError("the prompt's conversation must end with a user turn")
    parts = []
    for k, m in enumerate(turns):
        text = str(m["content"])
        if k == 0 and system:
            text = "\n".join(system) + "\n\n" + text
        marker = "" if k == 0 else ("\n" + (USER if m["role"] == "user" else ASSISTANT))
        if k == 0 and m["role"] == "assistant":
            raise TypeError("the prompt's conversation must start with a user turn")
        parts.append(marker + text)
    return "".join(parts)


def _answer(value, field: str) -> str:
    """A plain string, or a conversational answer: its assistant message(s)' content."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        if any(m.get("role", "assistant") != "assistant" for m in value):
            raise TypeError(f"{field} holds a turn that is not the assistant's")
        return "\n".join(str(m["content"]) for m in value)
    raise TypeError(f"{field} is neither text nor a list of assistant messages")


def _as_text(value, field: str) -> str:
    """A field as text: a prompt's conversation rendered with its roles (:func:`render_prompt`), an answer's
    assistant messages joined, or a plain string."""
    if field == "prompt" and isinstance(value, list):
        return render_prompt(value)
    return _answer(value, field)


def hh_pair(chosen: str, rejected: str) -> dict:
    """An Anthropic HH record (``\n\nHuman: … \n\nAssistant: …`` text, the two sides sharing everything but
    their last assistant turn) as ``prompt`` (the shared turns, :func:`render_prompt`), ``chosen``, ``rejected``.

    Raises:
        TypeError: text not in that layout, or sides that do not share their turns before the last answer.
    """
    def turns(text: str) -> list[dict]:
        pieces = _HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
        if pieces[0].strip():
            raise TypeError("HH text must start with '\\n\\nHuman:'")
        return [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
                for who, body in zip(pieces[1::2], pieces[2::2])]

    a, b = turns(chosen), turns(rejected)
    if not a or not b or a[-1]["role"] != "assistant" or b[-1]["role"] != "assistant":
        raise TypeError("each HH side must end with an Assistant turn")
    if a[:-1] != b[:-1]:
        raise TypeError("the chosen and rejected conversations differ before their last answer")
    return {"prompt": render_prompt(a[:-1]), "chosen": a[-1]["content"], "rejected": b[-1]["content"]}


def _implicit_prompt(chosen: list, rejected: list) -> dict:
    """TRL's conversational format with an implicit prompt (no ``prompt`` field): both sides are whole
    conversations; the prompt is their shared turns and each answer what follows."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise TypeError("chosen and rejected share no turn: there is no prompt")
    return {"prompt": render_prompt(chosen[:n]), "chosen": _answer(chosen[n:], "chosen"),
            "rejected": _answer(rejected[n:], "rejected")}


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
        try:
            if obj.get("prompt") is None and isinstance(obj.get("chosen"), str) and isinstance(obj.get("rejected"), str) \
                    and "Human:" in obj["chosen"]:
                rec.update(hh_pair(obj["chosen"], obj["rejected"]))  # Anthropic HH text
            elif obj.get("prompt") is None and isinstance(obj.get("chosen"), list) and isinstance(obj.get("rejected"), list):
                rec.update(_implicit_prompt(obj["chosen"], obj["rejected"]))
            else:
                missing = [f for f in PAIR_FIELDS if f not in obj or obj[f] is None]
                if missing:
                    rows.append({**rec, "read_error": f"missing_field:{','.join(missing)}"})
                    continue
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


PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_delimited_pairs(path: str | Path, columns: dict, delimiter: str | None = None,
                         prompt_placeholders: dict | None = None,
                         max_line_bytes: int = MAX_LINE_BYTES) -> pd.DataFrame:
    """Read preference pairs from a CSV or TSV file (either may be gzipped) through a column mapping.

    Args:
        columns: ``{"prompt": <column>, "chosen": <column>, "rejected": <column>}`` and optionally
            ``"pair_id": <column>`` (the line number otherwise).
        delimiter: ``"tab"`` or ``"comma"``; by default from the extension (``.tsv``/``.tsv.gz``: tab, else comma).
        prompt_placeholders: ``{name: <column>}``: the prompt column holds a template (MERA's
            ``"Есть токсичный ответ: "{toxic_comment}" …"``) whose ``{name}`` is filled from that column of the
            same row. A row whose prompt lacks a named placeholder is ``missing_placeholder:<name>`` (never
            filled silently elsewhere); other braces are left as they are.

    Returns:
        One record per data row, in the layout of :func:`read_preference_pairs` (``read_error`` set for rows the
        file's own rules reject: ``wrong_field_count``, ``bad_quote``, ``line_too_long``).

    Raises:
        PairsReadError: the file cannot be read, a column named in ``columns`` or ``prompt_placeholders`` is not
            in the header (``missing_column``), or ``columns`` lacks prompt, chosen or rejected.
    """
    from ru_rlhf.io.annotations import AnnotationReadError, read_delimited

    path = Path(path)
    need = [f for f in PAIR_FIELDS if not columns.get(f)]
    if need:
        raise PairsReadError(f"{path}: the column mapping names no column for {need} (rule: missing_mapping)")
    if delimiter not in (None, "tab", "comma"):
        raise PairsReadError(f"{path}: delimiter {delimiter!r} is not 'tab' or 'comma' (rule: bad_delimiter)")
    tsv = ".tsv" in "".join(path.suffixes).lower() if delimiter is None else delimiter == "tab"
    try:
        table = read_delimited(path, tsv=tsv, max_line_bytes=max_line_bytes)
    except AnnotationReadError as err:
        raise PairsReadError(str(err)) from err
    fills = dict(prompt_placeholders or {})
    wanted = [*(columns[f] for f in (*PAIR_FIELDS, "pair_id") if columns.get(f)), *fills.values()]
    missing = [c for c in wanted if c not in table.header]
    if missing:
        raise PairsReadError(f"{path}: missing column(s) {missing}; the header has {table.header} "
                             "(rule: missing_column)")
    rows = []
    for i, fields, error in table.rows:
        rec = {"pair_id": None, "prompt": None, "chosen": None, "rejected": None, "source_file": str(path),
               "source_row": i, "read_error": error, "id_normalised": False}
        if fields is None:
            rows.append(rec)
            continue
        row = dict(zip(table.header, fields))
        rec.update({f: row.get(columns[f]) for f in PAIR_FIELDS})
        prompt = rec["prompt"] or ""
        for name, col in fills.items():
            if "{" + name + "}" not in prompt:
                rec["read_error"] = f"missing_placeholder:{name}"
                break
            prompt = prompt.replace("{" + name + "}", row.get(col) or "")
        else:
            rec["prompt"] = prompt if fills else rec["prompt"]
        given = row.get(columns["pair_id"]) if columns.get("pair_id") else None
        pair_id, rec["id_normalised"] = normalise_id(given)
        rec["pair_id"] = pair_id or f"{path.name}:{i}"
        rows.append(rec)
    return pd.DataFrame(rows, columns=COLUMNS)


def read_pairs(path: str | Path, format: str | None = None, **kwargs) -> pd.DataFrame:
    """Any pairs file: ``jsonl`` (TRL standard or conversational, Anthropic HH) or ``csv``/``tsv`` with a column
    mapping; ``format`` by default from the extension (``.jsonl``, ``.csv``, ``.tsv``, each maybe ``.gz``)."""
    from ru_rlhf.io.readers import format_suffix

    path = Path(path)
    fmt = format or format_suffix(path).lstrip(".")
    if fmt == "jsonl":
        if kwargs.get("columns") or kwargs.get("prompt_placeholders"):
            raise PairsReadError(f"{path}: a column mapping is for CSV/TSV pairs, not JSONL (rule: bad_mapping)")
        return read_preference_pairs(path, **{k: v for k, v in kwargs.items() if k == "max_line_bytes"})
    if fmt in ("csv", "tsv"):
        if not kwargs.get("columns"):
            raise PairsReadError(f"{path}: CSV/TSV pairs need a column mapping {{prompt, chosen, rejected}} "
                                 "(rule: missing_mapping)")
        kwargs.setdefault("delimiter", "tab" if fmt == "tsv" else "comma")
        return read_delimited_pairs(path, **kwargs)
    raise PairsReadError(f"{path}: unknown pairs format {fmt!r} (jsonl, csv or tsv; rule: unknown_format)")
