"""LiteratureReader: BEIR corpora and PubMedQA files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import json

import pytest

from sagehealth.data.model import SCHEMAS, row_id
from sagehealth.data.sources.base import Bad, ReadContext, Record
from sagehealth.data.sources.literature import LiteratureReader, detect

FIX = Path(__file__).parent / "fixtures" / "literature"
SAMPLE = Path(__file__).resolve().parents[1] / "src" / "sagehealth" / "sample_data" / "literature"
from helpers import STEWARD, shared_path as _shared  # noqa: E402


def read(path: Path, **options: Any) -> list[Record | Bad]:
    return list(LiteratureReader().read(path, ReadContext(str(path), options=options)))


def lit(items: list[Record | Bad]) -> dict[str, dict[str, Any]]:
    """literature rows by doc_id; checks one row per record and the Arrow schema."""
    rows = [r for it in items if isinstance(it, Record) for r in it.rows]
    assert all(t == "literature" for t, _ in rows)
    assert len(rows) == sum(isinstance(it, Record) for it in items)
    pa.Table.from_pylist([r for _, r in rows], schema=SCHEMAS["literature"])
    for _, r in rows:
        assert set(r) <= set(SCHEMAS["literature"].names)
        assert r["row_id"] == row_id("literature", r["collection"], r["doc_id"])
    return {r["doc_id"]: r for _, r in rows}


# -- BEIR -------------------------------------------------------------------------------------


def test_beir_folder_files_skip_queries_and_qrels() -> None:
    files = LiteratureReader().files(FIX / "scifact_mini")
    assert [p.name for p in files] == ["corpus.jsonl"]


def test_beir_corpus_rows_and_bad_lines() -> None:
    items = read(FIX / "scifact_mini" / "corpus.jsonl")
    # 7 lines, one blank: 6 records
    assert [it.locator for it in items] == [f"line:{n}" for n in (1, 2, 3, 4, 5, 7)]
    bad = {it.locator: it.reason for it in items if isinstance(it, Bad)}
    assert set(bad) == {"line:3", "line:4", "line:5"}
    assert bad["line:3"].startswith("malformed JSON")
    assert bad["line:4"] == "empty text for _id 1004"
    assert bad["line:5"] == "missing _id"
    d = lit(items)
    assert set(d) == {"1001", "1002", "1006"}
    a = d["1001"]
    assert a["collection"] == "scifact_mini"
    assert a["title"] == "Aspirin and colorectal adenoma recurrence"
    assert a["text"].startswith("Daily aspirin reduced")
    assert a["extra"] is None and a["year"] is None and a.get("mesh") is None
    b = d["1002"]
    assert b["title"] is None  # empty title
    assert b["year"] == 2019
    assert orjson.loads(b["extra"]) == {"year": 2019, "journal": "Fixture J"}
    assert all(isinstance(it.content, bytes) for it in items if isinstance(it, Record))


def test_beir_gzip_and_collection_option(tmp_path: Path) -> None:
    folder = tmp_path / "nfcorpus"
    folder.mkdir()
    src = (FIX / "scifact_mini" / "corpus.jsonl").read_bytes()
    with gzip.open(folder / "corpus.jsonl.gz", "wb") as fh:
        fh.write(src)
    assert detect(folder)
    d = lit(read(folder / "corpus.jsonl.gz"))
    assert d["1001"]["collection"] == "nfcorpus"
    d2 = lit(read(folder / "corpus.jsonl.gz", collection="mine"))
    assert d2["1001"]["collection"] == "mine"
    assert d2["1001"]["row_id"] != d["1001"]["row_id"]


# -- PubMedQA ---------------------------------------------------------------------------------


def test_pubmedqa_folder_skips_ground_truth() -> None:
    files = LiteratureReader().files(FIX / "pubmedqa")
    assert [p.name for p in files] == ["ori_pqal.json"]


def test_pubmedqa_rows_and_bad_records() -> None:
    items = read(FIX / "pubmedqa" / "ori_pqal.json")
    assert [it.locator for it in items] == ["/111", "/222", "/333", "/444"]
    bad = {it.locator: it.reason for it in items if isinstance(it, Bad)}
    assert bad == {
        "/222": "YEAR: 'circa 1990' is not a number",
        "/333": "empty text: no CONTEXTS",
    }
    d = lit(items)
    r = d["111"]
    assert r["collection"] == "pubmedqa"
    assert r["title"] == "Does aspirin prevent adenoma recurrence?"
    assert r["text"] == "BACKGROUND: Adenomas recur often.\n\nRESULTS: Aspirin reduced recurrence."
    assert r["year"] == 2003
    assert r["mesh"] == ["Aspirin", "Adenoma"]
    extra = orjson.loads(r["extra"])
    assert extra["question"] == r["title"] and extra["title_is_question"] is True
    assert extra["final_decision"] == "yes"
    assert extra["long_answer"] == "Aspirin reduces adenoma recurrence."
    assert extra["reasoning_required_pred"] == "yes"
    assert d["444"]["text"] == "METHODS: First.\n\nSecond."  # fewer labels than contexts


def test_pubmedqa_truncated_file(tmp_path: Path) -> None:
    raw = (FIX / "pubmedqa" / "ori_pqal.json").read_bytes()
    p = tmp_path / "pqa.json"
    p.write_bytes(raw[: raw.index(b'"333"') + 40])
    items = read(p)
    assert [it.locator for it in items][:2] == ["/111", "/222"]
    last = items[-1]
    assert isinstance(last, Bad) and last.reason.startswith("malformed JSON after /222")


def test_detect(tmp_path: Path) -> None:
    assert detect(FIX / "scifact_mini")
    assert detect(FIX / "scifact_mini" / "corpus.jsonl")
    assert not detect(FIX / "scifact_mini" / "queries.jsonl")
    assert not detect(FIX / "scifact_mini" / "qrels_test.tsv")
    assert detect(FIX / "pubmedqa")
    assert detect(FIX / "pubmedqa" / "ori_pqal.json")
    assert not detect(FIX / "pubmedqa" / "test_ground_truth.json")
    other = tmp_path / "abstracts.jsonl"  # a BEIR corpus under another name
    shutil.copy(FIX / "scifact_mini" / "corpus.jsonl", other)
    assert detect(other)
    (tmp_path / "bundle.json").write_text('{"resourceType": "Bundle", "entry": []}')
    assert not detect(tmp_path / "bundle.json")
    assert not detect(Path(__file__).parent / "fixtures" / "notes")


def test_sample_data_literature() -> None:
    assert detect(SAMPLE)
    files = LiteratureReader().files(SAMPLE)
    assert [p.relative_to(SAMPLE).as_posix() for p in files] == ["scifact/corpus.jsonl"]
    items = read(files[0])
    d = lit(items)
    assert len(items) == len(d) == 30
    assert {r["collection"] for r in d.values()} == {"scifact"}
    assert "31715818" in d  # the first document of SciFact's training qrels


# -- shared real data -------------------------------------------------------------------------


@pytest.mark.integration
def test_scifact_corpus() -> None:
    folder = _shared("retrieval/scifact")
    assert detect(folder)
    files = LiteratureReader().files(folder)
    assert [p.name for p in files] == ["corpus.jsonl"]
    items = read(files[0])
    assert len(items) == 5183
    assert not [it for it in items if isinstance(it, Bad)]
    d = lit(items)
    assert len(d) == 5183
    r = d["4983"]
    assert r["collection"] == "scifact"
    assert r["title"].startswith("Microstructural development of human newborn cerebral white")
    assert r["text"].startswith("Alterations of the architecture of cerebral white matter")
    assert items[0].locator == "line:1" and items[-1].locator == "line:5183"


@pytest.mark.integration
def test_pubmedqa_labelled() -> None:
    folder = _shared("retrieval/pubmedqa")
    assert detect(folder)
    files = LiteratureReader().files(folder)
    assert [p.name for p in files] == ["ori_pqal.json"]
    items = read(files[0])
    assert len(items) == 1000
    assert not [it for it in items if isinstance(it, Bad)]
    d = lit(items)
    assert len(d) == 1000
    r = d["21645374"]
    assert r["title"] == (
        "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?"
    )
    assert r["text"].startswith("BACKGROUND: Programmed cell death (PCD) is the regulated death")
    assert "\n\nRESULTS: The following paper elucidates" in r["text"]
    assert r["year"] == 2011
    assert r["mesh"] == ["Alismataceae", "Apoptosis", "Cell Differentiation", "Mitochondria",
                         "Plant Leaves"]
    assert orjson.loads(r["extra"])["final_decision"] == "yes"
    gt = orjson.loads((folder / "test_ground_truth.json").read_bytes())
    assert len(gt) == 500 and set(gt) <= set(d)  # the test ids are among the articles


def test_non_string_title_is_a_bad_record_and_the_rest_is_kept(tmp_path: Path) -> None:
    from sagehealth import Ecosystem

    lines = [{"_id": str(i), "title": f"t{i}", "text": f"abstract {i}"} for i in range(10)]
    lines[5]["title"] = 5
    p = tmp_path / "c" / "corpus.jsonl"
    p.parent.mkdir()
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    s = Ecosystem.open(tmp_path / "store", STEWARD).ingest([p])
    assert (s.records_in, s.ingested, s.quarantined) == (10, 9, 1)
