"""Patient-disjoint cross-validation of the de-identification detector (issue 14).

Unit tests on made-up notes. The held-out floors frozen in regression.json are checked on the
shared PhysioNet dev split by tests/test_deid.py (skipped when ../shared/data is absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagehealth.privacy.deid.evaluate import (
    CV_SEED,
    Note,
    cross_validate,
    patient_folds,
    patient_of,
)
from sagehealth.privacy.deid.spans import Span


def _notes(pids: dict[str, int]) -> list[Note]:
    return [Note(f"{p}-{k}", f"note {k} of {p}", []) for p, n in pids.items() for k in range(1, n + 1)]


def test_folds_are_patient_disjoint_balanced_and_deterministic():
    notes = _notes({str(p): (p % 7) + 1 for p in range(1, 40, 2)})
    for k in (2, 3, 5):
        folds = patient_folds(notes, k, seed=CV_SEED)
        assert len(folds) == k
        assert sorted(n.id for f in folds for n in f) == sorted(n.id for n in notes)  # a partition
        pats = [{patient_of(n.id) for n in f} for f in folds]
        for i in range(k):
            for j in range(i + 1, k):
                assert not pats[i] & pats[j]  # no patient in two folds
        sizes = [len(f) for f in folds]
        assert max(sizes) - min(sizes) <= 7  # greedy balance: at most one patient's notes apart
        assert [[n.id for n in f] for f in folds] == [[n.id for n in f] for f in patient_folds(notes, k, CV_SEED)]
    other = patient_folds(notes, 2, seed=CV_SEED + 1)
    assert [[n.id for n in f] for f in other] != [[n.id for n in f] for f in patient_folds(notes, 2, CV_SEED)]
    with pytest.raises(ValueError):
        patient_folds(notes, 1)
    with pytest.raises(ValueError):
        patient_folds(_notes({"1": 3}), 2)


def _corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A small PhysioNet-format corpus: 6 patients, a date in every note."""
    text, gold = [], []
    for pid in range(1, 12, 2):
        for nid in (1, 2):
            body = f"seen on {pid % 12 + 1}/{nid + 10} by the team.\n"
            text.append(f"START_OF_RECORD={pid}||||{nid}||||\n{body}||||END_OF_RECORD\n")
            s = body.index("on ") + 3
            e = body.index(" by")
            gold.append(f"{pid} {nid} {s} {e} Date {body[s:e]}\n")
    (tmp_path / "id.text").write_text("".join(text))
    (tmp_path / "id-phi.phrase").write_text("".join(gold))
    return tmp_path / "id.text", tmp_path / "id-phi.phrase"


def test_cross_validate_trains_on_the_other_folds_only(tmp_path):
    text, gold = _corpus(tmp_path)
    seen: list[set[str]] = []

    def make(train: list[Note]):
        seen.append({patient_of(n.id) for n in train})
        import re
        return lambda t: [Span(m.start(), m.end(), "DATE", m.group()) for m in re.finditer(r"\d+/\d+", t)]

    r = cross_validate(text, gold, folds=3, systems=["dates"], factories={"dates": make})
    assert r["folds"] == 3 and len(r["per_fold"]) == 3
    for row, train_pids, test_pids in zip(r["per_fold"], seen, r["patients"]):
        assert not train_pids & set(test_pids)  # trained without the fold it is scored on
        assert row["dates"]["recall"] == 1.0 and row["dates"]["precision"] == 1.0
    assert r["mean"]["dates"]["f1"] == 1.0
    assert sum(row["notes"] for row in r["per_fold"]) == 12
    json.dumps(r)  # JSON-serialisable, no note text inside
    assert "seen on" not in json.dumps(r)


def test_cross_validate_redrawn_values(tmp_path):
    text, gold = _corpus(tmp_path)
    import re

    def make(train):
        return lambda t: [Span(m.start(), m.end(), "DATE", m.group()) for m in re.finditer(r"\d+/\d+", t)]

    r = cross_validate(text, gold, folds=2, systems=["dates"], factories={"dates": make}, redraw=True)
    assert r["redrawn_mean"]["dates"]["recall"] == 1.0  # dates re-drawn as dates
