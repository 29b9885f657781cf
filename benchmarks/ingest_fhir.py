"""Benchmark: FHIR ingest vs. parsing + validating with fhir.resources alone.

Builds a bulk-export-style NDJSON set of >= N resources (default 1,000,000) by replicating
../shared/data/fhir (the bulk NDJSON files and every resource of the Synthea bundles) with every
UUID rewritten per copy, so that ids and references stay consistent and unique. Then, each in
its own process, measures on the same files:

  (a) fhir.resources alone: every line parsed and validated into its R4B model
      (``get_fhir_model_class(type).model_validate_json(line)``), nothing stored; in one
      process (how it is normally used) and, for a like-for-like view, in a pool of as many
      processes as the machine has cores;
  (b) ``sagehealth ingest`` (the library call behind the CLI): read, validate the structure of
      every resource, map to the clinical model, resolve references, provenance, quarantine,
      write to the Lance lakehouse, commit; with its default worker processes and with
      ``SAGEHEALTH_WORKERS=0`` (everything in one process).

Reports resources/s, the ratio (b)/(a) and peak RSS (the process and its workers, sampled
every 0.1 s); writes benchmarks/results/ingest_fhir.json.
Run: ``python benchmarks/ingest_fhir.py [--resources N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "fhir"
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "results" / "ingest_fhir.json"
UUID = re.compile(rb"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def _templates() -> dict[str, list[bytes]]:
    """Resource lines by type from the shared FHIR data (bulk NDJSON + bundle entries)."""
    import orjson

    by_type: dict[str, list[bytes]] = defaultdict(list)
    for f in sorted((SHARED / "bulk_ndjson_10patients").glob("*.ndjson")):
        for line in f.read_bytes().splitlines():
            if b'"resourceType"' in line:
                by_type[orjson.loads(line)["resourceType"]].append(line)
    for f in sorted((SHARED / "synthea_r4_bundles").glob("*.json")):
        for entry in orjson.loads(f.read_bytes())["entry"]:
            res = entry["resource"]
            by_type[res["resourceType"]].append(orjson.dumps(res))
    return by_type


def build(target: int, out: Path) -> int:
    """Write >= target resources as one NDJSON file per type; returns the count."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    by_type = _templates()
    per_copy = sum(len(v) for v in by_type.values())
    copies = -(-target // per_copy)
    handles = {t: open(out / f"{t}.ndjson", "wb") for t in by_type}
    for k in range(copies):
        suffix = f"{k:04x}".encode()
        # rewrite the last 4 hex digits of every UUID: ids and references stay consistent
        sub = lambda m: m.group(1)[:-4] + suffix  # noqa: E731
        for t, lines in by_type.items():
            handles[t].write(b"\n".join(UUID.sub(sub, line) for line in lines) + b"\n")
    for h in handles.values():
        h.close()
    return copies * per_copy


class PeakRss:
    """Samples the RSS of this process plus its children every 0.1 s; ``peak_mb`` is the max."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except Exception:  # noqa: BLE001 - a child that just exited
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return self.peak / 2**20


def _validate_lines(task: tuple[str, list[bytes]]) -> tuple[int, int]:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    model = get_fhir_model_class(task[0])
    errors = 0
    for line in task[1]:
        try:
            model.model_validate_json(line)
        except ValidationError:
            errors += 1
    return len(task[1]), errors


def _tasks(folder: str, size: int = 2000):
    for f in sorted(Path(folder).glob("*.ndjson")):
        with open(f, "rb") as fh:
            batch = []
            for line in fh:
                batch.append(line)
                if len(batch) == size:
                    yield f.stem, batch
                    batch = []
            if batch:
                yield f.stem, batch


def run_fhir_resources(folder: str, processes: str = "1") -> dict:
    """(a) parse + validate every line with fhir.resources R4B models."""
    import multiprocessing

    rss = PeakRss()
    t = time.perf_counter()
    if int(processes) == 1:
        results = list(map(_validate_lines, _tasks(folder)))
    else:
        with multiprocessing.get_context("spawn").Pool(int(processes)) as pool:
            results = list(pool.imap(_validate_lines, _tasks(folder), chunksize=1))
    secs = time.perf_counter() - t
    return {"processes": int(processes), "resources": sum(r[0] for r in results),
            "invalid": sum(r[1] for r in results), "seconds": secs, "peak_rss_mb": rss.stop()}


def run_sagehealth(folder: str, home: str, workers: str) -> dict:
    """(b) full ingest into a fresh lakehouse: the data and its provenance; no search index
    and no research zone (``SAGEHEALTH_INDEX=0``, no de-identification key), as the README says."""
    os.environ["SAGEHEALTH_WORKERS"] = workers
    os.environ["SAGEHEALTH_INDEX"] = "0"
    os.environ.pop("SAGEHEALTH_DEID_KEY", None)
    from sagehealth import Ecosystem

    eco = Ecosystem.open(home)
    rss = PeakRss()
    t = time.perf_counter()
    s = eco.ingest([folder], format="fhir", message="benchmark")
    secs = time.perf_counter() - t
    return {"workers": int(workers), "resources": s.records_in, "ingested": s.ingested,
            "quarantined": s.quarantined, "rows": s.rows, "version": s.version, "seconds": secs,
            "peak_rss_mb": rss.stop()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _child(which: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", which, *args],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--keep", action="store_true", help="keep the generated data and store")
    args = ap.parse_args()
    if args.child:
        which, *rest = args.child
        result = run_fhir_resources(*rest) if which == "fhir_resources" else run_sagehealth(*rest)
        print(json.dumps(result))
        return
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared FHIR data at {SHARED}")
    data, home = WORK / "fhir_ndjson", WORK / "store"
    t = time.perf_counter()
    n = build(args.resources, data)
    size = sum(f.stat().st_size for f in data.glob("*.ndjson"))
    print(f"built {n:,} resources ({size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s", flush=True)
    cores = os.cpu_count() or 1
    a = _child("fhir_resources", str(data), "1")
    print(f"(a) fhir.resources, 1 process: {a['resources'] / a['seconds']:,.0f} resources/s", flush=True)
    ap_ = _child("fhir_resources", str(data), str(cores))
    print(f"(a') fhir.resources, {cores} processes: {ap_['resources'] / ap_['seconds']:,.0f} resources/s", flush=True)
    runs = {}
    for label, workers in (("default", str(min(8, cores))), ("one_process", "0")):
        if home.exists():
            shutil.rmtree(home)
        runs[label] = _child("sagehealth", str(data), str(home), workers)
        r = runs[label]
        print(f"(b) sagehealth ingest ({label}): {r['resources'] / r['seconds']:,.0f} resources/s", flush=True)
    store_bytes = sum(f.stat().st_size for f in home.rglob("*") if f.is_file())
    rate = lambda r: r["resources"] / r["seconds"]  # noqa: E731
    b = runs["default"]
    result = {
        "benchmark": "ingest_fhir",
        "machine": {"cpus": cores, "cpu_model": _cpu_model(), "platform": platform.platform(),
                    "python": platform.python_version(), "processor": platform.processor()},
        "input": {"resources": n, "bytes": size, "files": len(list(data.glob("*.ndjson")))},
        "fhir_resources": {**a, "resources_per_s": rate(a)},
        "fhir_resources_parallel": {**ap_, "resources_per_s": rate(ap_)},
        "sagehealth_ingest": {**b, "resources_per_s": rate(b), "store_bytes": store_bytes},
        "sagehealth_ingest_one_process": {**runs["one_process"], "resources_per_s": rate(runs["one_process"])},
        "speedup": rate(b) / rate(a),
        "speedup_vs_parallel_fhir_resources": rate(b) / rate(ap_),
        "speedup_one_process": rate(runs["one_process"]) / rate(a),
        "targets": {"speedup": ">= 3", "peak_rss_mb": "<= 1536"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("input", "speedup"))}, indent=2))
    print(f"peak RSS: fhir.resources {a['peak_rss_mb']:.0f} MB, sagehealth {b['peak_rss_mb']:.0f} MB "
          f"(one process: {runs['one_process']['peak_rss_mb']:.0f} MB)")
    if not args.keep:
        shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
