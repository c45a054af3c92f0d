"""Text helpers shared by every pipeline: normalisation, sentences, shingles, fact mentions.

The fact-mention extractor is deliberately simple (regular expressions for numbers, dates and
capitalised names): it is used on real text, where no fact table exists, and by the judges.
"""

from __future__ import annotations

import re
import unicodedata

_ZERO_WIDTH = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)
_SPACES = re.compile(r"[ \t\u00a0\u2009\u202f]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_SENTENCE_END = re.compile(r"(?<=[.!?…»])\s+(?=[«\"(A-ZА-ЯЁӘӨҮҖҢҺ0-9])")
_WORD = re.compile(r"\w+", re.UNICODE)

RU_MONTHS = ("января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря")
TT_MONTHS = ("гыйнвар|феврал|март|апрел|ма|июн|июл|август|сентябр|октябр|ноябр|декабр")
_DATE = re.compile(
    rf"\b\d{{1,2}}\s+(?:{RU_MONTHS})(?:\s+\d{{4}}(?:\s+года)?)?"
    rf"|\b\d{{4}}\s+елның\s+\d{{1,2}}\s+(?:{TT_MONTHS})\w*"
)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")
_CAP_NAME = re.compile(r"\b[А-ЯЁӘӨҮҖҢҺA-Z][а-яёәөүҗңһa-z]+(?:[\s-][А-ЯЁӘӨҮҖҢҺ][а-яёәөүҗңһa-z]+)*")
_QUOTED = re.compile(r"«([^«»]{2,40})»")


def normalise_text(text: str) -> str:
    """Unicode NFC, zero-width characters and BOMs removed, runs of spaces collapsed, trimmed."""
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at ., !, ?, … followed by a capital letter, digit or quote."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, Unicode-aware)."""
    return _WORD.findall(text.lower())


def word_shingles(text: str, k: int = 5) -> set[str]:
    """The set of k-word shingles of the text (the whole text if it is shorter than k words)."""
    toks = words(text)
    if len(toks) < k:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i:i + k]) for i in range(len(toks) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """Jaccard similarity of two sets (0 when both are empty)."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def extract_mentions(text: str) -> list[dict]:
    """Find the numbers, dates and names a text states.

    Returns:
        A list of ``{"type": "date" | "number" | "entity", "surface": ...}``, dates first, with
        numbers inside dates not repeated.
    """
    found: list[dict] = []
    spans: list[tuple[int, int]] = []
    for m in _DATE.finditer(text):
        found.append({"type": "date", "surface": m.group(0)})
        spans.append(m.span())
    for m in _NUMBER.finditer(text):
        if not any(a <= m.start() < b for a, b in spans):
            found.append({"type": "number", "surface": m.group(0)})
    for m in _QUOTED.finditer(text):
        found.append({"type": "entity", "surface": m.group(1)})
    for sentence in split_sentences(text):
        for m in _CAP_NAME.finditer(sentence):
            if m.start() > 0:
                found.append({"type": "entity", "surface": m.group(0)})
    return found


def comparison_key(text) -> str:
    """The form two answers are compared in to decide whether they are the same text: :func:`normalise_text`,
    then every run of white space as one space. Used wherever a pair is made, so that no source (panel, app,
    imported pairs) makes a pair whose chosen and rejected answers read the same."""
    return " ".join(normalise_text(str(text or "")).split())


def same_text(a, b) -> bool:
    """Whether two answers are the same text after :func:`comparison_key`."""
    return comparison_key(a) == comparison_key(b)
