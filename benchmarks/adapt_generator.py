"""Benchmark: a LoRA adapter for SmolLM2-135M trained on the store's findings -> impression pairs
(issue 18), against its base and the drafters the product has, on reports it was not trained on.

Split as ``benchmarks/radiology.py`` (the rank of the numeric IU uid): rank % 5 in {0, 1, 2}
knowledge — ingested (research key set), exported with ``sagehealth export dataset instruct`` and
trained on; 3 the *feedback* slice (used to choose settings); 4 the *test* slice (reported).
Systems, drafting the IMPRESSION of each slice report that has findings:

* ``offline``: the default offline drafter (retrieval + findings-driven composition);
* ``smollm2-fewshot``: the product's LLM path today: SmolLM2-135M-Instruct Q4 in llama.cpp,
  prompted with 4 similar cases;
* ``smollm2-base``: the same model in transformers (float32), zero-shot with the export's
  instruction — the adapter's starting point, same prompt;
* ``smollm2-lora``: the adapter, same prompt.

For each model: ROUGE-L, normal/abnormal agreement and abnormal recall of the raw answers, and
of the product's guarded drafts (``LlmDrafter.guard``: an answer that leaves out a finding the
offline drafter states is refused and the study drafted offline), the refusal rate and seconds
per draft. Writes benchmarks/results/adapt_generator.json.

Run: ``python benchmarks/adapt_generator.py [--slice test] [--epochs 1] [--adapter DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from radiology import REPORTS, split  # noqa: E402

from sagehealth import Ecosystem  # noqa: E402
from sagehealth.errors import ProviderResponseError  # noqa: E402
from sagehealth.governance.policy import Principal  # noqa: E402
from sagehealth.radiology.cases import CaseBase  # noqa: E402
from sagehealth.radiology.drafter import OfflineDrafter  # noqa: E402
from sagehealth.radiology.evaluate import read_reports, score  # noqa: E402
from sagehealth.radiology.llm import LlmDrafter  # noqa: E402

STEWARD = Principal("bench", "steward", "operations")
RESEARCHER = Principal("bench-r", "researcher", "research")


def build(home: Path, knowledge: Path, pairs: Path) -> Ecosystem:
    eco = Ecosystem.open(home / "store", STEWARD)
    eco.ingest([knowledge], options={"index": True, "embed": False})
    eco.as_principal(RESEARCHER).export_dataset("instruct", pairs)
    return eco


def run_model(name: str, drafter: LlmDrafter, lake, cases: CaseBase, rows: list[dict[str, str]]) -> dict:
    offline = OfflineDrafter()
    raw, guarded, seconds, refused = [], [], [], 0
    for i, row in enumerate(rows):
        base = offline.draft(lake, cases, indication=row["indication"], findings=row["findings"])
        t0 = time.perf_counter()
        answer = drafter.provider.chat(drafter.prompt(base, row["indication"], row["findings"]),
                                       max_tokens=160, temperature=0.0).text
        seconds.append(time.perf_counter() - t0)
        raw.append((answer, row["impression"]))
        try:
            guarded.append((drafter.guard(base, answer), row["impression"]))
        except ProviderResponseError:
            refused += 1
            guarded.append((base.impression, row["impression"]))
        if (i + 1) % 50 == 0:
            print(f"  {name}: {i + 1}/{len(rows)}", file=sys.stderr, flush=True)
    return {"raw": score(raw), "guarded_with_offline_fallback": score(guarded), "refused": refused,
            "refused_rate": round(refused / max(1, len(rows)), 4),
            "seconds_p50": round(statistics.median(seconds), 3), "examples": len(rows),
            "samples": [{"draft": h, "reference": r} for h, r in raw[:5]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slice", choices=("feedback", "test"), default="test")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--balance", action="store_true", help="repeat the rarer of normal / abnormal impressions")
    ap.add_argument("--limit", type=int, default=None, help="draft only the first N slice reports")
    ap.add_argument("--adapter", default=None, help="reuse an adapter trained by an earlier run")
    ap.add_argument("--save", default=None, help="write the adapter here (a new folder) instead of a temporary one")
    ap.add_argument("--systems", default="offline,smollm2-fewshot,smollm2-base,smollm2-lora")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "adapt_generator.json"))
    args = ap.parse_args()
    if not REPORTS.is_file():
        sys.exit(f"{REPORTS} not found (../shared/data)")
    os.environ.setdefault("SAGEHEALTH_DEID_KEY", "benchmark-adapt-generator-key-0001")
    from sagehealth.genai.hf import HuggingFaceProvider
    from sagehealth.genai.providers import get_provider

    systems = args.systems.split(",")
    with tempfile.TemporaryDirectory(prefix="sage-adapt-gen-") as tmp:
        home = Path(tmp)
        parts = split(home)
        t0 = time.perf_counter()
        eco = build(home, parts["knowledge"], home / "pairs")
        build_s = time.perf_counter() - t0
        adapter = Path(args.adapter or args.save or home / "adapter")
        info = None
        if not args.adapter:
            info = eco.as_principal(RESEARCHER).adapt_generator(
                home / "pairs", adapter, epochs=args.epochs, rank=args.rank, learning_rate=args.lr, evaluate=0,
                balance=args.balance,
                progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
        else:
            info = json.loads((adapter / "sagehealth-model.json").read_text())
        rows = [r for r in read_reports(parts[args.slice]) if r["findings"].strip()][:args.limit]
        lake = eco.lake
        cases = CaseBase.load(lake)
        results: dict[str, dict] = {}
        for name in systems:
            print(f"drafting {len(rows)} {args.slice} reports with {name}", file=sys.stderr, flush=True)
            if name == "offline":
                t = time.perf_counter()
                drafted = [(OfflineDrafter().draft(lake, cases, indication=r["indication"],
                                                   findings=r["findings"]).impression, r["impression"]) for r in rows]
                results[name] = {"raw": score(drafted), "examples": len(rows),
                                 "seconds_mean": round((time.perf_counter() - t) / max(1, len(rows)), 4)}
                continue
            if name == "smollm2-fewshot":
                provider = get_provider("smollm2")
            elif name == "smollm2-base":
                provider = HuggingFaceProvider("hf:smollm2")
                provider.task, provider.instruction = "findings_to_impression", info["instruction"]
            else:
                provider = HuggingFaceProvider(f"hf:{adapter}")
            results[name] = run_model(name, LlmDrafter(provider, []), lake, cases, rows)
            print(f"  {name}: {json.dumps({k: results[name][k] for k in ('raw', 'refused_rate')})}",
                  file=sys.stderr, flush=True)
    out = {"benchmark": "adapt_generator", "slice": args.slice, "reports": str(REPORTS),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                       "processor": platform.processor()},
           "store_build_seconds": round(build_s, 1),
           "adapter": {k: info.get(k) for k in ("base", "task", "examples", "too_long", "epochs", "rank", "alpha",
                                                "learning_rate", "batch_size", "balanced", "steps", "train_seconds",
                                                "train_loss", "trainable_parameters", "store_version")},
           "systems": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: {m: v.get(m) for m in ("raw", "guarded_with_offline_fallback", "refused_rate",
                                                   "seconds_p50")} for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
