"""Section splitting: heading styles, canonical names, exact offsets, real notes."""

from __future__ import annotations

import base64
import csv
import gzip
import sys

import orjson
import pytest

from sagehealth.data.sections import CANONICAL, canonical_name, split_sections

from helpers import shared_path as _shared  # noqa: E402


def names(text: str) -> list[str]:
    return [s["name"] for s in split_sections(text)]


def texts(text: str) -> list[str]:
    return [text[s["start"] : s["end"]] for s in split_sections(text)]


def assert_partition(text: str) -> None:
    """Sections are contiguous, in order, and reach the end of the text."""
    secs = split_sections(text)
    for a, b in zip(secs, secs[1:], strict=False):
        assert a["end"] == b["start"]
    if secs:
        assert secs[-1]["end"] == len(text)
        assert secs[0]["start"] == 0 or not text[: secs[0]["start"]].strip()


def test_mtsamples_inline_headings() -> None:
    t = (
        "SUBJECTIVE:,  A 23-year-old woman.  She used Claritin, and Zyrtec.,MEDICATIONS: , "
        "Allegra.,ALLERGIES: , None.,OBJECTIVE:,Vitals:  Weight 130 pounds.,HEENT:  Clear.,"
        "ASSESSMENT:,  Allergic rhinitis.,PLAN:,1.  Zyrtec."
    )
    assert names(t) == ["SUBJECTIVE", "MEDICATIONS", "ALLERGIES", "OBJECTIVE", "ASSESSMENT", "PLAN"]
    parts = texts(t)
    assert parts[1] == "MEDICATIONS: , Allegra.,"
    assert parts[3] == "OBJECTIVE:,Vitals:  Weight 130 pounds.,HEENT:  Clear.,"  # no "Vitals" split
    assert parts[-1] == "PLAN:,1.  Zyrtec."
    assert_partition(t)


def test_mtsamples_synonyms_and_soap_letters() -> None:
    t = "S:,  Feels unwell.,O:,  Febrile.,A:,  Flu.,P:,  Rest.,CC:, Cough.,HPI:, Two days."
    assert names(t) == [
        "SUBJECTIVE", "OBJECTIVE", "ASSESSMENT", "PLAN", "CHIEF COMPLAINT",
        "HISTORY OF PRESENT ILLNESS",
    ]


def test_markdown_headings_synthea_style() -> None:
    t = (
        "\n1987-11-19\n\n# Chief Complaint\n- Cough\n\n\n# History of Present Illness\n"
        "A 60 year-old woman.\n\n# Assessment and Plan\n\n\n## Plan\n\nRest.\n"
    )
    secs = split_sections(t)
    assert [s["name"] for s in secs] == [
        "PREAMBLE", "CHIEF COMPLAINT", "HISTORY OF PRESENT ILLNESS", "ASSESSMENT AND PLAN", "PLAN",
    ]
    assert secs[0] == {"name": "PREAMBLE", "start": 0, "end": t.index("# Chief")}
    assert t[secs[1]["start"] : secs[1]["end"]] == "# Chief Complaint\n- Cough\n\n\n"
    assert t[secs[4]["start"] :] == "## Plan\n\nRest.\n"
    assert_partition(t)


def test_line_headings_caps_and_title_case() -> None:
    t = (
        "EXAM: Chest radiograph.\nCOMPARISON: None.\nFindings: Clear lungs.\n"
        "Neck: supple\nBP: 120/80\nImpressions:\nNormal chest.\n"
    )
    secs = split_sections(t)
    assert [s["name"] for s in secs] == ["EXAM", "COMPARISON", "FINDINGS", "IMPRESSION"]
    # "Neck:" (unknown title case followed by text) and "BP:" (2 letters) are not headings
    findings = t[secs[2]["start"] : secs[2]["end"]]
    assert findings == "Findings: Clear lungs.\nNeck: supple\nBP: 120/80\n"


def test_unknown_headings_kept_upper_cased() -> None:
    assert names("GROSS FINDINGS:, Tan tissue.\nSpecial Stains:\nNegative.") == [
        "GROSS FINDINGS", "SPECIAL STAINS",
    ]
    # lower-case or sentence-like line starts are text, not headings
    assert names("patient says: fine\nThe patient states the following:\nok") == ["PREAMBLE"]


def test_preamble_and_blank_cases() -> None:
    assert split_sections("") == []
    assert split_sections("No headings at all.") == [{"name": "PREAMBLE", "start": 0, "end": 19}]
    t = "  \n\nFINDINGS: clear."
    assert split_sections(t) == [{"name": "FINDINGS", "start": 4, "end": len(t)}]  # blank: none


def test_crlf_and_indentation() -> None:
    t = "Header line\r\n  IMPRESSION:\r\nNormal.\r\n# Plan\r\nRest.\r\n"
    secs = split_sections(t)
    assert [s["name"] for s in secs] == ["PREAMBLE", "IMPRESSION", "PLAN"]
    assert t[secs[1]["start"] :].startswith("IMPRESSION:")
    assert t[secs[2]["start"] :].startswith("# Plan")


def test_canonical_names_table() -> None:
    for canon, variants in CANONICAL.items():
        assert canonical_name(canon.title()) == canon
        for v in variants:
            assert canonical_name(v.lower()) == canon, v
    assert canonical_name("Preoperative Diagnosis (ES)") == "PREOPERATIVE DIAGNOSIS"
    assert canonical_name("  current   medications ") == "MEDICATIONS"
    assert canonical_name("OS") == "OS"  # no plural rule on short names


# -- real notes -----------------------------------------------------------------------------


@pytest.mark.integration
def test_mtsamples_all_notes_partition_and_headings() -> None:
    csv.field_size_limit(sys.maxsize)
    path = _shared("notes/mtsamples.csv.gz")
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4999
    with_heading = 0
    for r in rows:
        t = r["transcription"]
        assert_partition(t)
        secs = split_sections(t)
        if secs and secs[0]["name"] != "PREAMBLE":
            with_heading += 1
            head = t[secs[0]["start"] : secs[0]["end"]]
            assert ":" in head
    assert with_heading > 4300  # nearly every transcription opens with a heading
    first = next(r for r in rows if r["note_id"] == "1")["transcription"]
    assert names(first) == [
        "SUBJECTIVE", "MEDICATIONS", "ALLERGIES", "OBJECTIVE", "ASSESSMENT", "PLAN",
    ]
    scrotum = next(r for r in rows if r["note_id"] == "1486")["transcription"]
    assert names(scrotum) == ["EXAM", "INDICATION", "FINDINGS", "IMPRESSION"]


@pytest.mark.integration
def test_synthea_document_reference_notes() -> None:
    path = _shared("fhir/bulk_ndjson_10patients/DocumentReference.000.ndjson")
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            res = orjson.loads(line)
            t = base64.b64decode(res["content"][0]["attachment"]["data"]).decode("utf-8")
            got = names(t)
            assert_partition(t)
            assert got[0] == "PREAMBLE"  # the date line
            assert "CHIEF COMPLAINT" in got and "HISTORY OF PRESENT ILLNESS" in got
            n += 1
    assert n > 100
