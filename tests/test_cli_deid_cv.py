"""`sagehealth deid eval --folds K`: patient-disjoint cross-validation from the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from helpers import shared_path


def _subset(tmp_path: Path, patients: int = 12) -> tuple[Path, Path]:
    """The notes (and gold lines) of the first ``patients`` patients of the shared dev split."""
    d = shared_path("deid/physionet_deid_dev")
    text = (d / "id.text").read_text(encoding="utf-8")
    records = re.findall(r"START_OF_RECORD=(\d+)\|\|\|\|(\d+)\|\|\|\|.*?\|\|\|\|END_OF_RECORD\n?", text, re.S)
    keep = sorted({int(p) for p, _ in records})[:patients]
    chunks = re.findall(r"(START_OF_RECORD=(\d+)\|\|\|\|\d+\|\|\|\|.*?\|\|\|\|END_OF_RECORD\n?\n?)", text, re.S)
    tp, gp = tmp_path / "id.text", tmp_path / "id-phi.phrase"
    tp.write_text("".join(c for c, p in chunks if int(p) in keep), encoding="utf-8")
    gold = (d / "id-phi.phrase").read_text(encoding="utf-8").splitlines(keepends=True)
    gp.write_text("".join(g for g in gold if g.split() and int(g.split()[0]) in keep), encoding="utf-8")
    return tp, gp


def test_deid_eval_folds_reports_every_system_per_fold_and_redrawn(tmp_path):
    tp, gp = _subset(tmp_path)
    cmd = [sys.executable, "-m", "sagehealth.cli", "deid", "eval", "--physionet-text", str(tp),
           "--physionet-gold", str(gp), "--json", "--folds"]
    r = subprocess.run([*cmd, "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["folds"] == 2 and len(out["per_fold"]) == 2 and "patients" not in out
    for system in ("rules", "model", "combined"):
        assert 0.5 < out["mean"][system]["precision"] <= 1 and 0 < out["redrawn_mean"][system]["recall"] <= 1
    bad = subprocess.run([*cmd, "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "at least 2 folds" in bad.stderr
