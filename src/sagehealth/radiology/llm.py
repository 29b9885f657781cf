"""Drafting the impression with a language model: the in-process llama.cpp provider or any
OpenAI-compatible endpoint (``sagehealth.genai.providers``), few-shot from the similar cases
(de-identified research zone) and from the radiologist's own signed reports (their
de-identified training pairs), so no identified text of another patient reaches a prompt.

The offline drafter runs first and guards the model: when the findings report a finding the
offline drafter states (always a critical result), the model's impression must state it too;
if it calls such a study normal, or answers with nothing usable, the draft is refused with a
clear ``ProviderResponseError`` (a model endpoint that is down or slow raises its own
``ProviderUnavailable`` / ``ProviderTimeout``) — the caller sees why and can draft offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sagehealth.errors import ProviderResponseError
from sagehealth.radiology import findings as fx
from sagehealth.radiology.cases import CaseBase
from sagehealth.radiology.drafter import Citation, Drafted, DraftSentence, OfflineDrafter, tidy
from sagehealth.radiology.text import similarity, study_prompt, words

#: 1: the radiologist's latest pairs; 2: their pairs most like this study's findings
PROMPT_VERSION = "radiology-llm-2"
SYSTEM = ("You are a radiologist writing the IMPRESSION of a chest radiograph report. Summarize the FINDINGS "
          "given: state every abnormal finding that matters, in the style of the examples, most important "
          "first; add nothing that the findings do not say; if the findings are normal, say so briefly. "
          "Answer with the impression text only.")
#: examples in a prompt (similar cases first, then the radiologist's own)
SHOTS = 4
OWN_SHOTS = 2
#: the radiologist's recent pairs the own examples are chosen from
OWN_POOL = 40
MAX_TOKENS = 160
#: the task of an adapted model (``sagehealth adapt generator``) this drafter prompts zero-shot
TRAINED_TASK = "findings_to_impression"


@dataclass
class LlmDrafter:
    """A chat model drafts; the offline drafter's findings decide what it must not leave out."""

    provider: Any  # a ChatProvider
    own_examples: list[tuple[str, str]]  # (findings, signed impression), de-identified
    offline: OfflineDrafter | None = None
    prompt_version: str = PROMPT_VERSION

    def __post_init__(self) -> None:
        if self.trained and getattr(self.provider, "prompt_version", None):
            self.prompt_version = str(self.provider.prompt_version)

    @property
    def trained(self) -> bool:
        """The provider is a model adapted on findings -> impression pairs, with its instruction."""
        return (getattr(self.provider, "task", None) == TRAINED_TASK
                and bool(getattr(self.provider, "instruction", None)))

    @property
    def name(self) -> str:
        return str(getattr(self.provider, "name", "llm"))

    def messages(self, indication: str, findings: str, shots: list[tuple[str, str]]) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": SYSTEM}]
        for f, imp in shots:
            msgs.append({"role": "user", "content": f"FINDINGS: {f}"})
            msgs.append({"role": "assistant", "content": imp})
        msgs.append({"role": "user", "content": study_prompt(indication, findings)})
        return msgs

    def prompt(self, base: Drafted, indication: str, findings: str) -> list[dict[str, str]]:
        """The chat for this study: zero-shot as trained for an adapted model, else few-shot
        from the similar cases (``base``: the offline draft) and the radiologist's own pairs."""
        if self.trained:
            from sagehealth.genai.hf import instruct_messages

            return instruct_messages(self.provider.instruction, study_prompt(indication, findings or "(not dictated)"))
        shots = [(c.findings, c.impression) for c, _ in base.similar if c.findings][:SHOTS]
        shots = self.closest_own(findings) + shots
        return self.messages(indication, findings or "(not dictated)", shots[:SHOTS + OWN_SHOTS])

    def closest_own(self, findings: str, k: int = OWN_SHOTS) -> list[tuple[str, str]]:
        """The radiologist's own signed pairs whose findings are most like ``findings`` (word
        similarity; the latest first among equals): their wording for studies like this one."""
        if not self.own_examples:
            return []
        target = words(findings)
        ranked = sorted(range(len(self.own_examples)),
                        key=lambda i: (-similarity(words(self.own_examples[i][0]), target), i))
        return [self.own_examples[i] for i in ranked[:k]]

    def guard(self, base: Drafted, answer: str) -> str:
        """The model's impression, tidied; ``ProviderResponseError`` when it is unusable or
        leaves out a finding the offline drafter states from the findings."""
        text = tidy(answer.replace("IMPRESSION:", " "))
        if not words(text) or len(text) > 2000:
            raise ProviderResponseError(f"{self.name} answered no usable impression: {text[:120]!r}")
        must = {c for s in base.sentences for c in s.concepts if any(x.kind == "findings" for x in s.citations)}
        said = {f.concept for f in fx.reported(text)}
        if must - said:
            missing = ", ".join(sorted(must - said))
            raise ProviderResponseError(f"{self.name} left out what the findings report ({missing}); "
                                        "draft offline or with another model")
        return text

    def draft(self, lake: Any, cases: CaseBase, *, indication: str, findings: str,
              exclude_patient: str | None = None) -> Drafted:
        base = (self.offline or OfflineDrafter()).draft(lake, cases, indication=indication, findings=findings,
                                                        exclude_patient=exclude_patient)
        result = self.provider.chat(self.prompt(base, indication, findings), max_tokens=MAX_TOKENS, temperature=0.0)
        text = self.guard(base, result.text)
        said = {f.concept for f in fx.reported(text)}
        found = fx.reported(findings)
        sentences = fx.split_sentences(findings)
        cases_cited = [Citation("case", c.row_id, c.impression) for c, _ in base.similar[:2]]
        out = []
        for s in fx.split_sentences(text):
            concepts = tuple(dict.fromkeys(f.concept for f in fx.reported(s)))
            refs = [Citation("findings", f"findings:{f.sentence}", sentences[f.sentence])
                    for f in found if f.concept in concepts]
            refs = list({r.ref: r for r in refs}.values()) or cases_cited
            out.append(DraftSentence(s + ".", tuple(refs), concepts))
        return Drafted(text, out, bool(said), base.similar, base.scores)


def own_examples(eco: Any, user: str, limit: int = OWN_POOL) -> list[tuple[str, str]]:
    """The radiologist's latest signed (findings, impression) pairs, de-identified (their
    training pairs in the research side of the ledger), newest first."""
    from sagehealth.privacy.structured import RowDeidentifier

    rows = [r for r in eco.ledger.read("signoffs") if r["user"] == user][:limit * 3]
    if not rows:
        return []
    try:
        deid = RowDeidentifier()
    except Exception:  # noqa: BLE001 - no research key: no own examples (never identified text)
        return []
    keyed = {deid.key_of("signoff_id", r["signoff_id"]) for r in rows}
    pairs = [p for p in eco.ledger.read("report_pairs", where={"kind": "training"}) if p["signoff_id"] in keyed]
    out = []
    for p in pairs[:limit]:
        findings = p["prompt"].split("FINDINGS:", 1)[-1].strip()
        out.append((findings, p["chosen"]))
    return out
