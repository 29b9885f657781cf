"""The radiology reporting workflow over the store: worklist, draft, sign-off, edit statistics.

These functions are called by :class:`sagehealth.ecosystem.Ecosystem` (its ``worklist``,
``draft_report``, ``sign_report``, ``report_statistics`` and ``report_pairs``), which checks
access and audits; nothing here is a door of its own.

Studies on the worklist are the store's imaging studies (DICOM, FHIR ImagingStudy) and the
preliminary radiology reports (findings dictated, no impression yet) without a signed report.
A draft is stored as a trace in the ledger (``traces``: inputs, impression, citations, checks,
provider and prompt version). A signature writes a new version of the store with the signed
report as a document of the clinical zone (provenance to the draft), its de-identified copy in
the research zone (where it becomes a similar case for the next draft at once) and its search
chunks; the ledger gets the sign-off (edit class, word diff, edit distance, time to sign), the
feedback row on the draft and, for the research zone, a training and a preference pair.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from sagehealth.data.model import ALL_SCHEMAS, row_id, stable_id
from sagehealth.data.sqltext import lit
from sagehealth.errors import ConfigError, ReportError, RowNotFound
from sagehealth.radiology import findings as fx
from sagehealth.radiology.cases import CaseBase, report_parts
from sagehealth.radiology.checks import Flag, check_report, rules
from sagehealth.radiology.drafter import OfflineDrafter
from sagehealth.radiology.text import edit_distance, word_diff, words

#: longest findings, indication or impression text accepted (characters)
MAX_TEXT = 20_000
READER = "radiology.signoff"
READER_VERSION = "1"
SOURCE_SYSTEM = "sagehealth-radiology"


# -- typed results --------------------------------------------------------------------------
@dataclass
class Study:
    """A study to report: an imaging study or a preliminary report."""

    study_id: str
    patient_id: str | None
    modality: str | None
    body_part: str | None
    description: str | None
    indication: str
    comparison: str
    findings: str
    date: datetime | None
    source: str  # imaging_studies | documents
    priority: str = "routine"
    waiting_seconds: float | None = None
    signed_document: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReportDraft:
    """A drafted report: the impression with the evidence of each sentence, the checks, the
    priors and similar cases it used; ``draft_id`` is what :func:`sign` takes."""

    draft_id: str
    study_id: str | None
    patient_id: str | None
    indication: str
    comparison: str
    findings: str
    findings_template: str | None
    impression: str
    sentences: list[dict[str, Any]]
    flags: list[dict[str, Any]]
    priors: list[dict[str, Any]]
    similar_cases: list[dict[str, Any]]
    provider: str
    prompt_version: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SignedReport:
    signoff_id: str
    document_id: str
    study_id: str
    report_version: int
    store_version: int
    edit_class: str
    edit_distance: int
    clinical_changes: dict[str, list[str]]
    flags: list[dict[str, Any]]
    research: str
    feedback_id: str
    pairs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- studies --------------------------------------------------------------------------------
def _rx(phrases: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b", re.IGNORECASE)


def priority_of(*texts: str | None) -> str:
    """stat | urgent | routine, from the words of the indication and description (rules as data)."""
    text = " ".join(t for t in texts if t)
    for level in rules()["priority_order"]:
        phrases = rules()["priority"].get(level)
        if phrases and _rx(phrases).search(text):
            return level
    return "routine"


def body_part_of(*texts: str | None) -> str | None:
    text = " ".join(t for t in texts if t)
    for part, phrases in rules()["body_parts"].items():
        if _rx(phrases).search(text):
            return part
    return None


def template_for(body_part: str | None) -> str:
    """The FINDINGS template of a body part (``workflow_rules.json``)."""
    t = rules()["templates"]
    return t.get((body_part or "").upper(), t["default"])


def signed_studies(ledger: Any) -> dict[str, str]:
    """study id -> the signed report's document id."""
    return {r["study_id"]: r["document_id"] for r in ledger.read("signoffs")}


def studies(lake: Any, ledger: Any, *, patients: set[str] | None = None, include_signed: bool = False,
            study_id: str | None = None) -> list[Study]:
    """Imaging studies and preliminary reports (``patients``: only theirs; ``study_id``: that one)."""
    signed = signed_studies(ledger)
    now = datetime.now(UTC)
    out: list[Study] = []
    scope = f"patient_id IN ({', '.join(lit(p) for p in sorted(patients))})" if patients is not None else None
    if patients is not None and not patients:
        return []

    def where(*parts: str | None) -> str | None:
        return " AND ".join(f"({p})" for p in parts if p) or None

    one = f"study_uid = {lit(study_id)}" if study_id else None
    series = {}
    for r in lake.read("imaging_series", columns=["study_uid", "modality", "body_part"],
                       filter=where(scope, one)).to_pylist():
        series.setdefault(r["study_uid"], r)
    for r in lake.read("imaging_studies", columns=["study_uid", "patient_id", "date", "description", "modalities"],
                       filter=where(scope, one)).to_pylist():
        s = series.get(r["study_uid"], {})
        body = (s.get("body_part") or "").upper() or body_part_of(r["description"])
        out.append(Study(r["study_uid"], r["patient_id"], (r["modalities"] or [s.get("modality")])[0],
                         body, r["description"], r["description"] or "", "", "", r["date"], "imaging_studies"))
    one = f"document_id = {lit(study_id)}" if study_id else None
    for r in lake.read("documents", columns=["document_id", "patient_id", "date", "title", "text", "status"],
                       filter=where(scope, one, "kind = 'radiology_report'",
                                    None if study_id else "status = 'preliminary'")).to_pylist():
        parts = report_parts(r["text"])
        body = body_part_of(r["title"], parts.get("indication"), parts.get("findings"))
        out.append(Study(r["document_id"], r["patient_id"], "XR" if body == "CHEST" else None, body, r["title"],
                         parts.get("indication", ""), parts.get("comparison", ""), parts.get("findings", ""),
                         r["date"], "documents"))
    # a final DICOM SR (or report) stored as an instance of the study reports it too
    finals = set(lake.read("documents", columns=["document_id"], filter=where(
        scope, "kind IN ('imaging_report', 'radiology_report') AND status = 'final'")).column("document_id").to_pylist())
    if finals and any(s.source == "imaging_studies" for s in out):
        for r in lake.read("imaging_instances", columns=["sop_instance_uid", "study_uid"],
                           filter=where(scope, f"study_uid = {lit(study_id)}" if study_id else None)).to_pylist():
            if r["sop_instance_uid"] in finals:
                signed.setdefault(r["study_uid"], r["sop_instance_uid"])
    for s in out:
        s.priority = priority_of(s.indication, s.description)
        s.waiting_seconds = (now - s.date).total_seconds() if s.date else None
        s.signed_document = signed.get(s.study_id)
    if not include_signed:
        out = [s for s in out if s.signed_document is None]
    order = {p: i for i, p in enumerate(rules()["priority_order"])}
    out.sort(key=lambda s: (order.get(s.priority, 9), -(s.waiting_seconds or 0.0), s.study_id))
    return out


def priors(lake: Any, patient_id: str | None, study: Study | None) -> list[dict[str, Any]]:
    """The patient's earlier studies and signed reports of the same body region, newest first."""
    if not patient_id:
        return []
    before = study.date if study is not None and study.date else None
    out: list[dict[str, Any]] = []
    for r in lake.read("documents", columns=["document_id", "date", "title", "text", "status"],
                       filter=f"patient_id = {lit(patient_id)} AND kind = 'radiology_report' "
                              "AND (status IS NULL OR status != 'preliminary')").to_pylist():
        if study is not None and r["document_id"] in (study.study_id, study.signed_document):
            continue
        if before is not None and r["date"] is not None and r["date"] >= before:
            continue
        parts = report_parts(r["text"])
        if study is not None and study.body_part and body_part_of(r["title"], r["text"]) not in (None, study.body_part):
            continue
        out.append({"kind": "report", "id": r["document_id"], "date": r["date"], "title": r["title"],
                    "impression": parts.get("impression", "")[:500]})
    parts = {r["study_uid"]: (r["body_part"] or "").upper() for r in lake.read(
        "imaging_series", columns=["study_uid", "body_part"], filter=f"patient_id = {lit(patient_id)}").to_pylist()
        if r["body_part"]}
    for r in lake.read("imaging_studies", columns=["study_uid", "date", "description", "modalities"],
                       filter=f"patient_id = {lit(patient_id)}").to_pylist():
        if study is not None and r["study_uid"] == study.study_id:
            continue
        region = parts.get(r["study_uid"]) or body_part_of(r["description"])
        if study is not None and study.body_part and region != study.body_part:
            continue  # a prior of another region (or of one not known) is no comparison
        if before is not None and r["date"] is not None and r["date"] >= before:
            continue
        out.append({"kind": "study", "id": r["study_uid"], "date": r["date"], "title": r["description"],
                    "modality": (r["modalities"] or [None])[0], "impression": ""})
    out.sort(key=lambda p: p["date"] or datetime.min.replace(tzinfo=UTC), reverse=True)
    return out


_NONE = re.compile(r"\s*(?:none|n/?a|no prior[\w\s]*|-)?\.?\s*", re.IGNORECASE)


def comparison_line(given: str, prior: list[dict[str, Any]]) -> str:
    """The comparison as dictated, else the latest prior on record, else "None."."""
    if not _NONE.fullmatch(given or ""):
        return given.strip()
    if not prior:
        return "None."
    p = prior[0]
    when = p["date"].date().isoformat() if p["date"] else "undated"
    return f"{p['title'] or 'Prior study'} of {when}."


# -- drafting -------------------------------------------------------------------------------
def _clean(text: str | None, what: str) -> str:
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise ReportError(f"the {what} is {len(text):,} characters long; at most {MAX_TEXT:,} are accepted")
    return text


#: the drafting provider when none is named: offline, unless the server or user sets a model
LLM_ENV = "SAGEHEALTH_RADIOLOGY_LLM"


def drafter_for(eco: Any, principal: Any, spec: str | None) -> Any:
    """The offline drafter, or a language model (``llama-cpp:PATH``, ``smollm2``,
    ``openai:MODEL@URL``) guarded by it: ``spec``, else ``$SAGEHEALTH_RADIOLOGY_LLM``."""
    import os

    spec = (spec or os.environ.get(LLM_ENV) or "offline").strip()
    if spec in ("offline", ""):
        return OfflineDrafter()
    from sagehealth.errors import ProviderError
    from sagehealth.genai.base import ChatProvider
    from sagehealth.genai.providers import get_provider
    from sagehealth.radiology.llm import LlmDrafter, own_examples

    provider = get_provider(spec)
    if not isinstance(provider, ChatProvider):
        raise ProviderError(f"{spec!r} is not a language model: use offline, smollm2, llama-cpp:PATH.gguf, hf:DIR "
                            "or openai:MODEL@URL")
    return LlmDrafter(provider, own_examples(eco, principal.user))


def draft(eco: Any, principal: Any, *, study: Study | None, indication: str, comparison: str, findings: str,
          patient_id: str | None, drafter: Any = None) -> ReportDraft:
    """Draft the impression of a study or of the given texts (access already checked)."""
    started = time.perf_counter()
    lake = eco.lake
    drafter = drafter or OfflineDrafter()
    indication = _clean(indication, "indication")
    comparison = _clean(comparison, "comparison")
    findings = _clean(findings, "findings")
    if not findings and not indication:
        raise ReportError("nothing to draft from: give the findings (or at least the indication) of the study")
    prior = priors(lake, patient_id, study)
    comparison = comparison_line(comparison, prior) if study is not None or patient_id else comparison
    cases = CaseBase.load(lake)
    own = _pseudonym(patient_id)
    made = drafter.draft(lake, cases, indication=indication, findings=findings, exclude_patient=own)
    template = None if findings else template_for(study.body_part if study else body_part_of(indication))
    flags = check_report(findings, made.impression, comparison=comparison, priors=len(prior))
    if not findings:
        flags.insert(0, Flag("findings_missing", "warning", "no findings were dictated: the impression is proposed "
                             "from similar cases only and must be reviewed against the images"))
    if not made.impression:
        flags.insert(0, Flag("no_similar_cases", "warning", "no similar signed cases in the research zone: "
                             "write the impression"))
    sentences = [{"text": s.text, "concepts": list(s.concepts),
                  "citations": [asdict(c) for c in s.citations]} for s in made.sentences]
    if prior and not any(c["kind"] == "prior" for s in sentences for c in s["citations"]) and sentences:
        p = prior[0]
        sentences[-1]["citations"].append({"kind": "prior", "ref": p["id"], "text": comparison})
    similar = [{"case_id": c.row_id, "score": round(score, 4), "indication": c.indication[:300],
                "findings": c.findings[:600], "impression": c.impression[:600], "abnormal": c.abnormal}
               for c, score in made.similar[:5]]
    seconds = time.perf_counter() - started
    out = ReportDraft(f"drf_{uuid.uuid4().hex[:20]}", study.study_id if study else None, patient_id, indication,
                      comparison, findings, template, made.impression, sentences, [f.as_dict() for f in flags],
                      [{**p, "date": p["date"].isoformat() if p["date"] else None} for p in prior[:10]],
                      similar, drafter.name, drafter.prompt_version, round(seconds, 4))
    evidence = sorted({c["ref"] for s in sentences for c in s["citations"] if c["kind"] != "findings"})
    eco.ledger.append("traces", {
        "trace_id": out.draft_id, "user": principal.user, "role": principal.role, "purpose": principal.purpose,
        "question": f"draft radiology report{f' for study {out.study_id}' if out.study_id else ''}",
        "patient_id": patient_id, "provider": out.provider, "prompt_version": out.prompt_version,
        "plan": {"task": "radiology_draft", "study_id": out.study_id, "indication": indication,
                 "comparison": comparison, "findings": findings, "findings_template": template,
                 "cases_version": cases.version, "similar": [s["case_id"] for s in similar]},
        "tool_calls": [], "evidence_ids": evidence, "answer": out.impression, "sentences": sentences,
        "abstained": not out.impression, "reason": "", "checks": out.flags, "timings": {"draft": seconds},
        "store_version": lake.head().version, "status": "ok", "patients": [patient_id] if patient_id else []})
    return out


def _pseudonym(patient_id: str | None) -> str | None:
    if not patient_id:
        return None
    from sagehealth.privacy.structured import RowDeidentifier

    try:
        return RowDeidentifier().pseudonym(patient_id)
    except ConfigError:  # no research key here: the patient's own de-identified reports may show
        return None


def load_draft(ledger: Any, draft_id: str) -> dict[str, Any]:
    trace = ledger.get("traces", "trace_id", draft_id)
    if trace is None or not str(trace.get("plan") or "").startswith("{") or \
            json.loads(trace["plan"]).get("task") != "radiology_draft":
        raise RowNotFound(f"no radiology draft {draft_id!r}")
    trace["plan"] = json.loads(trace["plan"])
    return trace


# -- sign-off -------------------------------------------------------------------------------
def classify_edit(draft_text: str, signed_text: str) -> tuple[str, dict[str, list[str]]]:
    """none | style | minor | major, and the clinical changes: findings ``added`` or ``removed``
    by the signer, or whose negation ``flipped`` (judged with :mod:`.findings`)."""
    def assertions(text: str) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for f in fx.find(text):
            out[f.concept] = out.get(f.concept, False) or f.reported
        return out

    a, b = assertions(draft_text), assertions(signed_text)
    changes = {"added": sorted(c for c, r in b.items() if r and c not in a),
               "removed": sorted(c for c, r in a.items() if r and c not in b),
               "flipped": sorted(c for c in a.keys() & b.keys() if a[c] != b[c])}
    if any(changes.values()):
        return "major", changes
    wa, wb = (words(" ".join(fx.split_sentences(t))) for t in (draft_text, signed_text))  # list numbers out
    if draft_text.strip() == signed_text.strip():
        return "none", changes
    if wa == wb:
        return "style", changes  # only case, punctuation, spacing or numbering changed
    return "minor", changes


def report_text(indication: str, comparison: str, findings: str, impression: str,
                addendum: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The signed report's text, one ``HEADING: text`` part per line, and its sections."""
    parts = [("INDICATION", indication), ("COMPARISON", comparison), ("FINDINGS", findings),
             ("IMPRESSION", impression), ("ADDENDUM", addendum or "")]
    text, sections, pos = "", [], 0
    for head, value in parts:
        value = " ".join((value or "").split())
        if not value:
            continue
        chunk = f"{head}: {value}"
        if text:
            text += "\n"
            pos += 1
        sections.append({"name": head, "start": pos, "end": pos + len(chunk)})
        text += chunk
        pos += len(chunk)
    return text, sections


def sign(eco: Any, principal: Any, trace: dict[str, Any], *, impression: str, findings: str | None,
         reason: str = "") -> SignedReport:
    """Sign a draft (access already checked): one new store version and its ledger rows."""
    from sagehealth.privacy.research import refresh as refresh_research
    from sagehealth.privacy.research import withdrawn_patients

    lake, ledger = eco.lake, eco.ledger
    plan = trace["plan"]
    impression = _clean(impression, "impression")
    findings = _clean(plan.get("findings") if findings is None else findings, "findings")
    if not impression:
        raise ReportError("the impression is empty: write it before signing")
    if not findings:
        raise ReportError("the findings are empty: dictate them before signing")
    patient = trace.get("patient_id")
    study_id = plan.get("study_id") or trace["trace_id"]
    signoffs = ledger.read("signoffs")
    earlier = [r for r in signoffs if r["study_id"] == study_id]
    if any(r["draft_id"] == trace["trace_id"] for r in earlier):
        raise ReportError(f"draft {trace['trace_id']} is already signed; draft again to add an addendum")
    version = len(earlier) + 1
    document_id = f"radiology/{study_id}"
    now = datetime.now(UTC)
    addendum = None
    if earlier:
        addendum = (f"Amended {now.strftime('%Y-%m-%d %H:%M')} UTC by {principal.user}"
                    + (f": {reason}" if reason else "") + f". Previous impression: {earlier[0]['signed_text']}")
    text, sections = report_text(plan.get("indication", ""), plan.get("comparison", ""), findings, impression, addendum)
    flags = check_report(findings, impression, comparison=plan.get("comparison", ""))
    edit_class, changes = classify_edit(trace["answer"] or "", impression)
    run_id = f"signoff-{uuid.uuid4().hex[:16]}"
    prov = stable_id("radiology-signoff", document_id, version, hashlib.sha256(text.encode()).hexdigest())
    doc = {"row_id": row_id("documents", document_id), "document_id": document_id, "patient_id": patient,
           "encounter_id": None, "kind": "radiology_report", "title": "Radiology report" + (
               f" (addendum {version - 1})" if version > 1 else ""), "code": None, "date": now,
           "author": principal.user, "status": "amended" if version > 1 else "final", "content_type": "text/plain",
           "text": text, "sections": sections, "source_system": SOURCE_SYSTEM, "provenance_id": prov}
    provenance = {"provenance_id": prov, "source_uri": f"sagehealth:radiology/draft/{trace['trace_id']}",
                  "source_sha256": hashlib.sha256(text.encode()).hexdigest(), "locator": f"study:{study_id}",
                  "record_sha256": hashlib.sha256(json.dumps(doc, default=str, sort_keys=True).encode()).hexdigest(),
                  "reader": READER, "reader_version": READER_VERSION, "pipeline_version": trace["prompt_version"],
                  "run_id": run_id, "ingested_at": now}
    signoff_id = f"sgn_{uuid.uuid4().hex[:20]}"
    with lake.write_lock(wait=30.0):
        lake.rollback_uncommitted()
        try:
            docs = lake.table("documents")
            docs.delete(f"row_id = {lit(doc['row_id'])}")
            docs.add(pa.Table.from_pylist([doc], schema=ALL_SCHEMAS["documents"]))
            lake.table("provenance").add(pa.Table.from_pylist([provenance], schema=ALL_SCHEMAS["provenance"]))
            research = "copied"
            if patient and patient in withdrawn_patients(lake):
                research = "withdrawn"
            try:
                refreshed = refresh_research(lake, None, run_id=run_id, expected={"documents": 1})
            except ConfigError:
                refreshed, research = {}, "no key"
            index = _index(lake)
            store_version = lake.head().version + 1
            feedback_id = f"fbk_{uuid.uuid4().hex[:20]}"
            drafted_at = trace["created_at"]
            row = {"signoff_id": signoff_id, "draft_id": trace["trace_id"], "study_id": study_id,
                   "document_id": document_id, "report_version": version, "created_at": now,
                   "drafted_at": drafted_at, "seconds_to_sign": (now - drafted_at).total_seconds(),
                   "user": principal.user, "role": principal.role, "patient_id": patient,
                   "provider": trace["provider"], "prompt_version": trace["prompt_version"],
                   "draft_text": trace["answer"], "signed_text": impression, "edit_class": edit_class,
                   "edit_distance": edit_distance(trace["answer"] or "", impression),
                   "word_diff": word_diff(trace["answer"] or "", impression), "clinical_changes": changes,
                   "flags": [f.as_dict() for f in flags], "store_version": store_version, "research": research,
                   "patients": [patient] if patient else []}
            pairs = _pairs(row, plan, findings) if research == "copied" else []
            ledger.append("signoffs", row)
            ledger.append("feedback", {
                "feedback_id": feedback_id, "trace_id": trace["trace_id"], "user": principal.user,
                "role": principal.role, "purpose": principal.purpose,
                "verdict": "accept" if edit_class == "none" else "edit", "target": "draft",
                "original_text": trace["answer"], "edited_text": None if edit_class == "none" else impression,
                "reason": reason or f"signed ({edit_class} edit)", "patient_id": patient, "provider": trace["provider"],
                "prompt_version": trace["prompt_version"], "evidence_ids": trace["evidence_ids"],
                "store_version": store_version, "patients": [patient] if patient else []})
            for pair in pairs:
                ledger.append("report_pairs", pair)
            compacted = _compact(lake)
            commit = lake.commit(f"radiology report signed: {study_id}" + (f" (addendum {version - 1})" if version > 1 else ""),
                                 run_id=run_id, summary={"radiology": {"signoff": signoff_id, "document": document_id,
                                                                       "research": refreshed, "index": index},
                                                         **({"optimize": compacted} if compacted else {})})
        except BaseException:
            lake.rollback_uncommitted()
            raise
    if (len(signoffs) + 1) % LEDGER_COMPACT_EVERY == 0:
        ledger.compact()
    return SignedReport(signoff_id, document_id, study_id, version, commit.version, edit_class, row["edit_distance"],
                        changes, row["flags"], research, feedback_id, [p["pair_id"] for p in pairs])


#: tables a sign-off writes a fragment to; compacted in the sign-off's version once they hold
#: more than ``COMPACT_FRAGMENTS`` small fragments (each sign-off adds one: scans and searches
#: slow down with their number)
SIGNOFF_TABLES = ("documents", "provenance", "research_documents", "chunks", "research_chunks", "mentions",
                  "research_mentions")
COMPACT_FRAGMENTS = 32
#: the ledger's one-row appends are merged every this many sign-offs
LEDGER_COMPACT_EVERY = 64


def _compact(lake: Any) -> dict[str, int]:
    from sagehealth.data.lakehouse import compact_fragments

    return {name: n for name in SIGNOFF_TABLES if (n := compact_fragments(lake.table(name), small=COMPACT_FRAGMENTS))}


def _index(lake: Any) -> dict[str, Any]:
    """Chunk the new report in both zones (searchable by BM25 now; vectors follow with
    ``sagehealth index``) and annotate its concepts."""
    from sagehealth.knowledge.linking import refresh_mentions
    from sagehealth.retrieval.embedders import chosen
    from sagehealth.retrieval.index import refresh_chunks, stored_embedder

    out: dict[str, Any] = refresh_chunks(lake, chosen(None, stored_embedder(lake)), embed=False)
    out["mentions"] = refresh_mentions(lake)
    return out


def _pairs(row: dict[str, Any], plan: dict[str, Any], findings: str) -> list[dict[str, Any]]:
    """The de-identified training and preference pairs of a sign-off (research zone)."""
    from sagehealth.privacy.structured import RowDeidentifier

    deid = RowDeidentifier()
    patient = row["patient_id"] or ""
    prompt = deid.free_text(f"INDICATION: {plan.get('indication', '')}\nFINDINGS: {findings}", patient)
    chosen_text = deid.free_text(row["signed_text"], patient)
    base = {"signoff_id": deid.key_of("signoff_id", row["signoff_id"]),
            "patient": deid.pseudonym(patient) if patient else None, "year": row["created_at"].year,
            "prompt": prompt, "chosen": chosen_text, "edit_class": row["edit_class"], "provider": row["provider"],
            "prompt_version": row["prompt_version"], "created_at": row["created_at"]}
    out = [{**base, "pair_id": f"par_{uuid.uuid4().hex[:20]}", "kind": "training", "rejected": None}]
    if row["edit_class"] != "none" and row["draft_text"]:
        out.append({**base, "pair_id": f"par_{uuid.uuid4().hex[:20]}", "kind": "preference",
                    "rejected": deid.free_text(row["draft_text"], patient)})
    return out


# -- statistics ------------------------------------------------------------------------------
def statistics(rows: list[dict[str, Any]], *, by: str = "week") -> list[dict[str, Any]]:
    """Edit statistics of sign-offs per period (``week`` | ``day`` | ``all``), provider and
    prompt version: signed, accepted unchanged, each edit class, acceptance rate, mean edit
    distance and median seconds from draft to signature."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        t = r["created_at"]
        period = "all" if by == "all" else t.date().isoformat() if by == "day" else \
            f"{t.isocalendar().year}-W{t.isocalendar().week:02d}"
        groups.setdefault((period, r["provider"] or "", r["prompt_version"] or ""), []).append(r)
    out = []
    for (period, provider, prompt), rs in sorted(groups.items()):
        classes = {c: sum(r["edit_class"] == c for r in rs) for c in ("none", "style", "minor", "major")}
        secs = sorted(r["seconds_to_sign"] for r in rs if r["seconds_to_sign"] is not None)
        out.append({"period": period, "provider": provider, "prompt_version": prompt, "signed": len(rs),
                    **{f"edits_{c}": n for c, n in classes.items()},
                    "acceptance_rate": round(classes["none"] / len(rs), 4),
                    "mean_edit_distance": round(sum(r["edit_distance"] or 0 for r in rs) / len(rs), 2),
                    "median_seconds_to_sign": secs[len(secs) // 2] if secs else None})
    return out
