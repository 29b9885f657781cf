"""A learned complement to the rules: a linear token classifier (L2 logistic regression).

The rules (``detector.py``) were written on the PhysioNet dev notes and overfit them: on notes of
other patients they miss names and places that have no cue they know. This model scores single
word tokens from features that carry over to unseen notes — the token's lexicon class, shape,
affixes and name/word/city memberships, the words, classes and punctuation around it, and what
the rules found next to it — and is trained on the dev notes plus synthetic PHI (the dev notes'
own sentences with their PHI replaced by made-up values of the same kind, and clinical sentence
templates), so that it learns contexts rather than the names of the training patients.

Two ways to use it (see docs/deid.md):

* **combined** (the default detector): the rules run as before; the model looks only at the
  *candidate* tokens the rules left — words that are no plain dictionary word (a name, a name
  that is also a word, or unknown to the lexicons) — and adds those it scores above its
  threshold; it also drops a name or place finding of the rules whose every word it scores as
  very unlikely PHI (the veto). Candidates are a small share of the tokens and each costs a few
  dictionary look-ups (the features of the token itself are scored once per distinct token;
  the context only where the token's own score is near the threshold), so the detector stays
  fast.
* **alone** (for evaluation): every word and number of the text is scored, no rule is used.

The model file (``model.json.gz`` beside this module) is made by
``scripts/train_deid_model.py`` (deterministic: seeded synthesis, full-batch training; the same
data give the same bytes). It holds no PHI of the training notes: their PHI words are never the
value of a feature (:func:`phi_words`). Nothing is downloaded; scoring needs only the lexicons
the rules use.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
from bisect import bisect_right
from itertools import compress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from sagehealth.privacy.deid.lexicon import ALWAYS_WORDS, NAME, NAME_WORD, UNKNOWN, Lexicon
from sagehealth.privacy.deid.spans import Span

MODEL_FILE = "model.json.gz"
FORMAT = "sagehealth-deid-token-lr/1"
#: the seed of everything random in training (synthesis; the optimiser is deterministic)
TRAIN_SEED = 14
ALPHA = re.compile(r"[^\W\d_]+(?:'+[^\W\d_]+)*")
ALPHA_ASCII = re.compile(r"[A-Za-z]+(?:'+[A-Za-z]+)*")
NUMBER = re.compile(r"(?<![\w])\d+(?:[/.:-]\d+)*")
#: lexicon classes of the candidate tokens in combined mode (plain dictionary words are left
#: to the rules)
CANDIDATE_KINDS = frozenset({NAME, NAME_WORD, UNKNOWN})


def gap_class(g: str) -> str:
    """What separates two tokens, in a few classes: "sp", "sp2" (a run of spaces), "nl", "d"
    (digits in between), else the punctuation marks (up to 3)."""
    if g == " ":
        return "sp"
    if "\n" in g:
        return "nl"
    p = "".join(c for c in g if not c.isspace())
    if not p:
        return "sp2" if g else "none"
    if any(c.isdigit() for c in p):
        return "d"
    return p[:3]


def shape(t: str, mixed: bool) -> str:
    """The casing of a word in a mixed-case note ("Xx", "XX", "xx", "X", "x"); "c" (caseless)
    in an all-capitals or all-lower-case note, where casing says nothing."""
    if not mixed:
        return "c"
    if len(t) == 1:
        return "X" if t.isupper() else "x"
    if t.isupper():
        return "XX"
    if t[0].isupper():
        return "Xx"
    return "xx" if t.islower() else "xX"


def number_shape(t: str) -> str:
    return re.sub(r"\d", "d", t)[:12]


#: the own score a token not met before is given in the first pass over candidates
_UNSEEN = float("inf")
#: gaps across which a neighbour's rule finding is a feature (same phrase)
_TIGHT = frozenset({"sp", ".", ",", "-"})
#: rule span types the model may veto in combined mode (names and places found from context or
#: word lists; patterns for dates, numbers and ids are never vetoed)
VETO_TYPES = frozenset({"NAME", "LOCATION", "HOSPITAL"})


def _len_bucket(n: int) -> str:
    return "1" if n == 1 else "2" if n == 2 else "3" if n == 3 else "4-5" if n <= 5 else "6-8" if n <= 8 else "9+"


class Featurizer:
    """Feature strings of tokens. ``self_features`` depend on the token alone (and whether the
    note is mixed-case): their score is remembered per distinct token; ``context_features``
    on its neighbours."""

    def __init__(self, lex: Lexicon, clinical: frozenset[str], cue_words: frozenset[str],
                 mask: frozenset[str] = frozenset()) -> None:
        self.lex, self.clinical, self.cue_words = lex, clinical, cue_words
        #: training only: words whose identity is never a feature (the PHI of the training
        #: notes: the shipped model holds no name or place of a training note)
        self.mask = mask

    def self_features(self, t: str, w: str, kind: str, mixed: bool) -> list[str]:
        lex = self.lex
        s = shape(t, mixed)
        f = ["b", "k=" + kind, "s=" + s, "sk=" + s + kind, "len=" + _len_bucket(len(w))]
        if w not in self.mask:  # (training only: no feature holds a training note's PHI)
            f.append("w=" + w)
            if len(w) > 3:
                f.append("suf=" + w[-3:])
                f.append("pre=" + w[:3])
        for name, words in (("fn", lex.first_names), ("sn", lex.surnames), ("cn", lex.common_names),
                            ("fw", lex.frequent_words), ("city", lex.cities), ("clin", self.clinical),
                            ("cue", self.cue_words), ("always", ALWAYS_WORDS)):
            if w in words:
                f.append(name)
        return f

    def context_features(self, text: str, toks: Sequence[tuple[int, int, str]], lw: Sequence[str],
                         kinds: Sequence[str], i: int, mixed: bool,
                         rule_at: dict[int, str] | None) -> list[str]:
        n = len(toks)
        s, e, _ = toks[i]
        mask = self.mask
        if i > 0:
            p1 = lw[i - 1]
            gb = gap_class(text[toks[i - 1][1]:s])
            f = ["gb=" + gb, "pk=" + kinds[i - 1]]
            if p1 not in mask:
                f += ["p1=" + p1, "p1g=" + p1 + gb]
        else:
            gb = "nl"
            f = ["p1=<s>", "gb=nl"]
        if i + 1 < n:
            ga = gap_class(text[e:toks[i + 1][0]])
            f += ["ga=" + ga, "nk=" + kinds[i + 1]]
            if lw[i + 1] not in mask:
                f.append("n1=" + lw[i + 1])
        else:
            ga = "nl"
            f += ["n1=</s>", "ga=nl"]
        if rule_at is not None:
            r0 = rule_at.get(i)
            f.append("r0=" + (r0[1].rstrip("+") if r0 else "-"))
            rp = rule_at.get(i - 1) if gb in _TIGHT else None
            rn = rule_at.get(i + 1) if ga in _TIGHT else None
            f.append("rp=" + (rp[0] if rp else "-"))
            f.append("rn=" + (rn[0] if rn else "-"))
        return f

    def number_features(self, text: str, s: int, e: int, prev: Sequence[str], nxt: Sequence[str]) -> list[str]:
        t = text[s:e]
        mask = self.mask
        f = ["nb", "nsh=" + number_shape(t), "nlen=" + _len_bucket(e - s),
             "np1=" + (prev[-1] if prev and prev[-1] not in mask else "<s>"),
             "np2=" + (prev[-2] if len(prev) > 1 and prev[-2] not in mask else "<s>"),
             "nn1=" + (nxt[0] if nxt and nxt[0] not in mask else "</s>"),
             "nb1=" + gap_class(text[max(0, s - 1):s] or "nl"), "na1=" + gap_class(text[e:e + 1] or "nl")]
        parts = re.split(r"[/.:-]", t)
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            a, b = int(parts[0]), int(parts[1])
            f.append("nmd=" + ("ok" if 1 <= a <= 12 and 1 <= b <= 31 else "no"))
        elif len(t) in (2, 4):
            f.append("nyr=" + t[:2] if len(t) == 4 else "n2=" + t[0])
        return f


@dataclass
class TokenModel:
    """Weights of the feature strings and the decision threshold (on the logit)."""

    weights: dict[str, float]
    threshold: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    #: a candidate whose own features score below ``threshold - headroom`` is not looked at
    #: further: on the training data no token that ended above the threshold needed more
    #: from its context than this (speed only)
    headroom: float = 1e9
    #: combined mode: a name or place span of the rules whose every token scores below this
    #: logit is dropped (None: the model never drops a rule finding)
    veto: float | None = None
    #: the least a rule-found word's context (without the rule's own weight) added to its
    #: score on the training data: a word whose own and rule weights are this far above the
    #: veto bar is kept without looking at its context (speed only)
    veto_floor: float = -1e9

    def score(self, feats: Sequence[str]) -> float:
        get = self.weights.get
        return sum(get(f, 0.0) for f in feats)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "threshold": self.threshold, "headroom": self.headroom,
                "veto": self.veto, "veto_floor": self.veto_floor, "meta": self.meta,
                "weights": {k: round(v, 5) for k, v in sorted(self.weights.items())}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TokenModel:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a de-identification token model: format {d.get('format')!r}")
        veto = d.get("veto")
        return cls({k: float(v) for k, v in d["weights"].items()}, float(d["threshold"]), d.get("meta", {}),
                   float(d.get("headroom", 1e9)), None if veto is None else float(veto),
                   float(d.get("veto_floor", -1e9)))

    def save(self, path: str) -> None:
        data = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        with open(path, "wb") as fh:  # mtime 0: the same model gives the same bytes
            with gzip.GzipFile(filename="", fileobj=fh, mode="wb", mtime=0, compresslevel=9) as gz:
                gz.write(data)

    @classmethod
    def load(cls, path: str | None = None) -> TokenModel:
        if path:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return cls.from_json(json.load(fh))
        raw = resources.files("sagehealth.privacy.deid").joinpath(MODEL_FILE).read_bytes()
        return cls.from_json(json.loads(gzip.decompress(raw)))


@lru_cache(maxsize=1)
def default_model() -> TokenModel | None:
    """The shipped model, or None when the package has none."""
    try:
        return TokenModel.load()
    except (FileNotFoundError, OSError):
        return None


# --------------------------------------------------------------------------- scoring


class ModelScorer:
    """Scores tokens with a :class:`TokenModel`; remembers the score of each distinct token's
    own features."""

    CACHE = 200_000
    #: the own score of a token that is never a candidate (too short, a function word, a
    #: clinical abbreviation or cue word)
    EXCLUDED = -1e9

    def __init__(self, model: TokenModel, featurizer: Featurizer) -> None:
        self.model, self.fz = model, featurizer
        # the own scores of the words the model was trained on, computed once here (part of
        # the model, like the lexicons): mixed-case notes look tokens up as written (lower,
        # Title and upper case forms), caseless notes by their lower case
        vocab = sorted(k[2:] for k in model.weights if k.startswith("w="))
        kinds = featurizer.lex.kinds(set(vocab))
        self._table: dict[bool, dict[str, float]] = {True: {}, False: {}}
        for w in vocab:
            self._table[False][w] = self._own_score(w, w, kinds[w], False)
            for t in (w, w.title(), w.upper()):
                self._table[True][t] = self._own_score(t, w, kinds[w], True)
        self._own: dict[bool, dict[str, float]] = {}
        self._veto_own: dict[bool, dict[str, float]] = {}
        self.clear_caches()

    def clear_caches(self) -> None:
        """Forget the own scores of tokens met since (the trained words' stay)."""
        self._own = {k: dict(v) for k, v in self._table.items()}
        self._veto_own = {True: {}, False: {}}

    def _own_score(self, t: str, w: str, kind: str, mixed: bool) -> float:
        fz = self.fz
        if len(w) < 2 or w in ALWAYS_WORDS or w in fz.clinical or w in fz.cue_words:
            return self.EXCLUDED
        return self.model.score(fz.self_features(t, w, kind, mixed))

    def self_score(self, t: str, w: str, kind: str, mixed: bool) -> float:
        cache = self._own[mixed]
        key = t if mixed else w
        v = cache.get(key)
        if v is None:
            if len(cache) > self.CACHE + len(self._table[mixed]):
                self._own[mixed] = cache = dict(self._table[mixed])
            v = cache[key] = self._own_score(t, w, kind, mixed)
        return v

    def candidates(self, text: str, toks: Sequence[tuple[int, int, str]], lw: Sequence[str],
                   kinds: Sequence[str], mixed: bool, found: list[Span],
                   starts: Sequence[int] | None = None) -> list[Span]:
        """Combined mode: ``found`` (the rule spans) less those the model vetoes, plus the
        candidate tokens the rules did not cover that score above the threshold (NAME, or
        LOCATION for city names)."""
        fz, model = self.fz, self.model
        thr, low_bar = model.threshold, model.threshold - model.headroom
        own_get = self._own[mixed].get
        cand = compress(range(len(kinds)), map(CANDIDATE_KINDS.__contains__, kinds))
        # the tokens whose own score is known to be too low are dropped in one pass (a token
        # met for the first time passes here and is scored below)
        if mixed:
            hot = [i for i in cand if own_get(toks[i][2], _UNSEEN) >= low_bar]
        else:
            hot = [i for i in cand if own_get(lw[i], _UNSEEN) >= low_bar]
        if starts is None:
            starts = _starts(toks)
        if not hot:
            return self._veto_pass(text, toks, lw, kinds, mixed, found, None, starts)
        rule_at: dict[int, tuple[str, str]] | None = None
        out: list[Span] = []
        for i in hot:
            s, e, t = toks[i]
            v = self.self_score(t, lw[i], kinds[i], mixed)
            if v < low_bar:
                continue
            if rule_at is None:
                rule_at = _rule_tokens(found, toks, starts)
            if i in rule_at:
                continue
            v += model.score(fz.context_features(text, toks, lw, kinds, i, mixed, rule_at))
            if v > thr:
                out.append(Span(s, e, "LOCATION" if lw[i] in fz.lex.cities else "NAME", t, "model"))
        return self._veto_pass(text, toks, lw, kinds, mixed, found, rule_at, starts) + out

    def _veto_pass(self, text: str, toks: Sequence[tuple[int, int, str]], lw: Sequence[str],
                   kinds: Sequence[str], mixed: bool, found: list[Span],
                   rule_at: dict[int, tuple[str, str]] | None, starts: Sequence[int]) -> list[Span]:
        """``found`` less the name and place spans the model vetoes."""
        if self.model.veto is None or not any(sp.type in VETO_TYPES for sp in found):
            return found
        if rule_at is None:
            rule_at = _rule_tokens(found, toks, starts)
        return [sp for sp in found if sp.type not in VETO_TYPES
                or not self._vetoed(sp, text, toks, lw, kinds, mixed, rule_at, starts)]

    def _vetoed(self, sp: Span, text: str, toks: Sequence[tuple[int, int, str]], lw: Sequence[str],
                kinds: Sequence[str], mixed: bool, rule_at: dict[int, tuple[str, str]],
                starts: Sequence[int]) -> bool:
        """Every word of the span scores below the veto bar (a span without words is kept)."""
        k = max(bisect_right(starts, sp.start) - 1, 0)
        any_word = False
        fz, model = self.fz, self.model
        while k < len(toks) and toks[k][0] < sp.end:
            if toks[k][1] > sp.start:
                any_word = True
                t, w = toks[k][2], lw[k]
                cache = self._veto_own[mixed]
                key = t if mixed else w
                v = cache.get(key)
                if v is None:
                    if len(cache) > self.CACHE:
                        cache.clear()
                    v = cache[key] = model.score(fz.self_features(t, w, kinds[k], mixed))
                if v + model.weights.get("r0=" + sp.rule.rstrip("+"), 0.0) + model.veto_floor >= model.veto:  # type: ignore[operator]
                    return False  # no context could bring it under the bar
                sc = v + model.score(fz.context_features(text, toks, lw, kinds, k, mixed, rule_at))
                if sc >= model.veto:  # type: ignore[operator]
                    return False
            k += 1
        return any_word


def _starts(toks: Sequence[tuple[int, int, str]]) -> list[int]:
    return [tk[0] for tk in toks]


def _rule_tokens(found: Sequence[Span], toks: Sequence[tuple[int, int, str]],
                 starts: Sequence[int] | None = None) -> dict[int, tuple[str, str]]:
    """token index -> (type, rule) of a rule span covering (part of) it."""
    out: dict[int, tuple[str, str]] = {}
    if not found:
        return out
    if starts is None:
        starts = _starts(toks)
    n = len(toks)
    for sp in found:
        k = max(0, bisect_right(starts, sp.start) - 1)
        while k < n and toks[k][0] < sp.end:
            if toks[k][1] > sp.start:
                out.setdefault(k, (sp.type, sp.rule))
            k += 1
    return out


# --------------------------------------------------------------------------- tokens and examples


def model_tokens(text: str) -> list[tuple[int, int, str]]:
    rx = ALPHA_ASCII if text.isascii() else ALPHA
    return [(m.start(), m.end(), m.group()) for m in rx.finditer(text)]


def _mixed(text: str) -> bool:
    """A mixed-case note (as the detector decides: 3% to 60% of the letters are capitals)."""
    ups = sum(1 for c in text if c.isupper())
    lows = sum(1 for c in text if c.islower())
    tot = ups + lows
    return bool(tot) and not (ups > 0.6 * tot or ups < 0.03 * tot)


def _covered_by(spans: Sequence[tuple[int, int]], s: int, e: int) -> bool:
    return any(a < e and s < b for a, b in spans)


def examples(text: str, gold: Sequence[tuple[int, int]], featurizer: Featurizer,
             kinds_of: Callable[[list[str]], list[str]], rules: Sequence[Span] | None, *,
             candidates_only: bool) -> tuple[list[list[str]], list[int], list[int]]:
    """Feature lists, 0/1 labels and the number of own (token-only) features of each example
    of one note. ``rules``: the rule spans (combined mode: the examples are the candidates the
    rules leave and the words of their name and place spans, with rule features), or None
    (alone: every word and number)."""
    toks = model_tokens(text)
    lw = [t.lower() for _, _, t in toks]
    kinds = kinds_of(lw)
    mixed = _mixed(text)
    rows: list[list[str]] = []
    labels: list[int] = []
    own: list[int] = []
    rule_at = _rule_tokens(rules, toks) if rules is not None else None
    fz = featurizer
    for i, (s, e, t) in enumerate(toks):
        w = lw[i]
        if candidates_only:
            hit = rule_at.get(i) if rule_at is not None else None
            if hit is not None:
                if hit[0] not in VETO_TYPES:
                    continue
            elif kinds[i] not in CANDIDATE_KINDS or len(w) < 2 or w in ALWAYS_WORDS \
                    or w in fz.clinical or w in fz.cue_words:
                continue
        f = fz.self_features(t, w, kinds[i], mixed)
        own.append(len(f))
        rows.append(f + fz.context_features(text, toks, lw, kinds, i, mixed, rule_at))
        labels.append(int(_covered_by(gold, s, e)))
    if not candidates_only:
        starts = _starts(toks)
        for m in NUMBER.finditer(text):
            s, e = m.span()
            k = bisect_right(starts, s)
            f = fz.number_features(text, s, e, lw[max(0, k - 2):k], lw[k:k + 1])
            rows.append(f)
            own.append(len(f))
            labels.append(int(_covered_by(gold, s, e)))
    return rows, labels, own


def predict_alone(text: str, scorer: ModelScorer, kinds_of: Callable[[list[str]], list[str]]) -> list[Span]:
    """Model alone: every word and number scored, no rule."""
    fz, thr = scorer.fz, scorer.model.threshold
    toks = model_tokens(text)
    lw = [t.lower() for _, _, t in toks]
    kinds = kinds_of(lw)
    mixed = _mixed(text)
    out: list[Span] = []
    for i, (s, e, t) in enumerate(toks):
        sc = scorer.model.score(fz.self_features(t, lw[i], kinds[i], mixed)) + scorer.model.score(
            fz.context_features(text, toks, lw, kinds, i, mixed, None))
        if sc > thr:
            out.append(Span(s, e, "LOCATION" if lw[i] in fz.lex.cities else "NAME", t, "model"))
    starts = _starts(toks)
    for m in NUMBER.finditer(text):
        s, e = m.span()
        k = bisect_right(starts, s)
        if scorer.model.score(fz.number_features(text, s, e, lw[max(0, k - 2):k], lw[k:k + 1])) > thr:
            out.append(Span(s, e, "DATE", m.group(), "model"))
    return out


# --------------------------------------------------------------------------- training


def fit_logistic(rows: Sequence[Sequence[str]], labels: Sequence[int], *, l2: float = 1.0,
                 iters: int = 300, min_count: int = 2, lr: float = 0.1) -> dict[str, float]:
    """L2-regularised logistic regression on binary features, full batch (Adam on the mean
    log-loss plus ``l2 / n * |w|^2 / 2``). Deterministic: no sampling, sums in a fixed order.
    Features seen fewer than ``min_count`` times are dropped (except the bias)."""
    import numpy as np

    counts: dict[str, int] = {}
    for r in rows:
        for f in r:
            counts[f] = counts.get(f, 0) + 1
    vocab = {f: k for k, f in enumerate(sorted(f for f, c in counts.items() if c >= min_count or f == "b"))}
    idx: list[int] = []
    lens: list[int] = []
    for r in rows:
        ks = [vocab[f] for f in dict.fromkeys(r) if f in vocab]
        idx.extend(ks)
        lens.append(len(ks))
    ind = np.asarray(idx, dtype=np.int64)
    lens_a = np.asarray(lens, dtype=np.int64)
    row_of = np.repeat(np.arange(len(rows)), lens_a)
    y = np.asarray(labels, dtype=np.float64)
    n, d = len(rows), len(vocab)
    w = np.zeros(d)
    m = np.zeros(d)
    v = np.zeros(d)
    b1, b2, eps = 0.9, 0.999, 1e-8
    reg = l2 / max(n, 1)
    for t in range(1, iters + 1):
        z = np.bincount(row_of, weights=w[ind], minlength=n)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        g = np.bincount(ind, weights=(p - y)[row_of], minlength=d) / n + reg * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    names = sorted(vocab, key=vocab.__getitem__)
    return {f: float(x) for f, x in zip(names, w) if abs(x) >= 1e-4}


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --------------------------------------------------------------------------- synthetic PHI

_SYL_ON = "b br c ch d dr f g gr h j k kl l m n p pr qu r s sh st t th tr v w z".split()
_SYL_NU = "a e i o u a e i o ou ai ei".split()
_SYL_CO = "n r l s t k m nd rt ck ll ss x z".split()


def made_up_name(rng: random.Random) -> str:
    """A pronounceable word that is probably no name in any list ("Brakelton")."""
    k = rng.choice((2, 2, 3))
    return "".join(rng.choice(_SYL_ON) + rng.choice(_SYL_NU) + (rng.choice(_SYL_CO) if rng.random() < 0.5 else "")
                   for _ in range(k))


class Surrogates:
    """Made-up PHI values for synthetic training notes (names from the census lists and made up,
    places from the city list and made up, dates and numbers in many formats)."""

    def __init__(self, lex: Lexicon, rng: random.Random) -> None:
        self.rng = rng
        self.first = sorted(w for w in lex.first_names if w in lex.common_names and w.isalpha() and len(w) > 2)
        self.last = sorted(w for w in lex.surnames if w.isalpha() and len(w) > 2)
        self.common_last = sorted(w for w in lex.common_names if w in lex.surnames and w.isalpha() and len(w) > 2)
        self.cities = sorted(c for c in lex.cities if c.replace(" ", "").isalpha())

    def name(self, first: bool) -> str:
        r = self.rng.random()
        if r < 0.25:
            return made_up_name(self.rng)
        if first:
            return self.rng.choice(self.first)
        return self.rng.choice(self.common_last if r < 0.7 else self.last)

    def place(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice(self.cities)
        if r < 0.6:
            return "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVW") for _ in range(self.rng.choice((2, 3, 3, 4))))
        return made_up_name(self.rng) + self.rng.choice(("", "", "ton", "ville", "field", "wood", "burg"))

    def date(self, like: str) -> str:
        rng = self.rng
        mo, da, yr = rng.randint(1, 12), rng.randint(1, 28), rng.randint(1930, 2029)
        if re.fullmatch(r"\d{1,2}/\d{1,2}", like):
            return f"{mo}/{da}"
        if re.fullmatch(r"\d{1,2}/\d{1,2}/\d{2}", like):
            return f"{mo}/{da}/{yr % 100:02d}"
        if re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", like):
            return f"{mo}/{da}/{yr}"
        if re.fullmatch(r"\d{2}", like):
            return f"{yr % 100:02d}"
        if re.fullmatch(r"\d{4}", like):
            return str(yr)
        return like

    @staticmethod
    def cased(value: str, like: str) -> str:
        if like.isupper():
            return value.upper()
        if like.islower():
            return value.lower()
        return value.title()


def synthesise(notes: Sequence[Any], lex: Lexicon, seed: int = TRAIN_SEED) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """The notes with every gold PHI span replaced by a made-up value of its kind (names by
    names, places by places, dates by dates), as (text, gold (start, end, type))."""
    rng = random.Random(seed)
    sur = Surrogates(lex, rng)
    out: list[tuple[str, list[tuple[int, int, str]]]] = []
    for n in notes:
        pieces: list[str] = []
        gold: list[tuple[int, int, str]] = []
        pos = 0
        length = 0
        for g in n.gold:
            if g.start < pos:
                continue
            pieces.append(n.text[pos:g.start])
            length += g.start - pos
            typ = g.type.lower()
            like = g.text
            if "name" in typ and like.isalpha():
                value = sur.cased(sur.name(like.lower() in lex.first_names and rng.random() < 0.7), like)
                if len(like) == 1:
                    value = value[0]
            elif typ in ("location", "hospital") and like.replace(" ", "").isalpha():
                value = sur.cased(sur.place(), like)
            elif "date" in typ:
                value = sur.date(like)
            else:
                value = like
            pieces.append(value)
            gold.append((length, length + len(value), g.type))
            length += len(value)
            pos = g.end
        pieces.append(n.text[pos:])
        out.append(("".join(pieces), gold))
    return out


#: clinical sentence templates with slots: {F} first name, {L} surname, {P} place, {H} hospital
#: word, {D} date
TEMPLATES = [
    "Pt seen by Dr. {L} this am, plan to continue current meds.",
    "Wife {F} in to visit, updated on plan of care.",
    "Son {F} {L} called at 2200, questions answered.",
    "Transferred from {P} {H} on {D} for further management.",
    "Discussed with {F} {L}, RN, who will follow up.",
    "{F} {L} NP aware of low UOP.",
    "Pt lives in {P} with daughter {F}.",
    "Spoke with pt's brother {F} re: code status.",
    "Plan: d/c to {P} Rehab when bed available.",
    "Seen by {L} from PT, ambulated 20 ft.",
    "Dr {L} and Dr {L} aware of K 3.2, repleted.",
    "Family meeting with {F}, {F} and Dr. {L} on {D}.",
    "pt's friend {F} visited, brought clothes from home in {P}.",
    "Case mgmt ({F} {L}) following for placement.",
    "Covering for {F} today; {L} MD paged x2.",
    "Daughter {F} is HCP; phone number in chart.",
    "Awaiting call back from {P} {H} re: old records.",
    "Report given to {F} on {P} 4.",
    "Hx CVA {D}, CABG at {P} {H}.",
    "{F} ({L}) from the blood bank called with results.",
]
_HOSPITAL_WORDS = ["Hospital", "Medical Center", "Rehab", "Memorial", "General", "Clinic", "Nursing Home"]


def template_notes(lex: Lexicon, count: int, seed: int = TRAIN_SEED) -> list[tuple[str, list[tuple[int, int]]]]:
    """``count`` synthetic notes of 3 to 6 template sentences each, in mixed case, capitals or
    lower case; gold: the filled-in names, places and dates (not the hospital words)."""
    rng = random.Random(seed + 1)
    sur = Surrogates(lex, rng)
    out: list[tuple[str, list[tuple[int, int]]]] = []
    for _ in range(count):
        text = ""
        gold: list[tuple[int, int]] = []
        for tpl in rng.sample(TEMPLATES, rng.randint(3, 6)):
            pos = 0
            for m in re.finditer(r"\{([FLPHD])\}", tpl):
                text += tpl[pos:m.start()]
                slot = m.group(1)
                if slot == "H":
                    text += rng.choice(_HOSPITAL_WORDS)
                else:
                    value = {"F": lambda: sur.name(True).title(), "L": lambda: sur.name(False).title(),
                             "P": lambda: sur.place().title() if not sur.rng.random() < 0.3 else sur.place().upper(),
                             "D": lambda: sur.date(rng.choice(("1/1", "1/1/11", "1/1/2011", "11", "2011")))}[slot]()
                    gold.append((len(text), len(text) + len(value)))
                    text += value
                pos = m.end()
            text += tpl[pos:] + rng.choice((" ", "\n", "  "))
        case = rng.random()
        if case < 0.35:
            text = text.upper()
        elif case < 0.55:
            text = text.lower()
        out.append((text, gold))
    return out


def phi_words(notes: Sequence[Any], lex: Lexicon) -> frozenset[str]:
    """The lower-cased words of the gold PHI of ``notes`` that are no frequent English word:
    the model never keeps a feature made of one of them (a name or place of a training note
    would otherwise be stored in the model file as the value of a feature)."""
    out: set[str] = set()
    for n in notes:
        for g in n.gold:
            for w in ALPHA.findall(g.text.lower()):
                if w not in lex.frequent_words and w not in ALWAYS_WORDS:
                    out.add(w)
    return frozenset(out)


@dataclass
class TrainConfig:
    l2: float = 1.0
    iters: int = 300
    min_count: int = 2
    #: the probability above which a candidate token is PHI
    threshold_p: float = 0.7
    #: combined mode: the probability below which a rule's name/place finding is dropped
    #: (None: never)
    veto_p: float | None = 0.02
    #: synthetic copies of the training notes (PHI replaced; 3 since issue 15, one before: more
    #: made-up names and places in real contexts, see docs/deid.md) and template notes
    synthetic_copies: int = 3
    template_notes: int = 400
    seed: int = TRAIN_SEED
    #: the share of training tokens above the threshold whose context may be cut off by the
    #: speed bound (``TokenModel.headroom``)
    headroom_quantile: float = 0.999
    #: a fixed speed bound instead of the quantile (None: from the quantile). 0.5 leaves about
    #: one candidate in twelve for the context features; in the CV of docs/deid.md bounds of
    #: 0.0, 0.5 and 1.0 found the same held-out PHI
    headroom: float | None = 0.5


def train(notes: Sequence[Any], detector: Any, *, combine: bool, config: TrainConfig | None = None) -> TokenModel:
    """A token model from annotated notes (:class:`~sagehealth.privacy.deid.evaluate.Note`)
    and their synthetic variants. ``combine``: trained on the candidates the rules of
    ``detector`` leave and the words of its name/place findings, with rule features (the
    default detector's use); else on every word and number."""
    cfg = config or TrainConfig()
    r = detector.rules
    fz = Featurizer(detector.lex, r.clinical_words, r.cue_words, phi_words(notes, detector.lex))
    docs: list[tuple[str, list[tuple[int, int]]]] = [(n.text, [(g.start, g.end) for g in n.gold]) for n in notes]
    for c in range(cfg.synthetic_copies):
        docs += [(t, [(a, b) for a, b, _ in g]) for t, g in synthesise(notes, detector.lex, cfg.seed + c)]
    docs += template_notes(detector.lex, cfg.template_notes, cfg.seed)
    rows: list[list[str]] = []
    labels: list[int] = []
    own: list[int] = []
    for text, gold in docs:
        rules = detector.rule_spans(text) if combine else None
        x, y, o = examples(text, gold, fz, detector.kinds_of, rules, candidates_only=combine)
        rows += x
        labels += y
        own += o
    weights = fit_logistic(rows, labels, l2=cfg.l2, iters=cfg.iters, min_count=cfg.min_count)
    thr = logit(cfg.threshold_p)
    model = TokenModel(weights, thr)
    # the speed bound: how much context the tokens that end above the threshold needed
    needed = sorted(model.score(f[k:]) for f, k in zip(rows, own)
                    if "r0=-" in f[k:] or not combine if model.score(f) > thr)
    if cfg.headroom is not None:
        model.headroom = cfg.headroom
    elif needed:
        q = needed[min(len(needed) - 1, int(cfg.headroom_quantile * len(needed)))]
        model.headroom = round(max(q, 0.0) + 0.5, 3)
    model.veto = None if cfg.veto_p is None else logit(cfg.veto_p)
    if combine and model.veto is not None:
        # the speed bound of the veto: the least context (less the rule's own weight) a
        # rule-found word got in training
        rest = sorted(model.score(f[k:]) - model.weights.get(next(x for x in f[k:] if x.startswith("r0=")), 0.0)
                      for f, k in zip(rows, own) if "r0=-" not in f[k:])
        if rest:
            model.veto_floor = round(rest[int(0.001 * len(rest))] - 0.5, 3)
    model.meta = {"trained_on_notes": len(notes), "synthetic_docs": len(docs) - len(notes),
                  "examples": len(rows), "positives": int(sum(labels)), "combine": combine, "l2": cfg.l2,
                  "iters": cfg.iters, "min_count": cfg.min_count, "seed": cfg.seed,
                  "threshold_p": cfg.threshold_p, "veto_p": cfg.veto_p}
    return model


# --------------------------------------------------------------------------- predictors (CV)


def rules_predictor() -> Callable[[str], list[Span]]:
    from sagehealth.privacy.deid.detector import Detector

    return Detector(model=False).detect


def train_predictor(notes: Sequence[Any], *, combine: bool, config: TrainConfig | None = None) -> Callable[[str], list[Span]]:
    """Train on ``notes`` and return a ``predict(text)``: the rules with the model
    (``combine``) or the model alone."""
    from sagehealth.privacy.deid.detector import Detector

    rules_only = Detector(model=False)
    model = train(notes, rules_only, combine=combine, config=config)
    if combine:
        return Detector(model=model).detect
    scorer = ModelScorer(model, Featurizer(rules_only.lex, rules_only.rules.clinical_words, rules_only.rules.cue_words))
    return lambda text: predict_alone(text, scorer, rules_only.kinds_of)
