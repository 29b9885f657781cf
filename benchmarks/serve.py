"""The REST door under load: N concurrent clients for T seconds against a real
``sagehealth serve`` on loopback, calling the search and patient-context tools, in one run with
the same calls made in-process through the Python API (what the door adds on top).

The store: the bundled sample data (Synthea FHIR bundles and bulk NDJSON, MTSamples notes and
radiology reports, SciFact abstracts) ingested and indexed with the default embedder into
``benchmarks/work/serve-store`` (built afresh by every run). Callers: a researcher (searches the
research zone) and a clinician whose care team is every sample patient (patient context), each
with a bearer token. Each client loops: a search (hybrid, k=10, a query drawn from a list of 30
clinical questions) or a patient context (a random patient), half and half. The load generator
is one asyncio process with aiohttp (httpx's client used a whole core by itself at 500 requests/s)
on the same 2 cores as the server, so it takes CPU from it: the numbers are a floor. Two workloads, one after the other: ``repeated`` (the 30 queries and
5 patients again and again: the server's version-keyed result cache answers most calls) and
``unique`` (every query a new combination of 3-5 of their words, every patient context a new
time window: nothing cached, every call embeds, searches and queries).

Measured per tool: requests, requests/s, latency p50/p95/p99 (ms), errors (non-2xx or
transport); the server's peak RSS; in-process p50 of the same calls.
Usage: ``python benchmarks/serve.py [--clients 50] [--seconds 60] [--workers 1] [--out results/serve.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "serve-store"
KEY = "benchmark-serve-key-0123456789"
QUERIES = [
    "chest pain radiating to the left arm", "shortness of breath on exertion", "pleural effusion on chest x-ray",
    "fetal heart rate on ultrasound", "knee pain after a fall", "fracture of the ankle", "viral sinusitis treatment",
    "hypertension medication", "type 2 diabetes follow up", "acute bronchitis with cough", "normal echocardiogram",
    "CT of the abdomen with contrast", "MRI of the lumbar spine disc herniation", "carotid artery stenosis",
    "headache and visual disturbance", "urinary tract infection antibiotics", "colonoscopy polyp removal",
    "anemia iron deficiency", "asthma exacerbation inhaler", "pneumonia on chest radiograph",
    "thyroid nodule biopsy", "deep vein thrombosis ultrasound", "kidney stone hydronephrosis", "gallbladder wall",
    "cataract surgery", "depression screening", "allergy to penicillin", "obesity body mass index",
    "prenatal visit", "laceration repair of the hand",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store() -> dict:
    from sagehealth import Ecosystem
    from sagehealth.demo import sample_root
    from sagehealth.governance import Principal

    steward = Principal("bench.steward", "steward", "operations")
    shutil.rmtree(WORK, ignore_errors=True)  # every run starts from the same store (and audit log)
    eco = Ecosystem.open(WORK, steward)
    for sub in ("fhir", "notes", "literature"):
        eco.ingest([sample_root() / sub], options={"deid_key": KEY, "index": True})
    patients = eco.lake.read("patients", columns=["patient_id"]).column("patient_id").to_pylist()
    clinician = Principal("bench.dr", "clinician", "treatment", patients=frozenset(patients))
    researcher = Principal("bench.rita", "researcher", "research")
    return {"eco": eco, "patients": patients, "clinician": clinician, "researcher": researcher,
            "tokens": {"clinician": eco.issue_token(clinician, label="benchmark"),
                       "researcher": eco.issue_token(researcher, label="benchmark")},
            "chunks": eco.lake.count("research_chunks")}


def in_process(world: dict, n: int = 60) -> dict:
    """The same calls through the Python API, one at a time (p50, ms)."""
    from sagehealth.agents import REGISTRY

    r = world["eco"].as_principal(world["researcher"])
    c = world["eco"].as_principal(world["clinician"])
    out = {}
    for name, fn in [("search_evidence", lambda i: REGISTRY.call_json(r, "search_evidence", {"query": QUERIES[i % 30], "k": 10})),
                     ("patient_context", lambda i: REGISTRY.call_json(c, "patient_context", {"patient_id": world["patients"][i % len(world["patients"])]}))]:
        fn(0)
        times = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
        out[name] = {"p50_ms": round(float(np.percentile(times, 50)) * 1000, 2),
                     "p95_ms": round(float(np.percentile(times, 95)) * 1000, 2)}
    return out


WORDS = sorted({w for q in QUERIES for w in q.split() if len(w) > 3})


def _query(rng: random.Random, unique: bool) -> str:
    """A query of the list, or (unique) a new combination of 3-5 of their words."""
    return " ".join(rng.sample(WORDS, rng.randint(3, 5))) if unique else rng.choice(QUERIES)


async def load(base: str, world: dict, clients: int, seconds: float, unique: bool = False) -> dict:
    import aiohttp

    stats: dict[str, dict[str, list]] = {t: {"lat": [], "errors": []} for t in ("search_evidence", "patient_context")}
    deadline = time.perf_counter() + seconds
    auth = {role: {"Authorization": f"Bearer {tok}"} for role, tok in world["tokens"].items()}

    async def client(i: int, http: aiohttp.ClientSession) -> None:
        rng = random.Random(i if not unique else 1000 + i)
        while time.perf_counter() < deadline:
            if rng.random() < 0.5:
                tool, role = "search_evidence", "researcher"
                body = {"query": _query(rng, unique), "k": 10}
            else:
                tool, role = "patient_context", "clinician"
                body = {"patient_id": rng.choice(world["patients"])}
                if unique:  # a window no one asked for before
                    body["since"] = f"{rng.randint(1950, 2019)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            t = time.perf_counter()
            try:
                async with http.post(f"/v1/tools/{tool}", json=body, headers=auth[role]) as r:
                    text = await r.text()
                    ok = r.status == 200
                    why = f"HTTP {r.status}: {text[:200]}" if not ok else ""
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            (stats[tool]["lat"] if ok else stats[tool]["errors"]).append(time.perf_counter() - t if ok else why)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - started
    out = {}
    for tool, s in stats.items():
        lat = s["lat"]
        out[tool] = {"requests": len(lat) + len(s["errors"]), "errors": len(s["errors"]),
                     "error_examples": sorted(set(s["errors"]))[:3],
                     "rps": round(len(lat) / wall, 1),
                     **({f"p{q}_ms": round(float(np.percentile(lat, q)) * 1000, 1) for q in (50, 95, 99)} if lat else {})}
    out["total_rps"] = round(sum(out[t]["rps"] for t in stats), 1)
    out["wall_s"] = round(wall, 1)
    return out


def server_rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return round(sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = ap.parse_args()

    t = time.perf_counter()
    world = build_store()
    setup_s = time.perf_counter() - t
    baseline = in_process(world)
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "sagehealth"), "serve", "--home", str(WORK),
                               "--port", str(port), "--workers", str(args.workers)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        asyncio.run(load(base, world, 4, 3))  # warm-up: models loaded in every worker
        result = {"repeated": asyncio.run(load(base, world, args.clients, args.seconds)),
                  "unique": asyncio.run(load(base, world, args.clients, args.seconds, unique=True))}
        rss = server_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(20)
    report = {
        "benchmark": "serve", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "clients": args.clients, "seconds": args.seconds, "workers": args.workers,
        "store": {"research_chunks": world["chunks"], "patients": len(world["patients"]), "setup_s": round(setup_s, 1)},
        "rest": result, "server_peak_rss_mb": rss, "in_process": baseline,
        "note": "load generator (1 asyncio process, aiohttp) shares the 2 cores with the server",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
