"""Similar cases for drafting: the signed radiology reports of the de-identified research zone.

Cases come from other patients, so they are read from the research zone only (``research_documents``
and its ``research_chunks`` BM25 index): nobody drafting sees another patient's identified report
through them. The case base follows the research zone: a report signed a moment ago is a case
for the next draft (its version is re-read, only new reports are parsed), and the statistics the
drafter learns from the cases (which findings radiologists carry into the impression, their
closing phrases) are refit from the cases on the version that changed — no rebuild step.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sagehealth.radiology import findings as fx
from sagehealth.radiology.text import similarity, words

#: report parts as the store writes them (``HEADING: text`` at the start of a line)
_PART = re.compile(r"^(INDICATION|COMPARISON|TECHNIQUE|FINDINGS|IMPRESSION|ADDENDUM)\s*:\s*", re.M)
#: cases looked at per draft (the retrieval depth; statistics use the best ``NEIGHBOURS``)
DEPTH = 40
NEIGHBOURS = 10
#: weight of the findings' word-order similarity (the radiologist's template) against BM25
TEMPLATE_WEIGHT = 0.8


def report_parts(text: str | None) -> dict[str, str]:
    """``{"indication": ..., "findings": ..., "impression": ...}`` of a report text written with
    part headings (the IU X-ray layout the store keeps); a report without headings is all findings."""
    text = text or ""
    marks = list(_PART.finditer(text))
    if not marks:
        return {"findings": text.strip()} if text.strip() else {}
    out: dict[str, str] = {}
    for m, nxt in zip(marks, [*marks[1:], None]):
        value = text[m.end(): nxt.start() if nxt else len(text)].strip()
        if value:
            out[m.group(1).lower()] = value
    return out


@dataclass(frozen=True)
class Case:
    """One signed report of the research zone, read for drafting."""

    row_id: str  # research_documents row id (what citations name)
    patient_id: str | None  # research pseudonym
    indication: str
    findings: str
    impression: str
    findings_concepts: frozenset[str]
    impression_concepts: frozenset[str]
    closing: str  # the impression's sentences that report no finding ("No acute disease.")
    numbered: bool  # impression written as a numbered list
    sentences: tuple[tuple[str, tuple[str, ...]], ...] = ()  # findings sentences that report, their concepts

    @property
    def abnormal(self) -> bool:
        return bool(self.impression_concepts)


def make_case(row: dict[str, Any]) -> Case | None:
    """A case from a research_documents row, or None when it has no impression."""
    parts = report_parts(row.get("text"))
    impression = parts.get("impression", "")
    if not impression:
        return None
    imp = fx.reported(impression)
    said = {f.sentence for f in imp}
    closing = ". ".join(s for i, s in enumerate(fx.split_sentences(impression)) if i not in said)
    sent = reported_sentences(parts.get("findings", ""))
    return Case(row["row_id"], row.get("patient_id"), parts.get("indication", ""), parts.get("findings", ""),
                impression, frozenset(f.concept for _i, _s, fs in sent for f in fs),
                frozenset(f.concept for f in imp), closing + "." if closing else "",
                bool(re.match(r"\s*1[.)]\s", impression)),
                tuple((s, tuple(f.concept for f in fs)) for _i, s, fs in sent))


# -- which findings reach the impression: a small logistic model over sentence features --------
MODIFIERS = {
    "mild": r"mild\w*|minimal\w*|slight\w*|trace|small|tiny|subtle",
    "severe": r"moderate\w*|severe\w*|large|marked\w*|extensive|massive|dense",
    "chronic": r"stable|unchanged|chronic|old|healed|remote|again|prior|previous\w*|redemonstrat\w*|persistent|known",
    "new": r"new|increas\w+|interval|worsen\w*|progress\w*|developing|acute",
    "uncertain": r"possib\w+|probab\w+|may|might|could|question\w*|suspicious|concerning|suggest\w*|likely|versus|vs",
    "recommend": r"recommend\w*|follow-?up|ct|further evaluation|correlat\w+",
    "spine": r"spine|spinal|vertebra\w*",
    "bilateral": r"bilateral\w*|bibasilar|both",
    "lung": r"lungs?|lobe|base|basilar|apex|apical|perihilar|midlung",
}
_MOD = {k: re.compile(r"\b(?:" + v + r")\b", re.IGNORECASE) for k, v in MODIFIERS.items()}


def sentence_features(sentence: str, concepts: list[str], n_reported: int) -> dict[str, float]:
    """Features of one findings sentence that reports ``concepts``."""
    f = {"bias": 1.0, "n": min(n_reported, 5) / 5, "only": float(n_reported == 1),
         "len": min(len(words(sentence)), 30) / 30}
    for c in concepts:
        f["c:" + c] = 1.0
    for name, rx in _MOD.items():
        if rx.search(sentence):
            f["m:" + name] = 1.0
            f[f"cm:{concepts[0]}:{name}"] = 1.0
    return f


@dataclass
class Gate:
    """Logistic regression (L2, batch gradient descent in NumPy) giving the probability that a
    findings sentence's finding is carried into the impression."""

    weights: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, rows: list[dict[str, float]], labels: list[int], *, l2: float = 1e-2,
            iters: int = 300, lr: float = 0.5) -> Gate:
        if not rows or len(set(labels)) < 2:
            return cls()
        vocab = {k: i for i, k in enumerate(sorted({k for r in rows for k in r}))}
        a = np.zeros((len(rows), len(vocab)))
        for i, r in enumerate(rows):
            for k, v in r.items():
                a[i, vocab[k]] = v
        y = np.asarray(labels, float)
        w = np.zeros(len(vocab))
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-(a @ w)))
            w -= lr * (a.T @ (p - y) / len(y) + l2 * w)
        return cls({k: float(w[i]) for k, i in vocab.items()})

    def prob(self, x: dict[str, float]) -> float:
        if not self.weights:
            return 0.5
        z = sum(self.weights.get(k, 0.0) * v for k, v in x.items())
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def reported_sentences(text: str) -> list[tuple[int, str, list[fx.Finding]]]:
    """``(index, sentence, findings)`` of each sentence of ``text`` that reports a finding."""
    sentences = fx.split_sentences(text)
    by: dict[int, list[fx.Finding]] = {}
    for f in fx.reported(text):
        by.setdefault(f.sentence, []).append(f)
    return [(i, sentences[i], sorted(fs, key=lambda f: f.weight)) for i, fs in sorted(by.items())]


def train_gate(cases: list[Case]) -> Gate:
    rows, labels = [], []
    for c in cases:
        for s, concepts in c.sentences:
            rows.append(sentence_features(s, list(concepts), len(c.sentences)))
            labels.append(int(bool(set(concepts) & c.impression_concepts)))
    return Gate.fit(rows, labels)


# -- the case base -----------------------------------------------------------------------------
_PARSED: dict[tuple[str, str | None], Case | None] = {}
_PARSED_LOCK = threading.Lock()
#: a parsed-case cache bigger than this is emptied (a long-running server)
PARSED_MAX = 500_000


@dataclass
class CaseBase:
    """The signed radiology reports of one research-zone version, with what the drafter learns
    from them."""

    version: int  # research_documents dataset version
    cases: dict[str, Case]
    gate: Gate

    @classmethod
    def load(cls, lake: Any) -> CaseBase:
        """The case base of the latest research zone (memoized per version; only reports not
        seen before are parsed)."""
        try:
            ds = lake.dataset("research_documents")
        except Exception:  # noqa: BLE001 - no research zone yet: no cases
            return cls(-1, {}, Gate())
        return lake.memo(("radiology-cases", ds.version), lambda: cls._build(lake, ds))

    @classmethod
    def _build(cls, lake: Any, ds: Any) -> CaseBase:
        table = ds.to_table(columns=["row_id", "provenance_id", "patient_id", "text", "status"],
                            filter="kind = 'radiology_report' AND (status IS NULL OR status != 'preliminary')")
        from sagehealth.privacy.research import withdrawn_pseudonyms

        withdrawn = withdrawn_pseudonyms(lake)
        cases: dict[str, Case] = {}
        with _PARSED_LOCK:
            if len(_PARSED) > PARSED_MAX:
                _PARSED.clear()
            for row in table.to_pylist():
                if row["patient_id"] and row["patient_id"] in withdrawn:
                    continue
                key = (row["row_id"], row["provenance_id"])
                if key not in _PARSED:
                    _PARSED[key] = make_case(row)
                if (case := _PARSED[key]) is not None:
                    cases[case.row_id] = case
        return cls(ds.version, cases, train_gate(list(cases.values())))

    def similar(self, lake: Any, findings: str, indication: str = "", *, exclude_patient: str | None = None,
                k: int = DEPTH) -> list[tuple[Case, float]]:
        """The cases most like a study, best first: BM25 over the research zone's FINDINGS
        sections (INDICATION sections when there are no findings), one per report."""
        from sagehealth.retrieval.search import search_chunks

        if not self.cases:
            return []
        section = "FINDINGS" if findings.strip() else "INDICATION"
        query = " ".join(words(f"{findings} {indication}"))[:4000]
        if not query:
            return []
        ds = lake.dataset("research_chunks")
        where = ("source_table = 'documents' AND kind = 'radiology_report' "
                 f"AND upper(section) = '{section}'")
        hits = lake.memo(("radiology-similar", ds.version, where, query, k),
                         lambda: search_chunks(ds, query, embedder=None, k=min(4 * k, 1000), mode="bm25", where=where))
        out: list[tuple[Case, float]] = []
        seen: set[str] = set()
        for h in hits:
            case = self.cases.get(h.source_row_id)
            if case is None or case.row_id in seen or (exclude_patient and case.patient_id == exclude_patient):
                continue
            if section == "INDICATION" and case.findings:
                continue  # a study without findings is compared with others without findings
            seen.add(case.row_id)
            out.append((case, h.score))
            if len(out) >= k:
                break
        if section == "FINDINGS" and out:
            # the radiologist's template: the same findings words in the same order
            q = words(findings)
            top = max(s for _, s in out) or 1.0
            out = sorted(((c, TEMPLATE_WEIGHT * similarity(q, words(c.findings)) + (1 - TEMPLATE_WEIGHT) * s / top)
                          for c, s in out), key=lambda x: -x[1])
        return out


def carry_rates(neighbours: list[Case]) -> dict[str, tuple[float, int]]:
    """Per concept in the neighbours' findings: how often they carried it into the impression
    (smoothed rate, how many had it)."""
    num: Counter[str] = Counter()
    den: Counter[str] = Counter()
    for c in neighbours:
        for concept in c.findings_concepts:
            den[concept] += 1
            num[concept] += concept in c.impression_concepts
    return {c: ((num[c] + 0.5) / (den[c] + 1), den[c]) for c in den}
