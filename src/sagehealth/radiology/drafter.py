"""The offline impression drafter: no language model, retrieval plus findings-driven composition.

First property: a study whose findings report a critical result is never drafted as normal,
and every finding the gate keeps is stated from the radiologist's own findings sentence (cited).
Then reading well: the wording of normal impressions and closing lines is the consensus of the
most similar signed cases (the candidate most like the others, by ROUGE-L), so the department's
own phrasing comes back and follows its sign-offs. Method and measurements: docs/radiology.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sagehealth.radiology import findings as fx
from sagehealth.radiology.cases import (
    NEIGHBOURS,
    Case,
    CaseBase,
    carry_rates,
    reported_sentences,
    sentence_features,
)
from sagehealth.radiology.checks import _sides_by_concept
from sagehealth.radiology.text import rouge_l_words, words

#: findings that, affirmed, need no closing "no acute disease" line after them
ACUTE = frozenset({"pneumothorax", "pneumoperitoneum", "aortic_dissection", "mediastinal_widening", "edema",
                   "consolidation", "effusion", "opacity", "mass"})
FALLBACK_NORMAL = "No acute cardiopulmonary abnormality."
#: similar cases whose impression may be reused for an abnormal study
REUSE_DEPTH = 20
#: preference for the most similar of the reusable cases (as in :func:`consensus`)
REUSE_BONUS = 0.1


@dataclass(frozen=True)
class Citation:
    """What an impression sentence rests on: a findings sentence of this study (``findings``,
    ref ``findings:<n>``), a similar signed case of the research zone (``case``, its research
    row id) or a prior report of the patient (``prior``, its document id)."""

    kind: str
    ref: str
    text: str


@dataclass(frozen=True)
class DraftSentence:
    text: str
    citations: tuple[Citation, ...]
    concepts: tuple[str, ...] = ()


@dataclass
class Drafted:
    """A drafted impression with the evidence of each sentence."""

    impression: str
    sentences: list[DraftSentence]
    abnormal: bool
    similar: list[tuple[Case, float]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # gate probability per findings sentence


def _weights(n: int) -> list[float]:
    return [1.0 / (i + 1) for i in range(n)]


def consensus(candidates: list[str]) -> int:
    """Index of the most central candidate (minimum Bayes risk under ROUGE-L; candidates are
    best-first and weighted 1/rank, with a bonus for the candidate's own rank)."""
    if not candidates:
        return -1
    toks = [words(c) for c in candidates]
    w = _weights(len(candidates))
    best, best_score = 0, -1.0
    for i, ti in enumerate(toks):
        s = w[i] + sum(wj * rouge_l_words(ti, tj) for j, (tj, wj) in enumerate(zip(toks, w)) if j != i)
        if s > best_score:
            best, best_score = i, s
    return best


_FILLER = [re.compile(a, re.IGNORECASE) for a in (
    r"^(?:there (?:is|are|has been|have been) (?:again )?)",
    r"^(?:again (?:seen|noted|demonstrated) (?:is|are) )",
    r"^(?:the (?:patient|pt) (?:is|has))\s+",
    r"^(?:redemonstration of|re-demonstration of|again demonstrated is)\s+",
    r"\s+(?:is|are) (?:again )?(?:seen|noted|present|identified|demonstrated|visualized|evident|redemonstrated)\b",
    r"\s+(?:again )?(?:seen|noted|present|identified|demonstrated|visualized)\b",
    r"^(?:and|also)\s+",
)]
_NEGATED_TAIL = re.compile(r",\s*(?=(?:no|without|negative|not)\b)|\s+without\s+|\s+with no\s+", re.IGNORECASE)


def impression_style(sentence: str) -> str:
    """A findings sentence in impression style: its affirmed clause without filler words
    ("There is a small left effusion, no pneumothorax" -> "A small left effusion")."""
    t = _NEGATED_TAIL.split(sentence)[0].strip()
    for rx in _FILLER:
        t = rx.sub("", t).strip()
    t = re.sub(r"\s+", " ", t).strip(" ,.")
    return t[:1].upper() + t[1:] if t else t


def tidy(text: str) -> str:
    """One space between words, no empty sentences (". ." -> ".")."""
    text = re.sub(r"\s+", " ", text or "").strip()
    return re.sub(r"\.(?:\s*\.)+", ".", text)


def compose(items: list[str], numbered: bool) -> str:
    items = [s.rstrip(". ") for s in items if s and s.strip(". ")]
    if numbered and len(items) > 1:
        return " ".join(f"{n}. {s}." for n, s in enumerate(items, 1))
    return " ".join(f"{s}." for s in items)


@dataclass
class OfflineDrafter:
    """Retrieval plus findings-driven composition (the default provider: no model, no network).

    ``threshold``: the gate probability from which a findings sentence is carried into the
    impression (chosen on the feedback slice of the dev split, docs/radiology.md);
    ``max_sentences``: findings sentences stated (critical results always are)."""

    threshold: float = 0.35
    max_sentences: int = 2
    reuse: bool = True  # state the kept findings in a similar case's words when one says exactly them
    name: str = "offline"
    prompt_version: str = "radiology-offline-1"

    def draft(self, lake: Any, cases: CaseBase, *, indication: str, findings: str,
              exclude_patient: str | None = None) -> Drafted:
        made = self._draft(lake, cases, indication=indication, findings=findings, exclude_patient=exclude_patient)
        made.impression = tidy(made.impression)
        made.sentences = [DraftSentence(tidy(s.text), s.citations, s.concepts) for s in made.sentences]
        return made

    def _draft(self, lake: Any, cases: CaseBase, *, indication: str, findings: str,
               exclude_patient: str | None = None) -> Drafted:
        similar = cases.similar(lake, findings, indication, exclude_patient=exclude_patient)
        if not findings.strip():
            return self._without_findings(similar)
        near = [c for c, _ in similar[:NEIGHBOURS]]
        sentences = reported_sentences(findings)
        rates = carry_rates(near)
        scored: list[tuple[float, int, str, list[fx.Finding]]] = []
        for i, s, fs in sentences:
            concepts = [f.concept for f in fs]
            p = cases.gate.prob(sentence_features(s, concepts, len(sentences)))
            rate, n = max((rates.get(c, (0.0, 0)) for c in concepts), key=lambda x: x[1])
            if n >= 2:
                p = (p + rate) / 2
            if any(f.critical for f in fs):
                p = 1.0  # a critical result is always stated
            scored.append((p, i, s, fs))
        scores = {f"findings:{i}": round(p, 3) for p, i, _s, _f in scored}
        if not scored or max(p for p, *_ in scored) < self.threshold:
            return self._normal(similar, scores)
        keep = [x for x in scored if x[0] >= self.threshold]
        keep.sort(key=lambda x: -x[0])
        critical = [x for x in keep if x[0] >= 1.0]
        keep = critical + [x for x in keep if x[0] < 1.0][: max(0, self.max_sentences - len(critical))]
        out: list[DraftSentence] = []
        for _p, i, s, fs in keep:
            text = impression_style(s)
            if text and all(text != d.text for d in out):
                out.append(DraftSentence(text, (Citation("findings", f"findings:{i}", s),),
                                         tuple(dict.fromkeys(f.concept for f in fs))))
        if not any(set(d.concepts) & ACUTE for d in out):
            closing = self._closing(similar)
            if closing is not None:
                out.append(closing)
        numbered = sum(c.numbered for c in near) > len(near) / 2
        composed = compose([d.text for d in out], numbered)
        if self.reuse:
            found = self._reused(similar, out, findings, composed)
            if found is not None:
                return Drafted(found[0], found[1], True, similar, scores)
        return Drafted(composed, out, True, similar, scores)

    def _reused(self, similar: list[tuple[Case, float]], out: list[DraftSentence], findings: str,
                composed: str) -> tuple[str, list[DraftSentence]] | None:
        """The impression of a similar case that reports exactly the findings kept here (same
        concepts, no laterality this study's findings contradict), when the candidates agree
        with it more than with the composed text (consensus by ROUGE-L)."""
        kept = {c for d in out for c in d.concepts}
        if not kept:
            return None
        sides = _sides_by_concept(findings)
        cands = []
        for c, _ in similar[:REUSE_DEPTH]:
            if c.impression_concepts != kept:
                continue
            theirs = _sides_by_concept(c.impression)
            if any(theirs.get(k) and sides.get(k) and not theirs[k] & sides[k] for k in kept):
                continue
            if any(theirs.get(k) and not sides.get(k) for k in kept):
                continue  # a side this study's findings do not give
            cands.append(c)
        if not cands:
            return None
        toks = [words(c.impression) for c in cands]
        w = _weights(len(cands))

        def support(t: list[str], skip: int = -1) -> float:
            return sum(wj * rouge_l_words(t, tj) for j, (tj, wj) in enumerate(zip(toks, w)) if j != skip) / \
                max(1e-9, sum(wj for j, wj in enumerate(w) if j != skip))

        best = max(range(len(cands)), key=lambda i: support(toks[i], i) + REUSE_BONUS * w[i])
        if len(cands) < 2 or support(toks[best], best) <= support(words(composed)):
            return None
        case = cands[best]
        cites = tuple(x for d in out for x in d.citations if x.kind == "findings")
        return case.impression, [DraftSentence(case.impression, (*cites, Citation("case", case.row_id, case.impression)),
                                               tuple(sorted(kept)))]

    def _normal(self, similar: list[tuple[Case, float]], scores: dict[str, float]) -> Drafted:
        normal = [c for c, _ in similar if not c.abnormal][:NEIGHBOURS]
        if not normal:
            return Drafted(FALLBACK_NORMAL, [DraftSentence(FALLBACK_NORMAL, ())], False, similar, scores)
        best = normal[consensus([c.impression for c in normal])]
        return Drafted(best.impression, [DraftSentence(best.impression, (Citation("case", best.row_id, best.impression),))],
                       False, similar, scores)

    def _closing(self, similar: list[tuple[Case, float]]) -> DraftSentence | None:
        """The normal closing line the most similar normal cases use ("No acute disease.")."""
        cands = [c for c, _ in similar if not c.abnormal and c.closing][:NEIGHBOURS]
        short = [c for c in cands if len(words(c.closing)) <= 8] or cands
        if not short:
            return None
        best = short[consensus([c.closing for c in short])]
        first = fx.split_sentences(best.closing)[:1]
        return DraftSentence(first[0] if first else best.closing, (Citation("case", best.row_id, best.closing),))

    def _without_findings(self, similar: list[tuple[Case, float]]) -> Drafted:
        """No findings dictated: the consensus impression of the most similar abnormal cases
        without findings (by indication) — a proposal for review, flagged by the checks."""
        abnormal = [c for c, _ in similar if c.abnormal][:NEIGHBOURS] or [c for c, _ in similar][:NEIGHBOURS]
        if not abnormal:
            return Drafted("", [], False, similar)
        best = abnormal[consensus([c.impression for c in abnormal])]
        return Drafted(best.impression, [DraftSentence(best.impression, (Citation("case", best.row_id, best.impression),),
                                                       tuple(sorted(best.impression_concepts)))],
                       best.abnormal, similar)
