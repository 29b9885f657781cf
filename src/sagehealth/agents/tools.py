"""The agent tools: typed functions over the governed library API.

Each tool takes the caller's :class:`~sagehealth.ecosystem.Ecosystem` (which carries the
principal, checks access and writes the audit log) and a pydantic arguments model, and returns
a pydantic result whose rows name where they came from (row ids, chunk ids, provenance ids).
The docstring is the tool's description in MCP and OpenAPI. No tool reaches storage directly.
"""

from __future__ import annotations

import warnings
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sagehealth.data.sqltext import lit
from sagehealth.errors import VocabularyError

if TYPE_CHECKING:
    from sagehealth.ecosystem import Ecosystem


#: argument names of earlier versions -> the one name every tool uses now
RENAMED = {"patient": "patient_id"}


class Args(BaseModel):
    """Tool arguments: unknown fields are refused, not ignored. One vocabulary across tools
    (``patient_id``, ``query``, ``since``/``until``); an earlier name (:data:`RENAMED`) is still
    accepted, with a :class:`DeprecationWarning`."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in RENAMED.items():
                if old in data and new in cls.model_fields and old not in cls.model_fields:
                    if new in data:
                        raise ValueError(f"give {new!r} only ({old!r} is its earlier name)")
                    warnings.warn(f"tool argument {old!r} is now {new!r}", DeprecationWarning, stacklevel=2)
                    data = {(new if k == old else k): v for k, v in data.items()}
        return data


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- search -------------------------------------------------------------------------------
class SearchArgs(Args):
    query: str = Field(min_length=1, max_length=4000, description="what to look for, in plain words")
    k: int = Field(10, ge=1, le=100, description="how many passages to return")
    mode: Literal["hybrid", "vector", "bm25"] = "hybrid"
    patient_id: str | None = Field(None, description="only this patient's documents")
    kinds: list[str] | None = Field(None, description="document kinds, e.g. radiology_report, note, article")
    sections: list[str] | None = Field(None, description="sections, e.g. FINDINGS, IMPRESSION")
    since: date | None = None
    until: date | None = None
    concepts: list[str] | None = Field(None, description="concept ids the documents must affirm (or descendants)")
    zone: Literal["clinical", "research"] | None = None
    documents: list[str] | None = Field(None, description="only these documents (their row ids)")
    version: int | None = Field(None, ge=0, description="store version to search (latest when empty)")
    per_document: bool = Field(False, description="at most one passage per document")
    expand: bool = Field(False, description="add synonyms and children of the concepts the query names (BM25 side)")


class EvidenceHit(Result):
    id: str = Field(description="chunk id: cite this")
    score: float
    text: str
    source_table: str
    source_row_id: str
    document_id: str | None
    patient_id: str | None
    date: datetime | None
    kind: str | None
    title: str | None
    section: str | None
    start: int
    end: int
    provenance_id: str | None
    scores: dict[str, float] = Field(default_factory=dict)
    highlights: list[tuple[int, int]] = Field(default_factory=list)


class SearchResult(Result):
    hits: list[EvidenceHit]


def _hits(hits: list[Any]) -> list[EvidenceHit]:
    """Search hits as the tool's result rows (the chunk's ``row_id`` is the ``id`` to cite)."""
    names = [n for n in EvidenceHit.model_fields if n != "id"]
    return [EvidenceHit(id=h.row_id, **{n: getattr(h, n) for n in names}) for h in hits]


def search_evidence(eco: Ecosystem, a: SearchArgs) -> SearchResult:
    """Search the notes, reports and literature the caller may see (hybrid BM25 + vector by
    default), with filters on patient, kind, section, date, document and concept, at the latest
    or a given store version. Every hit is a passage
    with its chunk id, document, patient, date, provenance id, stage scores and highlights."""
    hits = eco.search(a.query, k=a.k, mode=a.mode, patient=a.patient_id, kinds=a.kinds, sections=a.sections,
                      since=a.since, until=a.until, documents=a.documents, concepts=a.concepts, zone=a.zone,
                      per_document=a.per_document, version=a.version, expand=a.expand)
    return SearchResult(hits=_hits(hits))


# -- patient context -------------------------------------------------------------------------
class ContextArgs(Args):
    patient_id: str = Field(min_length=1)
    since: date | None = None
    until: date | None = None
    sections: list[Literal["Problems", "Medications", "Recent labs and vitals", "Allergies", "Procedures",
                           "Immunizations", "Encounters", "Prior reports"]] | None = Field(
        None, description="only these parts of the timeline (default: all)")


class ContextItem(Result):
    section: str
    row_id: str = Field(description="the row this fact comes from: cite this")
    date: datetime | None
    text: str


class ContextResult(Result):
    patient_id: str
    since: datetime | None
    until: datetime | None
    demographics: dict[str, Any]
    items: list[ContextItem]
    prompt: str = Field(description="the timeline as Markdown for a model, each line citing its row")


def patient_context(eco: Ecosystem, a: ContextArgs) -> ContextResult:
    """One patient's timeline in a time window: problems, medications, recent labs and vitals with
    trends, allergies, procedures, encounters and prior reports, each item citing its row."""
    ctx = eco.patient_context(a.patient_id, since=a.since, until=a.until)
    items = [ContextItem(section=title, row_id=i.row_id, date=i.date, text=i.text)
             for title, part in ctx._parts().items() if not a.sections or title in a.sections for i in part]
    return ContextResult(patient_id=ctx.patient_id, since=ctx.since, until=ctx.until,
                         demographics=ctx.demographics, items=items, prompt=ctx.to_prompt())


# -- lab results -----------------------------------------------------------------------------
class LabArgs(Args):
    patient_id: str = Field(min_length=1)
    test: str = Field(min_length=1, max_length=200,
                      description="the lab test or vital sign, in any usual name: hemoglobin, Hgb, A1c, K, creatinine, "
                                  "blood sugar, heart rate, SpO2 ...")
    since: date | None = None
    until: date | None = None
    limit: int = Field(20, ge=1, le=500, description="most results to return, latest first")


class LabResult(Result):
    row_id: str = Field(description="the row this result comes from: cite this")
    date: datetime | None
    name: str = Field(description="the test as the source names it")
    value: float | None
    text_value: str | None
    unit: str | None
    ref_low: float | None
    ref_high: float | None
    flag: str | None = Field(description="low / high / abnormal, from the source or the reference range")
    text: str = Field(description="the result as one line")


class LabResults(Result):
    patient_id: str
    test: str = Field(description="which test the name was taken for")
    label: str
    results: list[LabResult]


def lab_results(eco: Ecosystem, a: LabArgs) -> LabResults:
    """One patient's results of one lab test or vital sign, latest first, each citing its row.
    The test may be named any usual way (Hgb, haemoglobin, A1c, K, Cr, blood sugar, SpO2); other
    specimens are other tests (urine glucose is not glucose)."""
    test, rows = eco.lab_results(a.patient_id, a.test, since=a.since, until=a.until, limit=a.limit)
    return LabResults(patient_id=a.patient_id, test=test.key, label=test.label, results=[
        LabResult(row_id=r.row_id, date=r.date, name=r.name, value=r.value, text_value=r.text_value, unit=r.unit,
                  ref_low=r.ref_low, ref_high=r.ref_high, flag=r.flag, text=r.sentence()) for r in rows])


class MedicationsArgs(Args):
    patient_id: str = Field(min_length=1)
    until: date | None = Field(None, description="the list as of this date (default: the end of the record)")
    limit: int = Field(30, ge=1, le=500)
    name: str | None = Field(None, min_length=2, max_length=100,
                             description="only the medications whose name contains this (is the patient on X?)")


class MedicationItem(Result):
    row_id: str = Field(description="the medication row: cite this")
    name: str
    start: datetime | None
    end: datetime | None
    status: str | None
    dose: str | None
    text: str = Field(description="the medication as one line")


class MedicationsResult(Result):
    patient_id: str
    as_of: datetime | None = Field(description="the date the list is for: the end of the record unless asked")
    medications: list[MedicationItem]
    recently_ended: list[MedicationItem] = Field(
        default_factory=list, description="when none is active: the latest ones that ended (by date or status)")


def current_medications(eco: Ecosystem, a: MedicationsArgs) -> MedicationsResult:
    """The medications active at the end of one patient's record (the end of the latest
    encounter) or at a given date: started by then, not ended before it by date or status;
    latest first, each citing its row; with ``name``, only that drug's (when none is active,
    the latest that ended)."""
    as_of, meds = eco.current_medications(a.patient_id, until=a.until, limit=a.limit, name=a.name)
    ended = (eco.current_medications(a.patient_id, until=as_of, limit=5, inactive=True, name=a.name)[1]
             if as_of and not meds else [])

    def item(m: Any) -> MedicationItem:
        return MedicationItem(row_id=m.row_id, name=m.name, start=m.start, end=m.end, status=m.status, dose=m.dose,
                              text=m.sentence(as_of))

    return MedicationsResult(patient_id=a.patient_id, as_of=as_of, medications=[item(m) for m in meds],
                             recently_ended=[item(m) for m in ended])


# -- documents -------------------------------------------------------------------------------
class DocumentArgs(Args):
    document_id: str = Field(min_length=1, description="a document id, document row id or article id")


class DocumentResult(Result):
    table: str
    row: dict[str, Any]
    provenance: dict[str, Any] | None = Field(description="source file, locator and hashes (clinical zone only)")


def get_document(eco: Ecosystem, a: DocumentArgs) -> DocumentResult:
    """One note, report or article in full, with its provenance record."""
    return DocumentResult(**eco.document(a.document_id))


# -- concepts --------------------------------------------------------------------------------
class ConceptArgs(Args):
    concept: str = Field(min_length=1, max_length=500,
                         description="a concept id (HP:0001250, ICD10CM:I10, DOID:9352) or a label or synonym")
    ancestors: bool = False
    descendants: bool = False
    limit: int = Field(50, ge=1, le=1000, description="most descendants to return")


class ConceptResult(Result):
    concept: dict[str, Any]
    ancestors: list[dict[str, Any]] = Field(default_factory=list)
    descendants: list[dict[str, Any]] = Field(default_factory=list)
    other_matches: list[dict[str, Any]] = Field(default_factory=list, description="other concepts with this name")


def _resolve_concept(eco: Ecosystem, text: str) -> tuple[str, list[dict[str, Any]]]:
    """A concept id for an id or a label/synonym (exact, case-insensitive), with other matches."""
    if ":" in text and " " not in text.strip():
        return text.strip(), []
    q = lit(text.strip().lower())
    rows = eco.sql(f"""SELECT concept_id, label, system FROM concepts
                       WHERE lower(label) = {q} OR list_contains(list_transform(synonyms, lambda s: lower(s)), {q})
                       ORDER BY (lower(label) = {q}) DESC, system, concept_id LIMIT 20""").to_pylist()
    if not rows:
        raise VocabularyError(f"no concept is labelled {text!r} in the loaded vocabularies")
    return rows[0]["concept_id"], rows[1:]


def lookup_concept(eco: Ecosystem, a: ConceptArgs) -> ConceptResult:
    """A medical concept by id, label or synonym: its codes, synonyms, parents and crosswalks
    (ICD-10-CM, HPO, Disease Ontology, MeSH), with ancestors and descendants when asked."""
    cid, others = _resolve_concept(eco, a.concept)
    c = eco.concept(cid, ancestors=a.ancestors, descendants=a.descendants, limit=a.limit)
    return ConceptResult(concept={k: v for k, v in c.items() if k not in ("ancestors", "descendants")},
                         ancestors=c.get("ancestors", []), descendants=c.get("descendants", []), other_matches=others)


class PatientsArgs(Args):
    concept: str = Field(min_length=1, max_length=500, description="a concept id, label or synonym")
    descendants: bool = Field(True, description="count narrower concepts too")


class PatientsResult(Result):
    concept_id: str
    label: str | None = None
    patients: list[dict[str, Any]] = Field(description="patient_id, first/last date, mentions, coded rows, evidence row ids")


def find_patients(eco: Ecosystem, a: PatientsArgs) -> PatientsResult:
    """Patients with a concept (affirmed in their documents or coded in their rows), counting
    equivalent concepts and, by default, descendants; each with the rows that show it."""
    cid, _ = _resolve_concept(eco, a.concept)
    label = eco.concept(cid).get("label")
    return PatientsResult(concept_id=cid, label=label, patients=eco.patients_with(cid, descendants=a.descendants))


# -- SQL -------------------------------------------------------------------------------------
class SqlArgs(Args):
    query: str = Field(min_length=1, max_length=20000, description="one or more SELECT statements (DuckDB SQL)")
    max_rows: int = Field(100, ge=1, le=5000)
    timeout_s: float = Field(10.0, gt=0, le=60)


class SqlResult(Result):
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool


def query_sql(eco: Ecosystem, a: SqlArgs) -> SqlResult:
    """Read-only SQL (DuckDB, SELECT only) over the tables the caller may see: a clinician's
    care-team rows, a researcher's research zone. Row and time limits apply."""
    table = eco.sql(a.query, max_rows=a.max_rows, timeout_s=a.timeout_s)
    rows = table.slice(0, a.max_rows).to_pylist()
    for r in rows:  # bytes (thumbnails) are not JSON
        for k, v in r.items():
            if isinstance(v, bytes):
                r[k] = f"<{len(v)} bytes>"
    return SqlResult(columns=table.column_names, rows=rows, truncated=table.num_rows > a.max_rows)


# -- similar cases ---------------------------------------------------------------------------
class SimilarArgs(Args):
    document_id: str | None = Field(None, description="find documents like this one")
    text: str | None = Field(None, max_length=8000, description="or like this text")
    k: int = Field(5, ge=1, le=50)
    kinds: list[str] | None = None
    other_patients_only: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> SimilarArgs:
        if bool(self.document_id) == bool(self.text):
            raise ValueError("give exactly one of document_id or text")
        return self


def similar_cases(eco: Ecosystem, a: SimilarArgs) -> SearchResult:
    """Documents most like a given document or text (one best passage per document), by default
    from other patients: prior similar cases for a report or a question."""
    text, skip_doc, skip_patient = a.text, None, None
    if a.document_id:
        doc = eco.document(a.document_id)["row"]
        text = (doc.get("title") or "") + "\n" + (doc.get("text") or "")
        skip_doc = doc.get("document_id") or doc.get("doc_id")
        skip_patient = doc.get("patient_id") if a.other_patients_only else None
    hits = eco.search(" ".join(str(text).split()[:300]), k=a.k + 10, kinds=a.kinds, per_document=True)
    hits = [h for h in hits if h.document_id != skip_doc and not (skip_patient and h.patient_id == skip_patient)]
    return SearchResult(hits=_hits(hits[:a.k]))


# -- feedback --------------------------------------------------------------------------------
class FeedbackArgs(Args):
    trace_id: str = Field(min_length=1)
    verdict: Literal["accept", "reject", "edit"]
    edited_text: str | None = Field(None, max_length=50000)
    reason: str = Field("", max_length=4000)
    target: str = Field("answer", pattern=r"^(answer|draft|sentence:\d+)$")

    @model_validator(mode="after")
    def _edit_has_text(self) -> FeedbackArgs:
        if self.verdict == "edit" and not (self.edited_text or "").strip():
            raise ValueError("an edit needs edited_text")
        return self


class FeedbackResult(Result):
    feedback_id: str
    trace_id: str
    verdict: str


def record_feedback(eco: Ecosystem, a: FeedbackArgs) -> FeedbackResult:
    """Accept, reject or edit an answer (or a draft) by its trace id, with the edited text and a
    reason; stored as data linked to the trace, visible to data stewards and exportable."""
    row = eco.record_feedback(a.trace_id, a.verdict, edited_text=a.edited_text, reason=a.reason, target=a.target)
    return FeedbackResult(feedback_id=row["feedback_id"], trace_id=a.trace_id, verdict=a.verdict)


# -- answers ---------------------------------------------------------------------------------
class AskArgs(Args):
    question: str = Field(min_length=1, max_length=2000)
    patient_id: str | None = Field(None, description="answer about this patient only")
    since: date | None = None
    until: date | None = None
    k: int = Field(8, ge=1, le=30, description="evidence passages to retrieve")


def answer_question(eco: Ecosystem, a: AskArgs) -> Any:
    """Answer a question from the evidence the caller may see: plans the tool calls, retrieves,
    drafts an answer in which every sentence cites its evidence, removes sentences the evidence
    does not support, de-identifies for callers without identified access, abstains when the
    evidence is insufficient, and stores the full trace (its id is in the answer)."""
    return eco.ask(a.question, patient=a.patient_id, since=a.since, until=a.until, k=a.k)
