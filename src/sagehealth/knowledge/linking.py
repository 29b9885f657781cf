"""Concept linking in clinical text: fast dictionary matching over concept labels and synonyms,
with ConText-style assertion (negated, historical, family, hypothetical) from rules kept as data
(``context_rules.json``).

The dictionary is an Aho-Corasick automaton (``pyahocorasick``) over normalised names (lower
case, runs of non-alphanumerics as one space) of the loaded concepts of the chosen systems;
matches must start and end on word boundaries, and overlapping matches keep the longest. Names of
at most four characters match only as written in capitals (``MI``, ``CHF``) so that short
synonyms do not fire on ordinary words. A trigger phrase marks the concepts in its scope: from
the trigger to the end of its sentence, at most ``max_words`` words, cut at a terminator
("but", "however", ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from sagehealth.data.sqltext import in_list

#: systems linked by default (phenotypes and diseases read well in notes; ICD-10-CM titles do not)
DEFAULT_SYSTEMS = ("HP", "DOID")
CATEGORIES = ("negated", "historical", "family", "hypothetical")
_NONWORD = re.compile(r"[^0-9a-z]+")
_SENTENCE_END = re.compile(r"[.!?;\n](?:\s|$)|\n")
#: names too generic to link on their own (they are labels of top-level terms)
STOP_NAMES = frozenset({"all", "disease", "abnormality", "phenotypic abnormality", "finding", "clinical",
                        "syndrome", "disorder", "mode of inheritance", "onset", "frequency", "death",
                        "blood", "pain", "mass", "normal", "other", "unknown", "present", "severe", "mild",
                        "moderate", "chronic", "acute", "episodic", "progressive", "recurrent"})


@dataclass(frozen=True, slots=True)
class Mention:
    """A concept found in text, with where and how it is asserted."""

    concept_id: str
    label: str
    start: int
    end: int
    text: str
    negated: bool = False
    historical: bool = False
    family: bool = False
    hypothetical: bool = False

    @property
    def affirmed(self) -> bool:
        """Asserted as present for the patient now (not negated, family or hypothetical)."""
        return not (self.negated or self.family or self.hypothetical)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_NONALNUM = re.compile(r"[^0-9a-z]")
_SPACES = re.compile(r" {2,}")


def _name_key(name: str) -> str:
    """How a dictionary name is matched: lower case, non-alphanumerics as single spaces."""
    return _SPACES.sub(" ", _NONALNUM.sub(" ", name.lower())).strip()


def inflections(key: str) -> list[str]:
    """Other surface forms of a dictionary name (as :func:`_name_key` gives it) that name the
    same concept: the plural of its last word (effusion -> effusions, opacity -> opacities,
    metastasis -> metastases) and, for a one-word name in -osis, its adjective
    (atherosclerosis -> atherosclerotic, scoliosis -> scoliotic)."""
    head, _, last = key.rpartition(" ")
    if len(last) < 5 or not last.isalpha():
        return []
    forms = []
    if last.endswith("sis"):
        forms.append(last[:-3] + "ses")
    elif last.endswith("y") and last[-2] not in "aeiou":
        forms.append(last[:-1] + "ies")
    elif not last.endswith(("s", "x", "z", "ch", "sh")):
        forms.append(last + "s")
    if not head and last.endswith("osis"):
        forms.append(last[:-4] + "otic")
    return [f"{head} {f}" if head else f for f in forms]


def _fast_normalise(text: str) -> str | None:
    """Text lower-cased with every non-alphanumeric as a space, same length as the original
    (offsets are the identity); None when lower-casing changes the length."""
    low = text.lower()
    return _NONALNUM.sub(" ", low) if len(low) == len(text) else None


def _normalise(text: str) -> tuple[str, list[int]]:
    """Lower-cased text with runs of non-alphanumerics as one space, and for each character of
    it the offset in the original (the slow path, for text whose length lower() changes)."""
    out: list[str] = []
    offsets: list[int] = []
    space = True
    for i, orig in enumerate(text):
        for ch in orig.lower():  # may be two characters ("İ" -> "i̇"): both map back to i
            if "a" <= ch <= "z" or "0" <= ch <= "9":
                out.append(ch)
                offsets.append(i)
                space = False
            elif not space:
                out.append(" ")
                offsets.append(i)
                space = True
    return "".join(out), offsets


@lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    """The ConText rules (``context_rules.json``)."""
    return json.loads((resources.files("sagehealth.knowledge") / "context_rules.json").read_text())


class ContextRules:
    """Compiled triggers and terminators."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        spec = spec or rules()
        self.max_words = int(spec.get("max_words", 8))
        self.triggers: list[tuple[re.Pattern[str], str, str]] = []  # one alternation per category+direction
        for category, by_dir in spec["triggers"].items():
            for direction, phrases in by_dir.items():
                alt = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
                self.triggers.append((re.compile(rf"(?<![\w'])(?:{alt})(?![\w'])", re.I), category, direction))
        terms = sorted(spec.get("terminators", []), key=len, reverse=True)
        self.terminator = re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(t) for t in terms) + r")(?![\w'])", re.I) \
            if terms else None

    def assert_mentions(self, text: str, found: list[tuple[int, int, str, str]]) -> list[Mention]:
        """Mentions with their ConText categories (triggers found once per text)."""
        if not found:
            return []
        marks = [(m.start(), m.end(), category, direction)
                 for pat, category, direction in self.triggers for m in pat.finditer(text)]
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        out = []
        for start, end, cid, label in found:
            s0 = max((e for e in ends if e <= start), default=0)
            s1 = min((e for e in ends if e > end), default=len(text))
            flags = dict.fromkeys(CATEGORIES, False)
            for t0, t1, category, direction in marks:
                if flags[category]:
                    continue
                if direction == "forward" and s0 <= t0 and t1 <= start:
                    between = text[t1:start]
                elif direction == "backward" and end <= t0 and t1 <= s1:
                    between = text[end:t0]
                else:
                    continue
                if len(between.split()) <= self.max_words and not self._cut(between):
                    flags[category] = True
            out.append(Mention(cid, label, start, end, text[start:end], **flags))
        return out

    def _cut(self, between: str) -> bool:
        return bool(self.terminator and self.terminator.search(between))


class Linker:
    """A dictionary of concept names -> ids, matched in one pass over a text."""

    def __init__(self, names: Iterable[tuple[str, str, str]], context: ContextRules | None = None) -> None:
        """``names``: (concept id, name, preferred label) triples."""
        import ahocorasick

        self.automaton = ahocorasick.Automaton()
        self.short: dict[str, tuple[str, str]] = {}
        count = 0
        for cid, name, label in names:
            if not name:
                continue
            norm = _name_key(name)
            if len(norm) <= 4:  # short names (MI, CHF, COPD): only as written, in capitals
                if name.isupper() and len(name.strip()) >= 2:
                    self.short.setdefault(name.strip(), (cid, label))
                continue
            if norm in STOP_NAMES:
                continue
            for form in (norm, *inflections(norm)):
                key = f" {form} "  # spaces on both sides: only whole-word matches exist at all
                if key not in self.automaton:
                    self.automaton.add_word(key, (len(key), cid, label))
                    count += 1
        self.size = count + len(self.short)
        if count:
            self.automaton.make_automaton()
        self._short_re = re.compile(r"\b(" + "|".join(re.escape(s) for s in sorted(self.short, key=len, reverse=True))
                                    + r")\b") if self.short else None
        self.context = context or ContextRules()

    def find(self, text: str) -> list[Mention]:
        """Concept mentions of ``text`` (longest, non-overlapping), with their assertion."""
        if not text:
            return []
        fast = _fast_normalise(text)
        if fast is not None:
            norm, offsets = fast, range(len(fast))
        else:
            norm, offsets = _normalise(text)
        hits: list[tuple[int, int, str, str]] = []
        if self.size - len(self.short):
            # in " " + norm + " ", a key " name " ending at e covers norm[e - len + 1 : e - 1]
            for end_i, (length, cid, label) in self.automaton.iter(f" {norm} "):
                first, last = end_i - length + 1, end_i - 2
                hits.append((offsets[first], offsets[last] + 1, cid, label))
        if self._short_re:
            for m in self._short_re.finditer(text):
                cid, label = self.short[m.group(1)]
                hits.append((m.start(), m.end(), cid, label))
        hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
        kept: list[tuple[int, int, str, str]] = []
        for h in hits:
            if kept and h[0] < kept[-1][1]:
                continue
            kept.append(h)
        return self.context.assert_mentions(text, kept)


#: per system, the branch whose concepts are findings worth linking (HPO's other branches are
#: modifiers such as "Right", "Bilateral", "Past medical history")
ROOTS = {"HP": "HP:0000118"}


def linker_from_lake(lake: Any, systems: Iterable[str] = DEFAULT_SYSTEMS) -> Linker | None:
    """A linker over the store's loaded concepts of ``systems`` (None when none are loaded)."""
    from sagehealth.knowledge.graph import descendants

    live = lake.table("concepts").to_lance()  # the live table: a load being written counts
    if not live.count_rows():
        return None
    rows = live.to_table(columns=["concept_id", "system", "label", "synonyms"],
                         filter=f"system IN ({in_list(systems)})").to_pylist()
    if not rows:
        return None
    import duckdb

    con = duckdb.connect()
    con.register("concepts", live)
    keep: dict[str, set[str]] = {}
    for system, root in ROOTS.items():
        if system in systems:
            keep[system] = {root} | {d["concept_id"] for d in descendants(lambda q: con.sql(q).to_arrow_table(), root)}
    con.close()
    rows = [r for r in rows if r["system"] not in keep or r["concept_id"] in keep[r["system"]]]

    def names() -> Iterable[tuple[str, str, str]]:
        for r in rows:
            yield r["concept_id"], r["label"], r["label"]
            for s in r["synonyms"] or []:
                yield r["concept_id"], s, r["label"]

    return Linker(names())


#: bumped when the matching itself changes (2: inflected forms of names), so stored mentions
#: are found again with the new rules at the next ingest or vocabulary load
MATCHING_VERSION = 2


def linker_version(lake: Any) -> str:
    """Identifies the dictionary a mention was found with (the concepts table's version) and
    the matching rules."""
    return f"concepts@{lake.table('concepts').version}/match{MATCHING_VERSION}"


def refresh_mentions(lake: Any, *, systems: Iterable[str] = DEFAULT_SYSTEMS) -> dict[str, int]:
    """Annotate every document version not yet annotated with the current dictionary, in both
    zones (uncommitted; the caller commits). Returns mentions added per table."""
    import pyarrow as pa

    from sagehealth.data.model import MENTION_SCHEMA, MENTION_TABLES, stable_id
    from sagehealth.retrieval.index import FETCH, delete_sources, fetch_rows

    linker = linker_from_lake(lake, systems)
    if linker is None:
        return {}
    version = linker_version(lake)
    out: dict[str, int] = {}
    for table, source in MENTION_TABLES.items():
        tbl = lake.table(table)
        have = tbl.to_lance().to_table(columns=["source_row_id", "source_provenance_id", "linker"])
        done = {(r, p) for r, p, v in zip(*(have.column(c).to_pylist() for c in have.column_names)) if v == version}
        annotated = set(have.column("source_row_id").to_pylist())
        src = lake.table(source).to_lance()
        ids = src.to_table(columns=["row_id", "provenance_id"])
        todo = [r for r, p in zip(ids.column("row_id").to_pylist(), ids.column("provenance_id").to_pylist())
                if (r, p) not in done]
        present = set(ids.column("row_id").to_pylist())
        drop = [r for r in todo if r in annotated] + [r for r in annotated if r not in present]
        delete_sources(tbl, drop)
        added = 0
        for i in range(0, len(todo), FETCH):
            rows = []
            for d in fetch_rows(src, todo[i:i + FETCH], ["row_id", "provenance_id", "patient_id", "date", "text"]):
                found = linker.find(d["text"] or "")
                base = {"source_table": "documents", "source_row_id": d["row_id"],
                        "source_provenance_id": d["provenance_id"], "patient_id": d["patient_id"],
                        "date": d["date"], "linker": version}
                for m in found:
                    rows.append({**base, "row_id": f"men_{stable_id(table, d['row_id'], m.start, m.concept_id)}",
                                 "concept_id": m.concept_id, "label": m.label, "start": m.start, "end": m.end,
                                 "text": m.text, "negated": m.negated, "historical": m.historical,
                                 "family": m.family, "hypothetical": m.hypothetical})
                if not found:  # remember that this version was looked at
                    rows.append({**base, "row_id": f"men_{stable_id(table, d['row_id'], 'none')}"})
            if rows:
                tbl.add(pa.Table.from_pylist(rows, schema=MENTION_SCHEMA))
                added += sum(1 for r in rows if r.get("concept_id"))
        out[table] = added
    return out
