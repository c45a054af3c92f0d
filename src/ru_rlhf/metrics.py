"""Text metrics shared by every pipeline (diversity, language identity)."""

from __future__ import annotations

import re

from ru_rlhf.text import words

_TATAR_LETTERS = re.compile(r"[әөүҗңһӘӨҮҖҢҺ]")
# Frequent Tatar words written without Tatar-specific letters.
_TATAR_WORDS = {"бу", "белән", "елның", "булды", "дип", "юк", "бар", "кеше", "сум", "мин", "сез", "ул", "да", "дә",
                "кайда", "кайчан", "ничә", "күпме", "рәхмәт", "яңалык", "буенча", "бирә", "килде", "узды", "ачылды"}


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct-n over a set of texts: unique word n-grams / all word n-grams (0 if there are none)."""
    grams = []
    for t in texts:
        toks = words(t)
        grams += [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def is_tatar(text: str) -> bool:
    """True when a text reads as Tatar: a Tatar-specific letter, or at least a third of its words
    among frequent Tatar words written without them (for short answers such as «35 кеше»)."""
    if not isinstance(text, str) or not text.strip():
        return False
    if _TATAR_LETTERS.search(text):
        return True
    toks = words(text)
    return bool(toks) and sum(t in _TATAR_WORDS for t in toks) / len(toks) >= 0.34
