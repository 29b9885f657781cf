"""Small text tools shared by the extractive provider and the agent's grounding check:
sentence splitting and content terms (Snowball-stemmed, stop words and question words out)."""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer

#: function words and words every clinical question uses; they say nothing about the answer
STOP = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing done down during each either few for from further had
has have having he her here hers him his how i if in into is it its itself just me more most my no nor
not now of off on once only or other our out over own same she should so some such than that the their
them then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours
patient patients pt pts show shows showed shown tell give list describe describes summarize summary
find found say says said mention mentions mentioned document documents record records note notes
current currently latest recent recently last today ever known please per mr mrs ms dr
""".split())

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]*|\d+(?:\.\d+)?")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
_ABBREV = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|St|vs|approx|e\.g|i\.e|Fig|No|cf)\.$", re.IGNORECASE)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def terms(text: str) -> list[str]:
    """Stemmed content terms of ``text`` in order (numbers kept as written)."""
    words = [w.lower().strip("'-") for w in _WORD.findall(text)]
    words = [w.removesuffix("'s") for w in words if w and w not in STOP]
    words = [w for w in words if w not in STOP]
    return _stemmer().stemWords(words) if words else []


def numbers(text: str) -> set[str]:
    """Numbers written in ``text`` (normalised: 5.0 -> 5)."""
    out = set()
    for n in _NUMBER.findall(text):
        out.add(n.rstrip("0").rstrip(".") if "." in n else n)
    return out


def sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of ``text``: ends at . ! ? followed by space and a capital or digit, at
    line breaks that start a list item or a heading, and at blank lines; abbreviations
    (Dr., vs.) and decimals do not end a sentence."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in re.finditer(r"[.!?](?=\s+[A-Z0-9\[(])|\n\s*\n|\n(?=\s*(?:[-*\u2022]|\d+[.)]\s|[A-Z][A-Z /]{2,}:))", text):
        end = m.end() if text[m.start()] in ".!?" else m.start()
        if text[m.start()] == "." and _ABBREV.search(text[max(start, m.start() - 8):m.start() + 1]):
            continue
        if text[start:end].strip():
            spans.append(_trim(text, start, end))
        start = m.end()
    if text[start:].strip():
        spans.append(_trim(text, start, len(text)))
    out = []
    for a, b in spans:  # a Markdown heading line is not part of the sentence below it
        while text.startswith("#", a):
            nl = text.find("\n", a, b)
            if nl < 0:
                a = b
                break
            a, b = _trim(text, nl, b)
        if a < b:
            out.append((a, b))
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
