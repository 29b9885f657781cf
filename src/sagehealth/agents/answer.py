"""What the agent returns (and the ``answer_question`` tool's result): a cited answer with the
sentences it removed and why, the evidence, the checks, the plan and the timings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanStep(_Model):
    tool: str
    arguments: dict[str, Any]
    why: str


class AnswerSentence(_Model):
    text: str
    citations: list[str] = Field(description="evidence ids (chunk or row ids) the sentence rests on")
    refs: list[str] = Field(default_factory=list, description="the same as E-labels of the evidence list")
    support: float = Field(description="share of the sentence's content words found in its cited evidence")
    supported: bool
    reason: str | None = Field(None, description="why it was removed or marked")


class EvidenceRef(_Model):
    ref: str
    id: str
    source_table: str | None
    kind: str | None
    title: str | None
    date: datetime | None
    patient_id: str | None
    excerpt: str
    score: float | None


class Check(_Model):
    name: str
    passed: bool
    detail: str


class Answer(_Model):
    trace_id: str
    question: str
    patient_id: str | None
    answer: str = Field(description="the kept sentences, each followed by its [E-labels]")
    sentences: list[AnswerSentence]
    removed: list[AnswerSentence] = Field(default_factory=list)
    evidence: list[EvidenceRef]
    abstained: bool
    reason: str | None = Field(None, description="why the agent abstained")
    denied: bool = Field(False, description="the asker may not see what was asked about (the "
                                            "agent abstained for that reason)")
    provider: str
    prompt_version: str
    plan: list[PlanStep]
    checks: list[Check]
    timings: dict[str, float]
