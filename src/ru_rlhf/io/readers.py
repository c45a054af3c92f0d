"""Readers that turn corpus files into raw document records.

Every reader returns one record per input row it saw, good or bad: a row that cannot be read
still becomes a record, with ``read_error`` set to the rule it broke, so that the ingestion
pipeline can put it in quarantine and account for it (read = kept + quarantined). A file that
cannot be read at all (missing, zero bytes, not JSON) raises :class:`CorpusReadError` naming it.

Formats (documented in ``docs/data_formats.md``):

* JSONL corpus: one object per line with ``doc_id, lang, source, title, text, license``;
* SQuAD-format JSON (e.g. XQuAD): one document per paragraph ``context``, its questions kept;
* a folder of plain-text news files: one document per file;
* CoNLL-U: one document per sentence, from its ``# text =`` line (parsed with ``conllu``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import conllu

CORPUS_FIELDS = ("doc_id", "lang", "source", "title", "text", "license")
RECORD_FIELDS = (*CORPUS_FIELDS, "qas", "source_file", "source_row", "read_error", "detail", "raw")


class CorpusReadError(ValueError):
    """A corpus file that cannot be read at all (names the file and the rule)."""


def _record(source_file: str, source_row: int, **fields) -> dict:
    rec = {k: None for k in RECORD_FIELDS}
    rec.update(fields)
    rec["source_file"] = source_file
    rec["source_row"] = source_row
    return rec


def read_file_bytes(path: Path, error: type[ValueError] | None = None) -> bytes:
    """A file's bytes; a missing or zero-byte file raises ``error`` naming the file and the rule."""
    error = error or CorpusReadError
    if not path.exists():
        raise error(f"{path}: file not found (rule: missing_file)")
    data = path.read_bytes()
    if not data:
        raise error(f"{path}: zero-byte file (rule: empty_file)")
    return data


def read_file_text(path: Path, error: type[ValueError] | None = None) -> str:
    """A whole file decoded as UTF-8 (a BOM is dropped); otherwise ``error`` names byte and rule."""
    error = error or CorpusReadError
    data = read_file_bytes(path, error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 at byte {err.start} (rule: non_utf8)") from err


def read_jsonl_corpus(path: str | Path, defaults: dict | None = None) -> list[dict]:
    """Read a JSONL corpus; broken lines, non-UTF-8 lines and missing fields become bad records.

    Args:
        path: the ``.jsonl`` file.
        defaults: values for fields a line may omit (e.g. ``license``); ``doc_id``, ``lang`` and
            ``text`` are never defaulted.

    Returns:
        One record per non-blank line (``source_row`` is the 1-based line number).
    """
    path = Path(path)
    defaults = defaults or {}
    records = []
    for i, raw in enumerate(read_file_bytes(path).split(b"\n"), start=1):
        if not raw.strip():
            continue
        if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            records.append(_record(str(path), i, read_error="non_utf8",
                                   raw=raw.decode("utf-8", "replace")[:500],
                                   detail=f"invalid byte at {err.start}"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            records.append(_record(str(path), i, read_error="broken_json_line", raw=line[:500],
                                   detail=str(err)))
            continue
        if not isinstance(obj, dict):
            records.append(_record(str(path), i, read_error="not_an_object", raw=line[:500]))
            continue
        merged = {**defaults, **{k: v for k, v in obj.items() if v is not None}}
        missing = [f for f in CORPUS_FIELDS if f not in merged]
        fields = {k: merged.get(k) for k in CORPUS_FIELDS}
        if missing:
            records.append(_record(str(path), i, read_error=f"missing_field:{','.join(missing)}",
                                   raw=line[:500], **fields))
            continue
        wrong = [f for f in CORPUS_FIELDS if not isinstance(fields[f], str)]
        if wrong:
            records.append(_record(str(path), i, read_error=f"wrong_type:{','.join(wrong)}", raw=line[:500],
                                   detail="expected text", **{k: v if isinstance(v, str) else None
                                                              for k, v in fields.items()}))
            continue
        extra = sorted(set(obj) - set(CORPUS_FIELDS) - {"qas"})
        rec = _record(str(path), i, **fields)
        if "qas" in obj:
            rec["qas"] = json.dumps(obj["qas"], ensure_ascii=False)
        if extra:
            rec["detail"] = f"ignored extra fields: {','.join(extra)}"
        records.append(rec)
    return records


def read_squad_corpus(path: str | Path, lang: str, source: str, license: str,
                      id_prefix: str = "squad") -> list[dict]:
    """Read a SQuAD-format JSON file: one document per paragraph, its questions kept in ``qas``.

    The document id is ``<prefix>-<article>-<paragraph>``; the title is the article's title.
    """
    path = Path(path)
    try:
        data = json.loads(read_file_text(path))
    except json.JSONDecodeError as err:
        raise CorpusReadError(f"{path}: not valid JSON ({err}) (rule: broken_json)") from err
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise CorpusReadError(f"{path}: no top-level 'data' list (rule: not_squad_format)")
    records, row = [], 0
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            row += 1
            qas = [
                {"id": qa.get("id"), "question": qa.get("question"),
                 "answer": (qa.get("answers") or [{}])[0].get("text")}
                for qa in para.get("qas", [])
            ]
            context = para.get("context")
            rec = _record(str(path), row, doc_id=f"{id_prefix}-{a:03d}-{p:02d}", lang=lang,
                          source=source, title=article.get("title", ""), text=context,
                          license=license, qas=json.dumps(qas, ensure_ascii=False))
            if context is None:
                rec["read_error"] = "missing_field:text"
            records.append(rec)
    return records


def read_text_folder(path: str | Path, lang: str, source: str, license: str,
                     pattern: str = "*.txt", id_prefix: str = "txt") -> list[dict]:
    """Read a folder tree of plain-text files, one document per file (sorted by path).

    The id is ``<prefix>-<parent folder>-<file stem>``; the title is the first sentence's first
    80 characters. A file that is not UTF-8 becomes a bad record (rule ``non_utf8``).
    """
    root = Path(path)
    files = sorted(root.glob(pattern))
    if not files:
        raise CorpusReadError(f"{root}: no files match {pattern!r} (rule: missing_file)")
    records = []
    for row, file in enumerate(files, start=1):
        doc_id = f"{id_prefix}-{file.parent.name}-{file.stem}"
        data = file.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            records.append(_record(str(file), row, doc_id=doc_id, lang=lang, source=source,
                                   license=license, read_error="non_utf8",
                                   raw=data.decode("utf-8", "replace")[:500],
                                   detail=f"invalid byte at {err.start}"))
            continue
        title = text.strip().split(".")[0][:80]
        records.append(_record(str(file), row, doc_id=doc_id, lang=lang, source=source,
                               title=title, text=text, license=license))
    return records


def read_conllu_corpus(path: str | Path, lang: str, source: str, license: str,
                       id_prefix: str = "conllu") -> list[dict]:
    """Read a CoNLL-U file: one document per sentence, the text from its ``# text =`` line.

    A sentence without ``# text`` becomes a bad record (rule ``missing_field:text``).
    """
    path = Path(path)
    text = read_file_text(path)
    records = []
    for row, sent in enumerate(conllu.parse_incr(io.StringIO(text)), start=1):
        meta = sent.metadata
        sent_id = meta.get("sent_id", str(row))
        rec = _record(str(path), row, doc_id=f"{id_prefix}-{sent_id}", lang=lang, source=source,
                      title=meta.get("genre", ""), text=meta.get("text"), license=license)
        if rec["text"] is None:
            rec["read_error"] = "missing_field:text"
        records.append(rec)
    return records


READERS = {
    "jsonl": read_jsonl_corpus,
    "squad": read_squad_corpus,
    "text_folder": read_text_folder,
    "conllu": read_conllu_corpus,
}
