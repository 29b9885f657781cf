"""Benchmark: the embedding stage on the local engine and on Ray (1 and 2 CPU workers; GPU
workers where a GPU is lent), over the same pending chunks, in one run.

A store is built once — from the first ``--notes`` MTSamples notes (``../shared/data/notes/
mtsamples.csv.gz``; distinct texts, so every chunk is real embedding work) or from the shared
FHIR bulk export (``--data bulk``: many repeated note texts, which each engine embeds once per
worker) — with the research zone on and ``--no-embed`` (data, research copy and chunks committed, no
vectors). For each engine a copy of that store is embedded with a real ``sagehealth index``
subprocess, as a user would run it (``--engine ray`` starts a local Ray on 127.0.0.1 for the
run: its start-up is in the wall time). Reported per engine: wall time of the command, the
embedding stage's own seconds and chunks/s per table, and whether every copy ends with the
same row ids and vectors as the local one (max absolute difference).

Writes benchmarks/results/engine_embed.json. Run:
``python benchmarks/engine_embed.py [--data mtsamples|bulk] [--notes 600] [--engines local,ray1,ray2] [--work DIR]``.
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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "engine_embed.json"
CLI = [sys.executable, "-m", "sagehealth.cli"]
ENGINES = {"local": [], "ray1": ["--engine", "ray", "--workers", "1"], "ray2": ["--engine", "ray", "--workers", "2"],
           "ray-gpu": ["--engine", "ray", "--workers", "1", "--gpus-per-worker", "1"]}


def vectors(home: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    import lance

    out = {}
    for table in ("chunks", "research_chunks"):
        t = lance.dataset(str(home / "lake" / f"{table}.lance")).to_table(columns=["row_id", "vector"]).sort_by("row_id")
        out[table] = (t.column("row_id").to_pylist(), np.stack(t.column("vector").to_numpy(zero_copy_only=False)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default="local,ray1,ray2")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "engine_embed"))
    ap.add_argument("--data", choices=["mtsamples", "bulk"], default="mtsamples")
    ap.add_argument("--notes", type=int, default=600, help="MTSamples notes to embed")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.data == "bulk":
        source, extra, data = SHARED / "fhir" / "bulk_ndjson_10patients", [], "fhir/bulk_ndjson_10patients"
    else:
        import csv
        import gzip

        csv.field_size_limit(1 << 26)
        with gzip.open(SHARED / "notes" / "mtsamples.csv.gz", "rt", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            rows = [next(reader)] + [r for _, r in zip(range(args.notes), reader)]
        source, extra = work / "mtsamples_subset.csv", ["--format", "notes"]
        with source.open("w", encoding="utf-8", newline="") as fh:
            csv.writer(fh).writerows(rows)
        data = f"notes/mtsamples.csv.gz, first {len(rows) - 1} notes"
    env = {**os.environ, "SAGEHEALTH_ROLE": "steward", "SAGEHEALTH_DEID_KEY": "engine-bench-key-0123456789",
           "SAGEHEALTH_AUDIT_KEY_FILE": str(work / "audit.key"), "SAGEHEALTH_INDEX": "1"}
    base = work / "base"
    t = time.perf_counter()
    subprocess.run([*CLI, "ingest", str(source), *extra, "--no-embed", "--home", str(base), "--json"], env=env,
                   check=True, capture_output=True, text=True)
    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()},
                    "when": datetime.now(UTC).isoformat(timespec="seconds"), "data": data,
                    "ingest_no_embed_s": round(time.perf_counter() - t, 1), "engines": {}}
    reference = None
    for name in args.engines.split(","):
        home = work / name
        shutil.copytree(base, home)
        t = time.perf_counter()
        proc = subprocess.run([*CLI, "index", *ENGINES[name], "--home", str(home), "--json"], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            result["engines"][name] = {"error": proc.stderr.strip().splitlines()[-1:]}
            print(name, "failed:", proc.stderr[-2000:], flush=True)
            continue
        emb = json.loads(proc.stdout)["embedding"]
        got = vectors(home)
        row: dict = {"wall_s": round(wall, 1), "stage": emb}
        if reference is None:
            reference = got
        else:
            row["same_row_ids"] = all(got[t][0] == reference[t][0] for t in got)
            row["max_abs_vector_diff"] = float(max(np.abs(got[t][1] - reference[t][1]).max() for t in got))
        result["engines"][name] = row
        print(name, json.dumps(row), flush=True)
        shutil.rmtree(home)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
