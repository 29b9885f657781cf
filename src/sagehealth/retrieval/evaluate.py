"""Retrieval evaluation on a BEIR-layout set: corpus.jsonl, queries.jsonl, qrels.tsv.

``evaluate_beir`` ingests the corpus into a store (a temporary one unless given), runs every
query that has judgements through :meth:`Ecosystem.search` — the same default path as
``sagehealth search`` — and scores the ranked documents: nDCG@10 (graded gains, log2
discount, as trec_eval), recall@100 and MRR@10 (first relevant document), with queries/s
measured over the searches alone.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagehealth.errors import RetrievalError


def load_queries(path: str | Path) -> dict[str, str]:
    """``{query id: text}`` from a BEIR queries.jsonl (lines without ``_id``/``text`` are errors)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out[str(obj["_id"])] = str(obj["text"])
            except (ValueError, KeyError, TypeError) as exc:
                raise RetrievalError(f"{path}:{n}: not a BEIR query line ({exc})") from None
    return out


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """``{query id: {doc id: relevance}}`` from a BEIR qrels TSV (header optional)."""
    out: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip() or (n == 1 and not parts[-1].strip().lstrip("-").isdigit()):
                continue
            if len(parts) == 4:  # TREC style: qid 0 docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise RetrievalError(f"{path}:{n}: expected query-id, corpus-id, score separated by tabs")
            try:
                out.setdefault(parts[0], {})[parts[1]] = int(parts[2])
            except ValueError:
                raise RetrievalError(f"{path}:{n}: score {parts[2]!r} is not an integer") from None
    return out


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int = 100) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def score_run(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, recall@100 and MRR@10 of ranked doc ids per query (over judged queries)."""
    qids = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    if not qids:
        raise RetrievalError("the qrels judge no document relevant")
    n = len(qids)
    return {
        "ndcg@10": round(sum(ndcg_at(run.get(q, []), qrels[q]) for q in qids) / n, 4),
        "recall@100": round(sum(recall_at(run.get(q, []), qrels[q]) for q in qids) / n, 4),
        "mrr@10": round(sum(mrr_at(run.get(q, []), qrels[q]) for q in qids) / n, 4),
        "queries": n,
    }


def evaluate_beir(corpus: str | Path, queries: str | Path, qrels: str | Path, *, mode: str = "hybrid",
                  store: str | Path | None = None, embedder: str | None = None, limit: int | None = None,
                  fusion: dict[str, Any] | None = None, rerank: str | None = None,
                  progress: Callable[[str, int, int], None] | None = None,
                  per_query: bool = False) -> dict[str, Any]:
    """Ingest ``corpus`` into ``store`` (temporary when None), search every judged query and
    score the run. A kept store is reused: its corpus is not ingested or embedded again.
    ``per_query`` adds ``per_query_ndcg@10`` (query id -> nDCG@10) for paired comparisons."""
    from sagehealth.ecosystem import Ecosystem
    from sagehealth.governance import Principal
    from sagehealth.retrieval.rerank import get_reranker

    for p in (corpus, queries, qrels):
        if not Path(p).is_file():
            raise RetrievalError(f"{p}: no such file")
    qs, judged = load_queries(queries), load_qrels(qrels)
    qids = [q for q in judged if q in qs]
    if not qids:
        raise RetrievalError(f"no query of {queries} has judgements in {qrels}")
    qids = qids[:limit] if limit else qids
    home = Path(store) if store else Path(tempfile.mkdtemp(prefix="sagehealth-eval-"))
    try:
        steward = Ecosystem.open(home, Principal("eval", "steward", "operations"))
        t0 = time.perf_counter()
        summary = steward.ingest([corpus], format="literature", message="evaluation corpus",
                                 options={"index": True, "embedder": embedder, "research": False,
                                          "collection": "eval"})
        ingest_s = time.perf_counter() - t0
        docs = steward.lake.count("literature")
        # literature is reference data: a clinician with no patients sees exactly the corpus
        reader = steward.as_principal(Principal("eval", "clinician", "treatment", patients=frozenset()))
        run: dict[str, list[str]] = {}
        t1 = time.perf_counter()
        for i, q in enumerate(qids, 1):
            hits = reader.search(qs[q], k=100, mode=mode, per_document=True, embedder=embedder, fusion=fusion,
                                 rerank=rerank)
            run[q] = [h.document_id for h in hits]
            if progress:
                progress("queries", i, len(qids))
        search_s = time.perf_counter() - t1
    finally:
        if store is None:
            shutil.rmtree(home, ignore_errors=True)
    scores = score_run(run, {q: judged[q] for q in qids})
    if per_query:
        scores["per_query_ndcg@10"] = {q: ndcg_at(run.get(q, []), judged[q]) for q in qids
                                       if any(r > 0 for r in judged[q].values())}
    return {**scores, "qps": round(len(qids) / search_s, 2) if search_s else None, "mode": mode,
            "rerank": (reader_rerank.name if (reader_rerank := get_reranker(rerank)) else None),
            "corpus_docs": docs, "quarantined": summary.quarantined,
            "ingest_index_seconds": round(ingest_s, 1)}
