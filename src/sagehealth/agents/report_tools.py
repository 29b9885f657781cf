"""Radiology reporting tools (issue 17): ``worklist``, ``draft_report``, ``sign_report`` and
``report_feedback``, typed over :class:`~sagehealth.ecosystem.Ecosystem`'s workflow methods
(which check access and audit). Python, REST and MCP all call them through the registry."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from sagehealth.agents.tools import Args, Result
from sagehealth.radiology.workflow import MAX_TEXT

if TYPE_CHECKING:
    from sagehealth.ecosystem import Ecosystem


class WorklistArgs(Args):
    modality: str | None = Field(None, max_length=16, description="only this modality (CR, DX, CT, MR, XR...)")
    priority: Literal["stat", "urgent", "routine"] | None = None
    patient_id: str | None = Field(None, description="only this patient's studies")
    body_part: str | None = Field(None, max_length=32, description="only this body part (CHEST, ABDOMEN, HEAD...)")
    limit: int = Field(200, ge=1, le=1000)


class WorklistItem(Result):
    study_id: str
    patient_id: str | None
    modality: str | None
    body_part: str | None
    description: str | None
    indication: str
    priority: str
    date: datetime | None
    waiting_seconds: float | None
    has_findings: bool


class WorklistResult(Result):
    studies: list[WorklistItem]


def worklist(eco: Ecosystem, a: WorklistArgs) -> WorklistResult:
    """Studies of the caller's care team waiting for a signed report (imaging studies and
    preliminary reports), with patient, modality, body part, indication, priority and time
    waiting; most urgent and longest waiting first."""
    rows = eco.worklist(modality=a.modality, priority=a.priority, patient=a.patient_id, body_part=a.body_part,
                        limit=a.limit)
    return WorklistResult(studies=[WorklistItem(
        study_id=s.study_id, patient_id=s.patient_id, modality=s.modality, body_part=s.body_part,
        description=s.description, indication=s.indication, priority=s.priority, date=s.date,
        waiting_seconds=s.waiting_seconds, has_findings=bool(s.findings)) for s in rows])


class DraftArgs(Args):
    study_id: str | None = Field(None, description="a study from the worklist")
    indication: str | None = Field(None, max_length=MAX_TEXT)
    comparison: str | None = Field(None, max_length=MAX_TEXT)
    findings: str | None = Field(None, max_length=MAX_TEXT, description="the dictated findings (else the study's)")
    patient_id: str | None = Field(None, description="whose study the given texts are (for priors)")

    @model_validator(mode="after")
    def _something(self) -> DraftArgs:
        if not self.study_id and not (self.findings or "").strip() and not (self.indication or "").strip():
            raise ValueError("give a study_id, or the findings (and indication) to draft from")
        return self


class CitationOut(Result):
    kind: Literal["findings", "case", "prior"]
    ref: str = Field(description="findings:<sentence n>, a research-zone case id or a prior's id")
    text: str


class SentenceOut(Result):
    text: str
    concepts: list[str]
    citations: list[CitationOut]


class FlagOut(Result):
    check: str
    severity: Literal["critical", "error", "warning", "info"]
    message: str
    concept: str | None = None


class DraftResult(Result):
    draft_id: str = Field(description="sign it with sign_report")
    study_id: str | None
    patient_id: str | None
    indication: str
    comparison: str
    findings: str
    findings_template: str | None
    impression: str
    sentences: list[SentenceOut]
    flags: list[FlagOut]
    priors: list[dict[str, Any]]
    similar_cases: list[dict[str, Any]] = Field(description="de-identified research-zone cases")
    provider: str
    prompt_version: str
    seconds: float


def draft_report(eco: Ecosystem, a: DraftArgs) -> DraftResult:
    """Draft the IMPRESSION of a study (or of the given indication and findings): every sentence
    cites the findings sentence, the similar case (de-identified research zone only) or the prior
    it rests on; checks with reasons (critical results, an impression called normal over abnormal
    findings, laterality, a missing prior, an omitted finding). Stored as a trace."""
    d = eco.draft_report(a.study_id, indication=a.indication, comparison=a.comparison, findings=a.findings,
                         patient=a.patient_id)
    return DraftResult.model_validate(d.as_dict())


class SignArgs(Args):
    draft_id: str = Field(min_length=1)
    impression: str = Field(min_length=1, max_length=MAX_TEXT, description="the impression as signed")
    findings: str | None = Field(None, max_length=MAX_TEXT, description="the findings as signed (else the draft's)")
    reason: str = Field("", max_length=4000)


class SignResult(Result):
    signoff_id: str
    document_id: str
    study_id: str
    report_version: int
    store_version: int
    edit_class: Literal["none", "style", "minor", "major"]
    edit_distance: int
    clinical_changes: dict[str, list[str]]
    flags: list[FlagOut]
    research: str
    feedback_id: str
    pairs: list[str]


def sign_report(eco: Ecosystem, a: SignArgs) -> SignResult:
    """Sign one's own draft with the impression as edited: the signed report becomes a new store
    version (clinical document with provenance to the draft; de-identified research copy that is
    a similar case for the next draft at once); the edit becomes feedback (edit class, word diff,
    time to sign) and de-identified training/preference pairs. Signing again is an addendum."""
    s = eco.sign_report(a.draft_id, a.impression, findings=a.findings, reason=a.reason)
    return SignResult.model_validate(s.as_dict())


class ReportFeedbackArgs(Args):
    by: Literal["week", "day", "all"] = "week"


class EditStatistics(Result):
    period: str
    provider: str
    prompt_version: str
    signed: int
    edits_none: int
    edits_style: int
    edits_minor: int
    edits_major: int
    acceptance_rate: float
    mean_edit_distance: float
    median_seconds_to_sign: float | None


class ReportFeedbackResult(Result):
    statistics: list[EditStatistics]


def report_feedback(eco: Ecosystem, a: ReportFeedbackArgs) -> ReportFeedbackResult:
    """Edit statistics of radiology sign-offs per period, provider and prompt version
    (acceptance rate, edit classes none/style/minor/major, edit distance, time to sign): counts
    only. Stewards and researchers see all sign-offs, a clinician their own."""
    return ReportFeedbackResult(statistics=[EditStatistics(**r) for r in eco.report_statistics(by=a.by)])
