"""The ray engine (issue 19): the embedding stage on a real local Ray (bound to 127.0.0.1, no
dashboard, no usage stats) gives the same rows and vectors as the single-process stage, a
killed worker is restarted and its batch retried without losing or doubling a vector, and a
bad choice is a clear error."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("lance_ray")

from sagehealth import Ecosystem  # noqa: E402
from sagehealth.engine import Engine, choose, import_ray, ray_session  # noqa: E402
from sagehealth.errors import EngineError  # noqa: E402
from sagehealth.governance import Principal  # noqa: E402
from sagehealth.retrieval.embedders import get_embedder  # noqa: E402
from sagehealth.retrieval.index import coverage, write_vectors  # noqa: E402

import ray.cloudpickle  # noqa: E402

# Ray workers cannot import this test module: what they run from it travels by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

STEWARD = Principal("st", "steward", "operations")
LOCAL_RAY = Engine("ray", workers=2)


@pytest.fixture(scope="module")
def ray_up():
    """One local Ray for the module (ray_session reuses a running one)."""
    with ray_session(LOCAL_RAY) as ray:
        yield ray


def _store(tmp_path: Path, samples: Path, name: str) -> Ecosystem:
    eco = Ecosystem.open(tmp_path / name, STEWARD)
    eco.ingest([samples / "notes" / "mtsamples_sample.csv"],
               options={"index": True, "embed": False, "deid_key": "ray-engine-test-key"})
    return eco


def _vectors(eco: Ecosystem, table: str = "chunks") -> tuple[list[str], np.ndarray]:
    t = eco.lake.table(table).to_lance().to_table(columns=["row_id", "vector"]).sort_by("row_id")
    return t.column("row_id").to_pylist(), np.stack(t.column("vector").to_numpy(zero_copy_only=False))


def test_local_ray_is_bound_to_loopback_without_dashboard(ray_up):
    import psutil

    nodes = [n for n in ray_up.nodes() if n["Alive"]]
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    assert os.environ.get("RAY_USAGE_STATS_ENABLED") == "0"
    # every socket Ray's processes (GCS, raylet, workers) listen on is a loopback one
    listening = [(p.name(), c.laddr.ip) for p in psutil.Process().children(recursive=True)
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert {"gcs_server", "raylet"} <= {name for name, _ in listening}
    assert all(ip.removeprefix("::ffff:") == "127.0.0.1" for _, ip in listening), listening
    # no dashboard UI (Ray keeps a head process without its frontend)
    heads = [p.cmdline() for p in psutil.Process().children(recursive=True) if any(
        a.endswith("dashboard/dashboard.py") for a in p.cmdline())]
    assert all("--disable-frontend" in cmd for cmd in heads)


def test_ray_and_single_process_embedding_give_the_same_rows(tmp_path, samples, ray_up):
    local, distributed = _store(tmp_path, samples, "local"), _store(tmp_path, samples, "ray")
    a = local.index(engine="local")["embedding"]
    b = distributed.index(engine=LOCAL_RAY)["embedding"]
    assert a["chunks"]["engine"] == "local" and b["chunks"]["engine"] == "ray"
    assert a["chunks"]["embedded"] == b["chunks"]["embedded"] > 50
    for table in ("chunks", "research_chunks"):
        assert local.lake.table(table).count_rows() > 50
        ids_a, va = _vectors(local, table)
        ids_b, vb = _vectors(distributed, table)
        assert ids_a == ids_b
        assert coverage(distributed.lake.table(table).to_lance())[1] == 0
        # the default embedder runs each text alone: the same vector wherever it runs
        np.testing.assert_allclose(va, vb, atol=1e-6)
    # and it is searchable: hybrid search finds the same top hit in both stores
    q = "chest pain radiating to the left arm"
    researcher = Principal("r", "researcher", "research")
    hits = [[h.row_id for h in eco.as_principal(researcher).search(q, k=3)] for eco in (local, distributed)]
    assert hits[0] == hits[1] and len(hits[0]) == 3


class _DiesOnce:
    """The default embedder, in a worker that kills its own process on its first batch when
    ``marker`` does not exist yet (as an OOM kill or a lost node would)."""

    def __init__(self, marker: str) -> None:
        self.inner = get_embedder("minilm-int8")
        self.name, self.dim, self.marker = self.inner.name, self.inner.dim, marker

    def embed_documents(self, texts):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return self.inner.embed_documents(texts)

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)


def test_a_killed_worker_is_retried_without_losing_or_doubling_a_vector(tmp_path, samples, ray_up):
    from sagehealth.retrieval.ray_embed import embed_stream

    eco = _store(tmp_path, samples, "s")
    tbl = eco.lake.table("chunks")
    ds = tbl.to_lance()
    rows, pending = coverage(ds)
    assert pending == rows > 50
    marker = str(tmp_path / "died")
    parts = list(embed_stream(eco.lake.table_uri("chunks"), ds.version, partial(_DiesOnce, marker),
                              workers=2, batch=16))
    assert Path(marker).exists()  # a worker did die
    ids = [r for p, _ in parts for r in p.column("row_id").to_pylist()]
    assert len(ids) == len(set(ids)) == pending  # every pending chunk once: none lost, none doubled
    assert write_vectors(tbl, parts, 384) == pending
    assert coverage(tbl.to_lance()) == (rows, 0)
    # the vectors are the ones the single-process stage would have written
    got = dict(zip(ids, np.concatenate([v for _, v in parts])))
    texts = dict(zip(*(ds.to_table(columns=["row_id", "search_text"]).column(c).to_pylist()
                       for c in ("row_id", "search_text"))))
    some = sorted(got)[:5]
    np.testing.assert_allclose(np.stack([got[r] for r in some]),
                               get_embedder("minilm-int8").embed_documents([texts[r] for r in some]), atol=1e-6)


def test_unknown_engine_and_bad_workers_are_clear_errors():
    with pytest.raises(EngineError, match="unknown engine 'spark'"):
        choose("spark")
    with pytest.raises(EngineError, match="workers must be at least 1"):
        choose("ray", workers=0)
    assert choose(None) == Engine()  # local unless asked
    assert choose("RAY", address="10.0.0.5:6379").address == "10.0.0.5:6379"


def test_the_engine_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SAGEHEALTH_ENGINE", "ray")
    monkeypatch.setenv("SAGEHEALTH_RAY_ADDRESS", "ray://head:10001")
    e = choose()
    assert e.distributed and e.address == "ray://head:10001"


def test_without_ray_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EngineError, match=r"pip install 'sagehealth\[ray\]'"):
        import_ray()


def test_cli_index_with_an_unknown_engine_exits_with_a_message(tmp_path):
    import subprocess

    home = str(tmp_path / "store")
    Ecosystem.open(home, STEWARD)
    r = subprocess.run([sys.executable, "-m", "sagehealth.cli", "index", "--engine", "spark", "--home", home],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "unknown engine 'spark'" in r.stderr and "Traceback" not in r.stderr


class _MustNotEmbed:
    name, dim = "onnx:all-MiniLM-L6-v2-int8", 384

    def embed_documents(self, texts):
        if texts:
            raise AssertionError(f"embedded {len(texts)} texts whose vectors were known")
        return np.zeros((0, 384), np.float32)


def test_texts_with_known_vectors_are_not_embedded_again(tmp_path, samples, ray_up):
    """A research chunk that copies a clinical chunk's text reuses its vector on Ray too."""
    from sagehealth.retrieval.index import embed_rows, pending_rows
    from sagehealth.retrieval.ray_embed import embed_stream

    eco = _store(tmp_path, samples, "s")
    ds = eco.lake.table("chunks").to_lance()
    known: dict = {}
    for part in pending_rows(ds):
        embed_rows(part, get_embedder("minilm-int8"), known)
    parts = list(embed_stream(eco.lake.table_uri("chunks"), ds.version, _MustNotEmbed, workers=2, known=known))
    shas = [s for p, _ in parts for s in p.column("content_sha").to_pylist()]
    assert len(shas) == coverage(ds)[1]
    np.testing.assert_array_equal(np.concatenate([v for _, v in parts]), np.stack([known[s] for s in shas]))
