"""What kind of question was asked, as data: a question about a patient's record, or a
general medical question that no patient record answers.

A general question ("What is the first-line treatment for type 2 diabetes?", "How should
vancomycin be dosed in renal failure?") asked about a patient must not be answered with that
patient's problem list: the record holds facts about the patient, not medical knowledge. Such a
question is one that uses the forms of general knowledge (:data:`GENERAL`) and does not point at
the patient (:data:`ABOUT_PATIENT`).
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

#: words that point at the patient the question is asked about
ABOUT_PATIENT = re.compile(
    r"\b(?:the\ patient|this\ patient|patient's|pt|pt's|her|his|she|he|him|my\ patient|our\ patient)\b",
    re.IGNORECASE | re.VERBOSE)


def is_general(question: str) -> bool:
    """A general medical question that does not point at the patient (see the module docstring)."""
    return bool(GENERAL.search(question)) and not ABOUT_PATIENT.search(question)


#: questions for one part of a patient's record, answered with that part as its rows say it
SECTIONS = {
    "Problems": re.compile(r"\b(?:problems?|problem list|conditions?|diagnos[ie]s|medical history|pmh|"
                           r"comorbidit(?:y|ies)|active issues)\b", re.IGNORECASE),
    "Allergies": re.compile(r"\b(?:allerg\w*|adverse (?:drug )?reactions?|intoleran\w*)\b", re.IGNORECASE),
}


def section_asked(question: str) -> str | None:
    """The part of the record a question asks for as a list ("Problems", "Allergies"), or None."""
    for name, rx in SECTIONS.items():
        if rx.search(question):
            return name
    return None
