"""What kind of question was asked, as data: a question about a patient's record, or a
general medical question that no patient record answers.

A general question ("What is the first-line treatment for type 2 diabetes?", "How should
vancomycin be dosed in renal failure?") asked about a patient must not be answered with that
patient's problem list: the record holds facts about the patient, not medical knowledge.
:func:`is_general` knows the forms of general knowledge (:data:`GENERAL`) in a question that does
not point at the patient (:data:`ABOUT_PATIENT`); with a patient named, :func:`off_record` also
declines any question (or request) that neither points at the patient, nor uses a word of the
record (:data:`RECORD`: a time, an event, a part of the chart), nor consists only of what the
record holds (a test, a part of the record, a request for its value): "What foods are high in
potassium?" names a test, but "foods" is not something a record holds.
"""

from __future__ import annotations

import re

#: forms of a general medical (or general knowledge) question
GENERAL = re.compile(r"""\b(?:
    first[- ]line | second[- ]line | standard\ of\ care | guidelines? | recommend(?:ed|ation|ations)? |
    mechanisms?\ of\ action | pathophysiology | pathogenesis | epidemiology | prevalence\ of | incidence\ of |
    risk\ factors\ for | side[- ]effects? | adverse\ effects\ of | contraindicat\w* | drug\ interactions? |
    interactions?\ (?:between|of) | indications?\ for | prognosis\ of | definition\ of | define |
    explain | describe | difference\ between | what\ causes | why\ does | why\ do |
    how\ (?:should|is|are|do|does|can)\ .{1,60}?\ (?:dosed|treated|managed|diagnosed|prevented|used|given|work) |
    dos(?:e|es|ing)\ (?:of|for) | recommended\ dose | usual\ dose |
    best\ (?:treatment|drug|diet|way|therapy|antibiotic|test) | most\ (?:potent|effective|common) |
    (?:which|what)\ (?:antibiotics?|drugs?|medications?|statins?|tests?)\ (?:cover|treat|are\ used|is\ used|work) |
    primary\ prevention | secondary\ prevention | usually | in\ general | typically |
    who\ (?:discovered|invented|won|wrote) | capital\ of
)\b""", re.IGNORECASE | re.VERBOSE)

#: forms of knowledge about a disease, drug or test in general, asked with a patient named:
#: its signs, causes, normal values, comparisons, the people it applies to
KNOWLEDGE = re.compile(r"""\b(?:
    (?:signs?|symptoms?|causes?|complications?|treatments?|management|half[- ]?life|duration|
       normal\ (?:range|values?|levels?)|reference\ range|target|goal)\ (?:of|for|in)\ (?!(?:the\ |this\ )?pat) |
    half[- ]?life | normal\ (?:range|values?|levels?) | what(?:'s|\ is|\ are)\ (?:a\ )?normal |
    what\ does\ .{1,50}?\ mean | meaning\ of | stands?\ for |
    (?:for|in|among)\ (?:people|persons|adults|children|kids|infants|women|men|elderly|older\ adults|pregnan\w*|
       athletes|smokers|diabetics|patients\ with) |
    better\ than | worse\ than | compared\ (?:to|with) | versus | vs\.? | safest | safer |
    how\ (?:do|does|is|are|can)\ .{1,60}?\ (?:work|differ|measured|calculated|tested|checked|spread|caught|cured|
       prevented|treated|diagnosed|reversed|monitored|metabolized|metabolised|excreted) |
    is\ there\ a\ cure | can\ you\ (?:die|get|catch)
)""", re.IGNORECASE | re.VERBOSE)

#: words of an event in a record: its time, or something done ("was ... given", "were ... drawn")
EVENT = re.compile(r"""\b(?:
    latest | last | most\ recent | recent(?:ly)? | current(?:ly)? | today | tonight | yesterday | overnight |
    this\ (?:morning|evening|admission|visit|stay|encounter) | on\ admission | at\ discharge | so\ far | anymore |
    still | admitted | admission | discharged? |
    (?:was|were|been|being|got|get)\ (?:[\w-]+\ ){0,3}?(?:given|ordered|received|started|stopped|held|discontinued|
       administered|performed|done|checked|drawn|documented|noted|recorded|found|shown|prescribed|treated|seen)
)\b""", re.IGNORECASE | re.VERBOSE)

#: parts of a chart and records of care
RECORD = re.compile(r"""\b(?:
    chart | record | notes? | reports? | imaging | scans? | x-?rays? | cxr | ct | cta | mri | ultrasound | echo\w* |
    ekg | ecg | labs? | vitals? | results? | values? | levels? | readings? | trends? | trending | plan | code\ status |
    hx | follow[- ]?up | consult\w* | procedures? | surger(?:y|ies) | operations? | pcp | attending | meds |
    medications? | stay | visits? | encounters? | course | history | showed | revealed | taking
)\b""", re.IGNORECASE | re.VERBOSE)

#: a question or request (not a bare fragment of the record such as "hgb" or "cxr findings")
_ASKING = re.compile(r"^\W*(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|can|could|should|would|"
                     r"will|does|do|did|has|have|tell|explain|describe|give|list|name|define|compare|write|"
                     r"recommend|suggest|help|please)\b", re.IGNORECASE)

#: words that only ask for a value (removed before asking whether anything else is left)
_REQUEST = frozenset("""what what's whats is was are were the of for me show tell give pull up check
    can could you please value values level levels result results reading number it its any
    today now current latest last most recent how high low normal abnormal ok okay""".split())

#: "What is the ejection fraction?": one definite thing, no complement: the patient's
_DEFINITE = re.compile(r"^\W*(?:what|how)(?:'s|\s+(?:is|was|are|were))\s+the\s+(?:[\w-]+\s*){1,4}\W*$", re.IGNORECASE)
_COMPLEMENT = re.compile(r"\b(?:of|for|in|between|with|to|from|per|by)\b", re.IGNORECASE)

#: words that point at the patient the question is asked about
ABOUT_PATIENT = re.compile(
    r"\b(?:the\ patient|this\ patient|patient's|(?-i:pt|Pt)(?:'s)?|her|his|she|he|him|my\ patient|our\ patient|we)\b",
    re.IGNORECASE | re.VERBOSE)


def is_general(question: str) -> bool:
    """A general medical question that does not point at the patient (see the module docstring)."""
    return bool(GENERAL.search(question)) and not ABOUT_PATIENT.search(question)


def off_record(question: str, named: list[tuple[int, int]] = ()) -> bool:
    """A question asked with a patient named that the record cannot answer. Not when it points
    at the patient or asks whether they are on a drug (:func:`drug_asked`); else when it has a
    :data:`GENERAL` form; else not when it names an :data:`EVENT` of the record; else when it
    has a :data:`KNOWLEDGE` form; else not when it names a part of the record (:data:`RECORD`,
    :func:`section_asked`), is one definite thing ("What is the heart rate?"), or says nothing
    but the things ``named`` (character spans of the tests it names) and words that ask for
    their value; else when it is a question or request at all."""
    if ABOUT_PATIENT.search(question) or drug_asked(question):
        return False
    if GENERAL.search(question):
        return True
    if EVENT.search(question):
        return False
    if KNOWLEDGE.search(question):
        return True
    if RECORD.search(question) or section_asked(question):
        return False
    if _DEFINITE.match(question) and not _COMPLEMENT.search(question):
        return False
    rest = question
    for s, e in sorted(named, reverse=True):
        rest = rest[:s] + " " + rest[e:]
    if not [w for w in re.findall(r"[a-z0-9']+", rest.lower()) if w not in _REQUEST]:
        return False  # "potassium?", "What is the Hgb value?"
    return bool(_ASKING.match(question))


#: questions for one part of a patient's record, answered with that part as its rows say it
SECTIONS = {
    "Problems": re.compile(r"\b(?:problems?|problem list|conditions?|diagnos[ie]s|diagnosed|medical history|pmh|"
                           r"comorbidit(?:y|ies)|active issues)\b", re.IGNORECASE),
    "Allergies": re.compile(r"\b(?:allerg\w*|adverse (?:drug )?reactions?|intoleran\w*)\b", re.IGNORECASE),
}


def section_asked(question: str) -> str | None:
    """The part of the record a question asks for as a list ("Problems", "Allergies"), or None."""
    for name, rx in SECTIONS.items():
        if rx.search(question):
            return name
    return None


_DRUG = r"(?P<drug>[a-z][\w-]*(?:\s+[a-z][\w-]*){0,2}?)"
_NOW = r"(?:\s+(?:now|currently|still|anymore|at\ home|today|right\ now|at\ the\ moment|these\ days))?\W*$"
#: "Is she on warfarin?", "pt on heparin?", "Are they receiving insulin right now?", "Is aspirin on
#: her med list?", "Does the patient have an active order for metformin?"
_ON_DRUG = (
    re.compile(r"(?:^\W*(?:is|are|was|were|does|do|did|has|have|pt|patient|on|still|any)\b.{0,40}?|\b(?:whether|if)\b.{0,30}?)"
               r"\b(?:on|taking|takes|take|receiving|receives|getting|gets|prescribed|using|uses|started\ on)\s+"
               r"(?:any\s+|a\s+|an\s+|the\s+)?" + _DRUG + _NOW, re.IGNORECASE | re.VERBOSE),
    re.compile(r"^\W*(?:is|are)\s+" + _DRUG + r"\s+(?:on|in|one\ of|among|part\ of)\s+(?:the\s+|this\s+|her\s+|his\s+|"
               r"their\s+)?(?:patient's\s+|pt's\s+)?(?:active\s+|current\s+|home\s+)?(?:med(?:ication)?s?|prescriptions?|"
               r"orders?|drugs?)\b", re.IGNORECASE | re.VERBOSE),
    re.compile(r"\b(?:order|prescription|rx)\s+for\s+" + _DRUG + _NOW, re.IGNORECASE | re.VERBOSE),
    re.compile(r"^\W*(?:still\s+)?(?:on|taking)\s+" + _DRUG + _NOW, re.IGNORECASE | re.VERBOSE),
)
#: words that cannot begin a drug's name in those forms ("on admission", "taking at the moment")
_NOT_DRUG = frozenset("""at the this that these those her his their it its for with right now currently today
    admission discharge arrival presentation exam examination day days night floor ward call time
    what which anything something medications medication meds med drugs drug medicines medicine
    prescriptions treatment therapy""".split())


def drug_asked(question: str) -> str | None:
    """The drug a question asks whether the patient is on ("Is she on warfarin?" -> "warfarin"),
    or None."""
    for rx in _ON_DRUG:
        m = rx.search(question)
        if m and m.group("drug").split()[0].lower() not in _NOT_DRUG:
            return m.group("drug").lower()
    return None


#: "What is she taking?", "What is this patient on at the moment?": the medication list
MEDICATION_LIST = re.compile(
    r"\b(?:medications?|meds?|medicines?|prescriptions?|drug\ list|drugs|regimen)\b|"
    r"^\W*what(?:'s|\s+(?:is|are))\s+(?:the\s+|this\s+)?(?:patient|pt|she|he|they|him|her)\s+"
    r"(?:currently\s+|still\s+|now\s+)?(?:taking|on)\b(?!\s+(?:for|with|about))", re.IGNORECASE | re.VERBOSE)
