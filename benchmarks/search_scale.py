"""Search at MedRAG scale on one machine: a store of 10,000,000 chunks (384-d vectors) with an
on-disk IVF-RQ vector index and a BM25 inverted index, served by ``Ecosystem.search`` from a
fresh process whose memory is measured.

MedRAG's PubMed corpus is 23.9M snippets, served from a FAISS flat index that needs ~70 GB of
RAM. Here the rows are made as ``benchmarks/search.py`` makes them (SciFact chunks embedded for
real with the default embedder, each row a varied copy with its own mixed vector, 50,000
patients, 5 kinds, dates over 25 years), written in batches of ``--batch`` rows (one Lance
fragment each, the size the store's compaction aims at).

Phases (``--phase all`` runs both, the second in its own process):

- **build**: write the rows, then the BM25 index, the IVF-RQ index and the filter-column
  indexes; while writing, the exact top 10 of every query (unfiltered and under each filter)
  is kept by a streaming numpy scan of the same vectors, so recall is measured against exact
  search over all 10M rows without a second pass. Reports times, disk use and peak RSS.
- **serve**: a new process opens the store as a researcher (the queries' vectors are encoded
  there with the default embedder; nothing of the build is in its memory), warms up on 20
  queries, then: (1) on the *tuning* queries (SciFact claims 100-199) the vector side's
  recall@10 and latency for several probe counts — the product's rule is chosen from these;
  (2) on the *report* queries (claims 0-99) hybrid ``Ecosystem.search`` p50/p95 under no,
  patient, kind, date and kind+date filters, BM25-only and vector-only latency, and the vector
  side's recall@10 against the exact top 10 under each filter. Peak RSS of the serving process.

Run: ``python benchmarks/search_scale.py --store DIR [--rows 10000000] [--phase all|build|serve]``.
Writes benchmarks/results/search_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from search import KINDS, SHARED, base_chunks, pct, synth_rows, timed_searches  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_scale.json"
REPORT, TUNE = range(0, 100), range(100, 200)
T0 = np.datetime64("2000-01-01", "D")
FILTERS = {  # name -> (Ecosystem.search keyword arguments, Lance filter, numpy mask of rows)
    "none": ({}, None, lambda p, k, d: None),
    "patient": ({"patient": "p01234"}, "patient_id = 'p01234'", lambda p, k, d: p == 1234),
    "kind": ({"kinds": ["note"]}, "kind = 'note'", lambda p, k, d: k == KINDS.index("note")),
    "date": ({"since": "2010-01-01", "until": "2012-12-31"},
             "date >= TIMESTAMP '2010-01-01 00:00:00' AND date <= TIMESTAMP '2012-12-31 00:00:00'",
             lambda p, k, d: _in_dates(d, "2010-01-01", "2012-12-31")),
    "kind+date": ({"kinds": ["radiology_report"], "since": "2015-01-01", "until": "2020-12-31"},
                  "kind = 'radiology_report' AND date >= TIMESTAMP '2015-01-01 00:00:00' "
                  "AND date <= TIMESTAMP '2020-12-31 00:00:00'",
                  lambda p, k, d: (k == KINDS.index("radiology_report")) & _in_dates(d, "2015-01-01", "2020-12-31")),
}


def _in_dates(days: np.ndarray, since: str, until: str) -> np.ndarray:
    lo = (np.datetime64(since, "D") - T0).astype(int)
    hi = (np.datetime64(until, "D") - T0).astype(int)
    return (days >= lo) & (days <= hi)


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) resident memory of this process in MB. Not
    ``ru_maxrss``: Linux carries that over fork and exec, so a process started by the build
    would report the build's peak."""
    with open("/proc/self/status") as fh:
        return next(round(int(line.split()[1]) / 1024, 1) for line in fh if line.startswith(field + ":"))


def du_gb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9, 2)


def queries() -> list[str]:
    with open(SHARED / "retrieval" / "scifact" / "queries_train.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh][:200]


class ExactTop:
    """The exact top 10 (cosine) of each query over all rows, per filter, kept while streaming."""

    def __init__(self, qv: np.ndarray, k: int = 10) -> None:
        self.qv, self.k = qv.astype(np.float32), k
        self.best = {f: (np.full((len(qv), 0), -2.0, np.float32), np.zeros((len(qv), 0), np.int64)) for f in FILTERS}

    def add(self, start: int, v: np.ndarray, pats: np.ndarray, kinds: np.ndarray, days: np.ndarray) -> None:
        for off in range(0, len(v), 200_000):
            sims = self.qv @ v[off:off + 200_000].T  # (queries, rows)
            ids = np.arange(start + off, start + off + sims.shape[1])
            for name, (_, _, mask_of) in FILTERS.items():
                mask = mask_of(pats[off:off + 200_000], kinds[off:off + 200_000], days[off:off + 200_000])
                s, i = (sims, ids) if mask is None else (sims[:, mask], ids[mask])
                if not s.shape[1]:
                    continue
                top = np.argpartition(-s, min(self.k, s.shape[1]) - 1, axis=1)[:, :self.k]
                have_s, have_i = self.best[name]
                all_s = np.concatenate([have_s, np.take_along_axis(s, top, 1)], 1)
                all_i = np.concatenate([have_i, np.broadcast_to(i, s.shape)[np.arange(len(s))[:, None], top]], 1)
                keep = np.argsort(-all_s, axis=1, kind="stable")[:, :self.k]
                self.best[name] = (np.take_along_axis(all_s, keep, 1), np.take_along_axis(all_i, keep, 1))

    def to_json(self) -> dict:
        return {f: i.tolist() for f, (_, i) in self.best.items()}


def build(args: argparse.Namespace) -> dict:
    from sagehealth import Ecosystem
    from sagehealth.governance import Principal
    from sagehealth.retrieval import index as index_mod
    from sagehealth.retrieval.embedders import get_embedder

    home = Path(args.store)
    if home.exists():
        shutil.rmtree(home)
    emb = get_embedder()
    base = base_chunks(args.base)
    t = time.perf_counter()
    vecs = np.vstack([emb.embed_documents(base[i:i + 64]) for i in range(0, len(base), 64)])
    out: dict = {"rows": args.rows, "base_chunks": len(base), "embedder": emb.name,
                 "base_embed_s": round(time.perf_counter() - t, 1)}
    exact = ExactTop(emb.embed_queries(queries()))
    eco = Ecosystem.open(home, Principal("bench", "steward", "operations"))
    tbl = eco.lake.table("research_chunks")
    t = time.perf_counter()
    exact_s = 0.0
    start = 0
    for table, texts, v, pats, kinds, days in synth_rows(base, vecs, args.rows, args.batch, emb.name):
        tbl.add(table)
        e = time.perf_counter()
        exact.add(start, v, np.asarray(pats), np.asarray(kinds), np.asarray(days))
        exact_s += time.perf_counter() - e
        start += len(texts)
        print(f"wrote {start:,} rows ({time.perf_counter() - t:.0f} s)", flush=True)
    out["write_s"] = round(time.perf_counter() - t - exact_s, 1)
    out["exact_scan_s"] = round(exact_s, 1)
    out["fragments"] = len(tbl.to_lance().get_fragments())
    steps = [("bm25_index_s", lambda: index_mod.create_bm25_index(tbl)),
             ("vector_index_s", lambda: index_mod.create_vector_index(tbl, args.rows)),
             ("scalar_indexes_s", lambda: index_mod.create_scalar_indexes(tbl))]
    for name, step in steps:
        t = time.perf_counter()
        step()
        out[name] = round(time.perf_counter() - t, 1)
        print(name, out[name], flush=True)
    eco.lake.commit("benchmark rows", run_id=None, summary={})
    out.update(index_mod.vector_index_params(args.rows))
    out["disk_gb"] = du_gb(home)
    out["rss_mb_peak_build"] = rss_mb()
    (home / "bench-exact.json").write_text(json.dumps(exact.to_json()))
    return out


def serve(args: argparse.Namespace) -> dict:
    from sagehealth import Ecosystem
    from sagehealth.governance import Principal
    from sagehealth.retrieval import search as search_mod
    from sagehealth.retrieval.embedders import get_embedder

    home = Path(args.store)
    exact = json.loads((home / "bench-exact.json").read_text())
    qs = queries()
    research = Ecosystem.open(home, Principal("bench", "researcher", "research"))
    emb = get_embedder()
    t = time.perf_counter()
    qv = emb.embed_queries(qs)  # fills the query-vector cache: searches below reuse them
    out: dict = {"query_encode_s_200": round(time.perf_counter() - t, 1)}
    ds = research.lake.dataset("research_chunks")
    kind, lists = search_mod.vector_index(ds)
    out["index"] = {"kind": kind, "lists": lists, "rows": ds.count_rows()}

    def row_numbers(rowids: list[int]) -> list[int]:
        if not rowids:
            return []
        got = ds._take_rows(sorted(rowids), columns=["row_id"]).column("row_id").to_pylist()  # noqa: SLF001
        return [int(r[4:]) for r in got]

    t = time.perf_counter()
    for q in qs[TUNE.start:TUNE.start + 20]:
        research.search(q, k=10)
    out["warm_s"] = round(time.perf_counter() - t, 1)
    print("warm", out["warm_s"], flush=True)

    # (1) tuning queries: recall@10 and latency of the vector side per probe count
    sweep = {}
    for nprobes in sorted({32, 64, 128, 256, 512, search_mod.probes(lists, kind)["nprobes"]}):
        rec, times = [], []
        for i in TUNE:
            t = time.perf_counter()
            got = search_mod._nearest(ds, qv[i], 10, {"nprobes": nprobes, "refine_factor": search_mod.REFINE}, None,
                                      prefilter=True)
            times.append(time.perf_counter() - t)
            rec.append(len(set(row_numbers(list(got))) & set(exact["none"][i])) / 10)
        sweep[nprobes] = {"recall@10": round(float(np.mean(rec)), 4), "p50_ms": pct(times, 50), "p95_ms": pct(times, 95)}
        print("probes", nprobes, sweep[nprobes], flush=True)
    out["tuning_sweep_vector_side"] = sweep
    out["search_probes"] = search_mod.probes(lists, kind)

    # (2) report queries: hybrid latency per filter, then the vector side's recall
    report = [qs[i] for i in REPORT]
    out["hybrid"] = {}
    for name, (kw, _, _) in FILTERS.items():
        out["hybrid"][name] = timed_searches(research, report, lambda kw=kw: kw)
        print("hybrid", name, out["hybrid"][name], flush=True)
    for mode in ("bm25", "vector"):
        stats = timed_searches(research, report, lambda mode=mode: {"mode": mode})
        out[f"{mode}_only"] = {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"]}
        print(mode, out[f"{mode}_only"], flush=True)
    recall = {}
    for name, (_, where, _) in FILTERS.items():
        rec = []
        for i in list(REPORT)[:50]:
            approx = search_mod._vector(ds, qv[i], where, search_mod.DEPTH, 10)
            top = sorted(approx, key=lambda key: -approx[key])[:10]
            want = exact[name][i]
            rec.append(len(set(row_numbers(top)) & set(want)) / max(1, min(10, len(want))))
        recall[name] = round(float(np.mean(rec)), 4)
    out["vector_recall@10_vs_exact"] = recall
    print("recall", recall, flush=True)
    out["rss_mb_peak_serving"] = rss_mb()
    out["rss_mb_now"] = rss_mb("VmRSS")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--base", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=1_000_000)
    ap.add_argument("--phase", choices=["all", "build", "serve"], default="all")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if not (SHARED / "retrieval" / "scifact").is_dir():
        sys.exit(f"needs {SHARED}/retrieval/scifact")
    result = json.loads(Path(args.out).read_text()) if args.phase == "serve" and Path(args.out).exists() else {}
    result.update({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                               "python": platform.python_version(),
                               "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
                   "when": datetime.now(UTC).isoformat(timespec="seconds")})
    if args.phase in ("all", "build"):
        result["build"] = build(args)
        print("build", result["build"], flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.phase == "all":  # serve from a fresh process: its memory is the serving memory only
        subprocess.run([sys.executable, __file__, "--store", args.store, "--phase", "serve", "--out", args.out],
                       check=True)
        return
    if args.phase == "serve":
        random.seed(3)
        result["serve"] = serve(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
