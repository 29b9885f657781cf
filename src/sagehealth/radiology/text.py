"""Report text as words, and the measures the radiology workflow reports: ROUGE-L (the F1 of
the longest common subsequence over lowercase alphanumeric tokens, as issue 17 defines it) and
word-level edit distance (rapidfuzz)."""

from __future__ import annotations

import re

from rapidfuzz.distance import Indel, LCSseq, Levenshtein

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str | None) -> list[str]:
    """Lowercase alphanumeric tokens."""
    return _WORD.findall((text or "").lower())


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 of two texts over :func:`words`."""
    return rouge_l_words(words(hypothesis), words(reference))


def rouge_l_words(h: list[str], r: list[str]) -> float:
    if not h or not r:
        return 0.0
    common = LCSseq.similarity(h, r)
    if not common:
        return 0.0
    p, rc = common / len(h), common / len(r)
    return 2 * p * rc / (p + rc)


def edit_distance(a: str, b: str) -> int:
    """Word-level Levenshtein distance (insertions, deletions, substitutions of words)."""
    return Levenshtein.distance(words(a), words(b))


def word_diff(a: str, b: str) -> list[dict[str, object]]:
    """The word edits turning ``a`` into ``b``: ``[{"op": insert|delete|replace, "from": [...],
    "to": [...]}]`` (rapidfuzz's Levenshtein opcodes, equal runs left out)."""
    wa, wb = words(a), words(b)
    out: list[dict[str, object]] = []
    for op in Levenshtein.opcodes(wa, wb):
        if op.tag != "equal":
            out.append({"op": op.tag, "from": wa[op.src_start:op.src_end], "to": wb[op.dest_start:op.dest_end]})
    return out


def study_prompt(indication: str | None, findings: str) -> str:
    """A study as a model reads it: ``INDICATION: ...`` (when given), then ``FINDINGS: ...`` —
    the same text in training pairs and in drafting prompts."""
    return (f"INDICATION: {indication}\n" if indication else "") + f"FINDINGS: {findings}"


def similarity(a: list[str], b: list[str]) -> float:
    """Normalized indel similarity of two word lists (0..1)."""
    return Indel.normalized_similarity(a, b)
