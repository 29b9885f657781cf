"""Benchmark: the radiology drafts and their co-evolution with sign-offs (issue 17).

The shared IU X-ray dev reports (../shared/data/radiology/iu_xray_reports_dev.csv, 1,276) are
split by the rank of their numeric uid: rank % 5 in {0, 1, 2} knowledge (ingested as signed
reports), 3 feedback (signed in ``--rounds`` slices through the real sign-off path, the
reference impression as the radiologist's edit), 4 test (drafted every round, never stored).
The drafter's settings were chosen on the feedback slice (knowledge as cases); the test slice
is what this reports. It runs ``sagehealth.radiology.evaluate`` (the code of ``sagehealth eval
radiology``) and, in the same run on the same store, the baselines the issue names: the constant
"No acute cardiopulmonary abnormality.", the nearest case's impression (BM25 over the findings
and indication) and the consensus of the 10 nearest (the candidate most like the others by
ROUGE-L) — with the knowledge only (round 0) and with the feedback reports added (last round).

Writes benchmarks/results/radiology.json. Run: ``python benchmarks/radiology.py [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from sagehealth.radiology.cases import CaseBase
from sagehealth.radiology.drafter import consensus
from sagehealth.radiology.evaluate import evaluate, score
from sagehealth.radiology.text import words
from sagehealth.retrieval.search import search_chunks

SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REPORTS = SHARED / "radiology" / "iu_xray_reports_dev.csv"
CONSTANT = "No acute cardiopulmonary abnormality."


def split(folder: Path) -> dict[str, Path]:
    with open(REPORTS, newline="", encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["uid"]))
    parts: dict[str, list[dict[str, str]]] = {"knowledge": [], "feedback": [], "test": []}
    for rank, r in enumerate(rows):
        parts["knowledge" if rank % 5 < 3 else "feedback" if rank % 5 == 3 else "test"].append(r)
    out = {}
    for name, part in parts.items():
        out[name] = folder / f"{name}.csv"
        with open(out[name], "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(part)
    return out


def baselines(lake, r: int, test: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Retrieval-only drafts on this round's cases: BM25 over FINDINGS (INDICATION when there
    are no findings) of the research zone's signed reports, one per report."""
    cases = CaseBase.load(lake)
    ds = lake.dataset("research_chunks")
    nearest, consensus10, constant = [], [], []
    for row in test:
        section = "FINDINGS" if row["findings"].strip() else "INDICATION"
        query = " ".join(words(f"{row['findings']} {row['indication']}"))
        hits = search_chunks(ds, query, embedder=None, k=40, mode="bm25",
                             where=f"source_table = 'documents' AND upper(section) = '{section}'") if query else []
        found, seen = [], set()
        for h in hits:
            c = cases.cases.get(h.source_row_id)
            if c is not None and c.row_id not in seen:
                seen.add(c.row_id)
                found.append(c.impression)
        nearest.append((found[0] if found else CONSTANT, row["impression"]))
        top = found[:10]
        consensus10.append((top[consensus(top)] if top else CONSTANT, row["impression"]))
        constant.append((CONSTANT, row["impression"]))
    return {"constant": score(constant), "nearest_case": score(nearest), "consensus_10": score(consensus10)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "radiology.json"))
    a = ap.parse_args()
    if not REPORTS.exists():
        sys.exit(f"shared data not present: {REPORTS}")
    with tempfile.TemporaryDirectory(prefix="sage-rad-bench-") as tmp:
        files = split(Path(tmp))
        started = time.perf_counter()
        result = evaluate(files["knowledge"], files["feedback"], files["test"], rounds=a.rounds,
                          out=Path(tmp) / "drafts.jsonl", progress=lambda m: print(m, file=sys.stderr),
                          on_round=lambda lake, r, test: baselines(lake, r, test) if r in (0, a.rounds) else {})
        seconds = time.perf_counter() - started
    rounds = result["rounds"]
    report = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "data": str(REPORTS.relative_to(SHARED)), "split": "uid rank % 5: 0-2 knowledge, 3 feedback, 4 test",
        "test_rows": result["test_rows"], "knowledge_reports": result["knowledge_reports"],
        "feedback_rows": result["feedback_rows"], "seconds": round(seconds, 1),
        "offline_drafter": [{k: v for k, v in r.items() if k != "extra"} for r in rounds],
        "baselines_knowledge_only": rounds[0]["extra"],
        "baselines_with_feedback": rounds[-1]["extra"] if a.rounds else None,
        "gain_rouge_l": round(rounds[-1]["rouge_l"] - rounds[0]["rouge_l"], 4),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
