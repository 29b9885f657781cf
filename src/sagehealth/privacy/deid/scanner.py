"""One pass for many regexes: the patterns of ``rules.json`` compiled into a combined scanner.

Python's ``re`` tries a pattern at every position of the text unless the pattern starts with a
literal or a character class; rules that start with a look-behind or ``\\b`` ("a date not after a
digit") therefore cost a full scan each, and 40 such scans were most of the detector's time.

Most rules can only start at a digit that begins a run of digits (their look-behind or ``\\b``
forbids a digit before) or at a rare punctuation mark ("#", "(", "+", "'"). Those rules are
*anchored*: one fast scan finds the candidate positions, and at each of them a single combined
regex — every anchored rule as an optional capturing look-ahead — tells which rules match there.
Each rule keeps its own left-to-right, non-overlapping semantics (a rule is not tried before the
end of its previous match), so the result is exactly that of ``finditer`` per rule. The other
rules (those that may start at a letter) are run one by one, as before.

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
    (rule index, match), each rule's matches in text order (the matches of different rules may
    interleave), where ``match`` answers ``start``/``end``/``span`` for that rule's own
    groups (a :class:`re.Match` for unanchored rules, a :class:`_Sub` view for anchored ones).
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
        # the anchored rules as optional look-aheads, one combined regex per text (lower/as is)
        self.combined: dict[bool, tuple[re.Pattern[str], list[tuple[int, int]]]] = {}
        for low in (True, False):
            members = [i for i in self.anchored if self.on_lower[i] == low]
            if not members:
                continue
            parts, where, group = [], [], 1
            for i in members:
                parts.append(f"(?=({regexes[i][0]}))?")
                where.append((i, group))
                group += 1 + self.compiled[i].groups
            # ... and the whole fails unless one of them matched (nested conditionals), so that
            # most candidates cost one failed match and no Python work
            tail = "(?!)"
            for _, g in reversed(where):
                tail = f"(?({g})|{tail})"
            self.combined[low] = (re.compile("".join(parts) + tail), where)

    def scan(self, text: str, low: str, starts: Sequence[int] | None = None,
             words: Sequence[str] | None = None) -> Iterator[tuple[int, re.Match[str] | _Sub]]:
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
        if not self.combined:
            return
        # every candidate position is tried with both combined regexes (lower-cased and as is)
        sides = [(rx.match, low if low_side else text, where, [0] * len(where))
                 for low_side, (rx, where) in self.combined.items()]
        groups = self.groups
        for c in self.candidates.finditer(text):
            p = c.start()
            for match, s, where, last_end in sides:
                m = match(s, p)
                if m is None:
                    continue
                regs = m.regs
                for k, (i, g) in enumerate(where):
                    if regs[g][0] >= 0 and p >= last_end[k]:
                        end = regs[g][1]
                        last_end[k] = end if end > p else p + 1
                        yield i, _Sub(regs, g, groups[i])


class _Sub:
    """The groups of one rule inside a combined match, numbered as in the rule itself."""

    __slots__ = ("regs", "base", "ngroups")

    def __init__(self, regs: tuple[tuple[int, int], ...], base: int, ngroups: int) -> None:
        self.regs, self.base, self.ngroups = regs, base, ngroups

    def span(self, group: int = 0) -> tuple[int, int]:
        if group > self.ngroups:
            raise IndexError("no such group")
        return self.regs[self.base + group]

    def start(self, group: int = 0) -> int:
        return self.span(group)[0]

    def end(self, group: int = 0) -> int:
        return self.span(group)[1]
