"""Turning detected PHI into de-identified text: typed tags or consistent surrogates.

``tags`` replaces each span with its type (``[NAME]``, ``[DATE]``). ``surrogate`` replaces it
with a realistic value chosen by a keyed hash (HMAC-SHA256 of the secret key, the patient and
the normalised original), so the same name of one patient becomes the same surrogate in every
note, and dates move by a per-patient offset (1 to 365 days back) derived from the same key,
so intervals between dates survive. The key never leaves configuration; without one,
``surrogate`` mode refuses to run.

Every surrogate replaces the *whole* value and shares nothing identifying with it: e-mails
become a surrogate name at a ``.invalid`` domain (RFC 2606: it can never be a real host), URLs
keep only their scheme and shape, identifiers keep their format (digits stay digits, hex stays
hex, letters stay letters of the same case, separators stay) but every letter and digit is
drawn from the keyed stream and differs from the one it replaces; a candidate that still has
three letters or digits in a row in common with the original is drawn again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import date, timedelta
from collections.abc import Callable
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
_UNIT = re.compile(r"^(?:apartment|apt|unit|suite|ste|room|rm|floor|fl|bldg|building|p\.?\s?o\.?\s?box|box|#)"
                   r"\.?\s*#?\s*", re.I)
_STREETS = ("Street", "Avenue", "Road", "Lane", "Drive", "Court", "Place", "Way")
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
        if kind == "AGE":
            return "90+"
        text = sp.text
        if kind == "NAME":
            firsts, lasts = _surrogate_names()
            if len(text) == 1:
                return self._keyed(patient, kind, text, lambda r: _match_case(
                    _pick(r, "ABCDEFGHJKLMNPRSTW".replace(text.upper(), "")), text))
            pool = firsts if _looks_first(text) else lasts
            return self._keyed(patient, kind, text, lambda r: _match_case(_pick(r, pool), text))
        cue = _UNIT.match(text) if kind == "LOCATION" else None
        if cue:  # "Apt 4B", "Suite 210", "P.O. Box 55": the word kept, the number replaced
            rest = text[cue.end():]
            return cue.group(0) + self._keyed(patient, kind, rest, lambda r: _reshape(r, rest))
        if kind == "LOCATION" and text[:1].isdigit():  # a street address or a ZIP code
            if text.replace("-", "").replace(" ", "").isdigit():
                return self._keyed(patient, kind, text, lambda r: _reshape(r, text))
            return self._keyed(patient, kind, text, lambda r: _match_case(
                f"{1 + r.int(9899)} {_pick(r, _surrogate_names()[1])} {_pick(r, _STREETS)}", text))
        if kind in ("LOCATION", "HOSPITAL"):
            pool = _CITIES if kind == "LOCATION" else _PLACES
            return self._keyed(patient, kind, text, lambda r: _match_case(_pick(r, pool), text))
        if kind == "EMAIL":
            return self._keyed(patient, kind, text, _email)
        if kind == "URL":
            return self._keyed(patient, kind, text, lambda r: _url(r, text))
        if kind == "IP" and _IPV4.match(text):
            return self._keyed(patient, kind, text, lambda r: ".".join(
                str(v) for v in (1 + r.int(223), r.int(256), r.int(256), 1 + r.int(254))))
        return self._keyed(patient, kind, text, lambda r: _reshape(r, text))

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

    def _keyed(self, patient: str, kind: str, original: str, make: Callable[[_Stream], str]) -> str:
        """``make`` fed by the keyed stream of (patient, kind, original); drawn again (a new
        stream) while the candidate shares a run of letters or digits with the original."""
        assert self.key is not None
        value = original
        for attempt in range(_ATTEMPTS):
            value = make(_Stream(self.key, (patient, kind, _normalise(original), str(attempt))))
            if not _shares(original, value):
                break
        return value


#: draws of a surrogate before the last one is taken (each draw is fresh keyed randomness)
_ATTEMPTS = 32
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)")
_WORDS = ("alder", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper",
          "kestrel", "linden", "meadow", "nimbus", "orchid", "prairie", "quartz", "rowan", "summit",
          "tundra", "upland", "violet", "willow", "zephyr")


class _Stream:
    """Keyed pseudo-random numbers: HMAC-SHA256 of the key and the parts, in counter mode."""

    def __init__(self, key: bytes, parts: tuple[str, ...]) -> None:
        self._key = key
        self._msg = "\x1f".join(parts).encode("utf-8", "surrogatepass")
        self._buf = b""
        self._counter = 0

    def int(self, n: int) -> int:
        """A number in ``range(n)`` (n < 2**16; the bias of one modulo is below 0.04%)."""
        if len(self._buf) < 4:
            self._counter += 1
            self._buf += hmac.new(self._key, self._msg + self._counter.to_bytes(4, "big"), hashlib.sha256).digest()
        value, self._buf = int.from_bytes(self._buf[:4], "big"), self._buf[4:]
        return value % n


def _pick(r: _Stream, pool: tuple[str, ...] | str) -> str:
    return pool[r.int(len(pool))]


def _other(r: _Stream, alphabet: str, c: str) -> str:
    """A character of ``alphabet`` that is not ``c`` (keyed)."""
    i = alphabet.find(c)
    return alphabet[r.int(len(alphabet))] if i < 0 else alphabet[(i + 1 + r.int(len(alphabet) - 1)) % len(alphabet)]


def _reshape(r: _Stream, text: str) -> str:
    """Every letter and digit replaced by another of its kind (hex stays hex, case kept),
    separators kept: the identifier's format without any of its characters."""
    alnum = re.sub(r"[^0-9A-Za-z]", "", text)
    hexish = bool(_HEX.match(alnum)) and not alnum.isdigit() and len(alnum) >= 12
    upper = alnum.upper() == alnum
    out = []
    for c in text:
        if hexish and c in "0123456789abcdefABCDEF":
            h = _other(r, "0123456789abcdef", c.lower())
            out.append(h.upper() if upper else h)
        elif c.isdigit():
            out.append(_other(r, "0123456789", c if c in "0123456789" else ""))
        elif c.isalpha():
            low = _other(r, "abcdefghijklmnopqrstuvwxyz", c.lower() if c.isascii() else "")
            out.append(low.upper() if c.isupper() else low)
        else:
            out.append(c)
    return "".join(out)


def _email(r: _Stream) -> str:
    firsts, lasts = _surrogate_names()
    local = f"{_pick(r, firsts)}.{_pick(r, lasts)}".lower()
    return f"{local}{r.int(100)}@{_pick(r, _WORDS)}{_pick(r, _WORDS)}.invalid"


def _url(r: _Stream, text: str) -> str:
    """The URL's scheme (and a leading www.) kept; host, path and query replaced."""
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else ""
    rest = text[len(scheme):]
    www = "www." if rest.lower().startswith("www.") else ""
    host = f"{www}{_pick(r, _WORDS)}-{_pick(r, _WORDS)}.invalid"
    has_path = "/" in rest.rstrip("/") or "?" in rest
    path = "/" + "".join(_pick(r, "abcdefghijkmnpqrstuvwxyz23456789") for _ in range(8)) if has_path else ""
    return scheme + host + path


def _shares(original: str, value: str, n: int = 3) -> bool:
    """Whether the two have a run of ``n`` letters/digits in common (case ignored; a URL's
    scheme and leading www. and the surrogate's own .invalid are not identifying)."""
    a, b = (_SCHEME.sub("", s.lower()) for s in (original, value))
    a, b = (s[4:] if s.startswith("www.") else s for s in (a, b))
    b = b.removesuffix(".invalid")
    a = re.sub(r"[^0-9a-z]", "", a)
    b = re.sub(r"[^0-9a-z]", "", b)
    if len(a) < n or len(b) < n:
        return bool(a) and a == b
    runs = {a[i:i + n] for i in range(len(a) - n + 1)}
    return any(b[i:i + n] in runs for i in range(len(b) - n + 1))


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
