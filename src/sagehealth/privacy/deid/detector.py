"""PHI detection in clinical free text: patterns, context cues and name/place lexicons.

Three passes, all driven by ``rules.json`` and :mod:`lexicon`:

1. Patterns: dates (numeric, month names, years where context says so), phone and pager
   numbers, e-mail, URLs, IPs, SSNs, record and reference numbers, ages over 89, addresses.
2. Names: tokens next to a cue — a title before ("Dr.", "Mr", "NP"), a credential after
   ("RN", "RRT"), a relation before ("wife", "son:", "pt's daughter"), a verb before ("spoke
   with", "per") — are names when the lexicon does not call them plain words; without a cue a
   token must be a census name that is no dictionary word (and, in mixed-case text,
   capitalised). Found names extend to neighbouring name-like tokens ("mary anderson") and
   to names joined to them ("Suzette and Hank", in mixed-case text "Teresa, Mary, Isabel").
3. Places: words before a facility word ("Holy Cross Rehab", "Kessler Adventist"), tokens after
   a transfer cue ("transferred to Quartermain"), geographic names ("the Eastern Shore"), US
   city names.

Clinical text is often all capitals, abbreviated and telegraphic: casing is used as evidence only
in mixed-case notes. Overlapping findings are merged. Runs at thousands of notes per second.

4. The learned token model (:mod:`sagehealth.privacy.deid.model`, shipped as ``model.json.gz``)
   scores the words the rules left that are no plain dictionary word and adds the likely PHI;
   it may also drop a name or place finding it scores as very unlikely. ``Detector(model=False)``
   is the rules alone (docs/deid.md has the numbers of both).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from itertools import accumulate, compress
from operator import itemgetter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

from sagehealth.privacy.deid.lexicon import (
    ALWAYS_WORDS,
    NAME,
    NAME_WORD,
    UNKNOWN,
    WORD,
    Lexicon,
    lexicon,
)
from sagehealth.privacy.deid.scanner import Scanner
from sagehealth.privacy.deid.spans import Span

NAME_WITH_NUMBER = re.compile(r"([A-Z][a-z]+)(\d{1,3})\b")  # and a word boundary before (checked)
_WORD_CHAR = re.compile(r"\w")
#: what follows an eponym, not a person or a place: "Kocher clamps", "Bard Parker blade",
#: "Crowe-Davis mouth gag", "Parkinson's disease" (instruments, devices, signs, syndromes)
EPONYM_NEXT = re.compile(
    r"(?:-[A-Z][a-z]+)*(?:'s)?(?:\s+[A-Za-z]+)?\s+(?:clamps?|forceps|retractors?|needles?|blades?|"
    r"stand|gag|graspers?|catheters?|stents?|lens|drains?|scissors|elevators?|rongeurs?|curettes?|"
    r"dilators?|specul(?:um|a)|sutures?|maneuvers?|manoeuvres?|techniques?|syndrome|disease|"
    r"sign|test|criteria|classification|fracture|incision|approach|operation|reflex|tongs|"
    r"fundoplication|pouch|knife|knot|stitch|plate|screws?|nails?|wires?|tremor)\b", re.IGNORECASE)
#: name findings a strong cue made ("Dr. Kocher"): never taken for an eponym
CUED_NAME_RULES = frozenset({"title", "title+", "title_initial", "relation", "verb", "verb+",
                             "signature", "before_verb"})
#: "Ellen K Marchetti": a first name, a middle initial (period or not), a capitalised surname
FIRST_INITIAL_LAST = re.compile(r"\b([A-Z][a-z]+) [A-Z]\.? ([A-Z][a-z]+(?:-[A-Z][a-z]+)?)\b")
#: how far before a match a rule's ``prefix`` may start (characters)
PREFIX_CHARS = 64
#: texts longer than two windows are read window by window (characters)
WINDOW = 64 * 1024
MARGIN = 256
_UPPER_RUN = re.compile(r"[^\W\d_a-z]+")
_LOWER_RUN = re.compile(r"[a-z]+")
#: a word: letters, with apostrophes inside ("pt's")
TOKEN = re.compile(r"[^\W\d_]+(?:'+[^\W\d_]+)*")
TOKEN_SPLIT = re.compile(f"({TOKEN.pattern})")
#: the same for ASCII texts (a plain character class is faster than ``[^\W\d_]``)
TOKEN_SPLIT_ASCII = re.compile(r"([A-Za-z]+(?:'+[A-Za-z]+)*)")
#: the lexicon classes of this many distinct tokens are remembered (per detector)
KIND_CACHE = 200_000
#: what may separate two parts of one name ("mary anderson", "A. Forman-Lyons", "Smith-Jones")
NAME_GAP = re.compile(r"^(?:\s|\.\s?|-|\.)$|^\.?[ \t]{1,2}$")
#: what separates names in a list after one cue ("Drs Joseph, Smith and Jones")
COORDINATION = re.compile(r"^\s*(?:,|&|,?\s+and)\s*$", re.IGNORECASE)
#: what separates a relation from a name in apposition ("Son, Ed, ...")
APPOSITION = re.compile(r"^[ \t]*,[ \t]*$")
#: "Hank & Suzette"
AMPERSAND = re.compile(r"^[ \t]*&[ \t]*$")
#: credentials written with dots: "R.N.", "M.D.", "R.R.T."
DOTTED_CREDENTIAL = re.compile(r"(?:R\.N|R\.R\.T|M\.D|N\.P|P\.A|L\.P\.N|C\.R\.T|D\.O)\.?", re.IGNORECASE)
#: what may separate a strong cue from the name it introduces ("Dr. X", "Mr: X")
CUE_GAP = re.compile(r"^[ \t]*[.,:\-]?[ \t]*$")
#: what may separate a relation from a name ("son, Ed", "wife: Mary", "daughter - Krissy")
RELATION_GAP = re.compile(r"^[ \t]*[,:\-]{0,3}[ \t]*(?:is |was |named )?[ \t]*$")
#: modifiers before a facility word that do not name a place ("cardiac rehab", "the hospital")
#: where a person lives or works: the place follows "in"
RESIDENCE_WORDS = frozenset("""live lives living reside resides residing located moved job work works
working shelter housing home area vacation visiting born""".split())
RESIDENCE = re.compile(  # matched against the lower-cased text
    rf"\b(?:{'|'.join(sorted(RESIDENCE_WORDS, key=len, reverse=True))})\b[^.\n]{{0,40}}?\bin\s+")
#: a word followed by a one-digit number: a ward or unit ("Quartermain 2")
WARD_NUMBER = re.compile(r" \d\b(?![./-]\d|[/-])")
CITY_STATE = re.compile(
    r"\b([A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+)?),\s(AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|IA|ID|IL|IN|KS|"
    r"KY|LA|MA|MD|ME|MI|MN|MO|MS|MT|NC|ND|NE|NH|NJ|NM|NV|NY|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VA|VT|WA|"
    r"WI|WV|WY)\b")
CITY_STATE_GATE = re.compile(r",\s[A-Z]{2}\b")
#: words that end a geographic name ("the Eastern Shore", "Howard County", "Cape Cod Bay")
GEO_WORDS = frozenset("""shore county valley island beach bay harbor harbour springs heights hills
lake creek ridge mountains""".split())
#: a word before a geographic name in caseless text: "from the EASTERN SHORE", "in ocean county"
GEO_CUES = frozenset("from in on at to near of".split())
#: words before a geographic word that do not name a place ("left", "this", "sick bay")
GEO_STOP = frozenset("""left right upper lower this that one some which each every any no good
bad sick other same small large big""".split())
#: state codes that are also clinical abbreviations (MI, CO, PA, CT, ID, ...)
AMBIGUOUS_STATES = frozenset("MI CO PA CT ID IN OR MS ME DE LA OK NE VA MD AL MA NC SC HI ND SD NH NM".split())
#: a Title-case phrase after "at"/"from" or after "go/went/transferred ... to"
PLACE_AFTER_CUE = re.compile(
    r"\b(?:(?:go|goes|went|going|gone|transferr?(?:ed|ing)?|sent|taken|admitted|returned|moved|"
    r"discharged|back|headed|travell?ed)\s+(?:back\s+)?(?:in)?to|at|from)\s+((?:[A-Z][a-z']{2,}\s?){1,3})")
#: the words PLACE_AFTER_CUE may start with (it is tried only where one of them is a token)
PLACE_AFTER_CUE_HEADS = frozenset("""go goes went going gone transfer transferr transfered transferred
transfering transferring sent taken admitted returned moved discharged back headed traveled travelled
at from""".split())
#: Title-case words after "to/at/from" that are not places
PLACE_STOP = frozenset("""
floor unit team rehab home bed chair bedside room icu ccu micu sicu er ed or cath lab radiology ward wards
surgery dialysis hospital monday tuesday wednesday thursday friday saturday sunday today
tomorrow tonight yesterday morning evening night afternoon noon midnight present time times
baseline all none some most many more less much few several each every other another
january february march april may june july august september october november december
lasix heparin insulin propofol morphine fentanyl levophed neo dopamine dobutamine vent
extubation intubation transfer discharge admission pain comfort sleep bathroom toilet commode
cardiology neurology nephrology medicine oncology pulmonary renal cardiac ortho gi gu hr bp
be see keep help get make follow continue start stop check assess monitor hold give
""".split())
GENERIC_PLACE_WORDS = frozenset("""
cardiac pulmonary pulm physical inpatient outpatient acute subacute chronic the a an his her
their this that local nursing rehab rehabilitation other outside another same different
community general hospital hosp to from at for in of by with back home go going went sent
transfer transferred return returned discharge discharged d/c dc admit admitted long term
short care skilled private day and or state county city area university re poss possible
prev previous current leave left right needs need screening screen eval evaluation consult
consults for via per pending await awaiting waiting begin begins began beginning start starts
started starting continue continues continued cont regarding concerning about discuss discussed
plan plans planned planning toward towards into onto
""".split())


#: types whose one-word findings are looked for again in the rest of the note
PROPAGATED_TYPES = frozenset({"NAME", "HOSPITAL", "LOCATION"})


@dataclass(frozen=True)
class Pattern:
    """One regex rule: ``group`` selects the PHI; a match is dropped when the text before it
    matches ``not_before``, the text after it ``not_after``, or the PHI ``exclude_group``."""

    name: str
    type: str
    regex: re.Pattern[str]
    group: int = 0
    not_before: re.Pattern[str] | None = None
    not_after: re.Pattern[str] | None = None
    exclude_group: re.Pattern[str] | None = None
    validator: str | None = None
    needs_before: re.Pattern[str] | None = None
    #: matched against the lower-cased text (faster than IGNORECASE; same offsets)
    on_lower: bool = False
    #: a regex every match contains: the rule is skipped on texts without it (speed only)
    gate: str | None = None
    #: the lower-case words every match starts with: the rule is tried only there (speed only)
    heads: tuple[str, ...] | None = None
    #: drop matches whose PHI part is a frequent English word ("had to sit", "seen at all")
    not_frequent_word: bool = False
    #: a regex (ending in ``$``, case-sensitive) that the text just before the match must end
    #: with; the PHI span then starts where it starts ("S" of "S24-10233": the rule itself
    #: starts at a digit, which keeps it in the combined scanner)
    prefix: re.Pattern[str] | None = None
    #: in mixed-case notes, keep a match of 3+ letters only when it is in capitals ("BWH", not
    #: "drop"; two letters may be lower case: "gh")
    caps_when_mixed: bool = False
    #: the word after the first word of the PHI part must be no plain dictionary word
    #: ("St. Brigid", not "ST. HIGH": sinus tachycardia before a finding)
    name_after_head: bool = False


def luhn(value: str) -> bool:
    """The Luhn checksum of the digits of ``value`` (payment card numbers)."""
    digits = [int(c) for c in value if c.isdigit()]
    total = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    return len(digits) >= 13 and total % 10 == 0


def phone_digits(value: str) -> bool:
    """Grouped digits that make a phone number: 9 to 13 digits, not a date or a range."""
    return 9 <= sum(c.isdigit() for c in value) <= 13


def iban_digits(value: str) -> bool:
    """An account number in IBAN shape holds 10+ digits (every country's IBAN does), which
    ventilator shorthand of the same shape ("FI02 WEAN THIS SHIFT") does not."""
    return sum(c.isdigit() for c in value) >= 10


VALIDATORS = {"luhn": luhn, "phone_digits": phone_digits, "iban_digits": iban_digits}


@dataclass(frozen=True)
class Rules:
    """The compiled rules of ``rules.json`` (or of a file given by the user)."""

    patterns: list[Pattern]
    titles: frozenset[str]
    strong_titles: frozenset[str]
    honorifics: frozenset[str]
    credentials: frozenset[str]
    relations: frozenset[str]
    name_verbs: re.Pattern[str]
    clinical_words: frozenset[str]
    aware_verbs: re.Pattern[str]
    aware_words: frozenset[str]
    facility: re.Pattern[str]
    location_cues: re.Pattern[str]
    #: first words of the name verbs and location cues (tokens where such a cue may start)
    name_verb_heads: frozenset[str] = frozenset()
    location_cue_heads: frozenset[str] = frozenset()
    facility_heads: frozenset[str] = frozenset()
    #: titles, credentials, relations and aware-verbs: the tokens that may start a name finding
    cue_words: frozenset[str] = frozenset()
    #: all patterns in one combined scanner (built from ``patterns`` when not given)
    scanner: Scanner | None = None
    #: facility words that only ever end a name ("Sacred Heart Memorial"): the words before
    #: them belong to the name whatever their case
    facility_names_only: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.cue_words:
            object.__setattr__(self, "cue_words", frozenset(
                self.titles | self.credentials | self.relations | self.aware_words))
        if self.scanner is None:
            object.__setattr__(self, "scanner", Scanner(
                [(p.regex.pattern, p.regex.flags & ~re.UNICODE, p.on_lower) for p in self.patterns],
                [p.gate for p in self.patterns], [p.heads for p in self.patterns]))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rules:
        pats = []
        for p in data["patterns"]:
            flags = 0 if p.get("case_sensitive") else re.IGNORECASE

            def opt(key: str) -> re.Pattern[str] | None:
                if not p.get(key):
                    return None  # needs_before of a case-sensitive rule is case-sensitive too
                return re.compile(p[key], 0 if key == "needs_before" and p.get("case_sensitive") else re.IGNORECASE)

            on_lower = not p.get("case_sensitive")
            pats.append(Pattern(p["name"], p["type"], re.compile(p["regex"], 0 if on_lower else flags),
                                int(p.get("group", 0)), opt("not_before"), opt("not_after"),
                                opt("exclude_group"), p.get("validator"), opt("needs_before"),
                                on_lower, p.get("gate"), tuple(p["heads"]) if p.get("heads") else None,
                                bool(p.get("not_frequent_word")),
                                re.compile(p["prefix"]) if p.get("prefix") else None,
                                bool(p.get("caps_when_mixed")), bool(p.get("name_after_head"))))

        def alternation(words: list[str]) -> str:
            return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))

        return cls(
            patterns=pats,
            titles=frozenset(data["titles"]),
            strong_titles=frozenset(data.get("strong_titles", [])),
            honorifics=frozenset(data.get("honorifics", [])),
            clinical_words=frozenset(data.get("clinical_words", [])),
            aware_words=frozenset(w for w in data.get("aware_verbs", []) if " " not in w),
            aware_verbs=re.compile(rf"\s*(?:{alternation(data.get('aware_verbs', ['aware']))})\b", re.IGNORECASE),
            credentials=frozenset(data["credentials"]),
            relations=frozenset(data["relations"]),
            # matched against the lower-cased text (word lists are lower case): faster than IGNORECASE
            name_verbs=re.compile(rf"\b(?:{alternation(data['name_verbs'])})\s*[:,]?\s*"),
            # no leading \b (a literal start lets the regex engine skip fast): checked per match
            facility=re.compile(rf"(?:{alternation(data['facility_words'])})\b"),
            location_cues=re.compile(
                rf"\b(?:{alternation([c for c in data['location_cues'] if ' ' in c])})\s+"),
            name_verb_heads=_heads(data["name_verbs"]),
            location_cue_heads=_heads([c for c in data["location_cues"] if " " in c]),
            facility_heads=_heads(data["facility_words"]),
            facility_names_only=frozenset(data.get("facility_names_only", [])),
        )

    @classmethod
    def load(cls, path: str | None = None) -> Rules:
        """The bundled rules, or those of a JSON file."""
        if path:
            with open(path, encoding="utf-8") as fh:
                return cls.from_dict(json.load(fh))
        raw = resources.files("sagehealth.privacy.deid").joinpath("rules.json").read_text("utf-8")
        return cls.from_dict(json.loads(raw))


@lru_cache(maxsize=1)
def default_rules() -> Rules:
    return Rules.load()


class Detector:
    """Finds PHI spans in text (see the module docstring)."""

    def __init__(self, rules: Rules | None = None, lex: Lexicon | None = None,
                 model: Any = None) -> None:
        """``model``: the learned token model that complements the rules (see :mod:`model`):
        None for the shipped one (when the package has one), False for the rules alone, or a
        :class:`~sagehealth.privacy.deid.model.TokenModel`."""
        self.rules = rules or default_rules()
        self.lex = lex or lexicon(self.rules.clinical_words)
        self._kind_cache: dict[str, str] = {}
        self._scorer: Any = None
        if model is None or model is True:
            from sagehealth.privacy.deid.model import default_model

            model = default_model()
        if model:
            from sagehealth.privacy.deid.model import Featurizer, ModelScorer

            self._scorer = ModelScorer(model, Featurizer(self.lex, self.rules.clinical_words,
                                                         self.rules.cue_words))
        r = self.rules
        self._cue_heads = (r.name_verb_heads | r.location_cue_heads | r.facility_heads
                           | PLACE_AFTER_CUE_HEADS | RESIDENCE_WORDS)

    # -- public ---------------------------------------------------------------------------
    def detect(self, text: str) -> list[Span]:
        """PHI spans of ``text``, sorted and non-overlapping. Very long texts are read in
        windows of about 64 KiB cut at line ends, so memory stays bounded."""
        if len(text) <= WINDOW * 2:
            return self._detect(text)
        spans: list[Span] = []
        start = 0
        while start < len(text):
            end = min(len(text), start + WINDOW)
            if end < len(text):  # cut at a line end, else at a space
                cut = max(text.rfind("\n", start + WINDOW // 2, end), text.rfind(" ", start + WINDOW // 2, end))
                end = cut + 1 if cut > 0 else end
            # read a margin on both sides so that cues and names across the cut are seen whole
            lo, hi = max(0, start - MARGIN), min(len(text), end + MARGIN)
            for sp in self._detect(text[lo:hi]):
                if start <= sp.start + lo < end:
                    spans.append(Span(sp.start + lo, sp.end + lo, sp.type, sp.text, sp.rule))
            start = end
        return _merge(spans, text)

    def clear_caches(self) -> None:
        """Forget the token classes and misspellings remembered so far (as after start-up)."""
        self._kind_cache.clear()
        self.lex.clear_caches()
        if self._scorer is not None:
            self._scorer.clear_caches()

    @property
    def model(self) -> Any:
        """The token model in use (None: rules alone)."""
        return self._scorer.model if self._scorer is not None else None

    def rule_spans(self, text: str) -> list[Span]:
        """What the rules alone find in ``text`` (a text up to two windows long)."""
        return self._detect(text, use_model=False)

    def _name_after_head(self, phi: str) -> bool:
        """The second word of ``phi`` (lower case) is a name or unknown, no plain word."""
        ws = TOKEN.findall(phi)
        if len(ws) < 2 or len(ws[1]) == 1:  # "St A." (an initial)
            return True
        w = ws[1][:-2] if ws[1].endswith("'s") else ws[1]
        kind = self.lex.kind(w)
        return kind != WORD and not (kind == NAME_WORD and w in self.lex.frequent_words
                                     and w not in self.lex.top_first_names)

    def kinds_of(self, lw: list[str]) -> list[str]:
        """The lexicon classes of lower-cased tokens (remembered per token)."""
        return self._kinds(lw)

    def _detect(self, text: str, use_model: bool = True) -> list[Span]:
        if not text:
            return []
        found: list[Span] = []
        low = text.lower()
        if len(low) != len(text):  # a character whose lower case has another length: no shortcut
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        # [gap, token, gap, token, ..., gap]: offsets in C
        parts = (TOKEN_SPLIT_ASCII if text.isascii() else TOKEN_SPLIT).split(text)
        words = parts[1::2]
        offsets = list(accumulate(map(len, parts)))
        toks = list(zip(offsets[0::2], offsets[1::2], words))
        lw = lowered(toks)
        patterns = self.rules.patterns
        # casing is evidence only in mixed-case notes; all-caps and all-lower notes are caseless
        ups, lows = _case_counts(text, low, words) if words else (0, 0)
        upper = ups > 0.6 * (ups + lows) or ups < 0.03 * (ups + lows)
        order: list[int] = []
        for k, m in self.rules.scanner.scan(text, low, offsets[0::2], lw):  # type: ignore[union-attr]
            p = patterns[k]
            s, e = m.span(p.group)
            if e <= s:
                continue
            if p.needs_before and not p.needs_before.search(
                    (low if p.on_lower else text)[max(0, m.start() - 40):m.start()]):
                continue
            if p.not_before and p.not_before.search(text[max(0, m.start() - 16):m.start()]):
                continue
            if p.not_after and p.not_after.search(text[m.end():m.end() + 16]):
                continue
            if p.exclude_group and p.exclude_group.search(text[s:e]):
                continue
            if p.validator and not VALIDATORS[p.validator](text[s:e]):
                continue
            if p.not_frequent_word and low[s:e] in self.lex.frequent_words:
                continue
            if p.caps_when_mixed and not upper and e - s > 2 and not text[s:e].isupper():
                continue
            if p.name_after_head and not self._name_after_head(low[s:e]):
                continue
            if p.prefix is not None:
                pm = p.prefix.search(text, max(0, m.start() - PREFIX_CHARS), m.start())
                if pm is None:
                    continue
                s = min(s, pm.start())
            found.append(Span(s, e, p.type, text[s:e], p.name))
            order.append(k)
        if len(set(order)) > 1:  # rule order, as if each rule had run on its own
            found = [sp for _, sp in sorted(zip(order, found), key=lambda x: x[0])]
        if words:
            kinds = self._kinds(lw)
            # the tokens where a cue phrase of any list may start (one pass for all lists; the
            # facility words may end at an apostrophe: "hospital's" is looked up as "hospital")
            lw_cut = _before_apostrophe(lw) if "'" in text else lw
            hits = list(compress(range(len(lw)), map(self._cue_heads.__contains__, lw_cut)))
            found += self._names(text, low, toks, kinds, upper, lw, hits, ups < 0.03 * (ups + lows))
            # synthetic-data names with a number glued on ("Devin82", "Kunze215", Synthea style)
            for m in NAME_WITH_NUMBER.finditer(text):
                if m.start() and _WORD_CHAR.match(text, m.start() - 1):
                    continue
                w = m.group(1).lower()
                if w in self.rules.clinical_words:
                    continue
                if self.lex.kind(w) in (NAME, NAME_WORD) or (
                        len(m.group(2)) >= 2 and (w in self.lex.first_names or w in self.lex.surnames)):
                    found.append(Span(m.start(), m.end(), "NAME", m.group(), "name_number"))
            if not upper:  # mixed-case text: "First M Last" is a name when both words may be
                for m in FIRST_INITIAL_LAST.finditer(text):
                    first, last = m.group(1).lower(), m.group(2).lower()
                    if (first in self.lex.first_names and self.lex.kind(first) != WORD
                            and first not in self.rules.clinical_words
                            and self.lex.kind(last.split("-")[0]) != WORD):
                        found.append(Span(m.start(), m.end(), "NAME", m.group(), "first_initial_last"))
            found += self._places(text, low, toks, kinds, upper, lw, hits, lw_cut)
            found += self._propagate(found, text, toks, kinds, upper, lw)
            if use_model and self._scorer is not None:
                found = self._scorer.candidates(text, toks, lw, kinds, not upper, found, offsets[0::2])
        found = [sp for sp in found if not (
            sp.type in ("NAME", "LOCATION", "HOSPITAL") and sp.rule not in CUED_NAME_RULES
            and EPONYM_NEXT.match(text, sp.end))]
        return _merge(found, text)

    def _propagate(self, found: list[Span], text: str, toks: list[tuple[int, int, str]],
                   kinds: list[str], upper: bool, lw: list[str]) -> list[Span]:
        """Other mentions in the same note of a one-word name or place found with a cue
        ("transferred to GH" ... "TEAM AT GH"): the same string, when the lexicon does not call
        it a plain word; in mixed-case notes with the same casing. (A note longer than two
        windows is read window by window: mentions are found again within a window.)"""
        seen: dict[str, str] = {}
        for sp in found:
            if sp.type in PROPAGATED_TYPES and len(sp.text) >= 2 and sp.text.isalpha():
                w = sp.text.lower()
                if w not in self.rules.clinical_words and w not in PLACE_STOP and w not in ALWAYS_WORDS \
                        and w not in self.rules.cue_words:
                    seen[w] = sp.type
        if not seen:
            return []
        # this note's classes (the shared cache may be cleared meanwhile): plain words never spread
        kind_of = {w: k for w, k in zip(lw, kinds) if w in seen}
        seen = {w: t for w, t in seen.items() if kind_of.get(w, WORD) in (NAME, UNKNOWN)}
        if not seen:
            return []
        exact = {sp.text for sp in found if sp.text.lower() in seen}
        covered = {sp.start for sp in found}
        out = []
        for i in compress(range(len(lw)), map(seen.__contains__, lw)):
            s, e, t = toks[i]
            if s in covered or (not upper and t not in exact):
                continue
            out.append(Span(s, e, seen[lw[i]], t, "same_note"))
        return out

    def _kinds(self, lw: list[str]) -> list[str]:
        """The lexicon class of each (lower-cased) token, remembered per distinct token: the
        unknown ones are found with one set difference, the rest are dict look-ups in C."""
        cache = self._kind_cache
        missing = set(lw).difference(cache)
        if missing:
            if len(cache) + len(missing) > KIND_CACHE:
                cache.clear()
                missing = set(lw)
            cache.update(self.lex.kinds(missing))
        return list(map(cache.__getitem__, lw))

    # -- names ----------------------------------------------------------------------------
    def _names(self, text: str, low: str, toks: list[tuple[int, int, str]], kinds: list[str],
               upper: bool, lw: list[str], hits: list[int] | None = None,
               lower_note: bool = False) -> list[Span]:
        r, lex = self.rules, self.lex
        n = len(toks)
        flagged: dict[int, str] = {}

        def gap(i: int, j: int) -> str:
            return text[toks[i][1]:toks[j][0]]

        def is_cue_word(t: str) -> bool:
            low = t.lower()
            return low in r.titles or low in r.credentials or low in r.relations

        def name_like(i: int, strength: int) -> bool:
            """Could token i be (part of) a name? ``strength``: 2 strong cue (Dr., Mr., a
            signature), 1 weak cue (a relation, Ms, a verb), 0 no cue."""
            k, t = kinds[i], toks[i][2]
            if k == WORD and strength == 2 and t.lower() in lex.common_names \
                    and t.lower() not in ALWAYS_WORDS and len(t) > 2:
                return True  # "Dr. Foley", "dr small": a surname that is also a word
            if k == WORD or is_cue_word(t) or _glued_to_digit(text, toks[i]) or ("'" in t and len(t) <= 4):
                return False
            if len(t) == 1:  # an initial: "A." (or "L RUUSKA" right after a title)
                return strength > 0 and text[toks[i][1]:toks[i][1] + 1] == "."
            # in mixed-case text, or a Title-case word in an all-lower-case note ("Rita Hickey")
            titled = t[0].isupper() and (not upper or (lower_note and not t.isupper() and strength > 0))
            if k == NAME_WORD:
                return strength == 2 or (strength == 1 and (t.lower() in lex.first_names or titled))
            if k == UNKNOWN:
                if strength < 2 and not titled and lex.misspelling(t.lower()):
                    return False  # "secreations", "CUNFUSED": a misspelt word, not a name
                return strength > 0 or (titled and len(t) > 3 and not _sentence_start(text, toks[i][0]))
            return True  # NAME

        def rare_titled(j: int) -> bool:
            """In mixed-case text, a capitalised word of 4+ letters that is no frequent, clinical
            or function word: a name right after a relation even when a dictionary lists it
            ("his daughter Brunhilde")."""
            t, w = toks[j][2], lw[j]
            return (not upper and len(t) > 3 and t[0].isupper() and not t.isupper()
                    and w not in lex.frequent_words and w not in r.clinical_words and w not in ALWAYS_WORDS
                    and not is_cue_word(t) and not _glued_to_digit(text, toks[j]))

        def titled_rare(j: int) -> bool:
            """In mixed-case text, a capitalised word that is no clinical word: a surname
            between a first name and a credential even when a word list knows it ("Jaroslava
            Mbeki, RN", "Ignatius Wrexham, PA-C")."""
            t, w = toks[j][2], lw[j]
            return (not upper and len(t) > 2 and t[0].isupper() and not t.isupper()
                    and not _sentence_start(text, toks[j][0]) and w not in r.clinical_words
                    and w not in ALWAYS_WORDS and not is_cue_word(t) and not _glued_to_digit(text, toks[j]))

        def initial_at(j: int) -> bool:
            """Token j is an initial: one letter, then a dot, not inside "p.o." or "a.m."."""
            s, e, t = toks[j]
            return len(t) == 1 and text[e:e + 1] == "." and (s == 0 or text[s - 1] in " \t\n(")

        def initial_surname(j: int) -> bool:
            """After an initial: a name or an unknown word (no dictionary word: "E. coli"), in
            mixed-case text capitalised like the initial."""
            t = toks[j][2]
            if kinds[j] not in (NAME, UNKNOWN) or len(t) < 2 or _glued_to_digit(text, toks[j]):
                return False
            if not upper and not (t[0].isupper() and toks[j - 1][2].isupper()):
                return False
            return kinds[j] == NAME or not lex.misspelling(t.lower())

        def appositive(j: int) -> bool:
            """A name between commas right after a relation ("Son, Ed, was updated"): a
            name-like token, or in mixed-case text a Title-case census name."""
            t, w = toks[j][2], lw[j]
            if len(t) < 2 or is_cue_word(t) or w in r.clinical_words or _glued_to_digit(text, toks[j]):
                return False
            if name_like(j, 1):
                return upper or t[0].isupper()
            return not upper and t[0].isupper() and not t.isupper() and w in lex.common_names

        def take_after(i: int, rule: str, strength: int, limit: int = 3,
                       gap_rx: re.Pattern[str] | None = None) -> None:
            """Name tokens after cue token i; lists go on after "and", "&" or a comma
            ("Drs Joseph and Robbinson", "Sons Smokey, Morris and Roger")."""
            j, taken = i + 1, 0
            first = True
            after_initial = False
            while j < n and taken < limit:
                g = gap(j - 1, j)
                if first:
                    if not (gap_rx or (CUE_GAP if strength == 2 else RELATION_GAP)).match(g):
                        break
                elif toks[j][2].lower() in ("and", "&") and j + 1 < n and NAME_GAP.match(g):
                    j += 1
                    taken = 0
                    continue
                elif not (NAME_GAP.match(g) or (taken and COORDINATION.match(g))):
                    break
                if COORDINATION.match(g) and not first:
                    taken = 0
                if strength == 2 and initial_at(j) and (first or after_initial):
                    after_initial = True  # "Dr. L. Ruuska": the surname keeps the title's strength
                elif strength == 2 and first and len(toks[j][2]) == 1 and toks[j][2].isalpha() \
                        and j + 1 < n and gap(j, j + 1) == " " and name_like(j + 1, 2):
                    after_initial = True  # "Dr. o rourke", "Dr. L Ruuska": a letter without a dot
                elif not (name_like(j, strength if first or after_initial else min(strength, 1))
                          or (first and rule == "relation" and rare_titled(j))):
                    break
                else:
                    after_initial = False
                flagged.setdefault(j, rule)
                taken += 1
                first = False
                j += 1

        after_verb = {m.end() for m in _word_matches(r.name_verbs, r.name_verb_heads, low, toks, lw, hits)}
        idx = range(n)
        # only tokens that can start a finding are visited: cue words, initials, census names,
        # tokens right after a verb cue and (in mixed-case text) capitalised tokens
        cand = set(compress(idx, map(r.cue_words.__contains__, lw)))
        cand.update(compress(idx, map(NAME.__eq__, kinds)))
        if "." in text:  # initials and dotted credentials ("R.N.")
            cand.update(compress(idx, map((1).__eq__, map(len, lw))))
        if after_verb:
            starts = [tk[0] for tk in toks]
            for pos in after_verb:
                k = bisect_left(starts, pos)
                if k < n and starts[k] == pos:
                    cand.add(k)
        if not upper:
            cand.update(compress(idx, map(str.isupper, map(itemgetter(0), map(itemgetter(2), toks)))))
        for i in sorted(cand):
            s, e, t = toks[i]
            low = lw[i]
            if low in r.titles:
                follow = text[e:e + 2]
                if low in ("ms", "miss") and (":" in follow or "/" in follow):
                    pass  # "MS:" is mental status
                elif low in r.honorifics:
                    if s == 0 or text[s - 1] not in "+-/0123456789":  # not "3-4+MR." (mitral)
                        take_after(i, "title", 2)
                elif not follow.startswith("."):  # role words: "NP Djuric", not "fellow. VVI"
                    take_after(i, "title", 1)
                elif low == "ms" and follow == ". " and (upper or t == "Ms"):
                    # "Ms. Jones"; in caseless text weak ("MS. PT RESTING": morphine sulfate)
                    take_after(i, "title", 1 if upper else 2, gap_rx=CUE_GAP)
            dotted = DOTTED_CREDENTIAL.match(text, s) if len(t) == 1 else None
            if i > 0 and (low in r.credentials or dotted) and _line_end(text, dotted.end() if dotted else e):
                self._signature(text, toks, i, flagged)
            if low in r.relations:
                take_after(i, "relation", 1, limit=2)
                if i + 2 < n and i + 1 not in flagged and APPOSITION.match(gap(i, i + 1)) \
                        and gap(i + 1, i + 2).lstrip(" ")[:1] in (",", "(") and appositive(i + 1):
                    flagged[i + 1] = "relation"  # "Son, Ed, was updated"
                if i > 0 and text[s - 1:s] == "(":  # "Hank Przybylo (son)"
                    j = i - 1
                    while j >= 0 and i - j <= 3 and name_like(j, 1):
                        flagged.setdefault(j, "relation")
                        j -= 1
            if s in after_verb:
                # in mixed-case text, a lower-case word after a verb cue that is also a name
                # ("grace", "max") or a rare dictionary word ("brunhilde": no name list knows
                # it) is a name only with a surname-like word after it: "spoke with brunhilde
                # wexcombe", "d/w hazel przybylo", not "spoke with grace period", "d/w max dose"
                # (in caseless text this cost 2 false positives on PhysioNet fold B: left out)
                if not upper and t.islower() and (kinds[i] == NAME_WORD or (
                        kinds[i] == WORD and low not in lex.frequent_words)):  # not "met with mild ..."
                    if i + 1 < n and gap(i, i + 1) == " " and toks[i + 1][2].islower() \
                            and t.isalpha() and len(t) > 2 and low not in ALWAYS_WORDS and low not in lex.clinical \
                            and kinds[i + 1] in (NAME, UNKNOWN) and not lex.misspelling(lw[i + 1]):
                        flagged.setdefault(i, "verb")
                        flagged.setdefault(i + 1, "verb")
                elif name_like(i, 1):
                    flagged.setdefault(i, "verb")
            if (low in r.credentials or low in r.aware_words) and i > 0 and low not in ("pt", "do", "ot", "sn"):
                # "WARREN KAVALIUNAS NP", "BEA TURA AWARE", "bob visited": names right before
                j = i - 1
                while j >= 0 and i - j <= 2 and (name_like(j, 1) or (
                        low in r.credentials and t.isupper() and titled_rare(j) and j > 0
                        and gap(j - 1, j) == " " and name_like(j - 1, 1)
                        and toks[j - 1][2][0].isupper())) and (
                        gap(j, j + 1) == " " or (j == i - 1 and low in r.credentials
                                                 and gap(j, j + 1) in (", ", ","))):  # "Mbeki, RN"
                    flagged.setdefault(j, "before_verb")
                    j -= 1
            if len(t) == 1 and i + 1 < n and initial_at(i) and text[e:e + 2] == ". " \
                    and toks[i + 1][0] == e + 2 and initial_surname(i + 1):
                flagged.setdefault(i, "initial")  # "J. Yi", "S. DOMINICO", "d. renna"
                flagged.setdefault(i + 1, "initial")
            if i not in flagged and kinds[i] == NAME and len(t) > 2 and (upper or t[0].isupper()) \
                    and not _glued_to_digit(text, toks[i]) and lex.probable_name(t):
                flagged[i] = "lexicon"
            if (not upper and i + 1 < n and i not in flagged and t[0].isupper() and len(t) > 2
                    and toks[i + 1][2][0].isupper() and len(toks[i + 1][2]) > 2
                    and gap(i, i + 1) == " " and not (toks[i][2].isupper() or toks[i + 1][2].isupper())
                    and ((kinds[i] in (NAME, UNKNOWN) and kinds[i + 1] in (NAME, UNKNOWN))
                         or (t.lower() in lex.first_names and t.lower() in lex.common_names
                             and (kinds[i + 1] == UNKNOWN or (kinds[i + 1] in (NAME, NAME_WORD)
                                                              and toks[i + 1][2].lower() in lex.surnames))))):
                flagged[i] = flagged[i + 1] = "pair"  # "Lopie Certusi"
        # extend found names to neighbouring name-like tokens ("Vladimir Erickson")
        for i in sorted(flagged):
            for step in (1, -1):
                j = i + step
                while 0 <= j < n and j not in flagged:
                    a, b = (j - 1, j) if step == 1 else (j, j + 1)
                    tj = toks[j][2]
                    initial = len(tj) == 1 and text[toks[j][1]:toks[j][1] + 1] == "." and tj.isalpha()
                    if not NAME_GAP.match(gap(a, b)) or not (initial or (len(tj) > 1 and name_like(j, 1))):
                        break
                    if not upper and not tj[0].isupper() and not (
                            step == 1 and toks[i][2].islower() and kinds[j] in (NAME, UNKNOWN)
                            and len(tj) > 2 and not lex.misspelling(lw[j])):
                        break  # a lower-case name goes on only with a lower-case name-word
                    if step == -1 and kinds[j] == NAME_WORD and lw[j] in lex.frequent_words \
                            and lw[j] not in lex.first_names and _sentence_start(text, toks[j][0]):
                        break  # "Both Suzanne and ...": a frequent word starting the sentence
                    flagged[j] = flagged[i] + "+"
                    j += step
        # a name joined to a found one: "Both Suzette and Hank", "Hank & Suzette", and in
        # mixed-case text first names in a comma list ("Gaetane, Hannah, Anthony")
        todo = sorted(flagged, reverse=True)
        while todo:
            i = todo.pop()
            for step in (1, -1):
                a, b = (i, i + 1) if step == 1 else (i - 1, i)  # the gap is between a and b
                j = i + step
                if not 0 <= j < n:
                    continue
                g = gap(a, b)
                if step == -1 and lw[j] in r.titles and j >= 2 and lw[j - 1] == "and" \
                        and gap(j - 2, j - 1) == " " == gap(j - 1, j) and g == " ":
                    # "BEA TURA AND DRS JOSEPH": up to two name-like words before "and <title>"
                    k = j - 2
                    while k >= 0 and j - 2 - k < 2 and k not in flagged and len(toks[k][2]) > 1 \
                            and name_like(k, 1) and (upper or toks[k][2][0].isupper()):
                        flagged[k] = "coordination"
                        if k == 0 or not NAME_GAP.match(gap(k - 1, k)):
                            break
                        k -= 1
                    continue
                if lw[j] == "and" and g == " " and 0 <= j + step < n:
                    g2 = gap(j, j + step) if step == 1 else gap(j + step, j)
                    j = j + step if g2 == " " else -1
                elif not AMPERSAND.match(g):
                    if upper or g != ", " or lw[j] not in lex.first_names:
                        continue
                if j < 0 or j in flagged or len(toks[j][2]) < 2:
                    continue
                if name_like(j, 1) and (upper or toks[j][2][0].isupper()):
                    flagged[j] = "coordination"
                    todo.append(j)
        return [Span(toks[i][0], toks[i][1], "NAME", toks[i][2], rule) for i, rule in flagged.items()]

    def _signature(self, text: str, toks: list[tuple[int, int, str]], i: int,
                   flagged: dict[int, str]) -> None:
        """A credential ending a line closes a signature: "Ilene Macdonald RN",
        "q. lander rrt", "DAN A. FORMAN-LYONS, RRT". The up to four words before it are the
        name when they start a line, a sentence or a block after a run of spaces."""
        run: list[int] = []
        j = i - 1
        while j >= 0 and len(run) < 4:
            t = toks[j][2]
            g = text[toks[j][1]:toks[j + 1][0]]
            if not (NAME_GAP.match(g) or (j == i - 1 and re.match(r"^,? ?$", g))):
                break
            initial = len(t) == 1 and text[toks[j][1]:toks[j][1] + 1] == "."
            if (t.lower() in ALWAYS_WORDS and not initial) or _glued_to_digit(text, toks[j]):
                return
            run.append(j)
            prev_end = toks[j - 1][1] if j > 0 else 0
            between = text[prev_end:toks[j][0]]
            if toks[j][0] == 0 or "\n" in between or "   " in between or (
                    re.search(r"[.:;!?]\s+$", between) and not (j > 0 and len(toks[j - 1][2]) == 1)):
                for k in run:
                    flagged.setdefault(k, "signature")
                return
            j -= 1

    # -- places ---------------------------------------------------------------------------
    def _places(self, text: str, low: str, toks: list[tuple[int, int, str]], kinds: list[str],
                upper: bool, lw: list[str], hits: list[int] | None = None,
                lw_cut: list[str] | None = None) -> list[Span]:
        if lw_cut is None:  # facility words may end at an apostrophe ("Mercy Hospital's")
            lw_cut = _before_apostrophe(lw) if "'" in text else lw
        out: list[Span] = []
        n = len(toks)
        tok_starts = [tk[0] for tk in toks]
        tok_ends = [tk[1] for tk in toks]

        def starting_at(pos: int) -> int | None:
            k = bisect_left(tok_starts, pos)
            return k if k < n and tok_starts[k] == pos else None

        def ending_at(pos: int) -> int | None:
            k = bisect_left(tok_ends, pos)
            return k if k < n and tok_ends[k] == pos else None

        # facility names: "Holy Cross Rehab", "Kessler Adventist", "UNION HOSP"
        facility = self.rules.facility
        for m in (_word_matches(facility, self.rules.facility_heads, low, toks, lw_cut, hits)
                  if self.rules.facility_heads else facility.finditer(low)):
            if m.start() and _WORD_CHAR.match(low, m.start() - 1):
                continue  # inside a word ("prehab")
            j = _token_ending_before(text, m.start(), ending_at)
            first = None
            names_only = m.group().lower() in self.rules.facility_names_only
            while j is not None and j >= 0:
                t = toks[j][2]
                if t.lower() in GENERIC_PLACE_WORDS or (
                        t.lower() in self.rules.titles  # "MD Hospital": an acronym, no title
                        and (upper or first is not None or not t.isupper())):
                    break
                if not upper and not t[0].isupper() and not (
                        names_only and t.lower() not in ALWAYS_WORDS and m.start() - toks[j][0] < 25):
                    break
                if upper and kinds[j] == WORD and t.lower() not in self.lex.cities:
                    # all-caps text: a dictionary word names a place only right before the word
                    if first is not None or m.group().lower() not in ("hospital", "hosp", "rehab", "adventist", "medical center", "manor", "nursing home"):
                        break
                first = j
                if m.start() - toks[j][0] > 40 or (j > 0 and not re.match(r"^[ \t]+$", text[toks[j - 1][1]:toks[j][0]])):
                    break
                j -= 1
            if first is not None:
                out.append(Span(toks[first][0], m.end(), "HOSPITAL", text[toks[first][0]:m.end()], "facility"))
        # places after a movement cue: "transferred to Quartermain", "admitted from Kessler"
        after_cue = sorted({i for i in map(starting_at, (m.end() for m in _word_matches(
            self.rules.location_cues, self.rules.location_cue_heads, low, toks, lw, hits)))
                            if i is not None})
        for i in after_cue:
            s, e, t = toks[i]
            if t.lower() in PLACE_STOP:
                continue
            if kinds[i] == WORD and t.lower() not in self.lex.cities:
                continue
            if (not upper and not t[0].isupper()) or len(t) < 3:
                continue
            while e < len(text) and text[e].isdigit() and e - toks[i][1] < 2:
                e += 1  # a ward with its number glued on: "QUARTERMAIN7"
            out.append(Span(s, e, "LOCATION", text[s:e], "cue"))
        # wards and units named after something: "Quartermain 2", "QUARTERMAIN7"
        for i in sorted({i for i in map(ending_at, (m.start() for m in WARD_NUMBER.finditer(text))) if i is not None}):
            s, e, t = toks[i]
            if kinds[i] in (UNKNOWN, NAME) and len(t) > 3 and "'" not in t \
                    and (upper or t[0].isupper() or re.search(r"\b(?:to|from)\s+$", text[max(0, s - 6):s])) \
                    and not self.lex.misspelling(t.lower()) \
                    and (kinds[i] == UNKNOWN or re.search(r"\b(?:to|on|from|at|in|into|per)\s+$", text[max(0, s - 8):s], re.I)):
                out.append(Span(s, e, "LOCATION", t, "ward"))
        # Title-case names after a place cue in mixed-case text: "to Harbor", "at Holy Cross"
        if not upper:
            for m in _word_matches(PLACE_AFTER_CUE, PLACE_AFTER_CUE_HEADS, text, toks, lw, hits):
                s, e = m.span(1)
                words = m.group(1).split()
                if all(w.lower() not in PLACE_STOP and w.lower() not in ALWAYS_WORDS for w in words):
                    e = s + len(m.group(1).rstrip())
                    out.append(Span(s, e, "LOCATION", text[s:e], "place_cue"))
        # where someone lives: "lives nearby in rockport", "in elderly housing ... in Lansdowne"
        for m in _word_matches(RESIDENCE, RESIDENCE_WORDS, low, toks, lw, hits):
            j = starting_at(m.end())
            k = 0
            while j is not None and j < len(toks) and k < 2:
                t = toks[j][2]
                if t == "DC":  # "lives in DC": a city (states are no PHI, cities are)
                    out.append(Span(toks[j][0], toks[j][1], "LOCATION", t, "residence"))
                    break
                if t.lower() in PLACE_STOP or (not upper and not t[0].isupper()):
                    break
                # a dictionary word names a place here when it is no frequent English word
                # ("in rockport") or, in mixed-case text, continues a capitalised name ("Bel Air")
                if kinds[j] == WORD and not ((t.lower() not in self.lex.frequent_words and len(t) > 3
                                              and t.lower() not in self.rules.clinical_words
                                              and t.lower() not in ALWAYS_WORDS)
                                             or (k and not upper and t[0].isupper())):
                    break
                out.append(Span(toks[j][0], toks[j][1], "LOCATION", t, "residence"))
                k += 1
                j += 1
                if j < len(toks) and text[toks[j - 1][1]:toks[j][0]] != " ":
                    break
        # geographic names: "the Eastern Shore", "FROM THE EASTERN SHORE", "Howard County"
        clinical = self.rules.clinical_words
        for i in compress(range(n), map(GEO_WORDS.__contains__, lw)):
            j = i - 1
            if j < 0 or text[toks[j][1]:toks[i][0]] != " ":
                continue
            w, t = lw[j], toks[j][2]
            if len(w) < 3 or w in ALWAYS_WORDS or w in PLACE_STOP or w in GENERIC_PLACE_WORDS \
                    or w in GEO_STOP or w in clinical or _glued_to_digit(text, toks[j]):
                continue
            if upper:  # caseless: a place cue before ("from the eastern shore")
                k = j - 1 if j > 0 and lw[j - 1] != "the" else j - 2
                if k < 0 or lw[k] not in GEO_CUES:
                    continue
            elif not (t[0].isupper() and toks[i][2][0].isupper()):
                continue
            out.append(Span(toks[j][0], toks[i][1], "LOCATION", text[toks[j][0]:toks[i][1]], "geo"))
        # "Annapolis, MD": a known city, or a Title-case word, before a state code
        for m in (CITY_STATE.finditer(text) if CITY_STATE_GATE.search(text) else ()):
            city, start = m.group(1), m.start(1)
            if " " in city and city.lower() not in self.lex.cities:  # "FROM ANNAPOLIS, MD"
                cut = city.index(" ") + 1
                if city[cut:].lower() in self.lex.cities:
                    city, start = city[cut:], start + cut
            if city.lower() in self.lex.cities or (city[0].isupper() and not city.isupper()
                                                   and m.group(2) not in AMBIGUOUS_STATES):
                out.append(Span(start, start + len(city), "LOCATION", city, "city_state"))
        # US cities (one to three words)
        city_heads = self.lex.city_heads
        for i in compress(range(n), map(city_heads.__contains__, lw)):
            for width in (3, 2, 1):
                if i + width > len(toks):
                    continue
                s, e = toks[i][0], toks[i + width - 1][1]
                phrase = text[s:e]
                if "\n" in phrase or phrase.lower() not in self.lex.cities:
                    continue
                t = toks[i][2]
                cue = _after_place_cue(text, s)
                if width > 1:
                    ok = upper or t[0].isupper()
                elif kinds[i] in (WORD, NAME_WORD):
                    ok = _after_residence_cue(text, s) and (upper or t[0].isupper())
                else:
                    ok = upper or t[0].isupper() or cue
                if ok:
                    out.append(Span(s, e, "LOCATION", phrase, "city"))
                break
        return out


def _case_counts(text: str, low: str, words: list[str]) -> tuple[int, int]:
    """(letters other than a-z, letters a-z) of ``text``. ASCII text: upper and lower case
    differ in one bit, so the upper-case letters are the set bits of text XOR lower(text)."""
    if text.isascii():
        ups = (int.from_bytes(text.encode(), "big") ^ int.from_bytes(low.encode(), "big")).bit_count()
        joined = "".join(words)
        letters = len(joined) - joined.count("'")
        return ups, letters - ups
    return sum(map(len, _UPPER_RUN.findall(text))), sum(map(len, _LOWER_RUN.findall(text)))


def _heads(phrases: list[str]) -> frozenset[str]:
    """The first tokens of cue phrases ("spoke with" -> "spoke", "d/w" -> "d")."""
    out = set()
    for p in phrases:
        m = TOKEN.match(p.lower())
        if not m:
            raise ValueError(f"a cue phrase must start with a letter: {p!r}")
        out.add(m.group())
    return frozenset(out)


def _word_matches(rx: re.Pattern[str], heads: frozenset[str], low: str,
                  toks: list[tuple[int, int, str]], lw: list[str],
                  hits: list[int] | None = None) -> list[re.Match[str]]:
    """The matches of ``rx`` (a \\b-led alternation of phrases) as ``finditer`` finds them,
    tried only where a token is the first word of a phrase: set look-ups instead of a scan.
    ``hits``: the tokens that start a phrase of some list that includes ``heads``, found once
    per text for all lists (else ``lw`` is searched)."""
    out: list[re.Match[str]] = []
    last = 0
    for i in (compress(range(len(lw)), map(heads.__contains__, lw)) if hits is None else hits):
        s = toks[i][0]
        if s < last or lw[i] not in heads:
            continue
        m = rx.match(low, s)
        if m is not None:
            out.append(m)
            last = max(m.end(), s + 1)
    return out


def _before_apostrophe(lw: list[str]) -> list[str]:
    """The tokens cut at their first apostrophe ("hospital's" -> "hospital"): a phrase that
    ends at an apostrophe starts such a token."""
    return [w.split("'", 1)[0] if "'" in w else w for w in lw]


def lowered(toks: list[tuple[int, int, str]]) -> list[str]:
    """The lower-cased tokens (one join, one lower, one split: tokens hold no spaces)."""
    return " ".join([t for _, _, t in toks]).lower().split(" ")


def _line_end(text: str, pos: int) -> bool:
    """True when only spaces/punctuation stand between ``pos`` and the end of the line."""
    m = re.match(r"[ \t.,;]*(\n|$| {2,})", text[pos:pos + 40])
    return bool(m)


def _last_wide_gap(text: str, pos: int) -> int:
    """Index of the last character of the last run of 3+ spaces before ``pos`` (or -1)."""
    k = text.rfind("   ", 0, pos)
    return k + 2 if k >= 0 else -1


def _glued_to_digit(text: str, tok: tuple[int, int, str]) -> bool:
    """"SaO2", "x3": a token touching a digit is an abbreviation, not a name."""
    s, e, _ = tok
    return (e < len(text) and text[e].isdigit()) or (s > 0 and text[s - 1].isdigit())


def _sentence_start(text: str, pos: int) -> bool:
    k = pos - 1
    while k >= 0 and text[k] in " \t":
        k -= 1
    return k < 0 or text[k] in ".!?:;\n-*"


def _token_ending_before(text: str, pos: int, ending_at: Callable[[int], int | None]) -> int | None:
    k = pos
    while k > 0 and text[k - 1] in " \t":
        k -= 1
    return ending_at(k)


def _after_residence_cue(text: str, pos: int) -> bool:
    return bool(re.search(r"\b(?:in|near|lives|resides)\s+$", text[max(0, pos - 10):pos], re.I))


def _after_place_cue(text: str, pos: int) -> bool:
    return bool(re.search(r"\b(?:in|from|to|of|at|near|lives|resides)\s+$", text[max(0, pos - 12):pos], re.I))


def _merge(spans: list[Span], text: str) -> list[Span]:
    """Sorted, non-overlapping spans: overlapping or touching findings become one span whose
    type is that of the longest part."""
    if not spans:
        return []
    spans.sort(key=lambda s: (s.start, -s.end))
    out: list[Span] = []
    cur = spans[0]
    for sp in spans[1:]:
        if sp.start < cur.end:
            if sp.end > cur.end:
                longer = sp if sp.end - sp.start > cur.end - cur.start else cur
                cur = Span(cur.start, sp.end, longer.type, text[cur.start:sp.end], longer.rule)
        else:
            out.append(cur)
            cur = sp
    out.append(cur)
    return out


@lru_cache(maxsize=1)
def default_detector() -> Detector:
    return Detector()


def detect(text: str) -> list[Span]:
    """PHI spans of ``text`` with the bundled rules and lexicons."""
    return default_detector().detect(text)
