"""Checks on a draft or a report before it is signed, each with its reason: critical results,
an impression called normal while the findings report an abnormality, laterality that differs
between findings and impression, a prior referred to that is not on record, and a finding
reported in the findings but left out of the impression. Phrases are data
(``workflow_rules.json``); findings and their negation come from :mod:`.findings`."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from sagehealth.radiology import findings as fx

#: findings whose omission from an impression is a warning (others: information)
ACUTE = frozenset({"pneumothorax", "pneumoperitoneum", "aortic_dissection", "mediastinal_widening", "edema",
                   "consolidation", "effusion", "opacity", "mass"})


@dataclass(frozen=True)
class Flag:
    """One check's result: ``severity`` critical | error | warning | info."""

    check: str
    severity: str
    message: str
    concept: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    """The workflow rules (``workflow_rules.json``)."""
    return json.loads((resources.files("sagehealth.radiology") / "workflow_rules.json").read_text())


def _words_rx(phrases: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _compiled() -> tuple[re.Pattern[str], dict[str, re.Pattern[str]]]:
    r = rules()
    return _words_rx(r["prior_phrases"]), {side: _words_rx(ws) for side, ws in r["laterality"].items()}


def _sides(sentence: str) -> set[str]:
    return {side for side, rx in _compiled()[1].items() if rx.search(sentence)}


def _sides_by_concept(text: str) -> dict[str, set[str]]:
    sentences = fx.split_sentences(text)
    out: dict[str, set[str]] = {}
    for f in fx.reported(text):
        out.setdefault(f.concept, set()).update(_sides(sentences[f.sentence]))
    return out


def check_report(findings: str, impression: str, *, comparison: str = "", priors: int = 0) -> list[Flag]:
    """Every check on a report's findings and impression; ``priors``: prior studies on record
    (a non-empty comparison line counts as one)."""
    flags: list[Flag] = []
    if not impression.strip():
        flags.append(Flag("empty_impression", "error", "the impression is empty"))
    in_findings = fx.reported(findings)
    in_impression = fx.reported(impression)
    said = {f.concept for f in in_impression}
    seen: set[str] = set()
    for f in [*in_findings, *in_impression]:
        if f.critical and f.concept not in seen:
            seen.add(f.concept)
            how = "possible " if f.uncertain else ""
            flags.append(Flag("critical_result", "critical", f"{how}{f.label}: communicate it to the referring "
                              "clinician now and document the communication", f.concept))
    if findings.strip() and not in_impression:
        definite = [f for f in in_findings if not f.uncertain]
        if definite:
            labels = ", ".join(dict.fromkeys(f.label for f in definite))
            acute = any(f.concept in ACUTE for f in definite)
            flags.append(Flag("normal_vs_abnormal", "error" if acute else "warning",
                              f"the impression reports nothing abnormal while the findings report: {labels}"))
    for concept, sides in _sides_by_concept(impression).items():
        found = _sides_by_concept(findings).get(concept, set())
        if sides and found and not sides & found:
            flags.append(Flag("laterality", "error", f"{concept.replace('_', ' ')}: the impression says "
                              f"{'/'.join(sorted(sides))}, the findings say {'/'.join(sorted(found))}", concept))
    has_prior = priors > 0 or bool(re.search(r"[a-z0-9]", (comparison or "").lower())
                                   and not re.fullmatch(r"\s*(?:none|n/a|no prior[^.]*)\.?\s*", comparison, re.I))
    if not has_prior and (m := _compiled()[0].search(impression)):
        flags.append(Flag("missing_prior", "warning", f"the impression refers to a prior study (\"{m.group()}\") "
                          "but no prior study is on record"))
    omitted: dict[str, fx.Finding] = {}
    for f in in_findings:
        if f.concept not in said:
            omitted.setdefault(f.concept, f)
    if in_impression or not findings.strip():
        for f in omitted.values():
            flags.append(Flag("omitted_finding", "warning" if f.concept in ACUTE else "info",
                              f"reported in the findings but not in the impression: {f.label}", f.concept))
    return flags
