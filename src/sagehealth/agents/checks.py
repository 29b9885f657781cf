"""The agent's checks on a draft, whatever produced it.

- ``grounding``: a sentence is supported when it cites evidence that was retrieved for this
  question, at least ``MIN_SUPPORT`` of its content terms (stemmed) appear in that evidence,
  every number it states appears there, and its polarity (negated or not) matches the evidence
  sentence that best covers it. Otherwise it is removed, with the reason.
- ``scope``: a sentence citing evidence about a patient other than the one asked about (or
  outside the principal's care team) is removed: retrieved text cannot widen the question.
- ``privacy``: for principals without identified access the answer is run through the
  de-identifier; any identifier found is replaced by its type tag and reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sagehealth.genai.base import Evidence
from sagehealth.genai.text import numbers, sentences, terms

#: least share of a sentence's content terms its cited evidence must contain
MIN_SUPPORT = 0.6
_NEGATION = re.compile(r"\b(?:no|not|without|denie[sd]|negative|absent|free of|ruled out|unremarkable|never)\b",
                       re.IGNORECASE)


@dataclass
class Support:
    score: float
    supported: bool
    reason: str | None


def support(sentence: str, cited: list[Evidence]) -> Support:
    """How well ``cited`` evidence supports ``sentence`` (see the module docstring)."""
    if not cited:
        return Support(0.0, False, "cites no retrieved evidence")
    mine = set(terms(sentence))
    if not mine:
        return Support(0.0, False, "states nothing checkable (no content words)")
    text = "\n".join(e.text for e in cited)
    found = set(terms(text))
    score = len(mine & found) / len(mine)
    if score < MIN_SUPPORT:
        missing = sorted(mine - found)[:5]
        return Support(score, False, f"only {score:.0%} of its content is in the cited evidence "
                                     f"(not found: {', '.join(missing)})")
    stated = numbers(sentence) - numbers(text)
    if stated:
        return Support(score, False, f"states {', '.join(sorted(stated))}, which the cited evidence does not")
    best, best_cover = "", -1.0
    for e in cited:
        for s, t in sentences(e.text):
            cover = len(mine & set(terms(e.text[s:t])))
            if cover > best_cover:
                best, best_cover = e.text[s:t], cover
    if bool(_NEGATION.search(sentence)) != bool(_NEGATION.search(best)):
        return Support(score, False, "its negation differs from the evidence sentence it matches")
    return Support(score, True, None)


def phi_leaks(text: str) -> list[tuple[str, str]]:
    """(type, text) of each identifier the de-identifier finds in ``text``."""
    from sagehealth.privacy.deid import detect

    return [(s.type, text[s.start:s.end]) for s in detect(text)]


def scrub(text: str) -> tuple[str, int]:
    """``text`` with every identifier replaced by its type tag, and how many were replaced."""
    from sagehealth.privacy.deid import deidentify

    result = deidentify(text, mode="tags")
    return result.text, len(result.spans)
