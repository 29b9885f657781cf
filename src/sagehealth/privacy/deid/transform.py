"""Turning detected PHI into de-identified text: typed tags or consistent surrogates.

``tags`` replaces each span with its type (``[NAME]``, ``[DATE]``). ``surrogate`` replaces it
with a realistic value chosen by a keyed hash (HMAC-SHA256 of the secret key, the patient and
the normalised original), so the same name of one patient becomes the same surrogate in every
note, and dates move by a per-patient offset (1 to 365 days back) derived from the same key,
so intervals between dates survive. The key never leaves configuration; without one,
``surrogate`` mode refuses to run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from sagehealth.errors import ConfigError
from sagehealth.privacy.deid.spans import Span

KEY_ENV = "SAGEHEALTH_DEID_KEY"
MODES = ("tags", "surrogate")

_MDY = re.compile(r"^(\d{1,2})([/-])(\d{1,2})(?:\2(\d{2}|\d{4}))?$")
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")


def secret_key(value: str | bytes | None = None) -> bytes:
    """The de-identification key: ``value``, else ``$SAGEHEALTH_DEID_KEY``; at least 16 bytes."""
    raw = value if value is not None else os.environ.get(KEY_ENV)
    if not raw:
        raise ConfigError(f"no de-identification key: set {KEY_ENV} (at least 16 characters)")
    key = raw.encode() if isinstance(raw, str) else raw
    if len(key) < 16:
        raise ConfigError(f"the de-identification key in {KEY_ENV} is too short (at least 16 characters)")
    return key


@lru_cache(maxsize=1)
def _surrogate_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    import names

    d = os.path.dirname(names.__file__)

    def read(fname: str, limit: int) -> tuple[str, ...]:
        with open(os.path.join(d, fname), encoding="ascii") as fh:
            return tuple(line.split()[0].title() for _, line in zip(range(limit), fh) if line.strip())

    return read("dist.female.first", 1000) + read("dist.male.first", 1000), read("dist.all.last", 5000)


_CITIES = ("Springfield", "Riverton", "Fairview", "Greenville", "Franklin", "Clinton", "Madison",
           "Georgetown", "Salem", "Milton", "Oakdale", "Ashland", "Burlington", "Dover", "Kingston")
_PLACES = ("Riverside", "Lakeside", "Hillcrest", "Maplewood", "Brookside", "Pinecrest", "Oakwood",
           "Westfield", "Eastgate", "Northbrook")


@dataclass
class Transformer:
    """Replaces PHI spans; ``key`` is required for ``surrogate`` mode."""

    mode: str = "tags"
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown de-identification mode {self.mode!r}; modes: {', '.join(MODES)}")
        if self.mode == "surrogate" and self.key is None:
            self.key = secret_key()

    def apply(self, text: str, spans: list[Span], patient: str = "") -> str:
        """``text`` with every span replaced (spans must be sorted and non-overlapping)."""
        out, pos = [], 0
        for sp in spans:
            out.append(text[pos:sp.start])
            out.append(self.replacement(sp, patient))
            pos = sp.end
        out.append(text[pos:])
        return "".join(out)

    def replacement(self, sp: Span, patient: str) -> str:
        if self.mode == "tags":
            return f"[{sp.type}]"
        kind = sp.type
        if kind == "DATE":
            shifted = self.shift_date(sp.text, patient)
            return shifted if shifted is not None else "[DATE]"
        h = self._hash(patient, kind, _normalise(sp.text))
        if kind == "NAME":
            firsts, lasts = _surrogate_names()
            pool = firsts if len(sp.text) > 1 and _looks_first(sp.text) else lasts
            value = pool[h % len(pool)] if len(sp.text) > 1 else "ABCDEFGHJKLMNPRSTW"[h % 18]
            return _match_case(value, sp.text)
        if kind in ("LOCATION", "HOSPITAL"):
            pool = _CITIES if kind == "LOCATION" else _PLACES
            return _match_case(pool[h % len(pool)], sp.text)
        if kind == "AGE":
            return "90+"
        # numbers and ids: same shape, digits replaced
        digits = iter(str(h) * 4)
        return "".join(next(digits) if c.isdigit() else c for c in sp.text)

    def date_offset(self, patient: str) -> int:
        """The patient's date shift in days (-365 .. -1), the same in text and structured data."""
        return -1 - self._hash(patient, "date-offset") % 365

    def shift_date(self, value: str, patient: str) -> str | None:
        """A numeric date moved by the patient's offset, in its own format; None if not numeric."""
        m = _ISO.match(value.strip())
        try:
            if m:
                d = date(int(m.group(1)), int(m.group(2)), int(m.group(3))) + timedelta(self.date_offset(patient))
                return d.isoformat()
            m = _MDY.match(value.strip())
            if m:
                month, sep, day, year = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
                y = 2000 if year is None else (int(year) + (1900 if int(year) > 30 else 2000) if len(year) == 2 else int(year))
                d = date(y, month, day) + timedelta(self.date_offset(patient))
                core = f"{d.month}{sep}{d.day}"
                if year is None:
                    return core
                return f"{core}{sep}{d.year % 100:02d}" if len(year) == 2 else f"{core}{sep}{d.year}"
        except ValueError:
            return None
        return None

    def _hash(self, *parts: str) -> int:
        assert self.key is not None
        msg = "\x1f".join(parts).encode("utf-8", "surrogatepass")
        return int.from_bytes(hmac.new(self.key, msg, hashlib.sha256).digest()[:8], "big")


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").split())


@lru_cache(maxsize=1)
def _first_name_set() -> frozenset[str]:
    return frozenset(_surrogate_names()[0])


def _looks_first(text: str) -> bool:
    return text.title() in _first_name_set()


def _match_case(value: str, original: str) -> str:
    if original.isupper():
        return value.upper()
    if original.islower():
        return value.lower()
    return value
