"""Search at scale: 1,000,000 chunks in the lakehouse, hybrid queries under filters, against a
hand-fused FAISS-HNSW + bm25s baseline over the same rows, in one run.

How the rows are made (real text, synthesized variety):
- base chunks: SciFact abstracts (../shared/data/retrieval/scifact) cut by our chunker into
  sentence windows of at most 60 words; the first ``--base`` of them are embedded for real with
  the default embedder (that is also the embedding-throughput measurement);
- row i copies base chunk i mod base with ~10% of its words dropped at random (so BM25 sees
  different documents); its vector (``--vectors mix``, the default) = normalise(base vector +
  w1 * vector of another random base + w2 * vector of a third + N(0, 0.02²) per dimension),
  w1, w2 ~ U(0, 0.5): every row a distinct point of the space the real embeddings span, so
  that exact neighbours are well defined. ``--vectors noise`` gives the earlier scheme, base
  vector + noise only: 500 near-duplicates of each base (cosine ~0.93), among which the exact
  top 10 is decided by the noise — a worst case for any quantised index;
- metadata: 50,000 patients, 5 document kinds, sections, dates uniform over 2000-2025.
Queries: SciFact training claims, each run unfiltered and with a patient, a kind, a date-range
and a combined filter. Their vectors are computed once before the timed runs (as the search's
query-vector cache holds them for a repeated query); what encoding a new query adds is measured
on its own (one query at a time, uncached) and reported beside.

Measured: row write, compaction and index build times (BM25 inverted index, IVF-RQ vector index),
``Ecosystem.search`` hybrid latency p50/p95 and queries/s per filter (the full governed path:
principal check, audit entry, both retrievers, fusion, reading the hits), ANN recall@10 against
exact search (unfiltered and under each filter), peak RSS; the baseline's build time, latency, and how often post-filtering left it
fewer than k hits. Usage: ``python benchmarks/search.py [--rows 1000000] [--out results/search.json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
KINDS = ["note", "radiology_report", "discharge_summary", "imaging_report", "literature"]
SECTIONS = ["HISTORY", "FINDINGS", "IMPRESSION", "ASSESSMENT AND PLAN", "ABSTRACT"]


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2)


def timed_searches(research, queries: list[str], make=dict) -> dict:
    """p50/p95 latency, queries/s and queries without hits of ``research.search(q, k=10,
    **make())`` over ``queries`` (``make`` gives each query's keyword arguments)."""
    times, empty = [], 0
    for q in queries:
        kw = make()
        t = time.perf_counter()
        hits = research.search(q, k=10, **kw)
        times.append(time.perf_counter() - t)
        empty += not hits
    return {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "qps": round(len(times) / sum(times), 1),
            "queries_without_hits": empty}


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def base_chunks(n: int) -> list[str]:
    from sagehealth.retrieval.chunking import windows

    out: list[str] = []
    with open(SHARED / "retrieval" / "scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            text = f"{d['title']}. {d['text']}"
            out += [text[s:e] for s, e in windows(text, 0, len(text), max_words=60, overlap=0)]
            if len(out) >= n:
                return out[:n]
    return out


def synth_rows(base: list[str], vecs: np.ndarray, rows: int, batch: int, embedder: str, seed: int = 7,
               vectors: str = "mix"):
    """Arrow batches of the chunk schema: varied copies of the base chunks."""
    from sagehealth.data.model import chunk_schema

    rng = np.random.default_rng(seed)
    schema = chunk_schema(vecs.shape[1])
    words = [t.split() for t in base]
    t0 = datetime(2000, 1, 1, tzinfo=UTC)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        idx = (np.arange(start, start + n) % len(base))
        keep = rng.random((n, 80)) > 0.1
        texts = [" ".join(w for j, w in enumerate(words[b]) if j >= 80 or keep[i, j]) for i, b in enumerate(idx)]
        v = vecs[idx] + rng.normal(0, 0.02, (n, vecs.shape[1])).astype(np.float32)
        if vectors == "mix":
            for _ in range(2):
                other = rng.integers(0, len(base), n)
                v += rng.uniform(0, 0.5, (n, 1)).astype(np.float32) * vecs[other]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        pats = rng.integers(0, 50_000, n)
        kinds = rng.integers(0, len(KINDS), n)
        days = rng.integers(0, 365 * 25, n)
        doc = [(start + i) // 4 for i in range(n)]  # 4 chunks per source row
        lit = [KINDS[k] == "literature" for k in kinds]
        prov = [hashlib.sha1(f"bench-{d}".encode()).hexdigest()[:24] for d in doc]
        offsets = [((start + i) % 4) * 400 for i in range(n)]
        cols = {
            "row_id": [f"chk_{start + i:012d}" for i in range(n)],
            "source_table": ["literature" if x else "documents" for x in lit],
            "source_row_id": [f"{'lit' if x else 'doc'}_{d:012d}" for x, d in zip(lit, doc)],
            "source_provenance_id": prov,
            "document_id": [f"d{(start + i) // 4}" for i in range(n)],
            "patient_id": [f"p{p:05d}" for p in pats],
            "encounter_id": [None] * n,
            "date": [t0 + timedelta(days=int(d)) for d in days],
            "kind": [KINDS[k] for k in kinds],
            "title": [None] * n,
            "section": [SECTIONS[k] for k in kinds],
            "chunk_index": [(start + i) % 4 for i in range(n)],
            "start": offsets,
            "end": [o + len(t) for o, t in zip(offsets, texts)],
            "text": texts,
            "search_text": texts,
            "content_sha": [None] * n,
            "embedder": [embedder] * n,
            "provenance_id": prov,
        }
        arrays = [pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), pa.float32()), v.shape[1])
                  if f.name == "vector" else pa.array(cols[f.name], type=f.type) for f in schema]
        yield pa.Table.from_arrays(arrays, schema=schema), texts, v, pats, kinds, days


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--base", type=int, default=2_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--vectors", choices=["mix", "noise"], default="mix", help="how row vectors are made (see above)")
    ap.add_argument("--store", help="keep the built store in this folder; a folder built before with the same "
                                    "--rows/--base/--vectors is reused (the rows are made again for the baseline)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search.json"))
    args = ap.parse_args()
    if not (SHARED / "retrieval" / "scifact").is_dir():
        sys.exit(f"needs {SHARED}/retrieval/scifact")

    from sagehealth import Ecosystem
    from sagehealth.governance import Principal
    from sagehealth.data.lakehouse import compact_fragments
    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval import search as search_mod
    from sagehealth.retrieval.embedders import get_embedder

    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()},
                    "rows": args.rows, "when": datetime.now(UTC).isoformat(timespec="seconds")}
    emb = get_embedder()
    base = base_chunks(args.base)
    t = time.perf_counter()
    vecs = np.vstack([emb.embed_documents(base[i:i + 64]) for i in range(0, len(base), 64)])
    dt = time.perf_counter() - t
    result["embedding"] = {"model": emb.name, "chunks": len(base), "avg_words": round(np.mean([len(b.split()) for b in base]), 1),
                           "chunks_per_s": round(len(base) / dt, 1)}
    print("embedding", result["embedding"], flush=True)
    queries = [json.loads(line)["text"] for line in open(SHARED / "retrieval/scifact/queries_train.jsonl")][:args.queries]
    t = time.perf_counter()
    qv = emb.embed_queries(queries)  # also fills the query-vector cache: searches below reuse them
    result["embedding"]["queries_per_s_batched"] = round(len(queries) / (time.perf_counter() - t), 1)
    inner = getattr(emb, "inner", emb)
    enc = []
    for q in queries[:50]:  # one query at a time, uncached: what a new query adds to a search
        t = time.perf_counter()
        inner.embed_queries([q])
        enc.append(time.perf_counter() - t)
    result["embedding"]["query_encode_p50_ms"] = pct(enc, 50)
    result["embedding"]["query_encode_p95_ms"] = pct(enc, 95)

    home = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="sage-search-bench-"))
    # layout 2: per-document provenance ids and chunk offsets, literature rows marked as such
    # (layout 1 had constant columns, which Lance run-length encodes: slow to read one row of)
    # layout 3: written in 100k-row batches, then compacted to one fragment (as refresh does)
    stamp = {"rows": args.rows, "base": args.base, "vectors": args.vectors, "embedder": emb.name, "layout": 3}
    stamp_file = home / "bench-build.json"
    reuse = stamp_file.exists() and json.loads(stamp_file.read_text()).get("stamp") == stamp
    result["vectors"] = args.vectors
    if args.store and not reuse and home.exists():  # rows of another layout: write them again
        shutil.rmtree(home)
    try:
        eco = Ecosystem.open(home, Principal("bench", "steward", "operations"))
        lake = eco.lake
        tbl = lake.table("research_chunks")
        texts_all: list[str] = []
        meta = {"pats": [], "kinds": [], "days": []}
        vec_all = np.zeros((args.rows, vecs.shape[1]), np.float32)
        t = time.perf_counter()
        for table, texts, v, pats, kinds, days in synth_rows(base, vecs, args.rows, args.batch, emb.name,
                                                             vectors=args.vectors):
            if not reuse:
                tbl.add(table)
            off = len(texts_all)
            vec_all[off:off + len(texts)] = v
            texts_all += texts
            meta["pats"].append(pats)
            meta["kinds"].append(kinds)
            meta["days"].append(days)
        if reuse:
            result["build"] = json.loads(stamp_file.read_text())["build"]
            result["build"]["reused_store"] = True
            want = index_mod.vector_index_params(args.rows)
            have = search_mod.vector_index(lake.dataset("research_chunks"))
            if have != (want["index"], want["ivf_partitions"]):  # rows kept, vector index of another kind
                t = time.perf_counter()
                index_mod.create_vector_index(tbl, args.rows)
                result["build"].update(vector_index_s=round(time.perf_counter() - t, 1), **want)
                lake.commit("benchmark vector index", run_id=None, summary={})
                stamp_file.write_text(json.dumps({"stamp": stamp, "build": result["build"]}))
        else:
            write_s = time.perf_counter() - t
            t = time.perf_counter()  # one fragment, as a refresh's compaction leaves a store of many batches
            compact_fragments(tbl)
            compact_s = time.perf_counter() - t
            t = time.perf_counter()
            index_mod.create_bm25_index(tbl)
            fts_s = time.perf_counter() - t
            t = time.perf_counter()
            index_mod.create_vector_index(tbl, args.rows)
            ann_s = time.perf_counter() - t
            t = time.perf_counter()
            index_mod.create_scalar_indexes(tbl)
            scalar_s = time.perf_counter() - t
            lake.commit("benchmark rows", run_id=None, summary={})
            result["build"] = {"write_s": round(write_s, 1), "compact_s": round(compact_s, 1),
                               "fragments": len(tbl.to_lance().get_fragments()), "bm25_index_s": round(fts_s, 1),
                               "vector_index_s": round(ann_s, 1), **index_mod.vector_index_params(args.rows),
                               "scalar_indexes_s": round(scalar_s, 1), "rss_mb_after_build": rss_mb()}
            if args.store:
                stamp_file.write_text(json.dumps({"stamp": stamp, "build": result["build"]}))
        index = search_mod.vector_index(lake.dataset("research_chunks"))
        result["build"]["search_probes"] = {**search_mod.probes(index[1], index[0]), "refine_factor": search_mod.REFINE}
        print("build", result["build"], flush=True)

        # a serving store's files are in the OS page cache (the baseline holds everything in RAM);
        # a reused store's may have been evicted since: read them once
        t = time.perf_counter()
        for path in sorted(Path(lake.table_uri("research_chunks")).rglob("*")):
            if path.is_file():
                with path.open("rb") as fh:
                    while fh.read(8 << 20):
                        pass
        result["build"]["page_cache_warm_s"] = round(time.perf_counter() - t, 1)
        research = eco.as_principal(Principal("bench", "researcher", "research"))
        for q in queries[:20]:  # warm: model, index caches (the IVF lists load on first probe)
            research.search(q, k=10)
        rng = random.Random(3)
        filters = {
            "none": lambda: {},
            "patient": lambda: {"patient": f"p{rng.randrange(50_000):05d}"},
            "kind": lambda: {"kinds": [rng.choice(KINDS)]},
            "date": lambda: {"since": "2010-01-01", "until": "2012-12-31"},
            "kind+date": lambda: {"kinds": ["radiology_report"], "since": "2015-01-01", "until": "2020-12-31"},
        }
        lat: dict[str, dict] = {}
        for name, make in filters.items():
            lat[name] = timed_searches(research, queries, make)
            print("hybrid", name, lat[name], flush=True)
        result["sagehealth_hybrid"] = lat
        for mode in ("bm25", "vector"):
            stats = timed_searches(research, queries, lambda mode=mode: {"mode": mode})
            result[f"sagehealth_{mode}"] = {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"]}

        # ANN recall@10: the top 10 of the vector side of a search (the search's own settings
        # and candidate depth) against exact search under the same filter
        ds = lake.dataset("research_chunks")
        recall = {}
        for name, where in {"none": None, "patient": "patient_id = 'p01234'", "kind": "kind = 'note'",
                            "date": "date >= TIMESTAMP '2010-01-01 00:00:00' AND date <= TIMESTAMP '2012-12-31 00:00:00'",
                            "kind+date": "kind = 'radiology_report' AND date >= TIMESTAMP '2015-01-01 00:00:00' "
                                         "AND date <= TIMESTAMP '2020-12-31 00:00:00'"}.items():
            rec = []
            for v in qv[:50]:
                approx = search_mod._vector(ds, v, where, search_mod.DEPTH, 10)
                top = sorted(approx, key=lambda key: -approx[key])[:10]
                exact = ds.to_table(nearest={"column": "vector", "q": v, "k": 10, "metric": "cosine", "use_index": False},
                                    columns=["_distance"], filter=where, prefilter=True, with_row_id=True)
                rec.append(len(set(top) & set(exact.column("_rowid").to_pylist())) / 10)
            recall[name] = round(float(np.mean(rec)), 4)
        result["ann_recall@10"] = recall["none"]
        result["ann_recall@10_filtered"] = {k: v for k, v in recall.items() if k != "none"}
        print("ann recall@10", recall, flush=True)
        result["rss_mb_peak"] = rss_mb()

        if not args.no_baseline:
            result["baseline_faiss_bm25s"] = baseline(texts_all, vec_all, meta, queries, emb, filters)
        result["rss_mb_peak_incl_baseline"] = rss_mb()
    finally:
        if not args.store:
            shutil.rmtree(home, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def baseline(texts: list[str], vecs: np.ndarray, meta: dict, queries: list[str], emb, filters) -> dict:
    """What people wire by hand: FAISS HNSW for vectors, bm25s (numba backend) for words, the same min-max
    convex fusion, metadata filters applied after retrieval (neither library prefilters)."""
    import bm25s
    import faiss
    import Stemmer

    from sagehealth.retrieval.search import fuse

    pats, kinds, days = (np.concatenate(meta[k]) for k in ("pats", "kinds", "days"))
    out: dict = {}
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    index.add(vecs)
    index.hnsw.efSearch = 128
    out["faiss_hnsw_build_s"] = round(time.perf_counter() - t, 1)
    stemmer = Stemmer.Stemmer("english")
    t = time.perf_counter()
    retriever = bm25s.BM25(backend="numba")  # bm25s's fast path (its default numpy backend: ~150 ms a query at 1M)
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    out["bm25s_index_s"] = round(time.perf_counter() - t, 1)
    retriever.retrieve(bm25s.tokenize(queries[:1], stopwords="en", stemmer=stemmer, show_progress=False), k=10,
                       show_progress=False)  # numba compiles here, not in the timed queries
    print("baseline build", out, flush=True)
    d2010, d2013 = (datetime(2010, 1, 1) - datetime(2000, 1, 1)).days, (datetime(2013, 1, 1) - datetime(2000, 1, 1)).days
    d2015, d2021 = (datetime(2015, 1, 1) - datetime(2000, 1, 1)).days, (datetime(2021, 1, 1) - datetime(2000, 1, 1)).days
    for name, make in filters.items():
        times, short = [], 0
        for q in queries:
            kw = make()
            t = time.perf_counter()
            qv = emb.embed_queries([q])
            depth = 100 if not kw else 1000  # over-fetch, then filter
            d, i = index.search(qv, depth)
            res, scores = retriever.retrieve(bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False),
                                             k=depth, show_progress=False)

            def ok(j: int) -> bool:
                if "patient" in kw and f"p{pats[j]:05d}" != kw["patient"]:
                    return False
                if "kinds" in kw and KINDS[kinds[j]] not in kw["kinds"]:
                    return False
                if "since" in kw:
                    lo, hi = (d2010, d2013) if kw["since"].startswith("2010") else (d2015, d2021)
                    if not lo <= days[j] < hi:
                        return False
                return True

            vec = {int(j): float(s) for j, s in zip(i[0], d[0]) if j >= 0 and (not kw or ok(int(j)))}
            bm = {int(j): float(s) for j, s in zip(res[0], scores[0]) if not kw or ok(int(j))}
            fused = fuse({"vector": vec, "bm25": bm}, "convex", 0.5)
            top = sorted(fused, key=fused.get, reverse=True)[:10]
            times.append(time.perf_counter() - t)
            short += len(top) < 10
        out[name] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "qps": round(len(times) / sum(times), 1),
                     "queries_with_fewer_than_10_hits": short}
        print("baseline", name, out[name], flush=True)
    return out


if __name__ == "__main__":
    main()
