"""The combined scanner finds exactly what ``finditer`` per rule finds (made-up texts only)."""

from __future__ import annotations

import random
import re

from re import _parser as P  # type: ignore[attr-defined]

from sagehealth.privacy.deid.detector import default_rules
from sagehealth.privacy.deid.scanner import Scanner, _may_start


def _rules() -> list[tuple[str, int, bool]]:
    return [(p.regex.pattern, p.regex.flags & ~re.UNICODE, p.on_lower) for p in default_rules().patterns]


def _per_rule(sc: Scanner, text: str, low: str) -> list[tuple]:
    out = []
    for i, rx in enumerate(sc.compiled):
        for m in rx.finditer(low if sc.on_lower[i] else text):
            out.append((i, m.span()) + tuple(m.span(g) for g in range(1, sc.groups[i] + 1)))
    return sorted(out)


def _scanned(sc: Scanner, text: str, low: str) -> list[tuple]:
    return sorted((i, m.span()) + tuple(m.span(g) for g in range(1, sc.groups[i] + 1))
                  for i, m in sc.scan(text, low))


def test_scanner_equals_finditer_on_random_texts() -> None:
    sc = Scanner(_rules())
    rng = random.Random(14)
    alpha = list("0123456789" * 4) + list(" -/.:,'#(+)@%&\n\t") + list("abcdegmoxyAEMXYZsStT") + ["\u0663", "\u00e9", "_"]
    words = ["jan", "Main St", " y/o", " yo", "mg", " years old", "th", "of", "DE", "GB82", "1st",
             "->", "and", "to", "s/p", "'s", "x@y.org", "pm"]
    for _ in range(1500):
        text = "".join(rng.choice(words) if rng.random() < 0.15 else rng.choice(alpha)
                       for _ in range(rng.randint(1, 40)))
        low = text.lower()
        if len(low) != len(text):
            continue
        assert _scanned(sc, text, low) == _per_rule(sc, text, low), text


def test_scanner_equals_finditer_on_made_up_note() -> None:
    sc = Scanner(_rules())
    text = ("Seen 3/14/2021 at 10:30, BP 120/80, HR 92. Call (617) 555-0142 or 555 0142. "
            "Lives at 77 Larkspur Close, zip 02139. SSN 999-94-5397, '98, 1990s, 95 y/o, "
            "#A12345, 12-34567, 4111 1111 1111 1111, GB82WEST12345698765432, 10.0.0.1, 1st - 3rd jan 2020")
    assert _scanned(sc, text, text.lower()) == _per_rule(sc, text, text.lower())
    # the first character of the text, and the same text again (remembered keys)
    assert _scanned(sc, text[5:], text[5:].lower()) == _per_rule(sc, text[5:], text[5:].lower())


def test_may_start_is_a_necessary_condition() -> None:
    def may(rx: str, w: str, before: str = " ") -> bool:
        return _may_start(P.parse(rx, 0).data, w, before)

    assert may(r"\d{3}-\d{4}", "555-")
    assert not may(r"\d{3}-\d{4}", "55 ")  # two digits, then no dash
    assert may(r"\d{3}-\d{4}", "555")  # the rest is not shown: maybe
    assert not may(r"(?<![\d/])\d{2}", "12 ", "/")  # the look-behind decides
    assert may(r"(?<![\d/])\d{2}", "12 ", "a")
    assert not may(r"(?<=\s)\d{5}", "02139", "")  # nothing before the text
    assert not may(r"\b\d+", "12", "a")  # no word boundary after a letter
    assert not may(r"\d{2}(?!\s*mg)", "12 mg")  # what must not follow surely follows
    assert may(r"\d{2}(?!\s*mg)", "12 m")  # "12 ml" may follow
    assert may(r"\d{2}(?=x)", "12 ")  # look-aheads other than these count as true
