"""NotesReader: note CSVs, radiology report-part CSVs, folders of .txt notes."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sagehealth.data.model import SCHEMAS, row_id
from sagehealth.data.sections import split_sections
from sagehealth.data.sources.base import Bad, ReadContext, Record
from sagehealth.data.sources.notes import NotesReader, detect

FIX = Path(__file__).parent / "fixtures" / "notes"
SAMPLE = Path(__file__).resolve().parents[1] / "src" / "sagehealth" / "sample_data" / "notes"
from helpers import shared_path as _shared  # noqa: E402


def read(path: Path, reader: NotesReader | None = None, **options: Any) -> list[Record | Bad]:
    return list((reader or NotesReader()).read(path, ReadContext(str(path), options=options)))


def docs(items: list[Record | Bad]) -> dict[str, dict[str, Any]]:
    """documents rows by document_id; checks one row per record and the Arrow schema."""
    rows = [r for it in items if isinstance(it, Record) for r in it.rows]
    assert all(t == "documents" for t, _ in rows)
    assert len(rows) == sum(isinstance(it, Record) for it in items)
    pa.Table.from_pylist([r for _, r in rows], schema=SCHEMAS["documents"])
    for _, r in rows:
        assert set(r) <= set(SCHEMAS["documents"].names)
        assert "provenance_id" not in r
        assert r["row_id"] == row_id("documents", r["document_id"])
    return {r["document_id"]: r for _, r in rows}


def section_texts(row: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: row["text"][s["start"] : s["end"]] for s in row["sections"]}


# -- CSV with a text column -------------------------------------------------------------------


def test_notes_csv_rows_kinds_sections_and_bad_rows() -> None:
    items = read(FIX / "notes.csv")
    assert len(items) == 6  # one item per data row
    assert [it.locator for it in items] == [f"row:{i}" for i in range(1, 7)]
    bad = {it.locator: it.reason for it in items if isinstance(it, Bad)}
    assert bad == {
        "row:3": "empty text in column transcription",
        "row:4": "note_date: '03/07/2020' is not a valid date/time",
    }
    d = docs(items)
    assert set(d) == {"notes/n1", "notes/n2", "notes/n5", "notes/6"}  # no id -> row number
    n1 = d["notes/n1"]
    assert n1["kind"] == "note" and n1["title"] == "Allergic Rhinitis"
    assert n1["date"] == datetime(2020, 3, 4, tzinfo=UTC)
    assert n1["code"] == {
        "system": "notes:medical_specialty", "code": "Allergy / Immunology",
        "display": "Allergy / Immunology",
    }
    assert n1.get("patient_id") is None  # no patient unless the options name a column
    assert [s["name"] for s in n1["sections"]] == [
        "SUBJECTIVE", "MEDICATIONS", "ALLERGIES", "ASSESSMENT", "PLAN",
    ]
    assert section_texts(n1)["ALLERGIES"] == "ALLERGIES: , None known.,"
    n2 = d["notes/n2"]
    assert n2["kind"] == "radiology_report"  # " Radiology" (padded) still counts
    assert [s["name"] for s in n2["sections"]] == ["EXAM", "INDICATION", "FINDINGS", "IMPRESSION"]
    n5 = d["notes/n5"]
    assert [s["name"] for s in n5["sections"]] == [
        "CHIEF COMPLAINT", "HISTORY OF PRESENT ILLNESS", "ASSESSMENT AND PLAN",
    ]
    assert d["notes/6"]["sections"] == [
        {"name": "PREAMBLE", "start": 0, "end": len(d["notes/6"]["text"])}
    ]
    assert all(isinstance(it.content, bytes) for it in items if isinstance(it, Record))


def test_patient_column_option_sets_requires() -> None:
    items = read(FIX / "notes.csv", patient_column="patient_id", patient_prefix="pt-")
    recs = {it.locator: it for it in items if isinstance(it, Record)}
    assert recs["row:1"].requires == ("pt-p1",)
    assert recs["row:1"].rows[0][1]["patient_id"] == "pt-p1"
    assert recs["row:5"].requires == ()  # blank patient value: no patient
    missing = read(FIX / "notes.csv", patient_column="subject_id")
    assert len(missing) == len(items) and all(isinstance(m, Bad) for m in missing)
    assert [m.locator for m in missing] == [it.locator for it in items]
    assert all("subject_id" in m.reason for m in missing)


def test_kind_discharge_summary_and_options(tmp_path: Path) -> None:
    d = docs(read(FIX / "notes.csv", dataset="mt", kind="note", source_system="mtsamples"))
    assert d["mt/n2"]["kind"] == "note"  # the kind option wins
    assert d["mt/n2"]["source_system"] == "mtsamples"
    p = tmp_path / "ds.csv"
    with open(p, "w", newline="") as fh:
        csv.writer(fh).writerows(
            [["note_id", "category", "text"], ["x", "Discharge summary", "HOSPITAL COURSE:, Ok."]]
        )
    assert docs(read(p))["ds/x"]["kind"] == "discharge_summary"


def _data_rows(path: Path) -> int:
    with open(path, newline="") as fh:
        return sum(1 for row in list(csv.reader(fh))[1:] if row)


def test_no_text_column_quarantines_every_row() -> None:
    items = read(FIX / "no_text.csv")
    n = _data_rows(FIX / "no_text.csv")
    assert n >= 1 and len(items) == n and all(isinstance(i, Bad) for i in items)
    assert [i.locator for i in items] == [f"row:{k}" for k in range(1, n + 1)]
    assert all("missing text column" in i.reason for i in items)
    wrong = read(FIX / "custom.csv", text_column="nope")
    assert len(wrong) == _data_rows(FIX / "custom.csv") and all("nope" in w.reason for w in wrong)


def test_header_only_csv_without_text_column_is_one_header_bad(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    p.write_text("id,title\n")
    (bad,) = read(p)
    assert bad.locator == "header" and "missing text column" in bad.reason


def test_text_column_option_and_id_column() -> None:
    d = docs(read(FIX / "custom.csv", text_column="body"))
    assert set(d) == {"custom/a", "custom/b"}  # "id" picked as the id column
    assert d["custom/a"]["sections"][0]["name"] == "IMPRESSION"
    assert d["custom/a"]["title"] is None


def test_long_note_and_gzip(tmp_path: Path) -> None:
    long = "FINDINGS: " + "x" * 300_000  # over csv's default 128 KiB field limit
    p = tmp_path / "long.csv.gz"
    with gzip.open(p, "wt", newline="") as fh:
        csv.writer(fh).writerows([["id", "report"], ["1", long], [], ["2", "IMPRESSION: ok"]])
    items = read(p)
    assert [it.locator for it in items] == ["row:1", "row:2"]  # the blank line is no record
    d = docs(items)
    assert d["long/1"]["text"] == long
    assert d["long/1"]["sections"] == [{"name": "FINDINGS", "start": 0, "end": len(long)}]


# -- radiology report-part CSV ----------------------------------------------------------------


def test_report_part_csv() -> None:
    items = read(FIX / "reports.csv")
    assert len(items) == 4
    bad = [it for it in items if isinstance(it, Bad)]
    assert [(b.locator, b.reason) for b in bad] == [
        ("row:3", "empty text in columns indication, comparison, findings, impression"),
    ]
    d = docs(items)
    r = d["reports/101"]
    assert r["kind"] == "radiology_report"
    assert r["text"] == (
        "INDICATION: Cough for two weeks\nCOMPARISON: None\n"
        "FINDINGS: The lungs are clear. No pleural effusion.\n"
        "IMPRESSION: No acute cardiopulmonary disease."
    )
    assert section_texts(r) == {
        "INDICATION": "INDICATION: Cough for two weeks\n",
        "COMPARISON": "COMPARISON: None\n",
        "FINDINGS": "FINDINGS: The lungs are clear. No pleural effusion.\n",
        "IMPRESSION": "IMPRESSION: No acute cardiopulmonary disease.",
    }
    assert r["sections"] == split_sections(r["text"])
    r102 = d["reports/102"]
    assert [s["name"] for s in r102["sections"]] == ["COMPARISON", "FINDINGS", "IMPRESSION"]
    assert d["reports/104"]["text"] == "INDICATION: Trauma\nIMPRESSION: No fracture."


# -- folder of .txt ---------------------------------------------------------------------------


def test_txt_folder() -> None:
    reader = NotesReader()
    files = reader.files(FIX / "txt")
    assert [p.relative_to(FIX / "txt").as_posix() for p in files] == [
        "cxr_001.txt", "empty.txt", "sub/clinic_visit.txt",  # README.txt is not a note
    ]
    items = [it for p in files for it in reader.read(p, ReadContext(str(p)))]
    assert [it.locator for it in items] == ["file"] * 3
    bad = [it for it in items if isinstance(it, Bad)]
    assert len(bad) == 1 and bad[0].reason == "empty text in file empty.txt"
    d = docs(items)
    assert set(d) == {"txt/cxr_001", "txt/sub/clinic_visit"}
    cxr = d["txt/cxr_001"]
    assert cxr["title"] == "cxr_001.txt" and cxr["kind"] == "note"
    assert [s["name"] for s in cxr["sections"]] == ["EXAM", "COMPARISON", "FINDINGS", "IMPRESSION"]
    visit = d["txt/sub/clinic_visit"]
    assert [s["name"] for s in visit["sections"]] == ["PREAMBLE", "CHIEF COMPLAINT", "MEDICATIONS"]
    # read without files(): the folder is the file's parent unless options give the root
    alone = read(FIX / "txt" / "sub" / "clinic_visit.txt", root=str(FIX / "txt"))
    assert alone[0].rows[0][1]["document_id"] == "txt/sub/clinic_visit"


def test_detect() -> None:
    assert detect(FIX / "notes.csv")
    assert detect(FIX / "reports.csv")
    assert detect(FIX / "custom.csv") is False  # "body" is not a known text column
    assert detect(FIX / "no_text.csv") is False
    assert detect(FIX / "txt")
    assert detect(FIX / "txt" / "cxr_001.txt")
    assert detect(FIX / "txt" / "README.txt") is False
    assert detect(FIX) is False  # holds CSVs that are not notes
    assert detect(SAMPLE)


def test_sample_data_notes() -> None:
    files = NotesReader().files(SAMPLE)
    assert [p.name for p in files] == ["mtsamples_sample.csv"]
    items = read(files[0])
    d = docs(items)
    assert len(items) == len(d) == 20
    assert Counter(r["kind"] for r in d.values())["radiology_report"] == 6
    assert d["mtsamples_sample/1"]["title"] == "Allergic Rhinitis"


# -- shared real data -------------------------------------------------------------------------


@pytest.mark.integration
def test_mtsamples_every_row_accounted() -> None:
    path = _shared("notes/mtsamples.csv.gz")
    assert detect(path)
    items = read(path)
    assert len(items) == 4999
    bad = [it for it in items if isinstance(it, Bad)]
    assert len(bad) == 33
    assert {b.reason for b in bad} == {"empty text in column transcription"}
    assert bad[0].locator == "row:98"
    d = docs(items)
    assert len(d) == 4966
    kinds = Counter(r["kind"] for r in d.values())
    assert kinds["radiology_report"] == 273
    assert kinds == {"note": 4585, "radiology_report": 273, "discharge_summary": 108}
    n1 = d["mtsamples/1"]
    assert n1["title"] == "Allergic Rhinitis"
    assert n1["text"].startswith("SUBJECTIVE:,  This 23-year-old white female")
    assert n1["code"]["code"] == "Allergy / Immunology"
    assert [s["name"] for s in n1["sections"]] == [
        "SUBJECTIVE", "MEDICATIONS", "ALLERGIES", "OBJECTIVE", "ASSESSMENT", "PLAN",
    ]
    scrotum = d["mtsamples/1486"]
    assert scrotum["kind"] == "radiology_report" and scrotum["title"] == "Ultrasound Scrotum"
    impression = section_texts(scrotum)["IMPRESSION"]
    assert impression.startswith("IMPRESSION:  ,Trace bilateral hydroceles")
    with_sections = sum(1 for r in d.values() if r["sections"])
    assert with_sections == len(d)


@pytest.mark.integration
def test_iu_xray_reports() -> None:
    path = _shared("radiology/iu_xray_reports_dev.csv")
    assert detect(path)
    items = read(path)
    with open(path, newline="", encoding="utf-8") as fh:
        n_rows = sum(1 for _ in csv.DictReader(fh))
    assert len(items) == n_rows == 1276
    bad = [it for it in items if isinstance(it, Bad)]
    assert len(bad) == 9
    assert {b.reason for b in bad} == {
        "empty text in columns indication, comparison, findings, impression"
    }
    d = docs(items)
    assert len(d) == 1267
    assert {r["kind"] for r in d.values()} == {"radiology_report"}
    r3 = d["iu_xray_reports_dev/3"]
    assert r3["text"].startswith("INDICATION: rib pain after a XXXX")
    assert r3["text"].endswith("\nIMPRESSION: No displaced rib fractures, pneumothorax, or pleural "
                               "effusion identified. Well-expanded and clear lungs. Mediastinal "
                               "contour within normal limits. No acute cardiopulmonary abnormality "
                               "identified.")
    assert [s["name"] for s in r3["sections"]] == ["INDICATION", "IMPRESSION"]
    r6 = d["iu_xray_reports_dev/6"]
    assert [s["name"] for s in r6["sections"]] == [
        "INDICATION", "COMPARISON", "FINDINGS", "IMPRESSION",
    ]
    assert section_texts(r6)["IMPRESSION"] == "IMPRESSION: No acute cardiopulmonary findings."
    for r in d.values():  # the part sections agree with the splitter on the joined text
        assert r["sections"] == split_sections(r["text"])
