"""MIMIC-IV reader: unit tests on a synthetic fixture, integration tests on the 2.2 demo."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from sagehealth.data.model import row_id
from sagehealth.data.sources.base import Bad, ReadContext, Record

from helpers import SHARED, data_rows, rows_of, validate_rows
from sagehealth.data.sources.mimic import SKIPPED_TABLES, MimicReader, detect

FIX = Path(__file__).resolve().parent / "fixtures" / "mimic" / "demo"
DEMO = SHARED / "ehr" / "mimic_iv_demo_2.2"


def _read(path: Path, reader: MimicReader | None = None) -> list[Record | Bad]:
    return list((reader or MimicReader()).read(path, ReadContext(str(path))))


_rows, _validate, _data_rows = rows_of, validate_rows, data_rows



def _name(p: Path) -> str:
    return p.name.split(".")[0]


def _fix(table: str) -> Path:
    return next(p for p in MimicReader().files(FIX) if _name(p) == table)


# -- unit tests on the fixture -------------------------------------------------------------


def test_detect(tmp_path: Path) -> None:
    assert detect(FIX)
    assert detect(FIX / "hosp")  # flat folder: patients.csv.gz with subject_id, anchor_age
    assert detect(FIX / "hosp" / "patients.csv.gz")
    assert not detect(tmp_path)
    (tmp_path / "patients.csv").write_text("id,name\n1,x\n")
    assert not detect(tmp_path)


def test_files_order_and_skips() -> None:
    rel = [str(p.relative_to(FIX)) for p in MimicReader().files(FIX)]
    assert rel[:4] == ["hosp/patients.csv.gz", "hosp/admissions.csv.gz",
                       "hosp/transfers.csv.gz", "icu/icustays.csv.gz"]
    assert "icu/chartevents.csv.gz" in rel and "icu/outputevents.csv.gz" in rel
    for skipped in ("hosp/d_labitems.csv.gz", "icu/d_items.csv.gz", "hosp/services.csv.gz",
                    "hosp/d_icd_diagnoses.csv.gz"):
        assert skipped not in rel
    assert "services" in SKIPPED_TABLES and "d_labitems" in SKIPPED_TABLES
    with pytest.raises(ValueError, match="lookup"):
        _read(FIX / "hosp" / "d_labitems.csv.gz")


def test_patients_and_bad_age() -> None:
    items = _read(_fix("patients"))
    assert len(items) == 3
    _validate(items)
    a, b = _rows(items, "patients")
    assert a["patient_id"] == "mimic-10000001" and a["row_id"] == row_id("patients", a["patient_id"])
    assert a["gender"] == "female" and a["birth_date"] == date(2098, 1, 1)  # 2150 - 52
    assert a["deceased"] is False and a["deceased_at"] is None
    assert b["gender"] == "male" and b["deceased"] is True
    assert b["deceased_at"] == datetime(2165, 3, 1, tzinfo=UTC)
    assert items[0].requires == ()
    bad = items[2]
    assert isinstance(bad, Bad) and bad.locator == "row:3" and "anchor_age" in bad.reason


def test_admissions_transfers_icustays() -> None:
    items = _read(_fix("admissions"))
    _validate(items)
    a, b = _rows(items, "encounters")
    assert a["encounter_id"] == "mimic-hadm-20000001" and a["patient_id"] == "mimic-10000001"
    assert a["class_code"] == "IMP" and a["type"]["code"] == "EW EMER."
    assert a["start"] == datetime(2150, 5, 1, 10, 15, tzinfo=UTC)
    assert a["discharge_disposition"] == "HOME"
    assert b["class_code"] == "OBSENC" and b["discharge_disposition"] is None
    assert items[0].requires == ("mimic-10000001",)
    bad = items[2]
    assert isinstance(bad, Bad) and "admittime" in bad.reason and "2150-13-01" in bad.reason
    tr = _rows(_read(_fix("transfers")), "encounters")
    assert [t["class_code"] for t in tr] == ["transfer"] * 3
    assert tr[0]["encounter_id"] == "mimic-transfer-30000001"
    assert tr[0]["location"] == "Emergency Department" and tr[0]["type"]["code"] == "ED"
    assert tr[2]["end"] is None
    (icu,) = _rows(_read(_fix("icustays")), "encounters")
    assert icu["encounter_id"] == "mimic-stay-50000001" and icu["class_code"] == "ICU"
    assert icu["location"] == "Coronary Care Unit (CCU)"


def test_diagnoses_with_dictionary_and_bad_version() -> None:
    items = _read(_fix("diagnoses_icd"))
    _validate(items)
    a, b = _rows(items, "events")
    assert a["event_id"] == "mimic-dx-20000001-1" and a["kind"] == "condition"
    assert a["encounter_id"] == "mimic-hadm-20000001"
    # stored dotted, as the vocabularies have them (MIMIC writes "I214", "4019")
    assert a["code"] == {"system": "ICD10CM", "code": "I21.4",
                         "display": "Non-ST elevation (NSTEMI) myocardial infarction"}
    assert b["code"]["system"] == "ICD9CM" and b["code"]["code"] == "401.9"
    assert b["code"]["display"].startswith("Unspecified")
    bad = items[2]
    assert isinstance(bad, Bad) and "icd_version" in bad.reason and "'11'" in bad.reason


def test_procedures_hcpcs_drg() -> None:
    (px,) = _rows(_read(_fix("procedures_icd")), "events")
    # no d_icd_procedures in the fixture: the title comes from the CMS code files
    assert px["code"] == {"system": "ICD10PCS", "code": "02703ZZ",
                          "display": "Dilation of Coronary Artery, One Artery, Percutaneous Approach"}
    assert px["start"] == datetime(2150, 5, 2, tzinfo=UTC)
    (hc,) = _rows(_read(_fix("hcpcsevents")), "events")
    assert hc["kind"] == "procedure" and hc["code"]["system"] == "HCPCS"
    assert hc["code"]["display"] == "Cardiovascular"
    items = _read(_fix("drgcodes"))
    _validate(items)
    ms, apr = _rows(items, "events")
    assert ms["kind"] == "drg" and ms["code"]["system"] == "MS-DRG" and ms["code"]["code"] == "281"
    assert apr["code"]["system"] == "APR-DRG" and apr["interpretation"] == "severity 3; mortality 2"


def test_labevents_values_and_bad_number() -> None:
    items = _read(_fix("labevents"))
    assert len(items) == 3
    _validate(items)
    cr, wbc = _rows(items, "events")
    assert cr["event_id"] == "mimic-lab-1" and cr["category"] == "laboratory"
    assert cr["code"] == {"system": "mimic-iv/d_labitems", "code": "50912", "display": "Creatinine"}
    assert (cr["value_num"], cr["unit"], cr["ref_low"], cr["ref_high"]) == (1.4, "mg/dL", 0.5, 1.2)
    assert cr["interpretation"] == "abnormal"
    assert wbc["encounter_id"] is None and wbc["value_num"] is None and wbc["value_text"] == "___"
    bad = items[2]
    assert isinstance(bad, Bad) and bad.locator == "row:3" and "valuenum" in bad.reason


def test_microbiology() -> None:
    items = _read(_fix("microbiologyevents"))
    _validate(items)
    a, b = _rows(items, "events")
    assert a["category"] == "microbiology" and a["code"]["display"] == "Blood Culture"
    assert a["value_code"]["display"] == "STAPHYLOCOCCUS AUREUS"
    assert {"system": "mimic-iv/microbiology/antibiotic", "code": "90015",
            "display": "VANCOMYCIN"} in a["codes"]
    assert a["interpretation"] == "S" and a["value_num"] == 1.0
    assert b["start"] == datetime(2150, 5, 2, tzinfo=UTC)  # no charttime: chartdate
    assert b["value_text"] == "NO GROWTH." and b["value_code"] is None


def test_prescriptions() -> None:
    items = _read(_fix("prescriptions"))
    _validate(items)
    asa, oxy, ns = _rows(items, "events")
    assert asa["code"] == {"system": "NDC", "code": "00904404073", "display": "Aspirin"}
    assert asa["value_num"] == 81.0 and asa["unit"] == "mg" and asa["kind"] == "medication"
    assert asa["end"] == datetime(2150, 5, 6, 12, tzinfo=UTC)
    assert oxy["code"]["system"] == "mimic-iv/formulary_drug_cd"  # ndc "0" is no NDC
    assert oxy["value_num"] is None and oxy["value_text"] == "5-10"
    assert ns["code"] == {"system": "mimic-iv/drug", "code": "Sodium Chloride 0.9%",
                          "display": "Sodium Chloride 0.9%"}


def test_omr_blood_pressure_text() -> None:
    bp, wt = _rows(_read(_fix("omr")), "events")
    assert bp["category"] == "vital-signs" and bp["value_text"] == "120/80"
    assert bp["value_num"] is None and bp["encounter_id"] is None
    assert wt["value_num"] == 150.0 and wt["unit"] == "Lbs"


def test_icu_events() -> None:
    items = _read(_fix("outputevents"))
    _validate(items)
    (out,) = _rows(items, "events")
    assert out["code"] == {"system": "mimic-iv/d_items", "code": "226559", "display": "Foley"}
    assert out["value_num"] == 350.0 and out["unit"] == "ml"
    assert out["encounter_id"] == "mimic-hadm-20000001"
    assert isinstance(items[1], Bad) and "value" in items[1].reason
    hr, irr = _rows(_read(_fix("chartevents")), "events")
    assert hr["code"]["display"] == "Heart Rate" and hr["value_num"] == 88.0
    assert irr["value_text"] == "Irregular" and irr["interpretation"] == "warning"


def test_missing_required_column_quarantines_every_row() -> None:
    path = _fix("procedureevents")
    items = _read(path)
    assert len(items) == _data_rows(path) >= 1 and all(isinstance(i, Bad) for i in items)
    assert items[0].locator == "row:1" and all("orderid" in i.reason for i in items)


# -- integration on the MIMIC-IV demo 2.2 -------------------------------------------------

EXPECTED = {  # data rows per ingested table of the demo
    "patients": 100, "admissions": 275, "transfers": 1190, "icustays": 140,
    "diagnoses_icd": 4506, "procedures_icd": 722, "hcpcsevents": 61, "drgcodes": 454,
    "labevents": 107727, "microbiologyevents": 2899, "prescriptions": 18087, "omr": 2964,
    "outputevents": 9362, "procedureevents": 1468,
}


@pytest.fixture(scope="module")
def demo() -> dict[str, list]:
    if not DEMO.is_dir():
        pytest.skip(f"shared data not found at {DEMO}")
    reader = MimicReader()
    return {_name(p): _read(p, reader) for p in reader.files(DEMO)}


@pytest.mark.integration
def test_demo_every_row_accounted(demo: dict[str, list]) -> None:
    assert detect(DEMO)
    assert list(demo) == list(EXPECTED)
    files = {_name(p): p for p in MimicReader().files(DEMO)}
    total = 0
    for name, items in demo.items():
        assert len(items) == _data_rows(files[name]) == EXPECTED[name], name
        assert not [it for it in items if isinstance(it, Bad)], name
        _validate(items)
        ids = [r["row_id"] for it in items for _, r in it.rows]
        assert len(ids) == len(set(ids)), name
        total += len(items)
    assert total == sum(EXPECTED.values())


@pytest.mark.integration
def test_demo_references(demo: dict[str, list]) -> None:
    subjects = {r["patient_id"] for r in _rows(demo["patients"], "patients")}
    assert len(subjects) == 100
    for name, items in demo.items():
        if name != "patients":
            assert all(set(it.requires) <= subjects for it in items), name
    hadm = {r["encounter_id"] for r in _rows(demo["admissions"], "encounters")}
    for name in ("diagnoses_icd", "procedures_icd", "drgcodes"):
        assert {r["encounter_id"] for r in _rows(demo[name], "events")} <= hadm, name


@pytest.mark.integration
def test_demo_spot_values(demo: dict[str, list]) -> None:
    pats = {r["patient_id"]: r for r in _rows(demo["patients"], "patients")}
    p = pats["mimic-10003400"]  # F, anchor_age 72, anchor_year 2134, dod 2137-09-02
    assert p["gender"] == "female" and p["birth_date"] == date(2062, 1, 1)
    assert p["deceased_at"] == datetime(2137, 9, 2, tzinfo=UTC)
    adm = {r["encounter_id"]: r for r in _rows(demo["admissions"], "encounters")}
    a = adm["mimic-hadm-24181354"]
    assert a["start"] == datetime(2196, 2, 24, 14, 38, tzinfo=UTC)
    assert a["discharge_disposition"] == "SKILLED NURSING FACILITY" and a["class_code"] == "IMP"
    labs = {r["event_id"]: r for r in _rows(demo["labevents"], "events")}
    lab = labs["mimic-lab-172062"]
    assert lab["code"] == {"system": "mimic-iv/d_labitems", "code": "51279",
                           "display": "Red Blood Cells"}
    assert (lab["value_num"], lab["unit"], lab["ref_low"], lab["interpretation"]) == (
        3.35, "m/uL", 4.6, "abnormal")
    dx = Counter(r["code"]["system"] for r in _rows(demo["diagnoses_icd"], "events"))
    assert dx == {"ICD10CM": 2313, "ICD9CM": 2193}
    rx = _rows(demo["prescriptions"], "events")
    assert sum(r["code"]["system"] == "NDC" for r in rx) > 5000
    omr = _rows(demo["omr"], "events")
    assert sum(1 for r in omr if r["value_text"] and "/" in r["value_text"]) == 872  # BP rows
    out = _rows(demo["outputevents"], "events")
    assert all(r["code"]["display"] for r in out)  # every itemid found in d_items


def test_icd_codes_are_dotted_and_titled_without_mimic_dictionaries() -> None:
    """The MIMIC-IV demo ships no d_icd_* tables: codes still get the code sets' titles, and
    the dotted form the vocabularies use (issue 16: "J9601" never matched "ICD10CM:J96.01")."""
    from sagehealth.knowledge import icd

    cases = [("ICD10CM", "J9601", "J96.01", "Acute respiratory failure with hypoxia"),
             ("ICD9CM", "4280", "428.0", "Congestive heart failure, unspecified"),
             ("ICD9CM", "V1582", "V15.82", "Personal history of tobacco use"),
             ("ICD9CM", "E8889", "E888.9", "Unspecified fall"),
             ("ICD9Proc", "3961", "39.61", "Extracorporeal circulation auxiliary to open heart surgery"),
             ("ICD10CM", "I10", "I10", "Essential (primary) hypertension")]
    for system, raw, dotted, title in cases:
        assert icd.normalise(system, raw) == dotted
        assert icd.normalise(system, dotted) == dotted  # idempotent
        assert icd.label(system, raw) == icd.label(system, dotted) == title
    assert icd.label("ICD10CM", "Q9999") is None  # not in the code set: unlabelled, no guess
    assert icd.normalise("SNOMEDCT", " 44054006 ") == "44054006"
