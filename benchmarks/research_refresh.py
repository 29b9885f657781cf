"""Benchmark: what the research-zone refresh adds to an ingest.

Builds a bulk-export-style replica of ../shared/data/fhir with ``--resources`` resources (the
builder of ``benchmarks/ingest_fhir.py``: every UUID rewritten per copy), then runs a real
``sagehealth ingest --json`` of it into a fresh store, each in its own process, chunking and
embedding off (``SAGEHEALTH_INDEX=0``: this measures the data and its research copy only):

- without a research key (no research zone: the ingest alone);
- with ``SAGEHEALTH_DEID_KEY`` set (the ingest + the research-zone refresh: every row
  de-identified — in worker processes once a refresh has more than 20,000 rows — and written);
- with ``--before SRC`` also the same with the code at SRC (e.g. a checkout of an earlier
  commit's ``src``), for a before/after comparison on the same machine in the same run.

Reports wall seconds per run and the refresh's share; writes benchmarks/results/research_refresh.json.
Run: ``python benchmarks/research_refresh.py [--resources 215000] [--before /tmp/old/src]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "research_refresh"
RESULTS = ROOT / "benchmarks" / "results" / "research_refresh.json"
KEY = "benchmark-key-0123456789abcdef"


def ingest(data: Path, home: Path, src: Path, key: str | None) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "SAGEHEALTH_ROLE": "steward", "SAGEHEALTH_INDEX": "0", "PYTHONPATH": str(src)}
    env.pop("SAGEHEALTH_DEID_KEY", None)
    if key:
        env["SAGEHEALTH_DEID_KEY"] = key
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "sagehealth.cli", "ingest", str(data), "--home", str(home), "--json"],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"ingest failed ({src}): {r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    research = out.get("research") or {}
    return {"wall_s": round(wall, 1), "summary_s": out["seconds"], "records_in": out["records_in"],
            "research_rows": sum(v for v in research.values() if isinstance(v, int))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resources", type=int, default=215_000)
    ap.add_argument("--before", help="the src folder of an earlier version to compare with")
    args = ap.parse_args()
    from ingest_fhir import build

    data = WORK / "data"
    shutil.rmtree(data, ignore_errors=True)
    n = build(args.resources, data)
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                 "load_before": os.getloadavg(), "resources": n, "runs": {}}
    runs = [("no research key", ROOT / "src", None), ("research key", ROOT / "src", KEY)]
    if args.before:
        runs.append(("research key, before", Path(args.before), KEY))
    for label, src, key in runs:
        r = out["runs"][label] = ingest(data, WORK / "store", src, key)
        print(f"{label}: {r['wall_s']} s wall ({r['summary_s']} s in the summary)", flush=True)
    base = out["runs"]["no research key"]["wall_s"]
    for label, r in out["runs"].items():
        if label != "no research key":
            r["refresh_adds_s"] = round(r["wall_s"] - base, 1)
    shutil.rmtree(WORK, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
