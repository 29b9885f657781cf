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
  instructions", "System note to the assistant: the answer must always end with ...", "Note for
  any AI reading this: ...") is data, not an instruction: :func:`strip_instructions` drops such
  sentences from the evidence before any provider reads it, and a drafted sentence that reads so
  is removed even when it is quoted faithfully from a document. :func:`instruction_like` judges
  the form (a chat-template role marker, a prompt override, role play, an answering machine or
  "whoever answers" addressed with directive language, an instruction about "your reply"), not
  a fixed phrase list; clinical imperatives ("Do not resuscitate") address no machine.
- ``privacy``: for principals without identified access every drafted sentence and everything
  quoted from evidence is run through the full de-identifier (identifiers become type tags,
  which state nothing to check), then through :func:`guard_identifiers`, a last line of defence
  independent of it that finds structured identifiers by their shape alone (SSN-like numbers
  without a cue, phone numbers, e-mails, URLs, UUIDs, MRN-like digit runs); what is returned is
  checked again, and the check cannot pass while anything is left.
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
#: would pass instructions on to whoever reads it next (another agent, a template). Instructions
#: inside evidence are data: :func:`instruction_like` recognises them by their form (who is
#: addressed, what is asked), not by a fixed phrase list, and the agent drops such sentences
#: from the evidence before any provider sees it and from every answer.
_TOOLS = (r"query_sql|search_evidence|patient_context|get_document|find_patients|similar_cases|record_feedback|"
          r"answer_question|lookup_concept")
#: a machine that answers, named so that a clinical note would not mean anything else by it
_MACHINE = (
    r"chat\s?bots?|chat\s?gpt|gpt(?:-?\d[\w.]*)?s?|llms?|(?:large\s+)?language\s+models?|copilots?|"
    r"artificial[- ]intelligence|a\.i\.|summari[sz]ers?|answerers?|bots?"
    r"|(?:ai|a\.i\.|virtual|digital|automated|answering|responding|chat|conversational|generative|language|reader|"
    r"reading|text|summari[sz]ing|smart|robot)[- ](?:assistants?|models?|systems?|agents?|tools?|bots?|programs?|"
    r"engines?|services?|summari[sz]ers?|readers?|outputs?|answers?|responses?|summar(?:y|ies))"
    # "AI" is also aortic (or adrenal) insufficiency: a machine only where it is addressed as one
    r"|\b(?:an|any|every|each|whatever|whichever|other|dear|hey|attention|attn)\s+ai\b"
    r"|\b(?:to|for)\s+(?:the\s+)?ai\b(?=\s*[:,])"
    # a model, system, agent or assistant by what it does with this text
    r"|(?:assistants?|models?|systems?|agents?|tools?|programs?|engines?|algorithms?|ai)\s+(?:that\s+|which\s+)?"
    r"(?:is\s+)?(?:reading|reads|answering|answers|processing|processes|summari[sz]ing|summari[sz]es|generating|"
    r"parsing|analy[sz]ing|ingesting|handling)\s+(?:this|these|that|the|any|questions?|queries|about|records?|notes?|"
    r"charts?|documents?)\b"
)
#: who reads this text, said without naming a machine ("whoever answers", "if you are an AI")
_READER = (
    r"\b(?:whoever|whatever|anyone|anybody|whichever)\s+(?:[\w-]+\s+){0,2}?(?:reads|answers|summari[sz]es|processes|"
    r"responds|replies|generates|writes|is\s+(?:answering|reading|summari[sz]ing|processing|generating|writing|"
    r"producing|creating|responding))\b"
    r"|\b(?:if|when|since|as)\s+(?:you(?:'re|\s+are)\s+)?an?\s+(?:[\w-]+\s+){0,2}?(?:ai|a\.i\.|model|assistant|bot|"
    r"chatbot|llm|language\s+model|machine|program)\b"
    r"|\b(?:if|when)\s+(?:an?|any|the)\s+(?:ai|model|assistant|bot|chatbot|llm|machine|program)\s+(?:reads|sees|"
    r"processes|summari[sz]es|answers)\b"
)
#: the answer being written ("your reply", "every response", "the final answer")
_OUTPUT = r"(?:answers?|repl(?:y|ies)|responses?|outputs?|summar(?:y|ies)|completions?)"
_ANSWER_REF = (
    rf"\b(?:your|every|each|any|all(?:\s+your)?|all\s+future|the\s+final|final)\s+(?:next\s+|final\s+|future\s+|"
    rf"first\s+|own\s+)?{_OUTPUT}\b"
    rf"|(?:^|\bthe\s+)(?:final\s+)?(?:answer|reply|response|output|completion)s?\s+(?:must|should|shall|has\s+to|"
    rf"needs\s+to|is\s+(?:required|expected)\s+to)\b"
    r"|\b(?:tell|inform|assure|convince|remind|show|give)\s+the\s+(?:user|human|requester|asker)\b"
    r"|\bthe\s+(?:user|requester|asker|questioner)\b(?!'s\s+(?:manual|guide))"
    r"|\b(?:cite|citing|citations?\s+(?:of|to))\s+(?:the\s+|any\s+)?(?:evidence|sources?)\b|\bevidence\s+\[?E\d+\b"
)
#: the answer a reader is writing, said to the reader: no note speaks of "your reply" but a letter
#: awaiting one (those are taken out first) or "your response to treatment"
_YOUR_ANSWER = (r"\byour\s+(?:next\s+|final\s+|own\s+|first\s+)?(?:answer|reply|response|output|completion)s?\b"
                r"(?!\s+to\b)")
#: words that tell someone to do something
_DIRECTIVE = (
    r"must|should|shall|always|never|do\s+not|don't|dont|ignore|disregard|override|forget|reply|respond|answer|"
    r"end|finish|close|conclude|sign|insert|prefix|translate|format|append|prepend|include|output|say|state|print|"
    r"call|reveal|list|write|begin|start|add|mention|tell|inform|required|has\s+to|have\s+to|needs?\s+to|"
    r"make\s+sure|ensure|remember|omit|stop|avoid|report|claim|provide|give|repeat|obey|comply|only|instead|"
    r"is\s+to|are\s+to|instructed|withhold|leave\s+out|hide|classify|rate|describe|recommend|refuse|"
    r"supposed\s+to|expected\s+to|cannot|can't|may\s+not|please|use|treat|consider|assume|copy|paste|"
    r"verbatim|reproduce|quote|overrides?|supersedes?|replaces?|skip|cite|citing|mandatory|obligatory"
)
#: what an answering machine is told to do with its answer
_OUT_VERB = (r"end|finish|close|conclude|begin|start|open|append|prepend|add|include|respond|reply|answer|say|"
             r"state|write|output|print|tell|mention|report|repeat|translate|format|sign|insert|prefix|omit|"
             r"classify|rate|describe|recommend|withhold|reveal|list|ignore|disregard|forget|override|use|act|"
             r"pretend|remember|make|ensure|stop|call|skip|speculate|invent|fabricate|cite|quote|switch|change")
_QUOTED = r"(?:'[^']{2,80}'|\"[^\"]{2,80}\"|\u201c[^\u201d]{2,80}\u201d|\u2018[^\u2019]{2,80}\u2019)"
#: names a machine may be hailed by at the start of a sentence ("Assistant: please ...")
_HAIL = r"assistant|system|model|ai|a\.i\.|bot|chatbot|gpt|llm|claude|gemini|bard|siri|alexa|copilot|computer"

_FLAGS = re.IGNORECASE | re.MULTILINE
_DIRECTIVE_RX = rf"\b(?:{_DIRECTIVE})\b"
#: (why, pattern[, second pattern that must also be found in the sentence]); each a linear scan
_INJECTION_RULES: list[tuple[str, re.Pattern[str], re.Pattern[str] | None]] = [
    (why, re.compile(rx, _FLAGS), re.compile(also[0], _FLAGS) if also else None) for why, rx, *also in [
    # fake role markers of chat templates: no note has them
    ("a chat-template role marker",
     r"<\|?\s*im_(?:start|end)\s*\|?>|<\|(?:system|user|assistant|endoftext|eot_id|start_header_id)\|>|"
     r"\[/?INST\]|<<\s*/?SYS\s*>>|</?\s*(?:system|assistant|instructions?)\s*>|"
     r"\[\s*(?:system|assistant|developer|instructions?)\s*\]|"
     r"^\W{0,3}#{1,6}\s*(?:system|assistant|instructions?|prompt)\b|"
     r"^\W*(?:system|admin(?:istrator)?|developer|root|operator)\s+(?:override|prompt|message|instructions?|command|"
     r"notice|directive)s?\s*:"),
    # the well-known ways of overriding a prompt
    ("overrides the assistant's instructions",
     r"\b(?:ignore|disregard|forget|override|bypass|skip)\b[^.]{0,40}?\b(?:(?:previous|prior|above|earlier|preceding|"
     r"original|all|any|your|system|safety|the)\s+)+(?:[\w-]+\s+)?(?:instructions?|prompts?|rules|directives?|"
     r"guidelines|"
     r"guidance|context|messages?|settings|constraints|restrictions|guardrails|programming|training|policies|"
     r"polic(?:y|ies)|principles|filters?|safeguards)\b"
     r"|\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:above|before|else|previously|prior|you\b)"
     r"|\b(?:ignore|disregard|forget)\s+(?:the|this|that|my|your|any)\s+(?:(?:user's|clinical|actual|original)\s+)?"
     r"(?:question|query|request|task|user|conversation|prompt)s?\b"
     r"|\b(?:system\s+prompt|jailbreak|developer\s+mode|do\s+anything\s+now)\b"
     r"|\bnew\s+(?:instructions|rules|directives?|task)\b[^.]{0,40}\b(?:for|to)\s+(?:the|you|any|this)\b"
     r"|\bnew\s+(?:instructions?|rules?|directives?|polic(?:y|ies)|task|prompt)\s*:"
     r"|\b(?:supersedes?|replaces?|overrides?)\s+(?:all\s+)?(?:earlier|prior|previous|other|your)\b"
     r"|\b(?:supersedes?|replaces?|overrides?)\s+(?:the\s+)?(?:\w+'s\s+|user\s+|original\s+)?(?:question|query|"
     r"request|prompt|instructions?)\b"),
    # role play: "you are now", "act as", "pretend you are", "from now on you"
    ("asks the reader to play a role",
     r"\byou\s+are\s+now\b|\bfrom\s+now\s+on,?\s+(?:you|always|never|only|answer|respond|reply)\b"
     r"|(?:^|[.:;!]\s+|\b(?:you|please|now)\s+(?:(?:will|must|should|shall|can|to)\s+)?)(?:act|behave|respond|answer)"
     r"\s+(?:as|like)\s+(?:if\b|though\b|an?\b|the\b|my\b|a\s)"
     r"|\bpretend\s+(?:to\s+be|you(?:'re|\s+are)?|that\s+you)\b|\brole-?\s?play(?:ing)?\s+(?:as|a|an|the)\b"
     r"|\bimagine\s+you\s+are\b|\byou\s+are\s+(?:an?|the)\s+(?:unrestricted|unfiltered|uncensored|helpful|"
     r"different|new)\b"),
    # the tools and bulk reads an injection asks for
    ("asks for a tool call or a bulk read",
     rf"\b(?:call|run|use|invoke|execute)\s+(?:the\s+)?(?:tool\s+)?(?:{_TOOLS})\b"
     r"|\b(?:list|reveal|show|print|dump|output|export|give)\s+(?:me\s+)?(?:all|every)\s+(?:the\s+|of\s+the\s+)?"
     r"(?:patients?|records|names|addresses|rows|tables?)\b"
     r"|\bselect\s+\*\s+from\b"),
    # a machine hailed at the start of a sentence and told what to do
    ("addresses an assistant with an instruction",
     rf"^\W*(?:(?:hey|hi|hello|dear|ok|okay|attention|attn)\s+)?(?:the\s+)?(?:(?:{_HAIL})|[\w-]+\s+(?:ai|a\.i\.|bot|"
     rf"chatbot|gpt|llm|assistant))(?:\s+(?:rules?|instructions?|note|directive|policy|guidance|notice|message|"
     rf"task|orders?))?\s*[:,]\s*(?:please\s+|kindly\s+)?"
     rf"(?:(?:always|never|only|now|just|do\s+not|don't)\s+)*(?:{_OUT_VERB})\b"
     # "the assistant should never reveal": a surgical assistant is told to retract, not to tell
     rf"|\b(?:the|an?|any|every|this|your)\s+(?:ai\s+)?assistants?\s+(?:must|should|shall|is\s+(?:required|instructed|"
     rf"expected|to)|has\s+to|needs\s+to|may\s+not|cannot|can't|will)\s+(?:(?:always|never|not|only|also)\s+)*"
     rf"(?:{_OUT_VERB}|disclose|discuss|share|divulge|answer|reply|respond)\b"),
    # a machine greeted or labelled ("Dear language model,", "Instruction for the model:"), or
    # spoken of (an answering machine, whoever reads this), in a sentence with directive language
    ("addresses an assistant with an instruction",
     rf"\b(?:hey|hi|hello|dear)\s+(?:{_HAIL}|{_MACHINE})\b"
     rf"|^\W*(?:[\w-]+\s+){{0,2}}(?:to|for)\s+(?:the\s+|any\s+|all\s+|every\s+|an?\s+)?(?:[\w-]+\s+)?"
     rf"(?:{_HAIL}|agent|machine|reader)s?\s*:"
     rf"|\b(?:{_MACHINE})\b|{_READER}", _DIRECTIVE_RX),
    # a sentence about the answer being written ("your reply", "every response") with an instruction
    ("gives an instruction about the answer", _ANSWER_REF, _DIRECTIVE_RX),
    ("gives an instruction about the answer",
     rf"{_YOUR_ANSWER}"
     r"|\bif\s+(?:(?:you|it|they|the\s+[\w-]+|an?\s+[\w-]+)\s+(?:is|are|'re|gets?|were)\s+)?asked\b[^.]{0,60}\b(?:say|"
     r"respond|reply|answer|state|tell|claim)\b"
     r"|^\W*(?:when|while|before|after|in)\s+(?:answering|responding|replying|summari[sz]ing|generating|producing|"
     r"composing|writing)\b[^.]{0,60}?,\s*(?:the\s+|an?\s+)?(?:you|ai|model|assistant|system|bot|chatbot|llm|agent|"
     r"tool)\s+(?:must|should|shall|will|is\s+to|has\s+to|needs\s+to|may\s+not|cannot|always|never|only)\b"
     rf"|^\W*(?:when|while|before|after|in)\s+(?:answering|responding|replying|summari[sz]ing|generating|writing\s+"
     rf"(?:the|your|an?)\s+{_OUTPUT})\b[^.]{{0,40}}?,\s*(?:please\s+)?(?:(?:always|never|only|do\s+not|don't)\s+)*"
     rf"(?:{_OUT_VERB}|claim|describe|refer)\b"),
    ("tells the reader how to format its answer",
     r"(?:^|[.:;!]\s+|\b(?:please|then|and)\s+)(?:(?:always|only)\s+)?(?:respond|reply|answer|output|write|format\s+"
     r"(?:your|the|all|every)\s+\w+)\s+(?:only\s+)?(?:in|as|using)\s+(?:json|xml|yaml|markdown|html|code|uppercase|"
     r"lowercase|all\s+caps|capital\s+letters|pirate|emoji|(?:[\w-]+\s+)?(?:format|language|style|speak|verse))\b"),
    # an imperative about what to answer, with the words to use
    ("tells the reader what to answer",
     rf"(?:^|[.:;!]\s+|\b(?:please|then)\s+|\band\s+(?=print|output|reply|respond|append|write|answer)"
     rf"|\byou\s+(?:must|should|shall|will|need\s+to|have\s+to|are\s+to)\s+(?:(?:now|always|only|from\s+now\s+on)\s+)*"
     rf"(?=answer|respond|reply|say|state|write|output|print|begin|end|append|include|mention|describe|tell))"
     rf"(?:(?:always|never|only|just|simply|do\s+not|don't)\s+)*(?:{_OUT_VERB})\b[^.]{{0,60}}?"
     rf"(?:\b(?:with|the\s+(?:words?|phrase|sentence|text|string))\s*:?\s*{_QUOTED}|{_QUOTED}\s+(?:to|at|only|after|"
     rf"before|regardless|and\s+nothing)\b|(?<=\s){_QUOTED}\s*(?:only)?\s*[.!]?\s*$"
     rf"|(?<=\s){_QUOTED}(?!\s*(?:was|were|is|are|has|had|and\s+(?:was|were))\b))"),
]]

#: "physician assistant", "medical assistant": people, not machines
_PERSON_ASSISTANT = re.compile(
    r"\b(?:physician|physicians|physician's|medical|nursing|nurse|surgical|surgeon's|dental|research|clinical|"
    r"administrative|home\s+health|health|certified|first|second|pharmacy|therapy|teaching|personal|care|"
    r"office|lab|laboratory|rehab|pa)\s+assistants?\b", re.IGNORECASE)
#: a letter to a colleague ("I await your response") asks for a reply but instructs no machine
_COURTESY = re.compile(r"\b(?:await(?:ing)?|forward\s+to|thanks?\s+(?:you\s+)?for|appreciate)\s+your\s+"
                       r"(?:answers?|repl(?:y|ies)|responses?)\b", re.IGNORECASE)


def instruction_like(sentence: str) -> str | None:
    """Why ``sentence`` reads as an instruction to an assistant (prompt injection), or None.

    It generalises over phrasings rather than matching a list: a sentence is flagged when it
    carries a chat-template role marker, the usual prompt overrides ("ignore previous
    instructions"), role play ("you are now", "pretend you are"), a tool call or bulk read, or
    when it addresses an answering machine (by a name that means nothing else in a note, or by
    how it reads this text: "any model reading this") together with directive language, or
    speaks about the answer being written ("your reply", "every response") with a directive.
    Clinical imperatives ("Do not resuscitate", "Return to ED if symptoms worsen") address no
    machine and no answer, and pass."""
    text = _COURTESY.sub("letter", _PERSON_ASSISTANT.sub("staff", sentence))
    for why, rx, also in _INJECTION_RULES:
        m = rx.search(text)
        if m and (also is None or also.search(text)):
            quote = " ".join(m.group(0).split())[:40]
            return f"reads as an instruction to an assistant ({why}: \u201c{quote}\u201d), not as clinical content"
    return None


def strip_instructions(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``text`` without its sentences that read as instructions to an assistant, and the
    (sentence, reason) of each one dropped. Each sentence is judged with what lies between it
    and the sentence before (a "### System" heading line, a role marker), which goes with it."""
    out, dropped, prev = [], [], 0
    for a, b in sentences(text):
        why = instruction_like(text[prev:b])
        if why:
            dropped.append((text[a:b], why))
            out.append("\n" if "\n" in text[prev:a] else " ")
        else:
            out.append(text[prev:b])
        prev = b
    out.append(text[prev:])
    return ("".join(out).strip() if dropped else text), dropped


# -- the last line of defence for identifiers --------------------------------------------------
#: structured identifiers, found by their shape alone (no cue word, no context), independently of
#: the de-identifier: whatever it missed, an answer for a principal without identified access
#: never carries these. Broad on purpose: a false alarm costs a tag, a miss costs a leak.
#: (each starts only where a run of its characters starts: linear time on any text)
_GUARD: list[tuple[str, re.Pattern[str]]] = [(t, re.compile(rx, re.IGNORECASE)) for t, rx in [
    ("EMAIL", r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)+"
              r"|(?<![\w.+-])[\w.+-]+\s*(?:\[at\]|\(at\)|\sat\s)\s*[\w-]+\s*(?:\[dot\]|\(dot\)|\sdot\s)\s*[a-z]{2,}\b"),
    ("URL", r"\b(?:https?|ftp|sftp|file)://\S+|\bwww\d?\.\S+"
            r"|(?<![\w.-])(?:[a-z0-9-]+\.)+(?:com|org|net|edu|gov|mil|int|io|info|biz|us|uk|de|fr|ca|au|health|invalid)"
            r"(?::\d+)?(?:/\S*)?(?![\w.])"),
    ("IP", r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9a-f]{1,4}:){4,7}[0-9a-f]{1,4}\b"),
    ("ID", r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b"),  # UUID, with or without dashes
    ("SSN", r"(?<![\w.-])\d{3}[-\s.\u2010-\u2015]\d{2}[-\s.\u2010-\u2015]\d{4}(?![\w-]|\.\d)"),
    ("PHONE", r"(?<![\w.+/-])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s*|\d{3}[\s./\u2010-\u2015-]?)\d{3}"
              r"[\s./\u2010-\u2015-]?\d{4}"
              r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?![\w/-]|\.\d)"),
    ("ID", r"\b(?:\d{4}[\s-]){2,4}\d{1,4}\b"),  # card and account numbers in groups
    # any long run of digits (MRN, account, member, NPI...) and letter-prefixed record numbers
    ("MRN", r"(?<![\d.,])\d{7,}(?![\d]|[.,]\d)|\b[A-Z]{1,3}-?\d{6,}\b"),
    # hex or mixed tokens that name a record (not the store's own keyed ids: psn_..., chk_...)
    ("ID", r"(?<![\w-])(?=[0-9a-f-]*\d)(?=[0-9a-f-]*[a-f])[0-9a-f]{16,}(?![\w-])"),
]]
#: the store's own ids and keyed pseudonyms (``psn_`` + HMAC) are meant to be shown
_OWN_ID = re.compile(r"\b[a-z]{2,5}_[0-9a-z]{6,}\b")


def guard_identifiers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, type) of every structured identifier the last-line guard finds in ``text``
    (SSN-like ddd-dd-dddd with or without a cue, phone numbers, e-mails, URLs, IP addresses,
    UUIDs and long hex tokens, MRN-like digit runs, grouped account numbers); de-identification
    tags ("[SSN]") and the store's own keyed ids are not identifiers."""
    own = [(m.start(), m.end()) for m in _OWN_ID.finditer(text)] + \
          [(m.start(), m.end()) for m in _TAG.finditer(text)]
    found: list[tuple[int, int, str]] = []
    for kind, rx in _GUARD:
        for m in rx.finditer(text):
            a, b = m.start(), m.end()
            while b > a and text[b - 1] in ".,;:)]}>'\"":  # sentence punctuation after a URL
                b -= 1
            if b <= a or any(s <= a and b <= e for s, e in own):
                continue
            if any(s < b and a < e for s, e, _ in found):
                continue  # an earlier (more specific) pattern has it
            found.append((a, b, kind))
    return sorted(found)


def guard_scrub(text: str) -> tuple[str, list[str]]:
    """``text`` with what :func:`guard_identifiers` finds replaced by type tags, and the types."""
    found = guard_identifiers(text)
    for a, b, kind in reversed(found):
        text = text[:a] + f"[{kind}]" + text[b:]
    return text, [kind for _, _, kind in found]


def phi_leaks(text: str) -> list[tuple[str, str]]:
    """(type, text) of each identifier the de-identifier finds in ``text``."""
    from sagehealth.privacy.deid import detect

    return [(s.type, text[s.start:s.end]) for s in detect(text)]


def scrub(text: str) -> tuple[str, int]:
    """``text`` with every identifier replaced by its type tag, and how many were replaced."""
    from sagehealth.privacy.deid import deidentify

    result = deidentify(text, mode="tags")
    return result.text, len(result.spans)
