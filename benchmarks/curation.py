"""Benchmark: near-duplicate removal of the training-data exports (issue 18) against plain
``datasketch`` code with the same MinHash settings (the text-dedup recipe), on the same corpus.

Corpus: the shared MTSamples notes (4,999), IU X-ray reports (1,276: findings + impression),
SciFact abstracts (5,183), plus a synthetic copy-forward corpus built from the MTSamples notes
the way clinical notes are copied forward (a note carried to the next day with a few words
changed, a line dropped or repeated, an interval line added; seeded), one sentence per line, until
it holds at least ``--lines`` lines (default 1,000,000).

Both sides: word 5-gram shingles, 128 permutations, LSH in 16 bands of 8 rows, a candidate
confirmed when its MinHash Jaccard estimate is at least 0.8, the first of each cluster kept.
``sagehealth`` is ``sagehealth.training.curation.near_duplicates`` (rensa's Rust MinHash and
LSH); ``datasketch`` is ``MinHash.update_batch`` + ``MinHashLSH(params=(16, 8))``. Reported:
seconds, documents/s, documents dropped, clusters, and how many documents get the same
keep/drop decision (the two libraries hash differently, so estimates near 0.8 may differ).

Writes benchmarks/results/curation.json. Needs datasketch (``pip install datasketch``, in the
bench extra). Run: ``python benchmarks/curation.py [--lines 1000000]``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

from sagehealth.training import curation as cur

SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
csv.field_size_limit(2**31 - 1)


def corpus() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with gzip.open(SHARED / "notes" / "mtsamples.csv.gz", "rt", encoding="utf-8") as fh:
        out["mtsamples"] = [r["transcription"] for r in csv.DictReader(fh) if (r.get("transcription") or "").strip()]
    with open(SHARED / "radiology" / "iu_xray_reports_dev.csv", newline="", encoding="utf-8") as fh:
        out["iu_xray"] = [f"{r['findings']}\n{r['impression']}" for r in csv.DictReader(fh)
                          if (r["findings"] + r["impression"]).strip()]
    with open(SHARED / "retrieval" / "scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        out["scifact"] = [f"{d.get('title', '')}\n{d.get('text', '')}" for d in map(json.loads, fh)]
    return out


def copy_forward(notes: list[str], lines: int, seed: int = 7) -> list[str]:
    """Notes carried forward day after day with small edits, one sentence per line."""
    rng = random.Random(seed)
    out, total = [], 0
    bases = [re.split(r"(?<=[.!?])\s+", " ".join(n.split())) for n in notes if len(n.split()) > 80]
    while total < lines:
        sentences = list(rng.choice(bases))
        for day in range(rng.randint(2, 6)):  # the same note over several days
            s = list(sentences)
            for _ in range(max(1, len(s) // 30)):  # a few words changed
                i = rng.randrange(len(s))
                w = s[i].split()
                if w:
                    w[rng.randrange(len(w))] = rng.choice(["stable", "improved", "unchanged", "mild", "no", "new"])
                    s[i] = " ".join(w)
            if rng.random() < 0.3 and len(s) > 3:
                del s[rng.randrange(len(s))]
            if rng.random() < 0.2:
                s.insert(rng.randrange(len(s)), rng.choice(s))
            s.append(f"Interval note day {day + 1}: patient seen and examined.")
            out.append("\n".join(s))
            total += len(s)
            if total >= lines:
                break
    return out


def with_datasketch(texts: list[str]) -> tuple[list[bool], int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=cur.NUM_PERM, params=(cur.BANDS, cur.NUM_PERM // cur.BANDS))
    sketches: list[MinHash] = []
    drop = [False] * len(texts)
    clustered: set[int] = set()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=cur.NUM_PERM, seed=cur.SEED)
        m.update_batch([s.encode() for s in cur.shingles(text)])
        sketches.append(m)
        hits = [j for j in lsh.query(m) if not drop[j] and m.jaccard(sketches[j]) >= cur.JACCARD]
        if hits:
            drop[i] = True
            clustered.add(min(hits))
        else:
            lsh.insert(i, m)
    return drop, len(clustered)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "curation.json"))
    a = ap.parse_args()
    if not (SHARED / "notes" / "mtsamples.csv.gz").exists():
        sys.exit(f"shared data not present: {SHARED}")
    parts = corpus()
    parts["copy_forward"] = copy_forward(parts["mtsamples"], a.lines)
    texts = [t for p in parts.values() for t in p]
    lines = sum(t.count("\n") + 1 for t in texts)
    words = sum(len(t.split()) for t in texts)
    print(f"{len(texts):,} documents, {lines:,} lines, {words:,} words", file=sys.stderr)
    results = {}
    for name, fn in (("sagehealth (rensa)", cur.near_duplicates), ("datasketch", with_datasketch)):
        t0 = time.perf_counter()
        drop, clusters = fn(texts)
        seconds = time.perf_counter() - t0
        results[name] = {"seconds": round(seconds, 1), "docs_per_s": round(len(texts) / seconds),
                         "dropped": sum(drop), "clusters": clusters, "_drop": drop}
        print(f"{name}: {seconds:.1f} s, {sum(drop):,} dropped, {clusters:,} clusters", file=sys.stderr)
    ours, theirs = (results[k].pop("_drop") for k in ("sagehealth (rensa)", "datasketch"))
    same = sum(x == y for x, y in zip(ours, theirs))
    report = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "corpus": {k: len(v) for k, v in parts.items()}, "documents": len(texts), "lines": lines, "words": words,
        "settings": {"shingle_words": cur.SHINGLE, "num_perm": cur.NUM_PERM, "bands": cur.BANDS,
                     "jaccard": cur.JACCARD},
        "results": results,
        "same_decision": round(same / len(texts), 5),
        "dropped_difference": round(abs(results["sagehealth (rensa)"]["dropped"] - results["datasketch"]["dropped"])
                                    / max(1, results["datasketch"]["dropped"]), 5),
        "speedup": round(results["datasketch"]["seconds"] / results["sagehealth (rensa)"]["seconds"], 2),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
