"""OMOP CDM 5.4 reader: fixture unit tests and integration tests on Eunomia (shared data)."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from sagehealth.data.model import row_id
from sagehealth.data.sources.base import Bad, ReadContext, Record

from helpers import SHARED, data_rows, rows_of, validate_rows
from sagehealth.data.sources.omop import SKIPPED_TABLES, OmopReader, detect

FIX = Path(__file__).resolve().parent / "fixtures" / "omop" / "cdm"
EUNOMIA = SHARED / "ehr" / "omop_eunomia_cdm54"


def _read(path: Path, reader: OmopReader | None = None) -> list[Record | Bad]:
    return list((reader or OmopReader()).read(path, ReadContext(str(path))))


_rows, _validate, _data_rows = rows_of, validate_rows, data_rows



def _by_name(folder: Path) -> dict[str, Path]:
    return {p.name.lower().split(".")[0]: p for p in OmopReader().files(folder)}


# -- unit tests on the fixture -------------------------------------------------------------


def test_detect() -> None:
    assert detect(FIX)
    assert detect(FIX / "MEASUREMENT.csv")
    assert not detect(FIX.parent)
    assert not detect(FIX / "CONCEPT.csv")


def test_files_order_and_skips() -> None:
    names = [p.name for p in OmopReader().files(FIX)]
    assert names[:2] == ["PERSON.csv", "VISIT_OCCURRENCE.csv"]
    assert "drug_exposure.csv.gz" in names  # lower case, gzipped
    assert names.index("DEATH.csv") > names.index("MEASUREMENT.csv")
    for skipped in ("CONCEPT.csv", "CONDITION_ERA.csv", "VOCABULARY.csv",
                    "OBSERVATION_PERIOD.csv"):
        assert skipped not in names
    assert {"concept", "condition_era", "visit_detail", "note_nlp"} <= set(SKIPPED_TABLES)
    with pytest.raises(ValueError, match="vocabulary"):
        _read(FIX / "CONCEPT.csv")


def test_person() -> None:
    items = _read(FIX / "PERSON.csv")
    assert [it.locator for it in items] == ["row:1", "row:2", "row:3"]
    _validate(items)
    p1, p7 = _rows(items, "patients")
    assert p1["patient_id"] == "omop-1" and p1["row_id"] == row_id("patients", "omop-1")
    assert p1["gender"] == "male" and p1["birth_date"] == date(1998, 4, 9)
    assert p1["race"] == "White" and p1["ethnicity"] == "Not Hispanic or Latino"
    assert p1["deceased"] is False and p1["deceased_at"] is None
    assert p1["city"] == "Newark" and p1["address_line"] == "1 Main St, Suite 2"
    assert p1["source_system"] == "omop"
    assert {"system": "omop/person_source_value", "type": "source",
            "value": "1007c05b-8d20-8fe6-6790-44622f8316df"} in p1["identifiers"]
    assert p7["deceased"] is True and p7["deceased_at"] == datetime(2019, 5, 28, tzinfo=UTC)
    assert items[0].requires == ()
    bad = items[2]
    assert isinstance(bad, Bad) and "month_of_birth" in bad.reason and "99," in bad.raw


def test_visit_with_bad_date() -> None:
    items = _read(FIX / "VISIT_OCCURRENCE.csv")
    assert len(items) == 5
    _validate(items)
    enc = _rows(items, "encounters")
    assert len(enc) == 4
    v = enc[1]
    assert v["encounter_id"] == "omop-visit-1" and v["patient_id"] == "omop-1"
    assert v["class_code"] == "AMB"
    assert v["type"] == {"system": "Visit", "code": "OP", "display": "Outpatient Visit"}
    assert v["start"] == datetime(2002, 10, 16, tzinfo=UTC)
    assert v["provider"] == "omop-provider-10"
    assert items[1].requires == ("omop-1",)
    bad = items[4]
    assert isinstance(bad, Bad) and bad.locator == "row:5"
    assert "visit_start_datetime" in bad.reason and "2012-02-30" in bad.reason


def test_condition_codes_resolve_through_concept() -> None:
    items = _read(FIX / "CONDITION_OCCURRENCE.csv")
    _validate(items)
    ev = _rows(items, "events")
    assert len(ev) == 5
    c = ev[0]
    assert c["event_id"] == "omop-condition_occurrence-1" and c["kind"] == "condition"
    assert c["encounter_id"] == "omop-visit-1"
    assert c["code"] == {"system": "SNOMED", "code": "65363002", "display": "Otitis media"}
    assert {"system": "OMOP", "code": "372328", "display": "Otitis media"} in c["codes"]
    assert {"system": "source_value", "code": "65363002", "display": None} in c["codes"]
    assert c["start"] == datetime(2002, 10, 15, tzinfo=UTC)
    assert c["end"] == datetime(2003, 3, 20, tzinfo=UTC)
    assert ev[1]["end"] is None


def test_drug_exposure_gzip_lower_case() -> None:
    items = _read(FIX / "drug_exposure.csv.gz")
    _validate(items)
    ev = _rows(items, "events")
    assert len(ev) == 4 and all(e["kind"] == "medication" for e in ev)
    assert ev[0]["code"] == {"system": "RxNorm", "code": "308182",
                             "display": "amoxicillin 250 MG Oral Capsule"}


def test_measurement_values_and_bad_number() -> None:
    items = _read(FIX / "MEASUREMENT.csv")
    assert len(items) == 7
    _validate(items)
    ev = _rows(items, "events")
    assert len(ev) == 6
    m = ev[0]
    assert m["kind"] == "observation" and m["category"] == "measurement"
    assert m["code"]["system"] == "LOINC" and m["code"]["code"] == "29463-7"
    assert m["value_num"] == 48.1 and m["unit"] == "kg"
    assert ev[1]["unit"] == "{score}"  # unit concept 0: unit_source_value
    bad = items[6]
    assert isinstance(bad, Bad) and bad.locator == "row:7"
    assert "value_as_number" in bad.reason and "'high'" in bad.reason


def test_observation_procedure_death() -> None:
    obs = _rows(_read(FIX / "OBSERVATION.csv"), "events")
    assert [o["category"] for o in obs] == ["observation"] * 3
    assert obs[0]["code"]["display"] == "Employment status - current"
    proc = _rows(_read(FIX / "PROCEDURE_OCCURRENCE.csv"), "events")
    assert proc[0]["kind"] == "procedure" and proc[0]["code"]["code"] == "386516004"
    items = _read(FIX / "DEATH.csv")
    _validate(items)
    (d,) = _rows(items, "events")
    assert d["kind"] == "death" and d["event_id"] == "omop-death-7"
    assert d["code"] == {"system": "SNOMED", "code": "26929004", "display": "Alzheimer's disease"}
    assert items[0].requires == ("omop-7",)


def test_missing_required_column_quarantines_every_row() -> None:
    path = FIX / "DEVICE_EXPOSURE.csv"
    items = _read(path)
    with open(path, newline="") as fh:
        n = sum(1 for row in list(csv.reader(fh))[1:] if row)
    assert n >= 1 and len(items) == n and all(isinstance(i, Bad) for i in items)
    assert [i.locator for i in items] == [f"row:{k}" for k in range(1, n + 1)]
    assert all("device_concept_id" in i.reason for i in items)


def test_note_with_embedded_newline() -> None:
    items = _read(FIX / "NOTE.csv")
    _validate(items)
    (doc,) = _rows(items, "documents")
    assert doc["document_id"] == "omop-note-1" and doc["encounter_id"] == "omop-visit-21"
    assert doc["text"] == "Sore throat for 3 days.\nPlan: amoxicillin, 250 mg."
    assert doc["date"] == datetime(2014, 4, 22, 9, 30, tzinfo=UTC)
    assert doc["author"] == "omop-provider-10"


def test_directory_tables() -> None:
    reader = OmopReader()
    prov = _rows(_read(FIX / "PROVIDER.csv", reader), "directory")
    assert prov[0]["entity_id"] == "omop-provider-1" and prov[0]["kind"] == "practitioner"
    assert prov[0]["name"] == "María Elena653 Rodarte647"
    assert prov[0]["code"]["display"] == "GENERAL PRACTICE"
    site = _read(FIX / "CARE_SITE.csv", reader)
    _validate(site)
    (cs,) = _rows(site, "directory")
    assert cs["kind"] == "organization" and cs["postal_code"] == "07102"
    (loc,) = _rows(_read(FIX / "LOCATION.csv", reader), "directory")
    assert loc["kind"] == "location" and loc["state"] == "NJ" and loc["country"] == "US"
    assert all(it.requires == () for it in site)


def test_idempotent_row_ids() -> None:
    a = [r["row_id"] for r in _rows(_read(FIX / "MEASUREMENT.csv"), "events")]
    b = [r["row_id"] for r in _rows(_read(FIX / "MEASUREMENT.csv"), "events")]
    assert a == b and len(set(a)) == len(a)


def test_progress_bytes() -> None:
    seen: list[int] = []
    path = FIX / "MEASUREMENT.csv"
    list(OmopReader().read(path, ReadContext(str(path), on_bytes=seen.append)))
    assert sum(seen) == path.stat().st_size


# -- integration on Eunomia ----------------------------------------------------------------

EXPECTED = {  # data rows per ingested table of Eunomia CDM 5.4
    "person": 28, "visit_occurrence": 1791, "condition_occurrence": 470, "drug_exposure": 883,
    "procedure_occurrence": 1649, "measurement": 10040, "observation": 8099,
    "device_exposure": 1, "death": 3, "note": 0, "location": 0, "care_site": 0, "provider": 67,
}


@pytest.fixture(scope="module")
def eunomia() -> dict[str, list]:
    if not EUNOMIA.is_dir():
        pytest.skip(f"shared data not found at {EUNOMIA}")
    reader = OmopReader()
    return {name: _read(p, reader) for name, p in _by_name(EUNOMIA).items()}


@pytest.mark.integration
def test_eunomia_every_row_accounted(eunomia: dict[str, list]) -> None:
    assert list(eunomia) == list(EXPECTED)
    files = _by_name(EUNOMIA)
    for name, items in eunomia.items():
        assert len(items) == _data_rows(files[name]) == EXPECTED[name], name
        assert not [it for it in items if isinstance(it, Bad)], name
        _validate(items)
        ids = [r["row_id"] for it in items for _, r in it.rows]
        assert len(ids) == len(set(ids)), name


@pytest.mark.integration
def test_eunomia_references(eunomia: dict[str, list]) -> None:
    people = {r["patient_id"] for r in _rows(eunomia["person"], "patients")}
    assert len(people) == 28
    for name, items in eunomia.items():
        if name not in ("person", "provider"):
            assert all(it.requires and set(it.requires) <= people for it in items), name


@pytest.mark.integration
def test_eunomia_spot_values(eunomia: dict[str, list]) -> None:
    pats = {r["patient_id"]: r for r in _rows(eunomia["person"], "patients")}
    assert pats["omop-2"]["gender"] == "female"
    assert pats["omop-2"]["birth_date"] == date(2014, 10, 22)
    assert sum(p["deceased"] for p in pats.values()) == 3
    assert pats["omop-11"]["deceased_at"] == datetime(2009, 9, 14, tzinfo=UTC)
    classes = Counter(r["class_code"] for r in _rows(eunomia["visit_occurrence"], "encounters"))
    assert set(classes) <= {"AMB", "EMER", "IMP"}
    meas = {r["event_id"]: r for r in _rows(eunomia["measurement"], "events")}
    m2 = meas["omop-measurement-2"]
    assert m2["code"]["code"] == "72514-3" and m2["value_num"] == 1.0
    assert m2["encounter_id"] == "omop-visit-31"
    (dev,) = _rows(eunomia["device_exposure"], "events")
    assert dev["code"]["display"] == "Implantable defibrillator" and dev["patient_id"] == "omop-16"
    drugs = _rows(eunomia["drug_exposure"], "events")
    assert all(d["code"]["system"] == "RxNorm" for d in drugs)
