"""The research zone: filled by ingest with a key, free of identified values, honours consent."""

from __future__ import annotations

import re

import pytest

from sagehealth import Ecosystem
from sagehealth.errors import ConfigError
from helpers import STEWARD

KEY = "research-zone-test-key-0123456789"


@pytest.fixture
def store(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    for sub in ("fhir", "notes", "dicom", "vcf"):
        s = eco.ingest([samples / sub], options={"deid_key": KEY})
        assert s.research  # rows went to the research zone in the same run
    return eco


def test_ingest_fills_the_research_zone_in_the_same_version(store):
    counts = store.tables()
    for t in ("patients", "encounters", "events", "documents", "variants"):
        assert counts[f"research_{t}"] == counts[t], t
    assert counts["research_imaging_instances"] == counts["imaging_instances"]
    head = store.versions()[-1]
    assert "research_patients" in head.table_versions
    assert head.summary["research"]  # refreshed before that commit


def test_research_zone_holds_no_identified_value(store):
    from sagehealth.privacy.structured import RowDeidentifier

    deid = RowDeidentifier(KEY)
    tables = ("patients", "encounters", "events", "documents", "imaging_studies", "imaging_series",
              "imaging_instances", "variants", "claims")
    research = {t: store.lake.read(f"research_{t}").to_pylist() for t in tables}
    everything = "\n".join(repr(rows) for rows in research.values())
    for p in store.lake.read("patients").to_pylist():
        ids = {p["patient_id"]} | {i["value"] for i in p["identifiers"] or [] if i["value"] and len(i["value"]) > 4}
        assert not [v for v in ids if v in everything], p["patient_id"]
        # names and birth date: not in any research row of this patient
        mine = "\n".join(repr(r) for rows in research.values() for r in rows
                          if r.get("patient_id") == deid.pseudonym(p["patient_id"]))
        assert mine  # the patient is in the research zone
        personal = [w for w in (p["family_name"], p["given_names"]) if w and len(w) > 3]
        if p["birth_date"]:
            personal.append(p["birth_date"].isoformat())
        assert not [w for w in personal if re.search(rf"\b{re.escape(w)}\b", mine)], p["patient_id"]
        # street, city and phone numbers appear nowhere
        places = [w for w in (*(p["address_line"] or []), p["city"]) if w and len(w) > 3]
        places += [t["value"] for t in p["telecom"] or [] if t.get("value")]
        assert not [w for w in places if w in everything], p["patient_id"]
    # no research row keeps the timestamp of the clinical row it was made from
    for t in ("encounters", "events", "documents", "imaging_studies", "claims"):
        col = "date" if t in ("documents", "imaging_studies") else "start"
        shifted = {r["row_id"]: r[col] for r in research[t] if r.get(col)}
        clinical = store.lake.read(t, columns=["row_id", col]).to_pylist()
        pairs = [(r[col], shifted.get(deid.key_of("row_id", r["row_id"]))) for r in clinical if r[col]]
        assert pairs and all(new is not None and new != old for old, new in pairs), t


def test_reingest_adds_nothing_and_refresh_is_idempotent(store, samples):
    before = store.tables()
    store.ingest([samples / "fhir"], options={"deid_key": KEY})
    assert store.refresh_research(key=KEY) == {}
    assert store.tables() == before


def test_withdrawn_consent_removes_the_patient_everywhere_in_research(store, samples):
    pid = "sage-demo-001"
    assert store.lake.sql("SELECT count(*) AS n FROM research_variants").to_pylist()[0]["n"] > 0
    c = store.set_consent(pid, research_allowed=False, note="form 42", key=KEY)
    assert c.summary["research"]["removed"] > 0
    from sagehealth.privacy.structured import RowDeidentifier

    psn = RowDeidentifier(KEY).pseudonym(pid)
    for t in ("patients", "imaging_studies", "variants"):
        n = store.lake.sql(f"SELECT count(*) AS n FROM research_{t} WHERE patient_id = '{psn}'").to_pylist()[0]["n"]
        assert n == 0, t
    # a later ingest does not bring the patient back
    store.ingest([samples / "omop"], options={"deid_key": KEY})
    assert store.lake.sql(f"SELECT count(*) AS n FROM research_patients WHERE patient_id = '{psn}'").to_pylist() == [{"n": 0}]
    # the previous version still shows the research zone as it was (time travel)
    prev = c.version - 1
    assert store.lake.sql(f"SELECT count(*) AS n FROM research_patients WHERE patient_id = '{psn}'",
                     version=prev).to_pylist() == [{"n": 1}]


def test_without_a_key_the_research_zone_is_not_refreshed(tmp_path, samples, monkeypatch):
    monkeypatch.delenv("SAGEHEALTH_DEID_KEY", raising=False)
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    s = eco.ingest([samples / "fhir" / "linked"])
    assert any("research zone not refreshed" in w for w in s.warnings)
    assert eco.tables()["research_patients"] == 0


@pytest.mark.integration
def test_research_zone_of_the_shared_fhir_export_has_no_identified_value(tmp_path, shared):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    s = eco.ingest([shared / "fhir" / "bulk_ndjson_10patients"], options={"deid_key": KEY})
    assert s.research["research_documents"] == 1215
    from sagehealth.privacy.structured import RowDeidentifier

    deid = RowDeidentifier(KEY)
    docs = eco.lake.read("research_documents").to_pylist()
    for p in eco.lake.read("patients").to_pylist():
        mine = "\n".join(d["text"] or "" for d in docs if d["patient_id"] == deid.pseudonym(p["patient_id"]))
        assert mine, p["patient_id"]
        # Synthea names carry digits ("Devin82"): the whole name must be gone from the notes
        for name in (p["given_names"] or "").split() + [p["family_name"] or ""]:
            if len(name) > 3:
                assert not re.search(rf"\b{re.escape(name)}\b", mine), (p["patient_id"], name)
        assert p["patient_id"] not in mine


def test_a_different_key_is_refused_and_loses_nothing(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.ingest([samples / "vcf"], options={"deid_key": KEY})
    before = eco.tables()
    with pytest.raises(ConfigError, match="not the one this store's research zone was built with"):
        eco.ingest([samples / "omop"], options={"deid_key": "another-key-0123456789"})
    assert eco.tables() == before  # the failed run left the last good version
    eco.ingest([samples / "omop"], options={"deid_key": KEY})
    assert eco.tables()["research_patients"] > before["research_patients"]
    assert KEY not in (tmp_path / "s" / "deid-key.check").read_text()


def test_a_large_refresh_in_worker_processes_writes_the_same_rows(tmp_path, samples, monkeypatch):
    """Past PARALLEL_ROWS the refresh de-identifies in worker processes: the research zone it
    writes is row for row the one a refresh in this process writes."""
    from sagehealth.privacy import research

    def build(name: str, parallel: bool):
        monkeypatch.setattr(research, "PARALLEL_ROWS", 10 if parallel else 10**9)
        monkeypatch.setattr(research, "BATCH", 40)  # many batches: several in flight at once
        monkeypatch.setenv("SAGEHEALTH_WORKERS", "2")
        eco = Ecosystem.open(tmp_path / name, STEWARD)
        for sub in ("fhir", "notes"):
            eco.ingest([samples / sub], options={"deid_key": KEY, "index": False})
        return eco

    used: list[bool] = []
    close = research._Pool.close
    monkeypatch.setattr(research._Pool, "close", lambda self: (used.append(self.pool is not None), close(self)))
    serial, parallel = build("serial", False), build("parallel", True)
    assert not any(used[:2]) and all(used[2:])  # two ingests in this process, two with workers
    for t in ("patients", "encounters", "events", "documents"):
        a = sorted(map(repr, serial.lake.read(f"research_{t}").to_pylist()))
        b = sorted(map(repr, parallel.lake.read(f"research_{t}").to_pylist()))
        assert a == b and a, t
        assert len(a) == serial.lake.count(t)
