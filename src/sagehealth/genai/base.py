"""The model-provider interface: one ``Provider.draft`` for answers grounded in evidence, and
``ChatProvider.chat`` for the providers that run a language model.

A provider turns a :class:`DraftRequest` (a question and numbered evidence passages) into a
:class:`Draft`: sentences, each citing the evidence it rests on. The agent checks every draft
(grounding, privacy) whatever produced it, so a provider never has the last word.

Providers (``genai/providers.py``): the offline extractive provider (no model, the default),
any OpenAI-compatible chat endpoint, and an in-process llama.cpp model from a GGUF file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Evidence:
    """One passage the answer may rest on. ``ref`` is the short label the prompt shows the model
    ("E1"); ``id`` the row or chunk id it cites in the stored answer."""

    ref: str
    id: str
    text: str
    title: str | None = None
    kind: str | None = None
    date: str | None = None
    patient_id: str | None = None
    source_table: str | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """What a provider answers: the question, the evidence (already access-checked), and limits."""

    question: str
    evidence: tuple[Evidence, ...]
    max_sentences: int = 4
    max_tokens: int = 256
    patient_id: str | None = None


@dataclass(slots=True)
class DraftSentence:
    """One sentence of a draft with the evidence ids (``Evidence.id``) it cites."""

    text: str
    citations: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Draft:
    """A provider's answer before checks: sentences with citations, the raw model output,
    which model and prompt produced it, token usage and seconds spent."""

    sentences: list[DraftSentence]
    model: str
    prompt_version: str
    raw: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call a chat model asked for (OpenAI ``tool_calls`` shape, arguments parsed)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class ChatResult:
    """One chat completion: the text, tool calls asked for, the model that answered, why it
    stopped, token usage and wall seconds."""

    text: str
    model: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class Provider(ABC):
    """Anything that drafts an answer from evidence."""

    #: a stable name recorded in every trace ("extractive", "llama-cpp:<file>", "openai:<model>@<url>")
    name: str = "provider"

    @abstractmethod
    def draft(self, request: DraftRequest) -> Draft:
        """Answer ``request.question`` from ``request.evidence`` only, citing evidence ids."""


def tool_choice_payload(choice: str | None) -> Any:
    """``tool_choice`` as the OpenAI API takes it: a mode as is, a tool name as a forced call."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


class ChatProvider(Provider):
    """A provider backed by a chat language model; ``draft`` renders the versioned prompt of
    ``genai/prompts.py``, calls :meth:`chat` and parses the cited sentences."""

    @abstractmethod
    def chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256, temperature: float = 0.0,
             tools: list[dict[str, Any]] | None = None, json_schema: dict[str, Any] | None = None,
             timeout: float | None = None, tool_choice: str | None = None) -> ChatResult:
        """One chat completion. ``tools`` are OpenAI function-tool specs and ``tool_choice``
        ``auto``, ``none``, ``required`` or the name of the tool the model must call;
        ``json_schema`` constrains the output where the backend supports it. Raises a
        ``ProviderError`` subclass (unavailable, timeout, bad response) with a clear message."""

    def draft(self, request: DraftRequest) -> Draft:
        from sagehealth.genai.prompts import draft_with_chat

        return draft_with_chat(self, request)
