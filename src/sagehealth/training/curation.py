"""Curation of training examples: exact and near-duplicate removal (MinHash LSH, ``rensa``),
quality filters as data (``quality_rules.json``), a PHI re-scan, and decontamination against
evaluation files (13-word n-grams). Each step counts what it removed, for the data card."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")
#: MinHash settings (as text-dedup / datatrove use them for documents): word 5-gram shingles,
#: 128 permutations in 16 bands, Jaccard 0.8
SHINGLE = 5
NUM_PERM = 128
BANDS = 16
JACCARD = 0.8
SEED = 1
#: words of the n-grams shared with an evaluation file that make an example contaminated
DECONTAMINATE_N = 13


@dataclass
class Counts:
    """What each curation step kept and removed (the data card's numbers)."""

    seen: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    clusters: int = 0  # near-duplicate clusters with more than one member

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "kept": self.seen - sum(self.removed.values()), "removed": dict(self.removed),
                "near_duplicate_clusters": self.clusters}


@lru_cache(maxsize=1)
def quality_rules() -> dict[str, Any]:
    return json.loads((resources.files("sagehealth.training") / "quality_rules.json").read_text())


def normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def quality_problem(text: str, rules: dict[str, Any] | None = None) -> str | None:
    """The first quality rule ``text`` fails (its name), or None."""
    r = rules or quality_rules()
    words = text.split()
    if len(words) < r["min_words"]:
        return "too_short"
    if len(words) > r["max_words"]:
        return "too_long"
    letters = sum(c.isalpha() for c in text)
    if letters / max(1, len(text)) < r["min_alpha_ratio"]:
        return "low_alpha_ratio"
    symbols = sum(not (c.isalnum() or c.isspace()) for c in text)
    if symbols / max(1, len(text)) > r["max_symbol_ratio"]:
        return "high_symbol_ratio"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) >= 4:
        top = Counter(lines).most_common(1)[0][1]
        if (top - 1) / len(lines) > r["max_repeated_line_ratio"]:
            return "repeated_lines"
    low = text.lower()
    if any(p in low for p in r["boilerplate"]) and len(words) < r["boilerplate_max_words"]:
        return "boilerplate"
    return None


def shingles(text: str, n: int = SHINGLE) -> list[str]:
    w = _WORD.findall(text.lower())
    if len(w) <= n:
        return [" ".join(w)] if w else []
    return [" ".join(w[i:i + n]) for i in range(len(w) - n + 1)]


def near_duplicates(texts: list[str]) -> tuple[list[bool], int]:
    """Which texts are near-duplicates of an earlier one (MinHash LSH at Jaccard ``JACCARD``
    over word ``SHINGLE``-grams, each candidate pair confirmed on its MinHash estimate); the
    first of each cluster is kept. Returns (drop flags, clusters with more than one member)."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=JACCARD, num_perm=NUM_PERM, num_bands=BANDS)
    sketches = []
    drop = [False] * len(texts)
    clustered: set[int] = set()
    for i, text in enumerate(texts):
        m = RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(shingles(text))
        sketches.append(m)
        hits = [j for j in lsh.query(m) if not drop[j] and m.jaccard(sketches[j]) >= JACCARD]
        if hits:
            drop[i] = True
            clustered.add(min(hits))
        else:
            lsh.insert(i, m)
    return drop, len(clustered)


def ngrams(text: str, n: int = DECONTAMINATE_N) -> set[str]:
    w = _WORD.findall(text.lower())
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def evaluation_ngrams(paths: Iterable[str | Path]) -> set[str]:
    """The 13-word n-grams of evaluation files: CSV (every cell), JSON lines (every string
    value) or plain text."""
    out: set[str] = set()
    for p in map(Path, paths):
        if not p.is_file():
            from sagehealth.errors import QueryError

            raise QueryError(f"decontamination file {p} does not exist")
        raw = p.read_text(encoding="utf-8", errors="replace")
        if p.suffix.lower() == ".csv":
            for row in csv.reader(raw.splitlines()):
                for cell in row:
                    out |= ngrams(cell)
        elif p.suffix.lower() in (".jsonl", ".ndjson"):
            for line in raw.splitlines():
                try:
                    value = json.loads(line)
                except ValueError:
                    out |= ngrams(line)
                    continue
                for s in _strings(value):
                    out |= ngrams(s)
        else:
            out |= ngrams(raw)
    return out


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def exact_key(text: str) -> str:
    return hashlib.sha256(normalized(text).encode()).hexdigest()


#: a single name word is scanned for when it is at least this long and rarer than this in English
#: (wordfreq's Zipf scale: 3 is about once per million words), so "Hall" or "Grant" are not
NAME_MIN_LEN = 4
NAME_MAX_ZIPF = 3.0


class KnownIdentifiers:
    """The clinical zone's own identifiers of every patient (full names, rare name words,
    identifier values, phone numbers and e-mails), found in a text with one Aho-Corasick pass:
    the PHI re-scan's check that no real identifier survived."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        import ahocorasick
        from wordfreq import zipf_frequency

        self.automaton = ahocorasick.Automaton()
        n = 0
        for r in rows:
            full = " ".join(x for x in (r.get("given_names"), r.get("family_name")) if x).strip()
            values = [full] if len(full.split()) >= 2 else []
            values += [w for w in re.split(r"[\s,]+", full) if len(w) >= NAME_MIN_LEN and w.isalpha()
                       and zipf_frequency(w.lower(), "en") < NAME_MAX_ZIPF]
            values += [i.get("value") for i in r.get("identifiers") or [] if i and i.get("value")]
            values += [t.get("value") for t in r.get("telecom") or [] if t and t.get("value")]
            for v in values:
                v = " ".join(str(v).lower().split())
                if len(v) >= NAME_MIN_LEN:
                    self.automaton.add_word(v, v)
                    n += 1
        self.size = n
        if n:
            self.automaton.make_automaton()

    def found(self, text: str) -> bool:
        if not self.size:
            return False
        low = " ".join(text.lower().split())
        for end, value in self.automaton.iter(low):
            start = end - len(value) + 1
            before = low[start - 1] if start > 0 else " "
            after = low[end + 1] if end + 1 < len(low) else " "
            if not before.isalnum() and not after.isalnum():
                return True
        return False
