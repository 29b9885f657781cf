"""Split a clinical note or report into named sections with exact character offsets.

Three heading styles are recognised in one compiled regex pass (see :data:`HEADING_PATTERNS`):

* markdown headings on their own line, as in Synthea notes: ``# Chief Complaint``;
* MTSamples inline headings, where a whole transcription is one line and a heading in capitals
  follows a comma or the start of the text and ends with ``:,`` (``...flaring up.,MEDICATIONS: ,
  Her only...``);
* ``HEADING:`` at the start of a line, in capitals or title case.

Heading names are normalised to upper-case canonical names through :data:`CANONICAL` (``HPI``
-> ``HISTORY OF PRESENT ILLNESS``, ``IMPRESSIONS`` -> ``IMPRESSION``); an unknown name is kept,
upper-cased. A title-case line heading counts only when its name is known or it stands alone on
its line (``Neck: supple`` is not a section); an unknown capitals line heading needs at least
:data:`MIN_UNKNOWN_CAPS` letters (``BP: 120/80`` is not a section).

Sections partition the text from the first heading to the end: a section runs from its heading
to the next heading, so ``text[start:end]`` is the section's text including its heading. Text
before the first heading becomes a ``PREAMBLE`` section when it is not blank.
"""

from __future__ import annotations

import re
from typing import TypedDict

#: canonical section name -> variants (compared upper-cased, whitespace collapsed)
CANONICAL: dict[str, tuple[str, ...]] = {
    "CHIEF COMPLAINT": ("CC", "CHIEF COMPLAINTS", "PRESENTING COMPLAINT", "REASON FOR VISIT"),
    "HISTORY OF PRESENT ILLNESS": (
        "HPI", "HISTORY OF THE PRESENT ILLNESS", "HISTORY OF PRESENTING ILLNESS",
        "PRESENT ILLNESS", "HISTORY OF PRESENT ILLNESSES",
    ),
    "HISTORY": ("HX", "CLINICAL HISTORY", "BRIEF HISTORY", "CLINICAL"),
    "INDICATION": (
        "INDICATIONS", "INDICATIONS FOR PROCEDURE", "INDICATION FOR PROCEDURE",
        "INDICATIONS FOR THE PROCEDURE", "INDICATION FOR THE PROCEDURE", "INDICATION FOR SURGERY",
        "INDICATIONS FOR SURGERY", "INDICATIONS FOR OPERATION", "INDICATION FOR OPERATION",
        "CLINICAL INDICATION", "CLINICAL INDICATIONS", "REASON FOR EXAM",
        "REASON FOR EXAMINATION", "REASON FOR STUDY", "REASON FOR THE EXAM",
    ),
    "COMPARISON": ("COMPARISONS", "COMPARISON STUDY", "COMPARISON STUDIES", "PRIOR STUDIES"),
    "TECHNIQUE": ("TECHNIQUES", "METHOD", "METHODS"),
    "EXAM": ("EXAMINATION", "TYPE OF EXAM", "STUDY"),
    "FINDINGS": ("FINDING",),
    "IMPRESSION": ("IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "FINAL IMPRESSION"),
    "ASSESSMENT AND PLAN": (
        "A/P", "A&P", "ASSESSMENT/PLAN", "ASSESSMENT & PLAN", "IMPRESSION AND PLAN",
        "IMPRESSION/PLAN", "ASSESSMENT AND PLANS",
    ),
    "ASSESSMENT": ("A", "ASSESSMENTS"),
    "PLAN": ("P", "PLANS", "TREATMENT PLAN"),
    "RECOMMENDATIONS": ("RECOMMENDATION",),
    "MEDICATIONS": (
        "MEDICATION", "MEDS", "CURRENT MEDICATIONS", "HOME MEDICATIONS", "MEDICATIONS AT HOME",
        "ADMISSION MEDICATIONS", "MEDICATIONS ON ADMISSION", "OUTPATIENT MEDICATIONS",
        "PRESENT MEDICATIONS", "CURRENT MEDS",
    ),
    "DISCHARGE MEDICATIONS": ("MEDICATIONS ON DISCHARGE", "DISCHARGE MEDS"),
    "ALLERGIES": (
        "ALLERGY", "DRUG ALLERGIES", "MEDICATION ALLERGIES", "ALLERGIES TO MEDICATIONS",
        "KNOWN ALLERGIES",
    ),
    "PAST MEDICAL HISTORY": ("PMH", "PMHX", "MEDICAL HISTORY", "PAST HISTORY"),
    "PAST SURGICAL HISTORY": ("PSH", "PSHX", "SURGICAL HISTORY", "PAST SURGERIES"),
    "FAMILY HISTORY": ("FH", "FHX", "FAMILY HX", "FAMILY MEDICAL HISTORY"),
    "SOCIAL HISTORY": ("SH", "SHX", "SOCIAL HX", "PERSONAL HISTORY"),
    "REVIEW OF SYSTEMS": ("ROS", "REVIEW OF SYSTEM", "SYSTEMS REVIEW"),
    "PHYSICAL EXAMINATION": ("PE", "PHYSICAL EXAM", "EXAMINATION ON ADMISSION"),
    "VITAL SIGNS": ("VITALS", "VS"),
    "SUBJECTIVE": ("S",),
    "OBJECTIVE": ("O",),
    "LABORATORY DATA": (
        "LABS", "LAB", "LABORATORY", "LAB DATA", "LABORATORY STUDIES", "LABORATORY RESULTS",
        "LABORATORY VALUES", "LABORATORY FINDINGS",
    ),
    "DIAGNOSIS": ("DIAGNOSES",),
    "PREOPERATIVE DIAGNOSIS": (
        "PREOPERATIVE DIAGNOSES", "PRE-OPERATIVE DIAGNOSIS", "PREOP DIAGNOSIS",
        "PRE-OP DIAGNOSIS",
    ),
    "POSTOPERATIVE DIAGNOSIS": (
        "POSTOPERATIVE DIAGNOSES", "POST-OPERATIVE DIAGNOSIS", "POSTOP DIAGNOSIS",
        "POST-OP DIAGNOSIS",
    ),
    "ADMISSION DIAGNOSIS": (
        "ADMISSION DIAGNOSES", "ADMITTING DIAGNOSIS", "ADMITTING DIAGNOSES",
    ),
    "DISCHARGE DIAGNOSIS": ("DISCHARGE DIAGNOSES", "FINAL DIAGNOSIS", "FINAL DIAGNOSES"),
    "PROCEDURE": (
        "PROCEDURES", "PROCEDURE PERFORMED", "PROCEDURES PERFORMED", "OPERATION",
        "OPERATIONS", "OPERATION PERFORMED", "OPERATIONS PERFORMED", "NAME OF OPERATION",
        "NAME OF PROCEDURE", "TITLE OF OPERATION", "TITLE OF PROCEDURE", "PROCEDURE DONE",
    ),
    "PROCEDURE DETAILS": (
        "DESCRIPTION OF PROCEDURE", "DESCRIPTION OF THE PROCEDURE", "PROCEDURE IN DETAIL",
        "PROCEDURE DETAIL", "DETAILS OF PROCEDURE", "DETAILS OF THE PROCEDURE",
        "DESCRIPTION OF OPERATION", "DESCRIPTION OF THE OPERATION", "OPERATIVE PROCEDURE",
        "OPERATIVE PROCEDURE IN DETAIL", "OPERATION IN DETAIL", "DETAILS OF THE OPERATION",
    ),
    "ANESTHESIA": ("ANESTHETIC", "TYPE OF ANESTHESIA"),
    "ESTIMATED BLOOD LOSS": ("EBL", "BLOOD LOSS"),
    "COMPLICATIONS": ("COMPLICATION",),
    "SPECIMENS": ("SPECIMEN",),
    "HOSPITAL COURSE": ("BRIEF HOSPITAL COURSE", "COURSE IN HOSPITAL"),
    "DISPOSITION": (),
    "CONDITION ON DISCHARGE": ("DISCHARGE CONDITION", "CONDITION AT DISCHARGE"),
    "FOLLOW-UP": ("FOLLOWUP", "FOLLOW UP", "FOLLOW-UP INSTRUCTIONS"),
    "REASON FOR CONSULTATION": ("REASON FOR CONSULT", "REASON FOR REFERRAL"),
    "IMMUNIZATIONS": ("IMMUNIZATION",),
}

#: the heading styles, tried in the order mtsamples, markdown, line ("markdown" and "line" are
#: anchored at a line start)
HEADING_PATTERNS: dict[str, str] = {
    # "# Chief Complaint" / "## Plan" alone on a line
    "markdown": r"[ \t]{0,3}\#{1,6}[ \t]+(?P<markdown>[^\n]*?[^\s#:])[ \t]*:?[ \t#]*\r?$",
    # "HEADING:" or "Heading Name:" at the start of a line; eol is set when nothing follows
    "line": (
        r"[ \t]*(?P<line>[A-Za-z][A-Za-z0-9/&'()\- ]{0,58}[A-Za-z0-9)]|[A-Za-z])[ \t]*:"
        r"(?P<eol>[ \t]*\r?$)?"
    ),
    # MTSamples: ",HEADING:," / ". HEADING: ," inside one long line, or at the very start; the
    # closing comma is only looked at, so that it can open the next heading
    "mtsamples": (
        r"(?:[,.;][ \t]{0,2}|\A)"
        r"(?P<mtsamples>[A-Z0-9][A-Z0-9/&'()\- ]{0,58}[A-Z0-9)]|[A-Z])[ \t]*:[ \t]*(?=,)"
    ),
}

#: an unknown heading in capitals at a line start needs this many letters
MIN_UNKNOWN_CAPS = 4
#: lower-case words allowed inside a title-case heading
TITLE_SMALL_WORDS = frozenset({"of", "and", "or", "the", "to", "for", "on", "at", "in", "&", "/"})
PREAMBLE = "PREAMBLE"

_HEADING = re.compile(
    "{mtsamples}|^(?:{markdown}|{line})".format(**HEADING_PATTERNS), re.MULTILINE
)
_PLURAL_PAREN = re.compile(r"\s*\((?:S|ES)\)$")


def _norm(name: str) -> str:
    return _PLURAL_PAREN.sub("", " ".join(name.split()).upper().rstrip(":.- "))


_LOOKUP: dict[str, str] = {}
for _canon, _variants in CANONICAL.items():
    for _v in (_canon, *_variants):
        _LOOKUP[_norm(_v)] = _canon


class Section(TypedDict):
    """One section: canonical name and ``[start, end)`` character offsets into the text."""

    name: str
    start: int
    end: int


def canonical_name(heading: str) -> str:
    """The canonical upper-case name of a heading (unknown names are upper-cased as is)."""
    key = _norm(heading)
    if key in _LOOKUP:
        return _LOOKUP[key]
    if len(key) > 3 and key.endswith("S"):  # a plural of a known name: "PLANS", "FINDINGS"
        return _LOOKUP.get(key[:-1], key)
    return key


def _is_title(name: str) -> bool:
    return all(w[0].isupper() or w in TITLE_SMALL_WORDS for w in name.split())


def _line_heading(name: str, alone: bool) -> str | None:
    """The canonical name of a line-start heading candidate, or None when it is not one."""
    canon = canonical_name(name)
    if canon in CANONICAL:
        return canon if (name.isupper() or _is_title(name)) else None
    if name.isupper():
        return canon if (alone or sum(c.isalpha() for c in name) >= MIN_UNKNOWN_CAPS) else None
    return canon if (alone and _is_title(name)) else None


def split_sections(text: str) -> list[Section]:
    """The sections of ``text`` in order; see the module docstring for the rules."""
    if not text:
        return []
    heads: list[tuple[int, str]] = []
    for m in _HEADING.finditer(text):
        if (raw := m.group("mtsamples")) is not None:
            if not any(c.isalpha() for c in raw):
                continue
            heads.append((m.start("mtsamples"), canonical_name(raw)))
        elif (raw := m.group("markdown")) is not None:
            heads.append((m.start(), canonical_name(raw)))
        elif (name := _line_heading(m.group("line"), m.group("eol") is not None)) is not None:
            heads.append((m.start("line"), name))
    out: list[Section] = []
    first = heads[0][0] if heads else len(text)
    if first > 0 and text[:first].strip():
        out.append({"name": PREAMBLE, "start": 0, "end": first})
    for i, (start, name) in enumerate(heads):
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        out.append({"name": name, "start": start, "end": end})
    return out
