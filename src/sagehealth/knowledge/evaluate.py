"""Evaluation of concept linking and its assertion context on radiology reports labelled by
people: the Indiana University chest X-ray collection (Open-i), whose reports carry the MeSH
headings of their findings (``Problems``: "Cardiomegaly;Pleural Effusion", or "normal").

A document-level test of what a search with ``concepts=`` or a cohort query relies on: a
report *affirms* a finding when the linker finds a mention of one of the finding's concepts
that is not negated, hypothetical or about family. The findings scored are the MeSH headings
with at least ``min_support`` labelled reports whose name the linker itself maps to concepts
(a mention covering the whole heading, in MeSH's order or inverted: "Hernia, Hiatal" ->
"Hiatal Hernia"), so the set is not picked by hand. Reported per finding and pooled, with the
assertion rules and without them (every mention counts): the gap is what the ConText rules
buy on real reports, where most findings are named to be denied ("No pneumothorax or pleural
effusion"). Labels are per report and made for indexing, so a finding a report mentions in
passing may be unlabelled: precision here is a floor.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter
from pathlib import Path
from typing import Any

from sagehealth.errors import SageHealthError
from sagehealth.knowledge.linking import Linker

#: labels that name no finding
NOT_FINDINGS = frozenset({"normal", "no indexing"})


def load_iu_reports(path: str | Path) -> list[dict[str, Any]]:
    """Reports of an Open-i IU X-ray CSV (``uid``, ``Problems``, ``findings``, ``impression``):
    id, text (findings then impression) and the set of finding headings."""
    p = Path(path)
    if not p.is_file():
        raise SageHealthError(f"{p}: no such reports file")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"uid", "Problems", "findings", "impression"} - set(reader.fieldnames or ())
        if missing:
            raise SageHealthError(f"{p}: not an IU X-ray reports CSV (missing columns: {', '.join(sorted(missing))})")
        out = []
        for row in reader:
            text = "\n".join(t.strip() for t in (row["findings"], row["impression"]) if t and t.strip())
            if not text:
                continue
            labels = {h.strip() for h in (row["Problems"] or "").split(";") if h.strip()}
            out.append({"id": row["uid"], "text": text, "labels": {h for h in labels if h.lower() not in NOT_FINDINGS}})
    return out


def heading_concepts(linker: Linker, heading: str) -> set[str]:
    """The concepts the linker gives a MeSH heading's whole name (as written or inverted)."""
    names = [heading]
    if ", " in heading:
        head, _, rest = heading.partition(", ")
        names.append(f"{rest} {head}")
    found: set[str] = set()
    for name in names:
        found |= {m.concept_id for m in linker.find(name) if m.start == 0 and m.end == len(name)}
    return found


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            "tp": tp, "fp": fp, "fn": fn}


def evaluate_linking(reports: list[dict[str, Any]], linker: Linker, *, min_support: int = 10) -> dict[str, Any]:
    """Per-finding and pooled precision / recall / F1 of "the report affirms this finding",
    with the assertion rules and without them (see the module docstring). Headings the linker
    maps to the same concepts are one finding ("Emphysema", "Pulmonary Emphysema"), and a more
    specific label implies the finding it names ("Calcified Granuloma" -> "Granuloma")."""
    support = Counter(h for r in reports for h in r["labels"])
    groups: dict[frozenset[str], list[str]] = {}
    for h, n in support.most_common():
        if n >= min_support and (concepts := heading_concepts(linker, h)):
            groups.setdefault(frozenset(concepts), []).append(h)
    if not groups:
        raise SageHealthError("no labelled finding maps to a concept of this vocabulary: load HPO or the Disease Ontology")
    patterns = {c: re.compile(r"\b(?:" + "|".join(re.escape(h.lower()) for h in hs) + r")\b") for c, hs in groups.items()}

    def labelled(labels: set[str], concepts: frozenset[str]) -> bool:
        return any(patterns[concepts].search(label.lower()) for label in labels)

    counts = {mode: {c: [0, 0, 0] for c in groups} for mode in ("context", "no_context")}
    named_unlabelled = not_affirmed = 0
    for r in reports:
        mentions = linker.find(r["text"])
        affirmed = {m.concept_id for m in mentions if m.affirmed}
        seen = {m.concept_id for m in mentions}
        for concepts in groups:
            gold = labelled(r["labels"], concepts)
            for mode, found in (("context", affirmed), ("no_context", seen)):
                pred = bool(concepts & found)
                c = counts[mode][concepts]
                c[0] += pred and gold
                c[1] += pred and not gold
                c[2] += gold and not pred
            if not gold and concepts & seen:  # named in a report not labelled with it
                named_unlabelled += 1
                not_affirmed += not concepts & affirmed
    pooled = {mode: _prf(*(sum(c[i] for c in by.values()) for i in range(3))) for mode, by in counts.items()}
    per = {}
    for concepts, hs in groups.items():
        n = sum(labelled(r["labels"], concepts) for r in reports)
        per[hs[0]] = {"headings": hs, "support": n, "concepts": sorted(concepts), **_prf(*counts["context"][concepts])}
    return {
        "reports": len(reports),
        "findings": len(groups),
        "with_context": pooled["context"],
        "without_context": pooled["no_context"],
        "named_but_unlabelled": named_unlabelled,
        "of_those_not_affirmed": round(not_affirmed / named_unlabelled, 4) if named_unlabelled else None,
        "per_finding": dict(sorted(per.items(), key=lambda kv: -kv[1]["support"])),
    }


def evaluate_linking_files(reports: str | Path, vocabularies: list[str | Path], *, min_support: int = 10) -> dict[str, Any]:
    """:func:`evaluate_linking` with the linker a store builds from ``vocabularies`` (loaded into
    a temporary store, as ``sagehealth vocab load`` does), over the reports of ``reports``."""
    import tempfile

    from sagehealth.ecosystem import Ecosystem
    from sagehealth.governance.policy import Principal
    from sagehealth.knowledge.linking import linker_from_lake

    rows = load_iu_reports(reports)
    with tempfile.TemporaryDirectory(prefix="sagehealth-linking-") as tmp:
        eco = Ecosystem.open(Path(tmp) / "store", Principal("eval", "steward", "operations"))
        eco.load_vocabulary(vocabularies)
        linker = linker_from_lake(eco.lake)
        if linker is None:
            raise SageHealthError("the vocabularies hold no concept the linker uses (HPO or the Disease Ontology)")
        return evaluate_linking(rows, linker, min_support=min_support)
