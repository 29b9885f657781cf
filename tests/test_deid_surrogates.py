"""Surrogates share nothing identifying with the original: whole values replaced, keyed, in the
original's format (issue 14, item 1: e-mails, URLs and lettered ids used to survive)."""

from __future__ import annotations

import re

import pytest

from sagehealth.privacy.deid import Span, deidentify
from sagehealth.privacy.deid.transform import Transformer

KEY = b"test-key-0123456789abcdef"


def surrogate(kind: str, value: str, patient: str = "p1", key: bytes = KEY) -> str:
    return Transformer("surrogate", key).replacement(Span(0, len(value), kind, value), patient)


def _alnum(s: str) -> str:
    """The identifying letters and digits (a URL's scheme and www., and the reserved .invalid
    of a surrogate, identify nobody)."""
    s = re.sub(r"^[a-z]+://", "", s.lower())
    s = s[4:] if s.startswith("www.") else s
    return re.sub(r"[^0-9a-z]", "", s.removesuffix(".invalid"))


def _shared_runs(a: str, b: str, n: int = 3) -> set[str]:
    """Runs of ``n`` letters/digits the two strings have in common."""
    a, b = _alnum(a), _alnum(b)
    return {a[i:i + n] for i in range(len(a) - n + 1)} & {b[i:i + n] for i in range(len(b) - n + 1)}


@pytest.mark.parametrize(("kind", "value"), [
    ("EMAIL", "zvarnadoe@example.org"),
    ("EMAIL", "Jane.Q.Public+clinic@mail.stjude-hospital.org"),
    ("URL", "https://mychart.example.org/patient/8812?mrn=447182"),
    ("URL", "www.varnadoe-family.net/blog"),
    ("ID", "3f2b9c1e-7a4d-4e2b-9c11-0a6f5d2e8b47"),
    ("ID", "AB-99321-XZ"),
    ("MRN", "MRN0047182Q"),
    ("ACCOUNT", "ACCT-55120-KL"),
    ("HEALTH_PLAN", "XEH912883341"),
    ("LICENSE", "D1234-56789-01234"),
    ("DEVICE_ID", "SN-77AC-1290-ZZ"),
    ("VEHICLE_ID", "7ABC123"),
    ("SSN", "999-94-5397"),
    ("PHONE", "(617) 555-0143"),
    ("IP", "192.168.14.201"),
])
def test_surrogate_shares_no_identifying_part_with_the_original(kind, value):
    out = surrogate(kind, value)
    assert out != value
    assert value.lower() not in out.lower()
    # no three letters/digits in a row survive (the old surrogates kept letters and domains)
    assert not _shared_runs(value, out), (kind, out)
    # no position keeps its own letter or digit
    if len(out) == len(value):
        assert all(not (a.isalnum() and a == b) for a, b in zip(value, out)), (kind, out)


@pytest.mark.parametrize(("kind", "value", "shape"), [
    ("EMAIL", "zvarnadoe@example.org", r"^[a-z][a-z.]*\d*@[a-z0-9-]+\.invalid$"),
    ("URL", "https://mychart.example.org/patient/8812", r"^https://[a-z0-9-]+\.invalid/[a-z0-9]+$"),
    ("URL", "www.varnadoe-family.net", r"^www\.[a-z0-9-]+\.invalid$"),
    ("ID", "3f2b9c1e-7a4d-4e2b-9c11-0a6f5d2e8b47",
     r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    ("ID", "AB-99321-XZ", r"^[A-Z]{2}-\d{5}-[A-Z]{2}$"),
    ("ID", "BC-4410927", r"^[A-Z]{2}-\d{7}$"),
    ("ID", "3F2B9C1E7A4D4E2B", r"^[0-9A-F]{16}$"),
    ("SSN", "999-94-5397", r"^\d{3}-\d{2}-\d{4}$"),
    ("PHONE", "(617) 555-0143", r"^\(\d{3}\) \d{3}-\d{4}$"),
    ("IP", "192.168.14.201", r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$"),
])
def test_surrogate_keeps_the_format(kind, value, shape):
    assert re.match(shape, surrogate(kind, value)), surrogate(kind, value)


def test_surrogates_are_keyed_and_consistent():
    v = "zvarnadoe@example.org"
    assert surrogate("EMAIL", v) == surrogate("EMAIL", v)            # same patient, same value
    assert surrogate("EMAIL", v.upper()) == surrogate("EMAIL", v)    # case does not matter
    assert surrogate("EMAIL", v, key=b"another-key-0123456789") != surrogate("EMAIL", v)
    assert surrogate("ID", "AB-99321-XZ", patient="p2") != surrogate("ID", "AB-99321-XZ")
    # long identifiers are replaced whole, however long
    long_id = "X" * 40 + "1234567890" * 6
    out = surrogate("ID", long_id)
    assert len(out) == len(long_id) and not _shared_runs(long_id, out)


def test_surrogate_text_carries_none_of_the_identifiers():
    note = ("Email zvarnadoe@example.org or visit https://mychart.example.org/p/8812. "
            "Device id 3f2b9c1e-7a4d-4e2b-9c11-0a6f5d2e8b47.")
    r = deidentify(note, mode="surrogate", key=KEY, patient="p1")
    for ident in ("zvarnadoe", "example.org", "mychart", "8812", "3f2b9c1e", "0a6f5d2e8b47"):
        assert ident not in r.text, (ident, r.text)
