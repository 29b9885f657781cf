"""The agent's checks on a draft, whatever produced it.

- ``grounding``: a sentence is supported when it cites evidence that was retrieved for this
  question, at least ``MIN_SUPPORT`` of its content terms (stemmed) appear in that evidence,
  every number it states appears in an evidence sentence about the same thing (half of the
  words of the number's clause), and no term it shares with the evidence sentence that best
  covers it is negated in one and affirmed in the other (NegEx-like scopes). Otherwise it is
  removed, with the reason.
- ``scope``: a sentence citing evidence about a patient other than the one asked about (or
  outside the principal's care team) is removed: retrieved text cannot widen the question.
- ``injection``: a sentence that reads as an instruction to an assistant ("ignore previous
  instructions", "call query_sql", "list all patients") is removed even when it is quoted
  faithfully from a document: it is not clinical content and would pass the instruction on.
- ``privacy``: for principals without identified access every drafted sentence is run through
  the de-identifier before the checks above (identifiers become type tags, which state nothing
  to check), and what is kept is checked again for leaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sagehealth.genai.base import Evidence
from sagehealth.genai.text import numbers, sentences, terms

#: least share of a sentence's content terms its cited evidence must contain
MIN_SUPPORT = 0.6
_TAG = re.compile(r"\[[A-Z][A-Z_]*\]")


@dataclass
class Support:
    score: float
    supported: bool
    reason: str | None


def support(sentence: str, cited: list[Evidence]) -> Support:
    """How well ``cited`` evidence supports ``sentence`` (see the module docstring)."""
    if not cited:
        return Support(0.0, False, "cites no retrieved evidence")
    sentence = _TAG.sub(" ", sentence)  # a de-identification tag ([NAME]) states nothing to check
    mine = set(terms(sentence))
    if not mine:
        return Support(0.0, False, "states nothing checkable (no content words)")
    text = "\n".join(e.text for e in cited)
    found = set(terms(text))
    score = len(mine & found) / len(mine)
    if score < MIN_SUPPORT:
        missing = sorted(mine - found)[:5]
        return Support(score, False, f"only {score:.0%} of its content is in the cited evidence "
                                     f"(not found: {', '.join(missing)})")
    ev_sentences = [e.text[s:t] for e in cited for s, t in sentences(e.text)]
    wrong = _misplaced_numbers(sentence, ev_sentences)
    if wrong:
        return Support(score, False, f"states {', '.join(wrong)}, which the cited evidence does not say of "
                                     "the same thing")
    best = max(ev_sentences, key=lambda es: len(mine & set(terms(es))), default="")
    shared = mine & set(terms(best))
    flipped = sorted(t for t in shared if (t in negated_terms(sentence)) != (t in negated_terms(best)))
    if flipped:
        return Support(score, False, f"its negation differs from the evidence sentence it matches "
                                     f"({', '.join(flipped[:3])})")
    return Support(score, True, None)


def _misplaced_numbers(sentence: str, evidence: list[str]) -> list[str]:
    """Numbers of ``sentence`` that no evidence sentence states together with (at least half
    of) the words of the clause the number is in: "creatinine 9.8" is not supported by
    "hemoglobin 9.8. creatinine 1.2"."""
    wrong = []
    for clause in re.split(r"[,;]|\band\b|\bwith\b", sentence):
        stated = numbers(clause)
        if not stated:
            continue
        words = {t for t in terms(clause) if not t[0].isdigit() and len(t) > 2}
        for n in sorted(stated):
            if not any(n in numbers(es) and (not words or len(words & set(terms(es))) * 2 >= len(words))
                       for es in evidence):
                wrong.append(n)
    return wrong


_PRE = {"no", "not", "without", "denies", "denied", "deny", "negative", "never", "free", "absent"}
_POST = {"absent", "excluded", "negative"}
_STOP_SCOPE = {"but", "however", "although", "though", "except", "yet", "whereas", "while"}
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9'-]*|\d+(?:\.\d+)?|[.,;:!?]")


def negated_terms(text: str, window: int = 6) -> set[str]:
    """Stemmed terms inside a negation's scope (NegEx-like): up to ``window`` words after a
    cue ("no", "without", "denies"...) or up to four before a post-cue ("... ruled out",
    "... absent"), never across punctuation or "but", "however"."""
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    hit: set[int] = set()
    for i, tok in enumerate(tokens):
        post = tok in _POST or (tok == "out" and i and tokens[i - 1] == "ruled")
        if tok in _PRE and not post:
            for j in range(i + 1, min(len(tokens), i + 1 + window)):
                if tokens[j] in _STOP_SCOPE or not tokens[j][0].isalnum():
                    break
                hit.add(j)
        if post:
            start = i - 1 if tok == "out" else i  # the cue's first word
            for j in range(start - 1, max(-1, start - 5), -1):
                if tokens[j] in _STOP_SCOPE or not tokens[j][0].isalnum():
                    break
                hit.add(j)
    return {t for j in sorted(hit) for t in terms(tokens[j])}


#: text that addresses an assistant rather than describing a patient: quoted in an answer it
#: would pass instructions on to whoever reads it next (another agent, a template)
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[^.]{0,40}\b(?:instructions?|prompts?|rules|context)\b"
    r"|\b(?:system prompt|you are now|act as|jailbreak)\b"
    r"|\b(?:call|run|use|invoke)\s+(?:the\s+)?(?:tool\s+)?(?:query_sql|search_evidence|patient_context|get_document|"
    r"find_patients|similar_cases|record_feedback|answer_question|lookup_concept)\b"
    r"|\b(?:list|reveal|show|print|dump)\s+(?:all|every)\s+(?:the\s+)?(?:patients?|records|names|addresses)\b",
    re.IGNORECASE)


def instruction_like(sentence: str) -> str | None:
    """Why ``sentence`` reads as an instruction to an assistant (prompt injection), or None."""
    m = _INSTRUCTION.search(sentence)
    return f"reads as an instruction to an assistant (“{m.group(0)[:40]}”), not as clinical content" if m else None


def phi_leaks(text: str) -> list[tuple[str, str]]:
    """(type, text) of each identifier the de-identifier finds in ``text``."""
    from sagehealth.privacy.deid import detect

    return [(s.type, text[s.start:s.end]) for s in detect(text)]


def scrub(text: str) -> tuple[str, int]:
    """``text`` with every identifier replaced by its type tag, and how many were replaced."""
    from sagehealth.privacy.deid import deidentify

    result = deidentify(text, mode="tags")
    return result.text, len(result.spans)
