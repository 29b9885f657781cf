"""Benchmark: does adapting the retrieval embedder on the store's own data help (issue 18)?

SciFact (../shared/data/retrieval/scifact: 5,183 abstracts, 809 train claims with qrels). The
claims are split by a hash of their id: half A trains, half B is held out and only evaluated.
Training pairs, built the product's way: the corpus is ingested into a temporary store as
literature with a research zone, ``sagehealth export dataset retrieval`` writes title -> abstract
pairs with a BM25-mined hard negative (unsupervised: no claim involved); the half-A claims add
claim -> cited abstract pairs (negative: the cited abstract's own mined negative). Then
``Ecosystem.adapt_embedder`` fine-tunes all-MiniLM-L6-v2 (MultipleNegativesRankingLoss, 1 epoch,
batch 32, CPU). Evaluated on the half-B claims with ``sagehealth eval retrieval``'s code
(``evaluate_beir``, hybrid and vector), side by side with the default embedder (minilm-int8) and
the base model (st fp32).

Writes benchmarks/results/adapt_embedder.json. Needs the embed-torch extra, accelerate and
datasets. Run: ``python benchmarks/adapt_embedder.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SCIFACT = SHARED / "retrieval" / "scifact"


def half(qid: str) -> str:
    return "A" if int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16) % 2 == 0 else "B"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "adapt_embedder.json"))
    a = ap.parse_args()
    if not SCIFACT.exists():
        sys.exit(f"shared data not present: {SCIFACT}")
    os.environ.setdefault("SAGEHEALTH_DEID_KEY", "adapt-benchmark-key-0123456789")
    from sagehealth.ecosystem import Ecosystem
    from sagehealth.governance.policy import Principal
    from sagehealth.retrieval.evaluate import evaluate_beir, load_qrels, load_queries

    queries, qrels = load_queries(SCIFACT / "queries_train.jsonl"), load_qrels(SCIFACT / "qrels_train.tsv")
    corpus = {d["_id"]: d for d in map(json.loads, open(SCIFACT / "corpus.jsonl", encoding="utf-8"))}
    tmp = Path(tempfile.mkdtemp(prefix="sage-adapt-"))
    report: dict = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                                "python": platform.python_version()}}
    steward = Ecosystem.open(tmp / "store", Principal("bench", "steward", "operations"))
    t0 = time.perf_counter()
    steward.ingest([SCIFACT / "corpus.jsonl"], format="literature", options={"embed": False})
    export = steward.export_dataset("retrieval", tmp / "pairs")
    report["export"] = {"seconds": round(time.perf_counter() - t0, 1), "pairs": sum(export.splits.values()),
                        "counts": export.counts}
    rows = [r for f in sorted((tmp / "pairs" / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    negative_of = {r["positive"]: r["negative"] for r in rows}
    claims = []
    for qid, judged in qrels.items():
        if half(qid) != "A" or qid not in queries:
            continue
        for doc_id, rel in judged.items():
            d = corpus.get(doc_id)
            if rel > 0 and d and d.get("text") in negative_of:
                claims.append({"query": queries[qid], "positive": d["text"], "negative": negative_of[d["text"]]})
    train = tmp / "train-pairs"
    (train / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"query": r["query"], "positive": r["positive"], "negative": r["negative"]}
                                         for r in rows] + claims), train / "data" / "train-00000-of-00001.parquet")
    report["train_pairs"] = {"title_to_abstract": len(rows), "claims_half_A": len(claims)}
    t0 = time.perf_counter()
    info = steward.adapt_embedder(train, tmp / "model", epochs=a.epochs)
    report["training"] = {"seconds": round(time.perf_counter() - t0, 1), "train_loss": info["train_loss"],
                          "epochs": a.epochs}
    print(f"trained in {report['training']['seconds']} s", file=sys.stderr)
    qb = tmp / "queries_B.jsonl"
    rb = tmp / "qrels_B.tsv"
    with open(qb, "w") as fh:
        for qid, text in queries.items():
            if half(qid) == "B":
                fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(rb, "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in qrels.items():
            if half(qid) == "B":
                for doc, rel in judged.items():
                    fh.write(f"{qid}\t{doc}\t{rel}\n")
    report["held_out_queries"] = sum(1 for q in qrels if half(q) == "B" and q in queries)
    results = {}
    for name, spec in (("minilm-int8 (default)", "minilm-int8"), ("all-MiniLM-L6-v2 (base, st)", "minilm"),
                       ("adapted (st)", f"st:{tmp / 'model'}")):
        store = tmp / f"eval-{len(results)}"
        for mode in ("hybrid", "vector"):
            t0 = time.perf_counter()
            r = evaluate_beir(SCIFACT / "corpus.jsonl", qb, rb, mode=mode, store=store, embedder=spec)
            results[f"{name} {mode}"] = {k: r[k] for k in ("ndcg@10", "recall@100", "mrr@10")} | {
                "seconds": round(time.perf_counter() - t0, 1)}
            print(name, mode, results[f"{name} {mode}"], file=sys.stderr)
    report["results_half_B"] = results
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
