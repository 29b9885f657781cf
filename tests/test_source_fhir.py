"""FHIR reader and pipeline behaviour on FHIR input: mapping, references, bad input."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from sagehealth.data.sources.base import Bad, ReadContext, Record
from sagehealth.data.sources.fhir import FhirReader, map_resource
from sagehealth.errors import SourceNotFound, UnknownFormat
from helpers import STEWARD, clinician_of

PID = "p-1"


def patient(pid: str = PID, **extra) -> dict:
    return {
        "resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1950-02-03",
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
        "identifier": [{"system": "urn:mrn", "value": f"MRN-{pid}"}],
        "address": [{"line": ["1 Main St"], "city": "Boston", "state": "MA", "postalCode": "02115"}],
        **extra,
    }


def observation(oid: str, pid: str = PID, **extra) -> dict:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
        "effectiveDateTime": "2021-03-04T05:06:07-05:00",
        "valueQuantity": {"value": 105.5, "unit": "mg/dL"},
        "referenceRange": [{"low": {"value": 70}, "high": {"value": 100}}],
        **extra,
    }


def bundle(*resources: dict, urn: bool = True) -> dict:
    entries = []
    for r in resources:
        entries.append({"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
                        "request": {"method": "POST", "url": r["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def write_ndjson(path: Path, *resources: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    return path


def test_patient_mapping_keeps_identifiers_name_address():
    rec = map_resource(patient(), "line:1", {})
    assert isinstance(rec, Record)
    (table, row), = rec.rows
    assert table == "patients"
    assert row["patient_id"] == PID
    assert (row["family_name"], row["given_names"], row["gender"]) == ("Doe", "Jane Q", "female")
    assert str(row["birth_date"]) == "1950-02-03"
    assert row["identifiers"] == [{"system": "urn:mrn", "value": f"MRN-{PID}", "type": None}]
    assert (row["city"], row["postal_code"]) == ("Boston", "02115")


def test_observation_value_unit_range_and_utc_time():
    rec = map_resource(observation("o1"), "line:1", {})
    (table, row), = rec.rows
    assert table == "events" and row["kind"] == "observation"
    assert row["code"] == {"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}
    assert (row["value_num"], row["unit"], row["ref_low"], row["ref_high"]) == (105.5, "mg/dL", 70.0, 100.0)
    assert row["start"].isoformat() == "2021-03-04T10:06:07+00:00"
    assert rec.requires == (PID,)


def test_observation_components_become_child_rows():
    bp = observation("bp", code={"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                     component=[
                         {"code": {"coding": [{"code": "8480-6", "display": "Systolic"}]},
                          "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
                         {"code": {"coding": [{"code": "8462-4", "display": "Diastolic"}]},
                          "valueQuantity": {"value": 80, "unit": "mm[Hg]"}},
                     ])
    del bp["valueQuantity"]
    rows = [r for _, r in map_resource(bp, "x", {}).rows]
    assert [r["code"]["code"] for r in rows] == ["85354-9", "8480-6", "8462-4"]
    assert [r.get("value_num") for r in rows] == [None, 120.0, 80.0]
    assert rows[1]["parent_id"] == rows[0]["row_id"] != rows[1]["row_id"]


def test_document_reference_base64_text_and_sections():
    text = "# Chief Complaint\nCough.\n\n# Assessment and Plan\nRest and fluids.\n"
    doc = {"resourceType": "DocumentReference", "id": "d1", "status": "current",
           "subject": {"reference": f"Patient/{PID}"},
           "type": {"coding": [{"system": "http://loinc.org", "code": "34117-2", "display": "H&P note"}]},
           "date": "2020-01-02T03:04:05Z",
           "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}}]}
    (table, row), = map_resource(doc, "x", {}).rows
    assert table == "documents" and row["text"] == text and row["kind"] == "note"
    names = [s["name"] for s in row["sections"]]
    assert len(names) == 2 and all(text[s["start"]:s["end"]].startswith("#") for s in row["sections"])


def test_diagnostic_report_with_text_is_a_radiology_document():
    dr = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final",
          "subject": {"reference": f"Patient/{PID}"},
          "category": [{"coding": [{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}]}],
          "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2V"}]},
          "effectiveDateTime": "2020-01-02",
          "conclusion": "No acute cardiopulmonary process."}
    (table, row), = map_resource(dr, "x", {}).rows
    assert table == "documents" and row["kind"] == "radiology_report"
    assert "No acute cardiopulmonary process." in row["text"]


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (patient(birthDate=19500203), "Patient/p-1.birthDate: expected a string, got a number"),
        (patient(birthDate="1950-13-01"), "Patient/p-1.birthDate: '1950-13-01' is not a valid date"),
        (observation("o2", valueQuantity={"value": "abc"}), "Observation/o2.valueQuantity.value: expected a number, got a string"),
        (observation("o3", code=["not", "an", "object"]), "Observation/o3.code: expected a single value, got an array"),
        (observation("o6", code={"coding": {"code": "1"}}), "Observation/o6.code.coding: expected an array, got an object"),
        (observation("o7", valueString="x"), "Observation/o7: only one of valueQuantity, valueString is allowed"),
        (observation("o8", status=None), "Observation/o8.status: required element of Observation is missing"),
        (observation("o9", subject={"reference": 42}), "Observation/o9.subject.reference: expected a string, got a number"),
        (patient(gender=1), "Patient/p-1.gender: expected a string, got a number"),
        (patient(extra=True), "Patient/p-1.extra: unknown element of Patient"),
        ({"resourceType": "Nonsense", "id": "n"}, "unknown FHIR R4 resource type 'Nonsense'"),
        (observation("o4", effectiveDateTime="2021-02-30"), "Observation/o4.effectiveDateTime"),
        ({"resourceType": "Observation"}, "Observation without an id"),
        ({"id": "x"}, "missing resourceType"),
    ],
)
def test_wrong_types_are_bad_records_naming_the_field(resource, reason):
    item = map_resource(resource, "line:7", {})
    assert isinstance(item, Bad)
    assert reason in item.reason and item.locator == "line:7"


def test_strict_validation_uses_fhir_resources():
    # a value-level rule (the id pattern) passes the structural check but not the full models
    res = observation("o5")
    res["id"] = "not a valid id!"
    assert isinstance(map_resource(res, "x", {}), Record)
    bad = map_resource(res, "x", {}, validate="strict")
    assert isinstance(bad, Bad) and "id" in bad.reason


def test_validate_none_only_checks_mapped_fields():
    res = observation("o5", notAnElement=True)
    assert isinstance(map_resource(res, "x", {}, validate="none"), Record)
    assert isinstance(map_resource(res, "x", {}), Bad)


def test_bundle_resolves_urn_uuid_references(tmp_path):
    p = tmp_path / "b.json"
    obs = observation("o1")
    obs["subject"] = {"reference": f"urn:uuid:{PID}"}
    p.write_text(json.dumps(bundle(patient(), obs)))
    items = list(FhirReader().read(p, ReadContext(p.as_uri())))
    assert [i.locator for i in items] == ["/entry/0/resource", "/entry/1/resource"]
    assert items[1].rows[0][1]["patient_id"] == PID


# -- through the pipeline -------------------------------------------------------------------


def test_ingest_accounts_for_every_record_and_quarantines_bad_ones(eco, tmp_path):
    f = tmp_path / "Observation.ndjson"
    f.write_bytes(
        (json.dumps(patient()) + "\n").encode()
        + (json.dumps(observation("o1")) + "\n").encode()
        + b'{"resourceType": "Observation", "id": "trunc"\n'  # malformed line
        + b"\x00\xff\xfe binary garbage \x89PNG\n"  # a binary line
        + (json.dumps(observation("o2", pid="ghost")) + "\n").encode()  # dangling reference
        + (json.dumps(observation("o3", valueQuantity={"value": "x"})) + "\n").encode()  # wrong type
        + (json.dumps(observation("o4")) + "\n").encode()
    )
    s = eco.ingest([f])
    assert (s.records_in, s.ingested, s.quarantined) == (7, 3, 4)
    assert s.rows == {"events": 2, "patients": 1}
    q = {r["locator"]: r["reason"] for r in eco.quarantine()}
    assert set(q) == {"line:3", "line:4", "line:5", "line:6"}
    assert q["line:3"].startswith("invalid JSON")
    assert q["line:4"].startswith("invalid JSON")
    assert "dangling reference: Patient/ghost" in q["line:5"]
    assert "valueQuantity.value" in q["line:6"]
    assert eco.tables()["provenance"] == 3


def test_reference_to_a_patient_ingested_earlier_resolves(eco, tmp_path):
    eco.ingest([write_ndjson(tmp_path / "Patient.ndjson", patient())])
    s = eco.ingest([write_ndjson(tmp_path / "Observation.ndjson", observation("o1"))])
    assert (s.ingested, s.quarantined) == (1, 0)


def test_patients_after_their_events_in_one_run_still_resolve(eco, tmp_path):
    f = write_ndjson(tmp_path / "mixed.ndjson", observation("o1"), patient())
    s = eco.ingest([f])
    assert (s.ingested, s.quarantined) == (2, 0)


def test_bundle_with_entries_referencing_missing_patients(eco, tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps(bundle(patient(), observation("o1"), observation("o2", pid="missing"))))
    s = eco.ingest([p])
    assert (s.records_in, s.ingested, s.quarantined) == (3, 2, 1)
    (q,) = eco.quarantine()
    assert q["locator"] == "/entry/2/resource" and "Patient/missing" in q["reason"]


def test_truncated_bundle_keeps_the_entries_before_the_cut(eco, tmp_path):
    raw = json.dumps(bundle(patient(), observation("o1"), observation("o2")))
    cut = raw[: raw.index('"o2"') + 10]
    p = tmp_path / "cut.json"
    p.write_text(cut)
    s = eco.ingest([p])
    assert s.ingested == 2 and s.quarantined == 1
    (q,) = eco.quarantine()
    assert "truncated" in q["reason"] and q["locator"] == "/entry/2"


def test_truncated_gzip_keeps_what_was_read(eco, tmp_path):
    lines = [json.dumps(patient())] + [json.dumps(observation(f"o{i}")) for i in range(3000)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    p = tmp_path / "Observation.ndjson.gz"
    p.write_bytes(data[: len(data) // 2])
    s = eco.ingest([p])
    assert s.quarantined == 1 and 0 < s.ingested < 3001
    assert s.records_in == s.ingested + s.quarantined
    (q,) = eco.quarantine()
    assert "file unreadable past this point" in q["reason"] and "EOFError" in q["reason"]
    assert eco.tables()["events"] == s.ingested - 1


def test_empty_file_is_reported_not_an_error(eco, tmp_path):
    p = tmp_path / "Patient.ndjson"
    p.write_text("")
    s = eco.ingest([p], format="fhir")
    assert s.records_in == 0 and any("empty file" in w for w in s.warnings)
    assert s.version == 1 and len(eco.versions()) == 1  # nothing to commit
    assert eco.tables()["sources"] == 0  # a later empty file is not "already ingested"


def test_missing_path_and_unknown_format_are_clear_errors(eco, tmp_path):
    with pytest.raises(SourceNotFound, match="no such file"):
        eco.ingest([tmp_path / "nope.ndjson"])
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02")
    with pytest.raises(UnknownFormat, match="junk.bin"):
        eco.ingest([junk])
    assert len(eco.versions()) == 1  # nothing was committed


def test_reingest_same_file_adds_nothing_and_updated_file_upserts(eco, tmp_path):
    f = write_ndjson(tmp_path / "Patient.ndjson", patient(), patient("p-2"))
    first = eco.ingest([f])
    again = eco.ingest([f])
    assert first.version == 2 and again.version == 2
    assert again.files[0].skipped and "already ingested" in again.files[0].skipped
    assert eco.tables()["patients"] == 2
    # an updated export of the same patients replaces rows instead of duplicating them
    write_ndjson(f, patient(gender="male"), patient("p-3"))
    third = eco.ingest([f])
    assert third.version == 3
    rows = {r["patient_id"]: r["gender"] for r in eco.lake.read("patients").to_pylist()}
    assert rows == {"p-1": "male", "p-2": "female", "p-3": "female"}
    assert eco.lake.sql("SELECT count(*) AS n FROM patients", version=2).to_pylist() == [{"n": 2}]


def test_trace_returns_source_file_sha_and_locator(eco, tmp_path):
    f = write_ndjson(tmp_path / "Patient.ndjson", patient(), patient("p-2"))
    s = eco.ingest([f])
    rid = eco.lake.sql("SELECT row_id FROM patients WHERE patient_id = 'p-2'").to_pylist()[0]["row_id"]
    t = clinician_of(eco).trace(rid)
    prov = t["provenance"]
    assert t["table"] == "patients" and t["row"]["patient_id"] == "p-2"
    assert prov["source_uri"] == f.resolve().as_uri()
    assert prov["source_sha256"] == s.files[0].sha256
    assert prov["locator"] == "line:2" and prov["reader"] == "fhir" and prov["run_id"] == s.run_id
    import hashlib
    assert prov["record_sha256"] == hashlib.sha256(f.read_bytes().splitlines()[1]).hexdigest()


def test_bundle_forward_urn_uuid_reference_resolves(eco, tmp_path):
    obs = observation("o1")
    obs["subject"] = {"reference": "urn:uuid:abc"}  # the patient entry comes later
    b = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:o1", "resource": obs},
        {"fullUrl": "urn:uuid:abc", "resource": patient("p1")},
    ]}
    p = tmp_path / "order.json"
    p.write_text(json.dumps(b))
    s = eco.ingest([p])
    assert (s.ingested, s.quarantined) == (2, 0)
    assert eco.lake.sql("SELECT patient_id FROM events").to_pylist() == [{"patient_id": "p1"}]


def test_bundle_whose_entry_is_not_an_array_is_quarantined(eco, tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                             "entry": {"resource": patient("z")}}))
    s = eco.ingest([p])
    assert (s.records_in, s.quarantined) == (1, 1)
    (q,) = eco.quarantine()
    assert q["locator"] == "/entry" and "expected an array" in q["reason"]


def test_value_that_does_not_fit_the_model_quarantines_only_its_record(eco, tmp_path):
    # with --validate none a wrongly typed element reaches the model; only its record is lost
    bad = observation("o2", code={"text": ["not", "a", "string"]})
    f = write_ndjson(tmp_path / "Observation.ndjson", patient(), observation("o1"), bad, observation("o3"))
    s = eco.ingest([f], options={"validate": "none"})
    assert (s.records_in, s.ingested, s.quarantined) == (4, 3, 1)
    (q,) = eco.quarantine()
    assert q["locator"] == "line:3" and q["reason"].startswith("events.code")
    assert sorted(r["event_id"] for r in eco.lake.read("events").to_pylist()) == ["o1", "o3"]


def test_truncated_gzip_read_by_workers_keeps_the_lines_before_the_cut(tmp_path, monkeypatch):
    import zlib

    from sagehealth import Ecosystem
    from sagehealth.data import pipeline

    lines = [json.dumps(patient(f"p{i}")) for i in range(20_000)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    cut = data[: int(len(data) * 0.6)]
    p = tmp_path / "Patient.ndjson.gz"
    p.write_bytes(cut)
    plain = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
    complete = plain.count(b"\n")  # whole lines recoverable from the cut stream
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_BYTES", 0)
    got = {}
    for workers in (0, 2):
        eco = Ecosystem.open(tmp_path / f"w{workers}", STEWARD)
        s = eco.ingest([p], options={"workers": workers})
        assert s.records_in == s.ingested + s.quarantined and s.quarantined == 1
        got[workers] = s.ingested
    max_line = max(len(line) for line in lines) + 1
    for workers, ingested in got.items():  # at most one 64 KiB read is lost at the cut
        assert complete - (65536 // max_line + 2) <= ingested <= complete, (workers, ingested, complete)


def test_quarantine_of_a_corrected_file_is_superseded(eco, tmp_path):
    f = tmp_path / "Patient.ndjson"
    f.write_text(json.dumps(patient()) + "\n" + '{"resourceType": "Patient", "id": "x"\n')
    eco.ingest([f])
    assert [q["locator"] for q in eco.quarantine()] == ["line:2"]
    write_ndjson(f, patient(), patient("x"))  # the steward fixes the file and ingests it again
    s = eco.ingest([f])
    assert (s.ingested, s.quarantined) == (2, 0)
    assert eco.quarantine() == []
    assert [q["locator"] for q in eco.quarantine(superseded=True)] == ["line:2"]
    assert [q["locator"] for q in eco.quarantine(version=2)] == ["line:2"]  # as it was then


def test_icd_codes_are_stored_dotted_whatever_the_sender_wrote():
    from sagehealth.data.sources.fhir import _coding

    c = _coding({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J9601"}, "Condition.code.coding[0]")
    assert c["code"] == "J96.01"
    c = _coding({"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "4280"}, "x")
    assert c["code"] == "428.0"
    c = _coding({"system": "http://snomed.info/sct", "code": "44054006"}, "x")
    assert c["code"] == "44054006"
