"""Readers that turn corpus files into raw document records.

Every reader returns one record per input row it saw, good or bad: a row that cannot be read
still becomes a record, with ``read_error`` set to the rule it broke, so that the ingestion
pipeline can put it in quarantine and account for it (read = kept + quarantined). A file that
cannot be read at all raises :class:`CorpusReadError` naming it, the row where there is one, and
the rule.

All file access goes through :func:`open_checked` (used by :func:`read_file_bytes`,
:func:`read_file_text` and :func:`iter_file_lines`), shared with the annotation and pair readers:

* a missing file (``missing_file``), a directory (``is_a_directory``), a symlink loop
  (``symlink_loop``), something that is not a regular file (``not_a_regular_file``), a file that
  cannot be opened (``not_readable``) or has zero bytes (``empty_file``) raise;
* a ``.gz`` file is decompressed transparently (``bad_gzip`` when it is not valid gzip);
* a UTF-16 or UTF-32 file (a byte-order mark, or NUL bytes in every other position) raises
  naming the encoding (``utf16``, ``utf32``); a UTF-8 BOM is dropped;
* line readers reject a line longer than ``MAX_LINE_BYTES`` by its length before decoding or
  parsing it, in bounded memory: it becomes a bad record ``line_too_long`` (its first 500
  characters kept in ``raw``).

Ids (``doc_id`` here; item, prompt, response, annotator and pair ids in the other readers) are
NFC-normalised and stripped of surrounding white space (:func:`normalise_id`); a record whose id
changed has ``id_normalised = True``, so that the run can say how many were changed.

Formats (documented in ``docs/data_formats.md``):

* JSONL corpus: one object per line with ``doc_id, lang, source, title, text, license``;
* SQuAD-format JSON (e.g. XQuAD): one document per paragraph ``context``, its questions kept;
* a folder of plain-text news files: one document per file;
* CoNLL-U: one document per sentence, from its ``# text =`` line (parsed with ``conllu``).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import stat
import unicodedata
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import conllu

CORPUS_FIELDS = ("doc_id", "lang", "source", "title", "text", "license")
RECORD_FIELDS = (*CORPUS_FIELDS, "qas", "source_file", "source_row", "read_error", "detail", "raw",
                 "id_normalised")

MAX_LINE_BYTES = 1_000_000
"""The longest line (in bytes, without its newline) a line reader parses; longer → ``line_too_long``."""
RAW_KEEP = 500
"""How many characters of a bad line are kept in ``raw``."""
_SKIP_CHUNK = 1 << 20  # bytes read at a time while skipping the rest of an over-long line
_BOM_UTF8 = b"\xef\xbb\xbf"


class CorpusReadError(ValueError):
    """A corpus file that cannot be read at all (names the file and the rule)."""


def _fail(error: type[ValueError], path, message: str, rule: str, line: int | None = None) -> ValueError:
    """``error`` with the message ``<path>: [line N: ]<message> (rule: <rule>)``; ``.rule`` is set."""
    where = f"line {line}: " if line is not None else ""
    exc = error(f"{path}: {where}{message} (rule: {rule})")
    exc.rule = rule
    return exc


# --------------------------------------------------------------------------- ids
def normalise_id(value):
    """``(value, changed)``: a string NFC-normalised and stripped; anything else unchanged."""
    if not isinstance(value, str):
        return value, False
    new = unicodedata.normalize("NFC", value).strip()
    return new, new != value


def normalise_ids(record: dict, fields) -> bool:
    """Normalise ``record[f]`` for each of ``fields`` present, in place; True if any changed."""
    changed = False
    for f in fields:
        if f in record:
            record[f], c = normalise_id(record[f])
            changed |= c
    return changed


def normalise_status(value) -> str:
    """A status value as compared: NFC, stripped, upper case (``"rejected "`` → ``"REJECTED"``)."""
    return unicodedata.normalize("NFC", str(value or "")).strip().upper()


# --------------------------------------------------------------------------- file access
def format_suffix(path: Path) -> str:
    """The format's extension, looking through ``.gz`` (``labels.csv.gz`` → ``.csv``)."""
    path = Path(path)
    return Path(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def _check_path(path: Path, error: type[ValueError]) -> None:
    try:
        st = os.stat(path)  # follows symlinks: a loop gives ELOOP
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _fail(error, path, "symlink loop (too many levels of symbolic links)", "symlink_loop") from err
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                raise _fail(error, path, f"dangling symlink to {os.readlink(path)}", "missing_file") from err
            raise _fail(error, path, "file not found", "missing_file") from err
        raise _fail(error, path, f"cannot be read ({err.strerror})", "not_readable") from err
    if stat.S_ISDIR(st.st_mode):
        raise _fail(error, path, "is a directory, not a file", "is_a_directory")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(error, path, "is not a regular file", "not_a_regular_file")
    if st.st_size == 0:
        raise _fail(error, path, "zero-byte file", "empty_file")


def _check_head(head: bytes, path: Path, error: type[ValueError]) -> None:
    """Refuse UTF-32 / UTF-16 (by byte-order mark, or by NUL bytes all on one parity)."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise _fail(error, path, "UTF-32 encoded (byte-order mark); save it as UTF-8", "utf32")
    if head.startswith(b"\xff\xfe"):
        raise _fail(error, path, "UTF-16 encoded (little-endian, BOM FF FE), not UTF-8; save it as UTF-8", "utf16")
    if head.startswith(b"\xfe\xff"):
        raise _fail(error, path, "UTF-16 encoded (big-endian, BOM FE FF), not UTF-8; save it as UTF-8", "utf16")
    nul_even, nul_odd = head[0::2].count(0), head[1::2].count(0)
    if max(nul_even, nul_odd) >= 4 and min(nul_even, nul_odd) <= max(nul_even, nul_odd) // 10:
        endian = "little" if nul_odd > nul_even else "big"
        raise _fail(error, path, f"UTF-16 encoded (probably {endian}-endian, no BOM: NUL bytes in every other "
                                 "position), not UTF-8; save it as UTF-8", "utf16")


def open_checked(path: str | Path, error: type[ValueError] | None = None):
    """The file opened for binary reading (decompressed when it ends in ``.gz``), after the checks.

    Raises:
        ``error`` (default :class:`CorpusReadError`) naming the file and the rule: ``missing_file``,
        ``symlink_loop``, ``is_a_directory``, ``not_a_regular_file``, ``not_readable``,
        ``empty_file``, ``bad_gzip``, ``utf16``, ``utf32``.
    """
    error = error or CorpusReadError
    path = Path(path)
    _check_path(path, error)
    try:  # returned open: the caller closes it
        f = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")  # noqa: SIM115
    except OSError as err:
        raise _fail(error, path, f"cannot be opened ({err.strerror})", "not_readable") from err
    try:
        head = f.peek(4096)[:4096]
    except (OSError, EOFError, zlib.error) as err:
        f.close()
        raise _fail(error, path, f"not a valid gzip file ({err})", "bad_gzip") from err
    if not head:
        f.close()
        raise _fail(error, path, "zero bytes after decompression", "empty_file")
    try:
        _check_head(head, path, error)
    except ValueError:
        f.close()
        raise
    return f


def read_file_bytes(path: str | Path, error: type[ValueError] | None = None) -> bytes:
    """A whole file's bytes (decompressed for ``.gz``), after the checks of :func:`open_checked`."""
    error = error or CorpusReadError
    with open_checked(path, error) as f:
        try:
            return f.read()
        except (OSError, EOFError, zlib.error) as err:
            raise _fail(error, path, f"not a valid gzip file ({err})", "bad_gzip") from err


def non_utf8_error(error: type[ValueError], path, byte: int, line: int) -> ValueError:
    """The error for a file that is not UTF-8: names the file, the byte, the line and the rule."""
    exc = error(f"{path}: not UTF-8 at byte {byte} (rule: non_utf8); the first bad byte is on line {line}")
    exc.rule = "non_utf8"
    return exc


def read_file_text(path: str | Path, error: type[ValueError] | None = None) -> str:
    """A whole file decoded as UTF-8 (a BOM is dropped); otherwise ``error`` names byte, line and rule."""
    error = error or CorpusReadError
    data = read_file_bytes(path, error)
    bom = len(_BOM_UTF8) if data.startswith(_BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start
        raise non_utf8_error(error, path, at, data.count(b"\n", 0, at) + 1) from err


class Line(NamedTuple):
    """One physical line: its 1-based number, its bytes (without ``\\n``; only the head when it is
    too long), its byte offset in the file, its length in bytes, and whether it is over the limit."""

    number: int
    data: bytes
    offset: int
    size: int
    too_long: bool


def iter_file_lines(path: str | Path, error: type[ValueError] | None = None,
                    max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """The file's physical lines (split on ``\\n``), read in bounded memory.

    A line over ``max_line_bytes`` bytes comes back with ``too_long = True`` and only its first
    ``4 * RAW_KEEP`` bytes; the rest of it is skipped a chunk at a time, never held whole. A UTF-8
    BOM on the first line is dropped.
    """
    error = error or CorpusReadError
    with open_checked(path, error) as f:
        number = offset = 0
        if f.peek(len(_BOM_UTF8)).startswith(_BOM_UTF8):
            offset = len(f.read(len(_BOM_UTF8)))
        try:
            while True:
                chunk = f.readline(max_line_bytes + 1)
                if not chunk:
                    return
                number += 1
                if chunk.endswith(b"\n") or len(chunk) <= max_line_bytes:
                    line = chunk[:-1] if chunk.endswith(b"\n") else chunk
                    yield Line(number, line, offset, len(line), False)
                    offset += len(chunk)
                    continue
                head, size = chunk[: 4 * RAW_KEEP], len(chunk)
                del chunk
                newline = False
                while True:
                    more = f.readline(_SKIP_CHUNK)
                    if more.endswith(b"\n"):
                        size += len(more) - 1
                        newline = True
                        break
                    size += len(more)
                    if not more:
                        break
                yield Line(number, head, offset, size, True)
                offset += size + newline
        except (OSError, EOFError, zlib.error) as err:
            raise _fail(error, path, f"not a valid gzip file ({err})", "bad_gzip", line=number + 1) from err


def too_long_detail(line: Line, max_line_bytes: int) -> str:
    return f"line of {line.size} bytes > {max_line_bytes} bytes (rejected unparsed)"


def raw_head(data: bytes) -> str:
    """The first ``RAW_KEEP`` characters of a bad line, for ``raw``."""
    return data[: 4 * RAW_KEEP].decode("utf-8", "replace")[:RAW_KEEP]


def no_readable_line(error: type[ValueError], path, bad: list[tuple[int, str]]) -> ValueError:
    """The error for a JSON-lines file none of whose lines is a readable JSON object."""
    shown = "; ".join(f"line {row}: {rule}" for row, rule in bad[:3]) + ("; ..." if len(bad) > 3 else "")
    return _fail(error, path, f"none of its {len(bad)} line(s) is a readable JSON object ({shown})",
                 "no_readable_line", line=bad[0][0])


# --------------------------------------------------------------------------- corpus readers
def _record(source_file: str, source_row: int, **fields) -> dict:
    rec = {k: None for k in RECORD_FIELDS}
    rec.update(fields)
    rec["source_file"] = source_file
    rec["source_row"] = source_row
    rec["doc_id"], rec["id_normalised"] = normalise_id(rec["doc_id"])
    return rec


def read_jsonl_corpus(path: str | Path, defaults: dict | None = None,
                      max_line_bytes: int = MAX_LINE_BYTES) -> list[dict]:
    """Read a JSONL corpus; broken lines, non-UTF-8 lines and missing fields become bad records.

    Args:
        path: the ``.jsonl`` (or ``.jsonl.gz``) file.
        defaults: values for fields a line may omit (e.g. ``license``); ``doc_id``, ``lang`` and
            ``text`` are never defaulted.
        max_line_bytes: a longer line becomes a bad record ``line_too_long`` without being parsed.

    Returns:
        One record per non-blank line (``source_row`` is the 1-based line number).

    Raises:
        CorpusReadError: the file cannot be read (see :func:`open_checked`), or none of its lines
            is a JSON object (``no_readable_line``: not JSON lines at all).
    """
    path = Path(path)
    defaults = defaults or {}
    records = []
    any_object = False
    for ln in iter_file_lines(path, CorpusReadError, max_line_bytes):
        i, raw = ln.number, ln.data
        if ln.too_long:
            records.append(_record(str(path), i, read_error="line_too_long", raw=raw_head(raw),
                                   detail=too_long_detail(ln, max_line_bytes)))
            continue
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            records.append(_record(str(path), i, read_error="non_utf8", raw=raw_head(raw),
                                   detail=f"invalid byte at {err.start}"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            records.append(_record(str(path), i, read_error="broken_json_line", raw=line[:RAW_KEEP],
                                   detail=str(err)))
            continue
        if not isinstance(obj, dict):
            records.append(_record(str(path), i, read_error="not_an_object", raw=line[:RAW_KEEP]))
            continue
        any_object = True
        merged = {**defaults, **{k: v for k, v in obj.items() if v is not None}}
        missing = [f for f in CORPUS_FIELDS if f not in merged]
        fields = {k: merged.get(k) for k in CORPUS_FIELDS}
        if missing:
            records.append(_record(str(path), i, read_error=f"missing_field:{','.join(missing)}",
                                   raw=line[:RAW_KEEP], **fields))
            continue
        wrong = [f for f in CORPUS_FIELDS if not isinstance(fields[f], str)]
        if wrong:
            records.append(_record(str(path), i, read_error=f"wrong_type:{','.join(wrong)}", raw=line[:RAW_KEEP],
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
    if records and not any_object:
        raise no_readable_line(CorpusReadError, path, [(r["source_row"], r["read_error"]) for r in records])
    return records


def _squad_shape(path: Path, where: str, value, expected: str, row: int | None = None) -> CorpusReadError:
    at = f" (row {row}: the file's paragraph {row})" if row is not None else ""
    return _fail(CorpusReadError, path, f"{where}{at} is {type(value).__name__}, expected {expected}",
                 "not_squad_format")


def read_squad_corpus(path: str | Path, lang: str, source: str, license: str,
                      id_prefix: str = "squad") -> list[dict]:
    """Read a SQuAD-format JSON file: one document per paragraph, its questions kept in ``qas``.

    The document id is ``<prefix>-<article>-<paragraph>``; the title is the article's title. A
    file of the wrong shape (``data`` not a list of article objects, ``paragraphs`` not a list of
    objects, ``qas`` / ``answers`` not lists of objects) raises ``not_squad_format`` naming the
    JSON path (and the paragraph's row, its 1-based number in the file).
    """
    path = Path(path)
    try:
        data = json.loads(read_file_text(path))
    except json.JSONDecodeError as err:
        raise _fail(CorpusReadError, path, f"not valid JSON ({err})", "broken_json", line=err.lineno) from err
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise _fail(CorpusReadError, path, "no top-level 'data' list", "not_squad_format")
    records, row = [], 0
    for a, article in enumerate(data["data"]):
        if not isinstance(article, dict):
            raise _squad_shape(path, f"data[{a}]", article, "an article object")
        paragraphs = article.get("paragraphs", [])
        if not isinstance(paragraphs, list):
            raise _squad_shape(path, f"data[{a}].paragraphs", paragraphs, "a list of paragraph objects")
        for p, para in enumerate(paragraphs):
            row += 1
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict):
                raise _squad_shape(path, where, para, "a paragraph object", row)
            qas_in = para.get("qas", [])
            if not isinstance(qas_in, list) or not all(isinstance(qa, dict) for qa in qas_in):
                raise _squad_shape(path, f"{where}.qas", qas_in, "a list of question objects", row)
            qas = []
            for q, qa in enumerate(qas_in):
                answers = qa.get("answers") or [{}]
                if not isinstance(answers, list) or not isinstance(answers[0], dict):
                    raise _squad_shape(path, f"{where}.qas[{q}].answers", answers, "a list of answer objects", row)
                qas.append({"id": qa.get("id"), "question": qa.get("question"), "answer": answers[0].get("text")})
            context, title = para.get("context"), article.get("title", "")
            rec = _record(str(path), row, doc_id=f"{id_prefix}-{a:03d}-{p:02d}", lang=lang,
                          source=source, title=title if isinstance(title, str) else None,
                          text=context if isinstance(context, str) else None,
                          license=license, qas=json.dumps(qas, ensure_ascii=False))
            if context is None:
                rec["read_error"] = "missing_field:text"
            elif not isinstance(context, str):
                rec["read_error"], rec["detail"] = "wrong_type:text", f"{where}.context is {type(context).__name__}"
            elif not isinstance(title, str):
                rec["read_error"], rec["detail"] = "wrong_type:title", f"data[{a}].title is {type(title).__name__}"
            records.append(rec)
    return records


def read_text_folder(path: str | Path, lang: str, source: str, license: str,
                     pattern: str = "*.txt", id_prefix: str = "txt") -> list[dict]:
    """Read a folder tree of plain-text files, one document per file (sorted by path).

    The id is ``<prefix>-<parent folder>-<file stem>``; the title is the first sentence's first
    80 characters. A file that is not UTF-8 becomes a bad record (rule ``non_utf8``), and so does
    a match that cannot be read as a file (``is_a_directory``, ``symlink_loop``, ``empty_file``,
    ``utf16``, ...: the rule of :func:`open_checked`).
    """
    root = Path(path)
    if not root.is_dir():
        if root.exists():
            raise _fail(CorpusReadError, root, "is a file; a text_folder source needs a directory", "not_a_directory")
        raise _fail(CorpusReadError, root, "directory not found", "missing_file")
    files = sorted(root.glob(pattern))
    if not files:
        raise CorpusReadError(f"{root}: no files match {pattern!r} (rule: missing_file)")
    records = []
    for row, file in enumerate(files, start=1):
        doc_id = f"{id_prefix}-{file.parent.name}-{file.stem}"
        base = {"doc_id": doc_id, "lang": lang, "source": source, "license": license}
        try:
            data = read_file_bytes(file, CorpusReadError)
        except CorpusReadError as err:
            records.append(_record(str(file), row, **base, read_error=getattr(err, "rule", "not_readable"),
                                   detail=str(err)))
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            records.append(_record(str(file), row, **base, read_error="non_utf8", raw=raw_head(data),
                                   detail=f"invalid byte at {err.start}"))
            continue
        title = text.strip().split(".")[0][:80]
        records.append(_record(str(file), row, **base, title=title, text=text))
    return records


def _conllu_blocks(path: Path, max_line_bytes: int) -> Iterator[tuple[int, list[str], list[Line]]]:
    """Sentence blocks of a CoNLL-U file: ``(first line number, decoded lines, over-long lines)``."""
    start, lines, too_long = 0, [], []
    for ln in iter_file_lines(path, CorpusReadError, max_line_bytes):
        if ln.too_long:
            too_long.append(ln)
            start = start or ln.number
            continue
        try:
            text = ln.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise non_utf8_error(CorpusReadError, path, ln.offset + err.start, ln.number) from err
        if text.strip() == "":
            if lines or too_long:
                yield start, lines, too_long
            start, lines, too_long = 0, [], []
            continue
        start = start or ln.number
        lines.append(text.rstrip("\r"))
    if lines or too_long:
        yield start, lines, too_long


def read_conllu_corpus(path: str | Path, lang: str, source: str, license: str,
                       id_prefix: str = "conllu", max_line_bytes: int = MAX_LINE_BYTES) -> list[dict]:
    """Read a CoNLL-U file: one document per sentence, the text from its ``# text =`` line.

    ``source_row`` is the sentence's 1-based number (``detail`` names its first line when it is
    bad). A sentence without ``# text`` becomes a bad record (rule ``missing_field:text``), one
    with a line over ``max_line_bytes`` bytes ``line_too_long`` (not parsed), one ``conllu``
    cannot parse ``bad_conllu``.
    """
    path = Path(path)
    records: list[dict] = []
    global_columns = None
    for row, (start, lines, too_long) in enumerate(_conllu_blocks(path, max_line_bytes), start=1):
        for line in lines:
            if line.startswith("# global.columns = "):
                global_columns = [c.lower() for c in line.split("=", 1)[1].split()]
        sent_id = next((ln.split("=", 1)[1].strip() for ln in lines if ln.startswith("# sent_id")), str(row))
        base = {"doc_id": f"{id_prefix}-{sent_id}", "lang": lang, "source": source, "license": license}
        if too_long:
            first = too_long[0]
            records.append(_record(str(path), row, **base, read_error="line_too_long", raw=raw_head(first.data),
                                   detail=f"sentence from line {start}: line {first.number}: "
                                          f"{too_long_detail(first, max_line_bytes)}"))
            continue
        try:
            (sent,) = conllu.parse("\n".join(lines) + "\n", fields=global_columns)
        except (conllu.exceptions.ParseException, ValueError) as err:
            records.append(_record(str(path), row, **base, read_error="bad_conllu", raw="\n".join(lines)[:RAW_KEEP],
                                   detail=f"sentence from line {start}: {str(err)[:200]}"))
            continue
        meta = sent.metadata
        rec = _record(str(path), row, **{**base, "doc_id": f"{id_prefix}-{meta.get('sent_id', str(row))}"},
                      title=meta.get("genre", ""), text=meta.get("text"))
        if rec["text"] is None:
            rec["read_error"], rec["detail"] = "missing_field:text", f"sentence from line {start}"
        records.append(rec)
    return records


READERS = {
    "jsonl": read_jsonl_corpus,
    "squad": read_squad_corpus,
    "text_folder": read_text_folder,
    "conllu": read_conllu_corpus,
}
