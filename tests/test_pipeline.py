"""Pipeline behaviour across readers: worker processes, accounting, linking, planning."""

from __future__ import annotations

import json
from pathlib import Path


from sagehealth import Ecosystem
from sagehealth.data import pipeline
from sagehealth.data.detect import plan_inputs
from helpers import STEWARD


def _export(folder: Path, n: int = 3000) -> Path:
    folder.mkdir()
    lines = [json.dumps({"resourceType": "Patient", "id": f"p{i}", "gender": "male"}) for i in range(50)]
    for i in range(n):
        lines.append(json.dumps({
            "resourceType": "Observation", "id": f"o{i}", "status": "final",
            "subject": {"reference": f"Patient/p{i % 60}"},  # p50..p59 do not exist: dangling
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": i, "unit": "/min"},
        }))
        if i % 500 == 7:
            lines.append('{"resourceType": "Observation", "id": "broken"')  # malformed
    # patients first, as in a bulk export, then every observation
    (folder / "mixed.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def _snapshot(eco: Ecosystem) -> dict:
    return {
        "tables": eco.tables(),
        "events": sorted(eco.lake.sql("SELECT row_id, value_num, provenance_id FROM events").to_pylist(),
                         key=lambda r: r["row_id"]),
        "quarantine": sorted((q["locator"], q["reason"]) for q in eco.quarantine()),
    }


def test_worker_processes_give_the_same_store_as_one_process(tmp_path, monkeypatch):
    export = _export(tmp_path / "export")
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_BYTES", 0)
    serial = Ecosystem.open(tmp_path / "serial", STEWARD)
    s1 = serial.ingest([export], options={"workers": 0})
    parallel = Ecosystem.open(tmp_path / "parallel", STEWARD)
    # small slices so that several are in flight at once
    from sagehealth.data.sources.fhir import FhirReader

    split = FhirReader.split
    monkeypatch.setattr(FhirReader, "split", lambda self, p, c: split(self, p, c, block=16 << 10))
    s2 = parallel.ingest([export], options={"workers": 2})
    assert (s1.records_in, s1.ingested, s1.quarantined) == (s2.records_in, s2.ingested, s2.quarantined)
    assert s1.records_in == 50 + 3000 + 6
    assert s1.quarantined == 6 + 3000 // 60 * 10  # malformed lines + dangling references
    assert _snapshot(serial) == _snapshot(parallel)


def test_dicom_and_vcf_link_to_patients_by_identifier(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([samples / "fhir" / "linked"])
    eco.ingest([samples / "dicom"])
    eco.ingest([samples / "vcf"])
    ct = eco.lake.sql("SELECT patient_id, source_patient_id FROM imaging_studies "
                 "WHERE source_patient_id = '1CT1'").to_pylist()
    assert ct == [{"patient_id": "sage-demo-001", "source_patient_id": "1CT1"}]
    mr = eco.lake.sql("SELECT patient_id FROM imaging_studies WHERE source_patient_id = '4MR1'").to_pylist()
    assert mr == [{"patient_id": None}]  # no patient holds that identifier
    linked = eco.lake.sql("SELECT sample_id, gene, consequence FROM variants "
                     "WHERE patient_id = 'sage-demo-001'").to_pylist()
    assert linked == [{"sample_id": "15G18300", "gene": "LDLR", "consequence": "missense_variant"}]
    assert eco.lake.sql("SELECT count(*) AS n FROM variants WHERE patient_id IS NULL").to_pylist() == [{"n": 2}]


def test_ambiguous_identifier_links_nobody(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    f = tmp_path / "Patient.ndjson"
    f.write_text("\n".join(json.dumps({"resourceType": "Patient", "id": pid,
                                       "identifier": [{"value": "1CT1"}]}) for pid in ("a", "b")))
    eco.ingest([f])
    eco.ingest([samples / "dicom"])
    assert eco.lake.sql("SELECT patient_id FROM imaging_studies WHERE source_patient_id = '1CT1'"
                   ).to_pylist() == [{"patient_id": None}]


def test_plan_orders_patients_first_and_skips_non_records(samples):
    units, warnings = plan_inputs([samples / "fhir"], "auto")
    names = [p.name for _, p in units]
    assert names.index("Patient.000.ndjson") < names.index("Encounter.000.ndjson") < names.index(
        "Condition.000.ndjson")
    assert "ATTRIBUTION.md" not in names and warnings == []


def test_demo_sample_data_ingests_clean(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    for sub in ("fhir", "omop", "notes", "dicom", "vcf", "literature"):
        s = eco.ingest([samples / sub])
        assert s.quarantined == 0, (sub, eco.quarantine())
        assert s.records_in == s.ingested > 0
    counts = eco.tables()
    assert counts["patients"] == 5 + 3 and counts["documents"] > 50 and counts["variants"] > 0
    assert counts["imaging_instances"] >= 4 and counts["literature"] == 30
