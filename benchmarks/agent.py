"""The evidence-grounded agent on a question set built from the sample and shared data, for the
extractive provider and a llama.cpp model (SmolLM2-135M-Instruct, bundled GGUF), in one run.

Questions (built by this script from data, not hand-picked answers):
- literature, answerable: the SciFact claims whose judged abstracts are in the bundled sample
  (``sample_data/eval/scifact``: 54 claims over 30 abstracts); gold evidence = the judged abstracts;
- literature, unanswerable: SciFact training claims (../shared/data, when present) whose judged
  abstracts are NOT in the store: the right behaviour is to abstain;
- patient questions (a clinician with every sample patient in the care team): for each sample
  patient, templates about medications, allergies, procedures, immunizations and a lab
  (hemoglobin A1c); answerable when the patient has such rows or a document of theirs says the
  word ("No Known Allergies" answers the allergy question); gold = those rows or passages; else
  the agent should abstain.

Metrics per provider: grounding rate (drafted sentences supported by their citations, as the
agent's checker judges them, before removal), citation precision (cited evidence that is gold:
a judged abstract, or a row of the asked-for kind), answered-with-gold (answerable questions
whose answer cites gold evidence), abstention accuracy (abstained exactly when unanswerable),
latency per answer (p50/p95). Usage:
``python benchmarks/agent.py [--llm smollm2] [--llm-questions 40] [--out results/agent.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
WORK = ROOT / "benchmarks" / "work" / "agent-store"
KEY = "benchmark-agent-key-0123456789"
#: patient question templates: (question, event kind, text that a gold row contains or None)
#: (answerable when the patient has such a row, or a document of theirs contains the word; a
#: citation is gold when it is such a row or a passage containing the word)
PATIENT_QUESTIONS = [
    ("What medications has the patient been prescribed?", "medication", None, "mg"),
    ("What allergies does the patient have?", "allergy", None, "allerg"),
    ("What procedures has the patient had?", "procedure", None, "procedure"),
    ("What immunizations has the patient received?", "immunization", None, "immuniz"),
    ("What was the patient's most recent hemoglobin A1c?", "observation", "a1c", "a1c"),
]


def build_store():
    from sagehealth import Ecosystem
    from sagehealth.demo import sample_root
    from sagehealth.governance import Principal

    fresh = not WORK.exists()
    eco = Ecosystem.open(WORK, Principal("bench.steward", "steward", "operations"))
    if fresh:
        for sub in ("fhir", "notes", "literature"):
            eco.ingest([sample_root() / sub], options={"deid_key": KEY, "index": True})
    return eco


def questions(eco) -> list[dict]:
    from sagehealth.demo import sample_root

    qs: list[dict] = []
    ev = sample_root() / "eval" / "scifact"
    claims = {json.loads(x)["_id"]: json.loads(x)["text"] for x in (ev / "queries.jsonl").read_text().splitlines()}
    gold: dict[str, set[str]] = {}
    for line in (ev / "qrels.tsv").read_text().splitlines()[1:]:
        q, d, _ = line.split("\t")
        gold.setdefault(q, set()).add(d)
    for q, text in claims.items():
        qs.append({"id": f"lit-{q}", "role": "researcher", "question": text, "patient": None,
                   "answerable": True, "gold_docs": sorted(gold.get(q, ())), "gold_kind": None})
    in_store = set(eco.lake.read("literature", columns=["doc_id"]).column("doc_id").to_pylist())
    train_q, train_rel = SHARED / "retrieval" / "scifact" / "queries_train.jsonl", SHARED / "retrieval" / "scifact" / "qrels_train.tsv"
    if train_q.exists():
        rel: dict[str, set[str]] = {}
        for line in train_rel.read_text().splitlines()[1:]:
            q, d, _ = line.split("\t")
            rel.setdefault(q, set()).add(d)
        outside = [json.loads(x) for x in train_q.read_text().splitlines()]
        outside = [c for c in outside if rel.get(c["_id"]) and not rel[c["_id"]] & in_store]
        for c in random.Random(7).sample(outside, min(40, len(outside))):
            qs.append({"id": f"out-{c['_id']}", "role": "researcher", "question": c["text"], "patient": None,
                       "answerable": False, "gold_docs": [], "gold_kind": None})
    events = eco.lake.sql("SELECT patient_id, kind, lower(coalesce(code.display, '')) AS label FROM events").to_pylist()
    by_patient: dict[str, list[dict]] = {}
    for e in events:
        by_patient.setdefault(e["patient_id"], []).append(e)
    docs: dict[str, str] = {}
    for d in eco.lake.sql("SELECT patient_id, lower(string_agg(text, ' ')) AS t FROM documents "
                          "WHERE patient_id IS NOT NULL GROUP BY 1").to_pylist():
        docs[d["patient_id"]] = d["t"]
    for pid in sorted(by_patient)[:12]:
        rows = by_patient[pid]
        for i, (text, kind, contains, word) in enumerate(PATIENT_QUESTIONS):
            has = any(r["kind"] == kind and (contains is None or contains in r["label"]) for r in rows) \
                or word in docs.get(pid, "")
            qs.append({"id": f"pat-{pid[:8]}-{i}", "role": "clinician", "question": text, "patient": pid,
                       "answerable": has, "gold_docs": [], "gold_kind": (kind, contains, word)})
    return qs


def _gold_citation(eco, q: dict, cid: str, cache: dict) -> bool:
    if q["gold_docs"]:
        if cid not in cache:
            row = eco.lake.sql(f"SELECT document_id FROM research_chunks WHERE row_id = '{cid}' UNION ALL "
                               f"SELECT document_id FROM chunks WHERE row_id = '{cid}'").to_pylist()
            cache[cid] = row[0]["document_id"] if row else None
        return cache[cid] in set(q["gold_docs"])
    if q["gold_kind"]:
        kind, contains, word = q["gold_kind"]
        if cid not in cache:
            row = eco.lake.sql(f"SELECT kind, lower(coalesce(code.display, '')) AS label FROM events "
                               f"WHERE row_id = '{cid}' UNION ALL SELECT 'passage', lower(text) FROM chunks "
                               f"WHERE row_id = '{cid}'").to_pylist()
            cache[cid] = row[0] if row else None
        r = cache[cid]
        if not r:
            return False
        if r["kind"] == "passage":
            return word in r["label"]
        return r["kind"] == kind and (contains is None or contains in r["label"])
    return False


def run(eco, qs: list[dict], provider: str) -> dict:
    from sagehealth.governance import Principal

    patients = frozenset(q["patient"] for q in qs if q["patient"])
    who = {"researcher": eco.as_principal(Principal("bench.rita", "researcher", "research")),
           "clinician": eco.as_principal(Principal("bench.dr", "clinician", "treatment", patients=patients))}
    drafted = supported = cited = cited_gold = 0
    correct_abstain = answered_gold = answerable = 0
    lat: list[float] = []
    cache: dict = {}
    examples = []
    for q in qs:
        t = time.perf_counter()
        a = who[q["role"]].ask(q["question"], patient=q["patient"], provider=provider)
        lat.append(time.perf_counter() - t)
        drafted += len(a.sentences) + len(a.removed)
        supported += len(a.sentences)
        cites = [c for s in a.sentences for c in s.citations]
        gold_hits = [c for c in cites if _gold_citation(eco, q, c, cache)]
        cited += len(cites)
        cited_gold += len(gold_hits)
        correct_abstain += a.abstained == (not q["answerable"])
        if q["answerable"]:
            answerable += 1
            answered_gold += bool(gold_hits)
        if len(examples) < 4 and not a.abstained:
            examples.append({"question": q["question"], "answer": a.answer[:300]})
    n = len(qs)
    return {"questions": n, "answerable": answerable,
            "grounding_rate": round(supported / drafted, 3) if drafted else None,
            "drafted_sentences": drafted, "kept_sentences": supported,
            "citation_precision": round(cited_gold / cited, 3) if cited else None,
            "answered_with_gold": round(answered_gold / answerable, 3) if answerable else None,
            "abstention_accuracy": round(correct_abstain / n, 3),
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
            "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm", default="smollm2", help="second provider spec ('' to skip)")
    ap.add_argument("--llm-questions", type=int, default=40, help="questions for the (slow) model provider")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "agent.json"))
    args = ap.parse_args()
    eco = build_store()
    qs = questions(eco)
    report = {"benchmark": "agent", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "question_set": {"total": len(qs), "answerable": sum(q["answerable"] for q in qs),
                               "by_kind": {k: sum(q["id"].startswith(k) for q in qs) for k in ("lit-", "out-", "pat-")}},
              "providers": {}}
    report["providers"]["extractive"] = run(eco, qs, "extractive")
    print(json.dumps(report["providers"]["extractive"], indent=2))
    if args.llm:
        sub = random.Random(11).sample(qs, min(args.llm_questions, len(qs)))
        report["providers"][args.llm] = run(eco, sub, args.llm)
        report["providers"][args.llm]["subset"] = f"{len(sub)} of {len(qs)} questions (random, seed 11)"
        report["providers"]["extractive_same_subset"] = run(eco, sub, "extractive")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
