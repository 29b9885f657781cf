"""The embedding stage (issue 15): ingest commits the data and its BM25-searchable chunks first,
vectors follow in committed rounds, an interruption keeps what is done and a rerun resumes,
hybrid search works on a partly embedded table, and one process embeds a store at a time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from sagehealth import Ecosystem
from sagehealth.governance import Principal
from sagehealth.retrieval import embedders
from sagehealth.retrieval.index import coverage, pending_rows, write_vectors
from sagehealth.retrieval.search import search_chunks

STEWARD = Principal("st", "steward", "operations")


class _StopAfter:
    """The real default embedder, interrupted (Ctrl-C) on its ``calls``-th document batch."""

    def __init__(self, inner, calls: int) -> None:
        self.inner, self.calls = inner, calls
        self.name, self.dim = inner.name, inner.dim

    def embed_documents(self, texts):
        self.calls -= 1
        if self.calls <= 0:
            raise KeyboardInterrupt
        return self.inner.embed_documents(texts)

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)


@pytest.fixture
def notes(samples):
    return samples / "notes" / "mtsamples_sample.csv"


def _vectors(eco: Ecosystem) -> dict[str, np.ndarray]:
    t = eco.lake.dataset("chunks").to_table(columns=["search_text", "vector"], filter="vector IS NOT NULL")
    return dict(zip(t.column("search_text").to_pylist(), t.column("vector").to_pylist()))


def test_interrupted_embedding_keeps_data_and_bm25_and_resumes(tmp_path, notes, monkeypatch):
    real = embedders.get_embedder()
    monkeypatch.setitem(embedders._LOADED, embedders.DEFAULT, _StopAfter(real, calls=2))
    monkeypatch.setattr(Ecosystem, "EMBED_ROUND_SECONDS", 0.0)  # every batch is a committed round
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    with pytest.raises(KeyboardInterrupt):
        eco.ingest([notes], options={"index": True, "research": False})
    head = eco.lake.head()
    assert head.message.startswith("embed 64 chunks of chunks")  # one round committed, then Ctrl-C
    assert eco.lake.count("documents") == 20  # the data was committed before any embedding
    status = eco.index_status()["chunks"]
    assert status["chunks"] > 64 and status["embedded"] == 64 and status["pending"] == status["chunks"] - 64
    # BM25 finds a chunk without a vector; hybrid search works on the partly embedded table
    ds = eco.lake.dataset("chunks")
    pending = ds.to_table(columns=["row_id", "search_text"], filter="vector IS NULL", limit=1).to_pylist()[0]
    words = " ".join(pending["search_text"].split()[3:9])
    bm25 = search_chunks(ds, words, embedder=None, k=5, mode="bm25")
    assert pending["row_id"] in {h.row_id for h in bm25}
    hybrid = search_chunks(ds, words, embedder=real, k=5, mode="hybrid")
    assert pending["row_id"] in {h.row_id for h in hybrid}
    assert all("vector" not in h.scores for h in hybrid if h.row_id == pending["row_id"])

    monkeypatch.setitem(embedders._LOADED, embedders.DEFAULT, real)
    result = eco.index()
    assert result["chunks"]["added"] == 0  # nothing re-chunked: the stage resumes
    assert result["embedding"]["chunks"]["embedded"] == status["pending"]
    assert eco.index_status()["chunks"]["pending"] == 0
    got = _vectors(eco)
    texts = sorted(got)[:6]
    assert np.allclose(np.stack([got[t] for t in texts]), real.embed_documents(texts), atol=1e-5)
    assert eco.index()["embedding"] == {}  # nothing left: no new version
    versions = [c.message for c in eco.lake.commits()]
    assert versions.count(versions[-1]) == 1


def test_a_chunk_changed_since_it_was_read_is_not_given_a_stale_vector(tmp_path, notes):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.ingest([notes], options={"index": True, "research": False, "embed": False})
    tbl = eco.lake.table("chunks")
    part = next(pending_rows(tbl.to_lance(), batch=8))
    vecs = np.ones((part.num_rows, tbl.to_lance().schema.field("vector").type.list_size), np.float32)
    stale = part.set_column(1, "content_sha", pa.array(["0" * 64] * part.num_rows))
    with eco.lake.write_lock():
        assert write_vectors(tbl, [(stale, vecs)], vecs.shape[1]) == 0
        assert write_vectors(tbl, [(part, vecs)], vecs.shape[1]) == part.num_rows
        eco.lake.rollback_uncommitted()
    assert coverage(eco.lake.dataset("chunks"))[1] == eco.lake.count("chunks")  # rolled back: all pending


def test_one_process_embeds_a_store_at_a_time(tmp_path, notes):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.ingest([notes], options={"index": True, "research": False, "embed": False})
    with eco.lake.embed_lock():
        other = Ecosystem.open(tmp_path / "s", STEWARD)
        assert other.lake.embedding_elsewhere()
        assert other.index_status()["chunks"]["embedding_now"]
        assert "elsewhere" in other.index()["embedding"]
    assert not eco.lake.embedding_elsewhere()
    assert eco.index()["embedding"]["chunks"]["embedded"] == eco.lake.count("chunks")


def test_cli_ingest_without_embedding_then_index_with_plain_progress(tmp_path, notes, monkeypatch):
    from sagehealth.cli import app

    monkeypatch.setenv("SAGEHEALTH_INDEX", "1")
    home = str(tmp_path / "s")
    run = CliRunner().invoke
    r = run(app, ["--role", "steward", "ingest", str(notes), "--no-embed", "--home", home])
    assert r.exit_code == 0, r.output
    assert "embed them with: sagehealth index" in r.output
    r = run(app, ["--role", "steward", "index", "--status", "--home", home])
    assert r.exit_code == 0 and "chunks: 0 of 109 chunks have vectors" in r.output, r.output
    r = run(app, ["--role", "steward", "index", "--home", home])
    assert r.exit_code == 0, r.output
    assert "embedding chunks: 109/109 chunks (100%)" in r.output  # not a terminal: plain lines
    assert "chunks: 109 of 109 chunks have vectors" in r.output and "complete" in r.output


_SLOW_CHILD = """
import sys, time
from sagehealth import Ecosystem
from sagehealth.cli import app
from sagehealth.retrieval import embedders

class Slow:
    def __init__(self, inner):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
    def embed_documents(self, texts):
        time.sleep(1.0)
        return self.inner.embed_documents(texts)
    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

embedders._LOADED[embedders.DEFAULT] = Slow(embedders.get_embedder())
Ecosystem.EMBED_ROUND_SECONDS = 0.0
app(sys.argv[1:])
"""


def test_a_killed_embedding_process_leaves_a_good_store_and_a_rerun_resumes(tmp_path, notes):
    """kill -9 of a real ``sagehealth ingest`` while it embeds: the data, the chunks and every
    committed round survive, the embed lock is free again, and ``sagehealth index`` embeds only
    what is left — to the vectors an uninterrupted run gives."""
    import os
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "s"
    env = {**os.environ, "SAGEHEALTH_ROLE": "steward", "SAGEHEALTH_INDEX": "1"}
    child = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, "ingest", str(notes), "--home", str(home), "--json"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if (home / "lake").exists():
                head = Ecosystem.open(home, STEWARD).lake.head()
                if head is not None and head.message.startswith("embed "):
                    break
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("no embedding round was committed in 120 s")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    eco = Ecosystem.open(home, STEWARD)
    assert eco.lake.count("documents") == 20
    status = eco.index_status()
    assert 0 < status["chunks"]["embedded"] < status["chunks"]["chunks"] and not status["chunks"]["embedding_now"]
    done = status["chunks"]["embedded"] + status["research_chunks"]["embedded"]
    result = eco.index()
    assert result["chunks"]["added"] == 0 and result["research_chunks"]["added"] == 0
    embedded = sum(e["embedded"] for e in result["embedding"].values())
    total = status["chunks"]["chunks"] + status["research_chunks"]["chunks"]
    assert embedded == total - done
    assert all(s["pending"] == 0 for s in eco.index_status().values())
    fresh = Ecosystem.open(tmp_path / "fresh", STEWARD)
    fresh.ingest([notes], options={"index": True})
    got, want = _vectors(eco), _vectors(fresh)
    assert got.keys() == want.keys()
    assert max(float(np.abs(np.asarray(got[t]) - np.asarray(want[t])).max()) for t in got) < 1e-5


class _Counting:
    """The real default embedder, counting the texts it is given."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim, self.texts = inner, inner.name, inner.dim, []

    def embed_documents(self, texts):
        self.texts += list(texts)
        return self.inner.embed_documents(texts)

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)


def test_each_distinct_text_is_embedded_once_across_batches_and_zones(tmp_path, notes, monkeypatch):
    monkeypatch.setenv("SAGEHEALTH_DEID_KEY", "embed-stage-test-key-0123456789")
    counting = _Counting(embedders.get_embedder())
    monkeypatch.setitem(embedders._LOADED, embedders.DEFAULT, counting)
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    eco.ingest([notes], options={"index": True})
    clinical = eco.lake.dataset("chunks").to_table(columns=["search_text", "vector"]).to_pylist()
    research = eco.lake.dataset("research_chunks").to_table(columns=["search_text", "vector"]).to_pylist()
    texts = {r["search_text"] for r in clinical} | {r["search_text"] for r in research}
    shared = {r["search_text"] for r in clinical} & {r["search_text"] for r in research}
    assert research and shared  # texts without PHI are the same in both zones
    assert len(counting.texts) == len(set(counting.texts)) == len(texts)
    by_text = {r["search_text"]: r["vector"] for r in clinical}
    for r in research:
        if r["search_text"] in shared:
            assert np.allclose(r["vector"], by_text[r["search_text"]])


def test_ingesting_the_same_files_again_embeds_what_an_earlier_run_left(tmp_path, notes):
    eco = Ecosystem.open(tmp_path / "s", STEWARD)
    first = eco.ingest([notes], options={"index": True, "research": False, "embed": False})
    assert eco.index_status()["chunks"]["pending"] == first.index["chunks"]["added"] > 0
    again = eco.ingest([notes], options={"index": True, "research": False})
    assert again.records_in == 0  # nothing new: the file was ingested before
    assert again.index["embedding"]["chunks"]["embedded"] == first.index["chunks"]["added"]
    assert eco.index_status()["chunks"]["pending"] == 0
    assert eco.ingest([notes], options={"index": True, "research": False}).index == {}
