"""Findings read from radiology report text: which abnormalities a sentence affirms, denies or
raises as possible, and which are critical results.

The vocabulary is data (``finding_rules.json``: concepts with patterns, a critical flag and a
weight that orders them); assertion uses the linker's ConText engine
(:class:`sagehealth.knowledge.linking.ContextRules`) with its rules plus the radiology phrases of
``finding_rules.json`` ("within normal limits", "not enlarged", "cannot exclude"). A finding
raised as possible ("cannot exclude pneumonia") is *reported*, never dropped: a study with any
finding that is not negated is abnormal, which is the first property a drafter must keep (an
abnormal study is never drafted as normal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from sagehealth.knowledge.linking import ContextRules, rules as context_rules

_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Concept:
    """One kind of finding (``finding_rules.json``)."""

    id: str
    label: str
    critical: bool
    weight: int
    patterns: tuple[re.Pattern[str], ...]
    needs: re.Pattern[str] | None


@dataclass(frozen=True)
class Finding:
    """A finding in one sentence of a report, with how the sentence asserts it."""

    concept: str
    label: str
    sentence: int  # index of the sentence in :func:`split_sentences` order
    text: str  # the words that name it
    negated: bool
    uncertain: bool
    critical: bool
    weight: int

    @property
    def reported(self) -> bool:
        """Present or possible (not negated): it belongs in the impression."""
        return not self.negated


def spec() -> dict[str, Any]:
    """The finding rules (``finding_rules.json``)."""
    return json.loads((resources.files("sagehealth.radiology") / "finding_rules.json").read_text())


@lru_cache(maxsize=1)
def _compiled() -> tuple[dict[str, Concept], ContextRules]:
    data = spec()
    concepts = tuple(
        Concept(c["id"], c["label"], bool(c.get("critical")), int(c.get("weight", 9)),
                tuple(re.compile(rf"(?<![\w-])(?:{p})(?![\w-])", re.IGNORECASE) for p in c["patterns"]),
                re.compile(r"\b(?:" + "|".join(c["needs"]) + r")\b", re.IGNORECASE) if c.get("needs") else None)
        for c in data["concepts"])
    base = context_rules()
    for category, by_dir in data.get("context", {}).items():
        for direction, phrases in by_dir.items():
            have = base["triggers"].setdefault(category, {}).setdefault(direction, [])
            have.extend(p for p in phrases if p not in have)
    return {c.id: c for c in concepts}, ContextRules(base)


_LIST_NUMBER = re.compile(r"(?:(?<=[.\s])|^)\d{1,2}[.)]\s+(?=[A-Za-z])")
_SENTENCE = re.compile(r"(?<=[A-Za-z)\]%])\.+\s+|(?<=\d)\.\s+(?=[A-Z])|;\s+|\?\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Report text as sentences: numbered lists ("1. ... 2. ...") and sentence ends split;
    decimals ("1.5 cm") do not."""
    text = " ".join((text or "").split())
    parts = _SENTENCE.split(_LIST_NUMBER.sub("\n", text))
    return [p.strip(" .;") for p in parts if _TOKEN.search(p.lower())]


def find(text: str) -> list[Finding]:
    """Every finding of ``text``, sentence by sentence, with its assertion."""
    concepts, context = _compiled()
    out: list[Finding] = []
    for i, sentence in enumerate(split_sentences(text)):
        spans: list[tuple[int, int, str, str]] = []
        for c in concepts.values():
            if c.needs is not None and not c.needs.search(sentence):
                continue
            for rx in c.patterns:
                spans.extend((m.start(), m.end(), c.id, c.label) for m in rx.finditer(sentence))
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        kept: list[tuple[int, int, str, str]] = []
        for s in spans:  # longest first at each start; no overlaps
            if not kept or s[0] >= kept[-1][1]:
                kept.append(s)
        for m in context.assert_mentions(sentence + ".", kept):
            c = concepts[m.concept_id]
            out.append(Finding(c.id, c.label, i, m.text, m.negated, m.hypothetical and not m.negated,
                               c.critical, c.weight))
    return out


def reported(text: str) -> list[Finding]:
    """The findings ``text`` affirms or raises as possible (one per concept and sentence)."""
    seen: set[tuple[str, int]] = set()
    out = []
    for f in find(text):
        if f.reported and (f.concept, f.sentence) not in seen:
            seen.add((f.concept, f.sentence))
            out.append(f)
    return out


def is_abnormal(text: str) -> bool:
    """Whether ``text`` affirms (or raises as possible) any finding."""
    return bool(reported(text))


def critical(text: str) -> list[Finding]:
    """The critical results ``text`` reports (pneumothorax, free air, aortic dissection, ...)."""
    return [f for f in reported(text) if f.critical]
