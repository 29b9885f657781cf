"""One pass for many regexes: the patterns of ``rules.json`` compiled into a combined scanner.

Python's ``re`` tries a pattern at every position of the text unless the pattern starts with a
literal or a character class; rules that start with a look-behind or ``\\b`` ("a date not after a
digit") therefore cost a full scan each, and 40 such scans were most of the detector's time.

Most rules can only start at a digit that begins a run of digits (their look-behind or ``\\b``
forbids a digit before) or at a rare punctuation mark ("#", "(", "+", "'"). Those rules are
*anchored*: one fast scan finds the candidate positions, and at each of them only the rules
that *may* start there are matched. Which ones: the candidate's shape (its run of n digits, or
its mark, and the character after) and the character before it each give a set of rules, worked
out once per shape and per character from the parsed rule (:func:`_may_start`, a necessary
condition: what is not known is assumed to fit) and remembered — tables bounded by the alphabet
of the texts, not by their number (a few hundred shapes on the PhysioNet notes). Most
candidates (a plain "12 mg") then cost two dictionary look-ups and no regex. Each rule keeps
its own left-to-right, non-overlapping semantics (a rule is not tried before the end of its
previous match), so the result is exactly that of ``finditer`` per rule
(``tests/test_deid_scanner.py``). The other rules (those that may start at a letter) are run one
by one, as before.

Which rules are anchored is computed from the parsed regexes at load time (:func:`first_chars`),
so rules stay plain data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any
from itertools import compress
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as P  # type: ignore[attr-defined]

#: marker in a first-character set: any character of the \d class (Unicode digits too)
DIGIT = "\\d"
#: marker in a first-character set: any white-space character
SPACE = "\\s"
_ASCII_DIGITS = frozenset("0123456789")


def _charset(items: list[tuple]) -> set[str] | None:
    """The characters of a ``[...]`` class, or None when it may hold letters, spaces or
    non-ASCII characters other than digits (then the rule is not anchored)."""
    out: set[str] = set()
    for op, av in items:
        if op is C.LITERAL:
            out.add(chr(av))
        elif op is C.RANGE:
            lo, hi = av
            if hi - lo > 200:
                return None
            out.update(chr(c) for c in range(lo, hi + 1))
        elif op is C.CATEGORY and av is C.CATEGORY_DIGIT:
            out.add(DIGIT)
        elif op is C.CATEGORY and av is C.CATEGORY_SPACE:
            out.add(SPACE)
        else:  # NEGATE, \w, \s, ...
            return None
    return out


def _first_seq(items: Sequence[tuple]) -> tuple[set[str] | None, bool]:
    """(characters a match of ``items`` may start with, whether ``items`` may match empty)."""
    out: set[str] = set()
    for op, av in items:
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue  # zero-width
        chars, nullable = _first_op(op, av)
        if chars is None:
            return None, False
        out |= chars
        if not nullable:
            return out, False
    return out, True


def _first_op(op: object, av: object) -> tuple[set[str] | None, bool]:
    if op is C.LITERAL:
        return {chr(av)}, False  # type: ignore[arg-type]
    if op is C.IN:
        return _charset(av), False  # type: ignore[arg-type]
    if op is C.SUBPATTERN:
        return _first_seq(av[3].data)  # type: ignore[index]
    if op is C.ATOMIC_GROUP:
        return _first_seq(av.data)  # type: ignore[attr-defined]
    if op is C.BRANCH:
        out: set[str] = set()
        nullable = False
        for alt in av[1]:  # type: ignore[index]
            chars, n = _first_seq(alt.data)
            if chars is None:
                return None, False
            out |= chars
            nullable = nullable or n
        return out, nullable
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        lo, _hi, sub = av  # type: ignore[misc]
        chars, n = _first_seq(sub.data)
        return chars, (n or lo == 0)
    return None, False  # ANY, NOT_LITERAL, group references, ...


def first_chars(regex: str) -> set[str] | None:
    """The characters a match of ``regex`` may start with (``DIGIT`` for any digit), or None
    when it may start with a letter, a space or anything else that is not cheap to find."""
    parsed = P.parse(regex, 0)
    chars, nullable = _first_seq(parsed.data)
    if chars is None or nullable:
        return None
    if SPACE in chars or any(c.isalpha() or c.isspace() or ord(c) > 127 for c in chars if c != DIGIT):
        return None
    return chars


def digit_guarded(regex: str) -> bool:
    """True when ``regex`` starts with a look-behind or ``\\b`` that forbids a digit just before
    the match: it then never starts inside a run of digits."""
    for op, av in P.parse(regex, 0).data:
        if op is C.AT:
            if av is C.AT_BOUNDARY:
                return True  # \b before a digit or punctuation: no digit before
            continue
        if op is C.ASSERT_NOT and av[0] == -1:  # negative look-behind
            chars, _ = _first_seq(av[1].data)
            if chars is not None and (DIGIT in chars or _ASCII_DIGITS <= chars):
                return True
            continue
        if op is C.ASSERT and av[0] == -1:  # positive look-behind
            chars, _ = _first_seq(av[1].data)
            if chars is not None and DIGIT not in chars and not (chars & _ASCII_DIGITS):
                return True
            continue
        if op in (C.ASSERT, C.ASSERT_NOT):
            continue
        return False
    return False


# -- which anchored rules may match where: a prefix check on the parsed regex ---------------------

#: a candidate's key holds at most this many characters of its run of digits (and the next one)
KEY_DIGITS = 6
#: at most this many keys are remembered per scanner (then the table starts again)
KEY_CACHE = 50_000


#: in a key: "some decimal digit" (which one is not known; a private-use character)
DIG = "\ue000"


def _digit_may(items: list[tuple]) -> bool:
    """Whether some decimal digit may be in the class ``items`` (True when unsure)."""
    for op, av in items:
        if op is C.NEGATE:
            return True
        if op is C.LITERAL and chr(av).isdecimal():
            return True
        if op is C.RANGE and (av[0] <= 57 and av[1] >= 48 or av[1] > 127):
            return True
        if op is C.CATEGORY and av not in (C.CATEGORY_NOT_DIGIT, C.CATEGORY_SPACE, C.CATEGORY_NOT_WORD):
            return True
        if op not in (C.LITERAL, C.RANGE, C.CATEGORY):
            return True
    return False


def _digit_sure(items: list[tuple]) -> bool:
    """Whether every decimal digit is in the class ``items``."""
    return not any(op is C.NEGATE for op, _ in items) and any(
        op is C.CATEGORY and av in (C.CATEGORY_DIGIT, C.CATEGORY_WORD, C.CATEGORY_NOT_SPACE)
        for op, av in items)


def _sure_class(items: list[tuple]) -> bool:
    """Whether :func:`_in_class` answers exactly for ``items`` (no "True when unsure")."""
    return all(op in (C.NEGATE, C.LITERAL, C.RANGE) or (op is C.CATEGORY and av in (
        C.CATEGORY_DIGIT, C.CATEGORY_NOT_DIGIT, C.CATEGORY_SPACE, C.CATEGORY_NOT_SPACE,
        C.CATEGORY_WORD, C.CATEGORY_NOT_WORD)) for op, av in items)


def _in_class(items: list[tuple], ch: str) -> bool:
    """Whether ``ch`` may be in the ``[...]`` class ``items`` (True when unsure)."""
    if ch == DIG:
        return _digit_may(items)
    negate = False
    hit = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            hit = hit or ch == chr(av)
        elif op is C.RANGE:
            hit = hit or av[0] <= ord(ch) <= av[1]
        elif op is C.CATEGORY:
            if av is C.CATEGORY_DIGIT:
                hit = hit or ch.isdecimal()
            elif av is C.CATEGORY_NOT_DIGIT:
                hit = hit or not ch.isdecimal()
            elif av is C.CATEGORY_SPACE:
                hit = hit or ch.isspace()
            elif av is C.CATEGORY_NOT_SPACE:
                hit = hit or not ch.isspace()
            elif av is C.CATEGORY_WORD:
                hit = hit or ch.isalnum() or ch == "_"
            elif av is C.CATEGORY_NOT_WORD:
                hit = hit or not (ch.isalnum() or ch == "_")
            else:
                return True
        else:
            return True  # anything else: maybe
    return hit != negate


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or ch == DIG


def _one_char(sub: Any) -> list[tuple] | None:
    """The class of a look-around that reads exactly one character (``[\\d/.]``, ``x``)."""
    data = sub.data
    if len(data) != 1:
        return None
    op, av = data[0]
    if op is C.IN:
        return av
    if op is C.LITERAL:
        return [(C.LITERAL, av)]
    return None


def _may_start(items: Sequence[tuple], w: str, before: str | None = "") -> bool:
    """Whether a match of ``items`` may start at offset 0 of ``w`` (the text there, cut short;
    :data:`DIG` stands for some decimal digit) when ``before`` is the character before it (""
    at the start of the text, None: not known).

    A necessary condition: what ``w`` does not show is assumed to fit; look-arounds are checked
    only where ``w`` decides them (one-character look-behinds at the start, ``\\b``, negative
    look-aheads that surely match inside ``w``), other zero-width assertions count as true and
    unknown operators as matching anything."""
    n = len(w)

    def seq(ops: Sequence[tuple], i: int, pos: int, k: Any, maybe: bool) -> bool:
        # maybe=True: may the rest match (end of w: yes); False: does it surely match within w
        if i == len(ops):
            return k(pos)
        op, av = ops[i]
        if op is C.AT:
            if av in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY) and pos < n and (pos > 0 or before is not None):
                prev = w[pos - 1] if pos else before
                edge = _is_word(prev) if prev else False
                if (edge != _is_word(w[pos])) != (av is C.AT_BOUNDARY):
                    return False
                return seq(ops, i + 1, pos, k, maybe)
            return maybe and seq(ops, i + 1, pos, k, maybe)
        if op in (C.ASSERT, C.ASSERT_NOT):
            if not maybe:
                return False
            direction, sub = av
            if direction == -1:
                cls = _one_char(sub)
                prev = w[pos - 1] if pos else before
                if cls is not None and prev is not None:
                    if not prev:
                        if op is C.ASSERT:
                            return False  # nothing before the start of the text
                    elif prev == DIG:
                        if _digit_sure(cls) if op is C.ASSERT_NOT else not _digit_may(cls):
                            return False
                    elif _sure_class(cls) and _in_class(cls, prev) == (op is C.ASSERT_NOT):
                        return False
                return seq(ops, i + 1, pos, k, maybe)
            if op is C.ASSERT_NOT and seq(sub.data, 0, pos, lambda q: True, False):
                return False  # what must not follow surely follows
            return seq(ops, i + 1, pos, k, maybe)
        if pos >= n:
            return maybe  # all of w consumed: the rest is not known
        ch = w[pos]
        if ch == DIG:  # some digit
            if op is C.LITERAL:
                return maybe and chr(av).isdecimal() and seq(ops, i + 1, pos + 1, k, maybe)
            if op is C.NOT_LITERAL:
                return (maybe or not chr(av).isdecimal()) and seq(ops, i + 1, pos + 1, k, maybe)
            if op is C.IN:
                return (_digit_may(av) if maybe else _digit_sure(av)) and seq(ops, i + 1, pos + 1, k, maybe)
        if op is C.LITERAL:
            return ch == chr(av) and seq(ops, i + 1, pos + 1, k, maybe)
        if op is C.NOT_LITERAL:
            return ch != chr(av) and seq(ops, i + 1, pos + 1, k, maybe)
        if op is C.IN:
            hit = _in_class(av, ch)
            if not maybe and not _sure_class(av):
                return False
            return hit and seq(ops, i + 1, pos + 1, k, maybe)
        if op is C.ANY:  # any character ("\n" too under DOTALL)
            return (maybe or w[pos] != "\n") and seq(ops, i + 1, pos + 1, k, maybe)
        if op is C.SUBPATTERN:
            if av[1] or av[2]:
                return maybe  # scoped flags ("(?i:...)"): not read here
            return seq(av[3].data, 0, pos, lambda q: seq(ops, i + 1, q, k, maybe), maybe)
        if op is C.ATOMIC_GROUP:
            return maybe and seq(av.data, 0, pos, lambda q: seq(ops, i + 1, q, k, maybe), maybe)
        if op is C.BRANCH:
            return any(seq(alt.data, 0, pos, lambda q: seq(ops, i + 1, q, k, maybe), maybe)
                       for alt in av[1])
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            if op is C.POSSESSIVE_REPEAT and not maybe:
                return False
            lo, hi, sub = av

            def rep(count: int, q: int) -> bool:
                if q >= n and maybe:
                    return True
                if count >= lo and seq(ops, i + 1, q, k, maybe):
                    return True
                if count >= hi:
                    return False
                # each further repetition must consume something (w is short: this ends)
                return seq(sub.data, 0, q, lambda r: r > q and rep(count + 1, r), maybe)

            return rep(0, pos)
        return maybe  # group references, conditionals, ...: may match, not surely

    return seq(items, 0, 0, lambda q: True, True)


_PLAIN = re.compile(r"(?:[^\\.^$*+?{}\[\]()|]|\\[.\-/@:#&%'\"!,;<>=~`])+")


def literals(gate: str) -> tuple[str, ...] | None:
    """The strings of a gate that is an alternation of plain literals ("http|www\\."), or
    None. Such a gate is checked with ``in`` (a substring search, faster than a regex)."""
    parts = gate.split("|")
    if not all(p and _PLAIN.fullmatch(p) for p in parts):
        return None
    return tuple(re.sub(r"\\(.)", r"\1", p) for p in parts)


class _Literals:
    """A gate made of literals: ``search`` answers whether any of them is in the text."""

    __slots__ = ("lits",)

    def __init__(self, lits: tuple[str, ...]) -> None:
        self.lits = lits

    def search(self, text: str) -> bool | None:
        for lit in self.lits:
            if lit in text:
                return True
        return None


class Scanner:
    """Finds the matches of many regexes over one text, each as ``finditer`` would.

    ``regexes``: (regex source, flags, on_lower) per rule; ``gates``: per rule, None or a regex
    that every match of the rule contains (searched in the same text): an unanchored rule is only
    run on texts where its gate is found (a fast pre-check; equal gates are searched once);
    ``heads``: per rule, None or the lower-case words every match starts with: given the tokens
    of the text, such a rule is only tried where one of them starts (set look-ups, no scan).
    :meth:`scan` yields
    (rule index, :class:`re.Match`), each rule's matches in text order (the matches of different
    rules may interleave).
    """

    def __init__(self, regexes: Sequence[tuple[str, int, bool]],
                 gates: Sequence[str | None] | None = None,
                 heads: Sequence[Sequence[str] | None] | None = None) -> None:
        self.compiled = [re.compile(src, flags) for src, flags, _ in regexes]
        gate_rx: dict[str, Any] = {}
        self.gates = [gate_rx.setdefault(g, _Literals(lits) if (lits := literals(g)) else re.compile(g))
                      if g else None for g in (gates or [None] * len(regexes))]
        self.on_lower = [low for _, _, low in regexes]
        self.groups = [rx.groups for rx in self.compiled]
        self.heads = [frozenset(h) if h else None for h in (heads or [None] * len(regexes))]
        #: the heads of all rules: one pass over the tokens finds where any of them may start
        self.all_heads = frozenset().union(*(h for h in self.heads if h))
        self.anchored: list[int] = []
        self.free: list[int] = []
        punct: set[str] = set()
        for i, (src, flags, _) in enumerate(regexes):
            chars = first_chars(src) if not flags & re.IGNORECASE and not self.compiled[i].groupindex else None
            if chars is not None and (not (chars & (_ASCII_DIGITS | {DIGIT})) or digit_guarded(src)):
                self.anchored.append(i)
                punct |= {c for c in chars if c != DIGIT and c not in _ASCII_DIGITS}
            else:
                self.free.append(i)
        # candidate positions: the first digit of each run of digits, and the punctuation marks
        # the anchored rules may start with. One character class (the regex engine then skips
        # to candidates in C); a digit takes the rest of its run with it, so that the next
        # candidate is never inside a run
        marks = "".join(re.escape(c) for c in sorted(punct))
        self.candidates = re.compile(rf"[\d{marks}](?:(?<=\d)\d*)?")
        # the anchored rules, tried at each candidate position only where they may start: the
        # candidate's shape (a run of n digits, or its mark, and the character after) and the
        # character before it each give a set of rules (_may_start on the parsed rule, worked
        # out once per shape and per character: tables bounded by the alphabet, not by the
        # texts read); the rules in both sets are matched there, one by one
        self.sides = {low: [i for i in self.anchored if self.on_lower[i] == low] for low in (True, False)}
        self.sides = {low: m for low, m in self.sides.items() if m}
        self.parsed: dict[int, Any] = {}
        for i in self.anchored:
            tree = P.parse(regexes[i][0], 0)
            # flags change what literals, classes and \b mean: such rules are always tried
            if not tree.state.flags & (re.IGNORECASE | re.ASCII | re.LOCALE | re.DOTALL | re.MULTILINE):
                self.parsed[i] = tree.data
        self.marks = frozenset(punct)
        self._shape: dict[bool, dict[str, int]] = {low: {} for low in self.sides}
        self._before: dict[bool, dict[str, int]] = {low: {} for low in self.sides}
        self._members: dict[int, tuple[int, ...]] = {}
        self._runs = [DIG * k for k in range(KEY_DIGITS + 1)]

    def _mask(self, low: bool, w: str, before: str | None) -> int:
        """The rules of one side (bits) that may start a match with ``w`` after ``before``."""
        out = 0
        for i in self.sides[low]:
            if i not in self.parsed or _may_start(self.parsed[i], w, before):
                out |= 1 << i
        return out

    def _shape_mask(self, low: bool, w: str) -> int:
        table = self._shape[low]
        if len(table) >= KEY_CACHE:
            table.clear()
        got = table[w] = self._mask(low, w, None)
        return got

    def _before_mask(self, low: bool, key: str) -> int:
        table = self._before[low]
        if len(table) >= KEY_CACHE:
            table.clear()
        got = table[key] = self._mask(low, key[-1], key[:-1])
        return got

    def _rules_of(self, mask: int) -> tuple[int, ...]:
        got = self._members[mask] = tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
        return got

    def scan(self, text: str, low: str, starts: Sequence[int] | None = None,
             words: Sequence[str] | None = None) -> Iterator[tuple[int, re.Match[str]]]:
        """Matches per rule; ``starts``/``words``: the tokens of the text (offsets and lower-case
        forms), which let rules with heads skip the scan."""
        seen: dict[tuple[re.Pattern[str], bool], bool] = {}
        at: dict[str, list[int]] | None = None  # head word -> its tokens, for the rules with heads
        for i in self.free:
            on_lower = self.on_lower[i]
            gate = self.gates[i]
            if gate is not None:
                key = (gate, on_lower)
                hit = seen.get(key)
                if hit is None:
                    hit = seen[key] = gate.search(low if on_lower else text) is not None
                if not hit:
                    continue
            heads = self.heads[i]
            if heads is not None and words is not None and starts is not None:
                if at is None:
                    at = {}
                    for k in compress(range(len(words)), map(self.all_heads.__contains__, words)):
                        at.setdefault(words[k], []).append(k)
                mine = [at[w] for w in heads.intersection(at)]
                if not mine:
                    continue
                rx, s, last = self.compiled[i], (low if on_lower else text), 0
                for k in (mine[0] if len(mine) == 1 else sorted(k for ks in mine for k in ks)):
                    p = starts[k]
                    if p < last:
                        continue
                    m = rx.match(s, p)
                    if m is not None:
                        last = max(m.end(), p + 1)
                        yield i, m
                continue
            for m in self.compiled[i].finditer(low if on_lower else text):
                yield i, m
        if not self.sides:
            return
        # every candidate position is tried with the rules (lower-cased and as is) that may
        # start there; each rule keeps its own non-overlapping order (last_end)
        last_end = [0] * len(self.compiled)
        sides = [(low_side, low if low_side else text, self._shape[low_side], self._before[low_side])
                 for low_side in self.sides]
        compiled, members_of, marks, runs = self.compiled, self._members, self.marks, self._runs
        cap = KEY_DIGITS
        for c in self.candidates.finditer(text):
            p, e = c.span()
            head = text[p]
            if head in marks:
                head = None
            else:
                run = e - p
            for low_side, s, shapes, befores in sides:
                if head is None:  # a mark and the character after
                    w = s[p:p + 2]
                    b = (s[p - 1] if p else "") + s[p]
                else:  # a run of digits and the character after
                    w = runs[run] + s[e:e + 1] if run < cap else runs[cap]
                    b = (s[p - 1] if p else "") + DIG
                mask = shapes.get(w)
                if mask is None:
                    mask = self._shape_mask(low_side, w)
                if not mask:
                    continue
                bm = befores.get(b)
                if bm is None:
                    bm = self._before_mask(low_side, b)
                mask &= bm
                if not mask:
                    continue
                rules = members_of.get(mask)
                if rules is None:
                    rules = self._rules_of(mask)
                for i in rules:
                    if p < last_end[i]:
                        continue
                    m = compiled[i].match(s, p)
                    if m is not None:
                        end = m.end()
                        last_end[i] = end if end > p else p + 1
                        yield i, m
