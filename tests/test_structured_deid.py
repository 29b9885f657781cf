"""Structured de-identification: research-zone rows carry no identified value of the clinical zone."""

from __future__ import annotations

import re
from datetime import date

import pytest

from sagehealth import Ecosystem
from sagehealth.errors import ConfigError
from sagehealth.privacy.structured import RULES, RowDeidentifier
from helpers import STEWARD

KEY = "structured-test-key-0123456789"
TABLES = ["patients", "encounters", "events", "documents", "imaging_studies", "imaging_series",
          "imaging_instances", "variants", "claims", "directory", "fhir_other"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from sagehealth.demo import sample_root

    eco = Ecosystem.open(tmp_path_factory.mktemp("s") / "store", STEWARD)
    for sub in ("fhir", "omop", "notes", "dicom", "vcf"):
        eco.ingest([sample_root() / sub])
    return eco


def _identified_values(eco: Ecosystem) -> tuple[set[str], dict[str, set[str]]]:
    """Identifying values that must never reach the research zone: ids everywhere (global),
    and each patient's names, address, telecom and birth date (per patient)."""
    glob: set[str] = set()
    per: dict[str, set[str]] = {}
    for p in eco.lake.read("patients").to_pylist():
        glob.add(p["patient_id"])
        mine = per.setdefault(p["patient_id"], set())
        for k in ("family_name", "given_names", "address_line"):
            if p[k]:
                mine.update(w for w in re.split(r"[\s,]+", p[k]) if len(w) > 2 and not w.isdigit())
        for ident in p["identifiers"] or []:
            if ident["value"] and len(ident["value"]) > 4:
                glob.add(ident["value"])
        for t in p["telecom"] or []:
            if t["value"]:
                glob.add(t["value"])
        if p["birth_date"]:
            mine.add(p["birth_date"].isoformat())
    for st in eco.lake.read("imaging_studies").to_pylist():
        glob.update(v for v in (st["source_patient_id"], st["accession"], st["study_uid"]) if v and len(v) > 3)
    for v in eco.lake.read("variants").to_pylist():
        if v["sample_id"]:
            glob.add(v["sample_id"])
    return glob, per


def test_no_identified_value_reaches_the_research_rows(store):
    deid = RowDeidentifier(KEY, reference=date(2026, 11, 29))
    glob, per = _identified_values(store)
    assert len(glob) > 30 and len(per) == 8
    by_pseudonym = {deid.pseudonym(pid): vals for pid, vals in per.items()}
    leaks: list[tuple[str, str]] = []
    rows = 0
    for table in TABLES:
        for row in store.lake.read(table).to_pylist():
            out = deid.row(table, row)
            if table in ("directory", "fhir_other"):
                assert out is None  # never enters the research zone
                continue
            rows += 1
            blob = repr(out)
            leaks += [(table, v) for v in glob if v in blob]
            mine = by_pseudonym.get(out.get("patient_id") or "", set())
            leaks += [(table, v) for v in mine if re.search(rf"\b{re.escape(v)}\b", blob)]
    assert rows > 1000 and leaks == []


def test_same_patient_same_pseudonym_and_intervals_survive(store):
    deid = RowDeidentifier(KEY)
    enc = [r for r in store.lake.read("encounters").to_pylist() if r["start"] and r["end"]][:20]
    for r in enc:
        out = deid.row("encounters", r)
        assert out["patient_id"] == deid.pseudonym(r["patient_id"]).__str__()
        assert out["patient_id"].startswith("psn_") and out["patient_id"] != r["patient_id"]
        assert out["end"] - out["start"] == r["end"] - r["start"]
        shift = (out["start"] - r["start"]).days
        assert -365 <= shift <= -1
    other = RowDeidentifier("another-key-0123456789abcdef")
    assert other.pseudonym("p1") != deid.pseudonym("p1")


def test_birth_year_zip3_and_age_bucket():
    deid = RowDeidentifier(KEY, reference=date(2026, 1, 1))
    row = {"row_id": "pat_1", "patient_id": "p1", "birth_date": date(1950, 6, 7),
           "postal_code": "02115", "family_name": "Doe", "city": "Boston", "state": "MA"}
    out = deid.row("patients", row)
    assert out["birth_date"] == date(1950, 1, 1) and out["postal_code"] == "021"
    assert out["family_name"] is None and out["city"] is None and out["state"] == "MA"
    assert deid.row("patients", {**row, "postal_code": "03601"})["postal_code"] == "000"
    old = deid.row("patients", {**row, "birth_date": date(1920, 3, 3)})["birth_date"]
    assert old == date(1936, 1, 1)  # over 89: one bucket (reference year - 90)


def test_documents_text_is_deidentified_and_sections_recomputed(store):
    deid = RowDeidentifier(KEY)
    docs = [d for d in store.lake.read("documents").to_pylist() if d["patient_id"] and d["text"]][:5]
    for d in docs:
        out = deid.row("documents", d)
        assert out["text"] != d["text"] or not d["sections"]
        for sec in out["sections"]:
            assert 0 <= sec["start"] < sec["end"] <= len(out["text"])


def test_unknown_column_is_dropped_and_key_is_required(monkeypatch):
    deid = RowDeidentifier(KEY)
    assert deid.row("events", {"row_id": "evt_1", "patient_id": "p", "secret_note": "x"})["secret_note"] is None
    assert set(RULES) >= {"patients", "documents", "variants"}
    monkeypatch.delenv("SAGEHEALTH_DEID_KEY", raising=False)
    with pytest.raises(ConfigError):
        RowDeidentifier()
