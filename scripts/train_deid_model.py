#!/usr/bin/env python3
"""Train the de-identification token model shipped in src/sagehealth/privacy/deid/model.json.gz.

Deterministic: the synthetic notes are drawn with a fixed seed (``--seed``, default
``model.TRAIN_SEED``) and the logistic regression is trained full-batch (no sampling), so the
same data and seed give the same file, byte for byte (gzip with mtime 0).

    python scripts/train_deid_model.py                      # train on all dev notes, write the model
    python scripts/train_deid_model.py --cv 2 --out cv.json  # patient-disjoint CV report only

The model is trained on the PhysioNet deid dev notes (``../shared/data/deid/physionet_deid_dev``
or ``$SAGEHEALTH_SHARED_DATA/deid/...``) plus synthetic notes (their PHI replaced by made-up
values; clinical sentence templates), in combined mode: on the candidate tokens the rules leave,
with the rules' findings as features (see docs/deid.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sagehealth.privacy.deid import model as M  # noqa: E402
from sagehealth.privacy.deid.detector import Detector  # noqa: E402
from sagehealth.privacy.deid.evaluate import CV_SEED, cross_validate, load_physionet  # noqa: E402

SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "deid"
DEV = SHARED / "physionet_deid_dev"
OUT = ROOT / "src" / "sagehealth" / "privacy" / "deid" / M.MODEL_FILE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default=str(DEV / "id.text"))
    ap.add_argument("--gold", default=str(DEV / "id-phi.phrase"))
    ap.add_argument("--seed", type=int, default=M.TRAIN_SEED)
    ap.add_argument("--model-out", default=str(OUT))
    ap.add_argument("--cv", type=int, default=0, help="run k-fold patient-disjoint CV instead of training")
    ap.add_argument("--cv-seed", type=int, default=CV_SEED)
    ap.add_argument("--systems", default="rules,model,combined")
    ap.add_argument("--out", help="write the CV report (JSON) here")
    args = ap.parse_args()
    cfg = M.TrainConfig(seed=args.seed)
    if args.cv:
        t0 = time.perf_counter()
        report = cross_validate(args.text, args.gold, folds=args.cv, seed=args.cv_seed,
                                systems=args.systems.split(","))
        report["seconds"] = round(time.perf_counter() - t0, 1)
        for row in report["per_fold"]:
            for s in args.systems.split(","):
                r = row[s]
                print(f"fold {row['fold']} {s:9s} recall {r['recall']:.3f} precision {r['precision']:.3f} "
                      f"F1 {r['f1']:.3f} {r['notes_per_s']:,.0f} notes/s")
        for s, r in report["mean"].items():
            print(f"mean   {s:9s} recall {r['recall']:.3f} precision {r['precision']:.3f} F1 {r['f1']:.3f}")
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        return
    notes = load_physionet(args.text, args.gold)
    t0 = time.perf_counter()
    model = M.train(notes, Detector(model=False), combine=True, config=cfg)
    model.save(args.model_out)
    print(f"trained on {len(notes)} notes in {time.perf_counter() - t0:.0f} s: {len(model.weights)} weights, "
          f"{model.meta} -> {args.model_out} ({Path(args.model_out).stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
