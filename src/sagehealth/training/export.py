"""``sagehealth export dataset KIND``: training examples from the research zone, curated and
written in the Hugging Face datasets layout.

Only the research zone is read (de-identified rows, patients as pseudonyms; patients who
withdrew are left out), at one store version. Every text field is de-identified once more on
the way out, to type tags (``[NAME]``, ``[DATE]``: an exported model learns no surrogate names
either), then re-scanned: an example in which the detector still finds PHI, or which holds a real
identifier of any patient of the clinical zone (a full name, an identifier value, a phone number
or e-mail), is dropped and counted. Then quality filters, exact and near-duplicate removal and
decontamination (``curation.py``); splits by patient, never by row; shards sorted by example id,
so the same store version gives byte-identical files. Written to a temporary folder and renamed
at the end: a killed export leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sagehealth.errors import QueryError
from sagehealth.training import curation as cur
from sagehealth.training.folders import atomic_folder, check_new

KINDS = ("pretrain", "instruct", "preference", "retrieval")
#: the text fields of each kind (de-identified and re-scanned), and the columns of its shards
FIELDS: dict[str, tuple[str, ...]] = {
    "pretrain": ("text",),
    "instruct": ("instruction", "input", "output"),
    "preference": ("prompt", "chosen", "rejected"),
    "retrieval": ("query", "positive", "negative"),
}
META = ("id", "task", "kind", "source", "year")
SHARD_ROWS = 50_000
FINDINGS_INSTRUCTION = "Write the IMPRESSION of this chest radiograph report from its indication and findings."
PROBLEMS_INSTRUCTION = "List the problems this clinical note affirms, one per line."
#: section -> section tasks of clinical notes: (task, instruction, source sections, target sections)
SECTION_TASKS = (
    ("hpi_to_assessment", "Write the assessment and plan from this history of present illness.",
     ("HISTORY OF PRESENT ILLNESS", "HPI", "SUBJECTIVE"), ("ASSESSMENT AND PLAN", "ASSESSMENT", "IMPRESSION")),
    ("findings_to_diagnosis", "Write the postoperative diagnosis from the procedure description.",
     ("PROCEDURE", "PROCEDURE DETAILS", "DESCRIPTION OF PROCEDURE"), ("POSTOPERATIVE DIAGNOSIS",)),
)
MIN_SECTION_WORDS = 5


@dataclass
class Example:
    fields: dict[str, str]
    task: str
    kind: str | None
    source: str | None
    year: int | None
    patient: str | None
    source_table: str
    source_row_id: str

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.task}\x1f{self.source_table}\x1f{self.source_row_id}".encode()).hexdigest()[:24]

    def text(self) -> str:
        return "\n".join(v for v in self.fields.values() if v)


@dataclass
class DatasetExport:
    """What an export wrote: where, which kind and store version, the counts per curation step,
    rows per split and per source."""

    path: str
    kind: str
    store_version: int
    counts: dict[str, Any]
    splits: dict[str, int]
    sources: dict[str, int]
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _year(value: Any) -> int | None:
    return value.year if value is not None and hasattr(value, "year") else None


def _rows(lake: Any, table: str, version: int, columns: list[str], where: str | None = None) -> list[dict[str, Any]]:
    return lake.dataset(table, version).to_table(columns=columns, filter=where).to_pylist()


def examples(lake: Any, ledger: Any, kind: str, version: int) -> Iterator[Example]:
    """The raw examples of ``kind`` at store ``version`` (research zone and de-identified pairs)."""
    from sagehealth.radiology.cases import report_parts
    from sagehealth.radiology.text import study_prompt

    if kind == "pretrain":
        for r in _rows(lake, "research_documents", version,
                       ["row_id", "patient_id", "kind", "title", "date", "text", "source_system", "status"]):
            if r["text"] and r["status"] != "preliminary":
                yield Example({"text": r["text"]}, "document", r["kind"], r["source_system"], _year(r["date"]),
                              r["patient_id"], "research_documents", r["row_id"])
        for r in _rows(lake, "research_literature", version, ["row_id", "title", "text", "year", "collection"]):
            text = "\n".join(x for x in (r["title"], r["text"]) if x)
            if text:
                yield Example({"text": text}, "article", "article", r["collection"], r["year"], None,
                              "research_literature", r["row_id"])
    elif kind == "instruct":
        docs = _rows(lake, "research_documents", version,
                     ["row_id", "patient_id", "kind", "date", "text", "source_system", "status"])
        for r in docs:
            if r["kind"] != "radiology_report" or r["status"] == "preliminary":
                continue
            parts = report_parts(r["text"])
            if parts.get("findings") and parts.get("impression"):
                prompt = study_prompt(parts.get("indication"), parts["findings"])
                yield Example({"instruction": FINDINGS_INSTRUCTION, "input": prompt, "output": parts["impression"]},
                              "findings_to_impression", r["kind"], r["source_system"], _year(r["date"]),
                              r["patient_id"], "research_documents", r["row_id"])
        for r in _rows(lake, "research_documents", version, ["row_id", "patient_id", "kind", "date", "text",
                                                              "source_system", "sections"]):
            if r["kind"] not in ("note", "discharge_summary") or not r["text"]:
                continue
            parts = {s["name"].upper(): r["text"][s["start"]:s["end"]] for s in r["sections"] or []}
            for task, instruction, sources, targets in SECTION_TASKS:
                src = next((_body(parts[n]) for n in sources if n in parts), "")
                tgt = next((_body(parts[n]) for n in targets if n in parts), "")
                if len(src.split()) >= MIN_SECTION_WORDS and len(tgt.split()) >= 2:
                    yield Example({"instruction": instruction, "input": src, "output": tgt}, task, r["kind"],
                                  r["source_system"], _year(r["date"]), r["patient_id"], "research_documents",
                                  f"{r['row_id']}#{task}")
        yield from _answers(ledger)
        problems: dict[str, list[str]] = {}
        for m in _rows(lake, "research_mentions", version,
                       ["source_row_id", "label", "concept_id", "negated", "historical", "family", "hypothetical"]):
            if m["concept_id"] and not (m["negated"] or m["historical"] or m["family"] or m["hypothetical"]):
                labels = problems.setdefault(m["source_row_id"], [])
                if m["label"] and m["label"] not in labels:
                    labels.append(m["label"])
        for r in docs:
            if r["kind"] in ("note", "discharge_summary") and problems.get(r["row_id"]) and r["text"]:
                yield Example({"instruction": PROBLEMS_INSTRUCTION, "input": r["text"],
                               "output": "\n".join(sorted(problems[r["row_id"]]))},
                              "note_to_problems", r["kind"], r["source_system"], _year(r["date"]),
                              r["patient_id"], "research_documents", r["row_id"])
    elif kind == "preference":
        for p in ledger.read("report_pairs", where={"kind": "preference"}):
            if p["rejected"] and p["chosen"]:
                yield Example({"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]},
                              "draft_vs_signed", "radiology_report", p["provider"], p["year"], p["patient"],
                              "report_pairs", p["pair_id"])
    elif kind == "retrieval":
        yield from _retrieval(lake, version)
    else:
        raise QueryError(f"unknown dataset kind {kind!r}: use {', '.join(KINDS)}")


def _retrieval(lake: Any, version: int) -> Iterator[Example]:
    """Query -> positive passage pairs with a mined hard negative (the best BM25 passage of the
    research zone that is not the positive): article title -> abstract, and report findings ->
    the signed impression (negative: the impression of the most similar other report that says
    something else)."""
    from sagehealth.radiology.cases import CaseBase, report_parts
    from sagehealth.radiology.text import words
    from sagehealth.retrieval.search import search_chunks

    chunks = lake.dataset("research_chunks", version)
    for r in _rows(lake, "research_literature", version, ["row_id", "title", "text", "year", "collection"]):
        if not (r["title"] and r["text"]):
            continue
        query = " ".join(words(r["title"]))
        hits = search_chunks(chunks, query, embedder=None, k=10, mode="bm25",
                             where="source_table = 'literature'") if query else []
        negative = next((h.text for h in hits if h.source_row_id != r["row_id"]), None)
        if negative:
            yield Example({"query": r["title"], "positive": r["text"], "negative": negative}, "title_to_abstract",
                          "article", r["collection"], r["year"], None, "research_literature", r["row_id"])
    cases = CaseBase.load(lake) if version == lake.head().version else None
    for r in _rows(lake, "research_documents", version, ["row_id", "patient_id", "date", "text", "source_system",
                                                          "kind", "status"]):
        if r["kind"] != "radiology_report" or r["status"] == "preliminary" or cases is None:
            continue
        parts = report_parts(r["text"])
        if not (parts.get("findings") and parts.get("impression")):
            continue
        mine = " ".join(words(parts["impression"]))
        negative = next((c.impression for c, _ in cases.similar(lake, parts["findings"], k=10)
                         if c.row_id != r["row_id"] and " ".join(words(c.impression)) != mine), None)
        if negative:
            yield Example({"query": parts["findings"], "positive": parts["impression"], "negative": negative},
                          "findings_to_impression", r["kind"], r["source_system"], _year(r["date"]), r["patient_id"],
                          "research_documents", r["row_id"])


ANSWER_INSTRUCTION = "Answer the question from the patient's record; cite the evidence of every sentence."


def _answers(ledger: Any) -> Iterator[Example]:
    """Question -> answer pairs from agent traces whose answer a person accepted (or edited: the
    edited text is the answer). A clinician's trace is identified text: its patient becomes the
    research pseudonym (no key: such traces are left out), and its texts are tagged and
    re-scanned like every other field."""
    from sagehealth.errors import ConfigError
    from sagehealth.privacy.structured import RowDeidentifier

    try:
        deid: RowDeidentifier | None = RowDeidentifier()
    except ConfigError:
        deid = None
    traces = {t["trace_id"]: t for t in ledger.read("traces")}
    for fb in ledger.read("feedback"):
        trace = traces.get(fb["trace_id"])
        if trace is None or fb["target"] != "answer" or fb["verdict"] not in ("accept", "edit"):
            continue
        answer = fb["edited_text"] if fb["verdict"] == "edit" else trace["answer"]
        if not (trace["question"] and answer) or trace.get("abstained"):
            continue
        patient = trace.get("patient_id")
        if patient and trace["role"] != "researcher":
            if deid is None:
                continue
            patient = deid.pseudonym(patient)
        yield Example({"instruction": ANSWER_INSTRUCTION, "input": trace["question"], "output": answer},
                      "question_to_cited_answer", "agent_answer", trace["provider"],
                      fb["created_at"].year if fb.get("created_at") else None, patient, "feedback", fb["feedback_id"])


def _body(section: str) -> str:
    """A section's text without its heading ("# Plan", "PLAN:", "POSTOPERATIVE DIAGNOSIS (ES):")
    and the stray commas of CSV exports."""
    text = section.strip()
    first, _, rest = text.partition("\n")
    if first.lstrip().startswith("#") or (first.strip().isupper() and len(first.split()) <= 6):
        text = rest
    text = re.sub(r"^\s*[A-Z][A-Z0-9 ()/&-]{2,60}:\s*", "", text)
    return text.strip(" \n\t,;:")


def split_of(example: Example, validation: float, test: float) -> str:
    """train / validation / test by the patient (a hash of the pseudonym; an example of no
    patient by its own id): one patient's examples are all in one split."""
    key = example.patient or example.id
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "validation" if u < test + validation else "train"


def export_dataset(lake: Any, ledger: Any, kind: str, out: str | os.PathLike[str], *, version: int | None = None,
                   decontaminate: list[str | os.PathLike[str]] | tuple = (), validation: float = 0.0,
                   test: float = 0.0) -> DatasetExport:
    """Curate and write the ``kind`` dataset of store ``version`` (latest) to ``out``."""
    from sagehealth.privacy.deid import deidentify, detect
    from sagehealth.privacy.research import withdrawn_pseudonyms
    from sagehealth.training.card import dataset_card

    if kind not in KINDS:
        raise QueryError(f"unknown dataset kind {kind!r}: use {', '.join(KINDS)}")
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise QueryError("validation and test are shares of the patients: each in [0, 1), together below 1")
    out = check_new(out)
    commit = lake.resolve(version)
    if not lake.count("research_documents", commit.version) and not lake.count("research_literature", commit.version):
        raise QueryError(f"the research zone of version {commit.version} is empty: refresh it first "
                         "(sagehealth research refresh, with $SAGEHEALTH_DEID_KEY)")
    contaminated = cur.evaluation_ngrams(decontaminate) if decontaminate else set()
    gone = withdrawn_pseudonyms(lake)
    known = cur.KnownIdentifiers(lake.read("patients", columns=["given_names", "family_name", "identifiers",
                                                                  "telecom"]).to_pylist())
    counts = cur.Counts()
    kept: list[Example] = []
    for ex in examples(lake, ledger, kind, commit.version):
        counts.seen += 1
        if ex.patient and ex.patient in gone:
            counts.removed["consent_withdrawn"] += 1
            continue
        public = ex.source_table == "research_literature"  # published articles: no patient's text
        tagged = ex.fields if public else {k: deidentify(v, mode="tags").text if v else v for k, v in ex.fields.items()}
        # a real identifier in research-zone text is a de-identification miss: the example goes (agent
        # answers come from the clinical zone's ledger: identified by nature, judged once tagged)
        research = ex.source_table != "feedback"
        if (research and any(v and known.found(v) for v in ex.fields.values())) or \
                any(v and ((not public and detect(v)) or known.found(v)) for v in tagged.values()):
            counts.removed["phi_rescan"] += 1
            continue
        ex.fields = tagged
        if (problem := cur.quality_problem(ex.text())) is not None:
            counts.removed[f"quality_{problem}"] += 1
            continue
        kept.append(ex)
    kept.sort(key=lambda e: e.id)
    seen_keys: set[str] = set()
    unique = []
    for ex in kept:
        key = cur.exact_key(ex.text())
        if key in seen_keys:
            counts.removed["exact_duplicate"] += 1
            continue
        seen_keys.add(key)
        unique.append(ex)
    drop, counts.clusters = cur.near_duplicates([ex.text() for ex in unique])
    counts.removed["near_duplicate"] += sum(drop)
    unique = [ex for ex, d in zip(unique, drop) if not d]
    if contaminated:
        clean = [ex for ex in unique if not (cur.ngrams(ex.text()) & contaminated)]
        counts.removed["decontaminated"] += len(unique) - len(clean)
        unique = clean
    if not unique:
        raise QueryError(f"no {kind} example is left at version {commit.version} after curation: {counts.as_dict()}")
    splits: dict[str, list[Example]] = {}
    for ex in unique:
        splits.setdefault(split_of(ex, validation, test), []).append(ex)
    with atomic_folder(out) as tmp:
        (tmp / "data").mkdir()
        files = _write(tmp, kind, splits, commit.version)
        sources = Counter(ex.source or "unknown" for ex in unique)
        result = DatasetExport(str(out), kind, commit.version, counts.as_dict(),
                               {s: len(v) for s, v in sorted(splits.items())}, dict(sorted(sources.items())), files)
        (tmp / "README.md").write_text(dataset_card(result, lake, decontaminate), encoding="utf-8")
    return result


def _write(folder: Path, kind: str, splits: dict[str, list[Example]], version: int) -> list[str]:
    cols = [*META[:1], *FIELDS[kind], *META[1:]]
    schema = pa.schema([(c, pa.int32() if c == "year" else pa.string()) for c in cols])
    files, prov = [], []
    for split, rows in sorted(splits.items()):
        n = max(1, -(-len(rows) // SHARD_ROWS))
        for i in range(n):
            part = rows[i * SHARD_ROWS:(i + 1) * SHARD_ROWS]
            table = pa.Table.from_pylist([{"id": e.id, **e.fields, "task": e.task, "kind": e.kind, "source": e.source,
                                           "year": e.year} for e in part], schema=schema)
            name = f"data/{split}-{i:05d}-of-{n:05d}.parquet"
            pq.write_table(table, folder / name, compression="zstd")
            files.append(name)
        prov += [{"id": e.id, "split": split, "source_table": e.source_table, "source_row_id": e.source_row_id,
                  "store_version": version} for e in rows]
    pq.write_table(pa.Table.from_pylist(prov, schema=pa.schema([
        ("id", pa.string()), ("split", pa.string()), ("source_table", pa.string()), ("source_row_id", pa.string()),
        ("store_version", pa.int64())])), folder / "provenance.parquet", compression="zstd")
    return files
