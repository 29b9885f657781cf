"""Scoring free-text de-identification against gold PHI annotations.

Two corpus loaders (the PhysioNet ``deid`` format and Presidio's synthetic set) and one scorer,
used by the tests and by ``benchmarks/deid.py`` for every tool alike.

Scoring (type-agnostic, the rule of the de-identification issue):

* a gold span is **found** when the predicted spans together cover every one of its letters
  and digits (characters ``c`` with ``c.isalnum()``); punctuation and spaces inside the gold
  span need not be covered. A gold span without any letter or digit is found only when all
  its characters are covered;
* a predicted span is a **false positive** when it overlaps no gold span (overlap: at least one
  shared character position); zero-length predictions overlap nothing;
* ``precision`` = predicted spans overlapping some gold span / all predicted spans
  (1.0 when nothing was predicted: no prediction was wrong);
* ``recall`` = gold spans found / all gold spans (1.0 when there is no gold span);
* ``f1`` = harmonic mean of the two (0.0 when both are 0).

Honest numbers come from :func:`cross_validate`: patient-disjoint folds (:func:`patient_folds`),
each system built from the other folds and scored on the fold it did not see; docs/deid.md says
which numbers are tuned-on and which held-out, and how rule changes follow the folds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagehealth.errors import SageHealthError

__all__ = [
    "CV_SEED",
    "GoldFormatError",
    "GoldSpan",
    "Note",
    "cross_validate",
    "cv_notes",
    "load_physionet",
    "load_presidio_synth",
    "patient_folds",
    "patient_of",
    "score",
]

_START = "START_OF_RECORD="
_END = "||||END_OF_RECORD"
#: how many examples of misses and false positives a score keeps for error analysis
MAX_EXAMPLES = 200
#: characters of context on each side of an example
CONTEXT_CHARS = 40


class GoldFormatError(SageHealthError, ValueError):
    """A gold-standard corpus is malformed: a bad line, or offsets that do not match the text."""


@dataclass(frozen=True, slots=True)
class GoldSpan:
    """One annotated identifier: ``note.text[start:end] == text``."""

    start: int
    end: int
    type: str
    text: str


@dataclass(slots=True)
class Note:
    """One document and its gold PHI spans."""

    id: str
    text: str
    gold: list[GoldSpan] = field(default_factory=list)


# --------------------------------------------------------------------------- loaders


def _read_physionet_gold(gold_path: Path) -> dict[tuple[str, str], list[tuple[int, GoldSpan]]]:
    """``(pid, note) -> [(line number, span)]`` from an ``id-phi.phrase`` file."""
    gold: dict[tuple[str, str], list[tuple[int, GoldSpan]]] = {}
    with open(gold_path, encoding="utf-8", newline="") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(" ", 5)
            if len(parts) != 6:
                raise GoldFormatError(
                    f"{gold_path}:{lineno}: expected 'pid note start end TYPE phrase', got {line!r}"
                )
            pid, note, start_s, end_s, typ, phrase = parts
            try:
                start, end = int(start_s), int(end_s)
            except ValueError:
                raise GoldFormatError(f"{gold_path}:{lineno}: offsets are not integers: {line!r}") from None
            if not 0 <= start <= end:
                raise GoldFormatError(f"{gold_path}:{lineno}: bad offsets {start}..{end}: {line!r}")
            gold.setdefault((pid, note), []).append((lineno, GoldSpan(start, end, typ, phrase)))
    return gold


def _iter_physionet_records(text_path: Path) -> Iterable[tuple[str, str, str]]:
    """Stream ``(pid, note, body)`` from an ``id.text`` file, line by line.

    The body is everything after the newline that ends the ``START_OF_RECORD=`` line, up to
    (not including) ``||||END_OF_RECORD``.
    """
    key: tuple[str, str] | None = None
    buf: list[str] = []
    with open(text_path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            if key is None:
                if line.startswith(_START):
                    header = line[len(_START):].rstrip("\r\n").split("||||")
                    if len(header) < 2 or not header[0] or not header[1]:
                        raise GoldFormatError(f"{text_path}:{lineno}: bad record header {line!r}")
                    key = (header[0], header[1])
                    buf = []
                elif line.strip():
                    raise GoldFormatError(f"{text_path}:{lineno}: text outside a record: {line[:80]!r}")
                continue
            if line.startswith(_START):
                raise GoldFormatError(f"{text_path}:{lineno}: record {key} has no END_OF_RECORD")
            content = line.rstrip("\r\n")
            if content.endswith(_END):
                buf.append(content[: -len(_END)])
                yield key[0], key[1], "".join(buf)
                key, buf = None, []
            else:
                buf.append(line)
    if key is not None:
        raise GoldFormatError(f"{text_path}: record {key} has no END_OF_RECORD")


def load_physionet(text_path: str | Path, gold_path: str | Path) -> list[Note]:
    """Notes of a PhysioNet ``deid`` corpus (``id.text`` + ``id-phi.phrase``).

    Note ids are ``"<pid>-<note>"``. Every gold line is checked: ``body[start:end]`` must equal
    its phrase column, otherwise :class:`GoldFormatError` names the line.
    """
    text_path, gold_path = Path(text_path), Path(gold_path)
    gold = _read_physionet_gold(gold_path)
    notes: list[Note] = []
    seen: set[tuple[str, str]] = set()
    for pid, nid, body in _iter_physionet_records(text_path):
        key = (pid, nid)
        if key in seen:
            raise GoldFormatError(f"{text_path}: record {pid}||||{nid} occurs twice")
        seen.add(key)
        spans: list[GoldSpan] = []
        for lineno, g in gold.get(key, ()):
            if g.end > len(body) or body[g.start:g.end] != g.text:
                raise GoldFormatError(
                    f"{gold_path}:{lineno}: offsets {g.start}..{g.end} of record {pid}||||{nid} "
                    f"give {body[g.start:g.end]!r}, the phrase column says {g.text!r}"
                )
            spans.append(g)
        spans.sort(key=lambda s: (s.start, s.end))
        notes.append(Note(f"{pid}-{nid}", body, spans))
    missing = sorted(set(gold) - seen)
    if missing:
        lineno = gold[missing[0]][0][0]
        raise GoldFormatError(
            f"{gold_path}:{lineno}: {len(missing)} annotated record(s) not in {text_path}, "
            f"first {missing[0][0]}||||{missing[0][1]}"
        )
    return notes


def load_presidio_synth(path: str | Path) -> list[Note]:
    """Notes of Presidio's synthetic evaluation set (a JSON list of
    ``{full_text, spans: [{entity_type, entity_value, start_position, end_position}]}``).

    Note ids are the list positions; offsets are checked against ``entity_value``.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise GoldFormatError(f"{path}: expected a JSON list of records")
    notes: list[Note] = []
    for i, rec in enumerate(records):
        try:
            text = rec["full_text"]
            spans = []
            for s in rec.get("spans") or ():
                start, end = int(s["start_position"]), int(s["end_position"])
                value = s["entity_value"]
                if not 0 <= start <= end <= len(text) or text[start:end] != value:
                    raise GoldFormatError(
                        f"{path}: record {i}: offsets {start}..{end} give {text[start:end]!r}, "
                        f"entity_value is {value!r}"
                    )
                spans.append(GoldSpan(start, end, str(s["entity_type"]), value))
        except (KeyError, TypeError) as e:
            raise GoldFormatError(f"{path}: record {i}: missing or bad field {e}") from None
        spans.sort(key=lambda s: (s.start, s.end))
        notes.append(Note(str(i), text, spans))
    return notes


# --------------------------------------------------------------------------- scoring


def _context(text: str, start: int, end: int) -> str:
    return text[max(0, start - CONTEXT_CHARS): end + CONTEXT_CHARS]


def _span_bounds(span: Any, length: int) -> tuple[int, int]:
    start = max(0, min(int(span.start), length))
    end = max(start, min(int(span.end), length))
    return start, end


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def score(notes: Sequence[Note], predict: Callable[[str], Sequence[Any]], *, repeat: int = 1,
          time_budget_s: float = 20.0, before_pass: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``predict`` on every note's text and score it against the gold spans.

    ``predict`` returns objects with ``start`` and ``end`` (e.g.
    :class:`~sagehealth.privacy.deid.spans.Span`); their types are ignored. Offsets outside the
    text are clipped. ``notes_per_s`` times the ``predict`` calls only. Returns a
    JSON-serialisable dict (see the module docstring for the definitions).

    ``repeat``: on a shared machine one pass is at the mercy of the other processes; the time
    is then the best of up to ``repeat`` passes over all notes, passes stopping once
    ``time_budget_s`` seconds have been timed (a slow tool runs once). ``before_pass`` runs
    before each pass, untimed (e.g. to empty caches so that each pass starts cold). The
    predictions scored are those of the first pass.
    """
    predictions: list[list[Any]] | None = None
    elapsed = float("inf")
    timed = 0.0
    passes = 0
    while passes < max(1, repeat) and (passes == 0 or timed < time_budget_s):
        if before_pass is not None:
            before_pass()
        t0 = time.perf_counter()
        got = [list(predict(note.text)) for note in notes]
        took = time.perf_counter() - t0
        passes += 1
        timed += took
        elapsed = min(elapsed, took)
        if predictions is None:
            predictions = got
    assert predictions is not None

    n_gold = n_found = n_pred = n_pred_tp = 0
    per_type: dict[str, dict[str, Any]] = {}
    missed: list[dict[str, str]] = []
    fp_examples: list[dict[str, str]] = []

    for note, preds in zip(notes, predictions):
        text = note.text
        bounds = [_span_bounds(p, len(text)) for p in preds]
        covered: set[int] = set()
        for s, e in bounds:
            covered.update(range(s, e))
        gold_pos: set[int] = set()
        for g in note.gold:
            gold_pos.update(range(g.start, g.end))
            n_gold += 1
            t = per_type.setdefault(g.type, {"gold": 0, "found": 0})
            t["gold"] += 1
            must = [i for i in range(g.start, g.end) if text[i].isalnum()] or range(g.start, g.end)
            if all(i in covered for i in must):
                n_found += 1
                t["found"] += 1
            elif len(missed) < MAX_EXAMPLES:
                missed.append({"note": note.id, "type": g.type, "text": g.text,
                               "context": _context(text, g.start, g.end)})
        for p, (s, e) in zip(preds, bounds):
            n_pred += 1
            if not gold_pos.isdisjoint(range(s, e)):
                n_pred_tp += 1
            elif len(fp_examples) < MAX_EXAMPLES:
                fp_examples.append({"note": note.id, "type": str(getattr(p, "type", "")),
                                    "text": text[s:e], "context": _context(text, s, e)})

    precision = _ratio(n_pred_tp, n_pred, 1.0)
    recall = _ratio(n_found, n_gold, 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    for t in per_type.values():
        t["recall"] = _ratio(t["found"], t["gold"], 1.0)
    return {
        "notes": len(notes),
        "gold_spans": n_gold,
        "found": n_found,
        "predicted_spans": n_pred,
        "true_positive_predictions": n_pred_tp,
        "false_positives": n_pred - n_pred_tp,
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "notes_per_s": len(notes) / max(elapsed, 1e-9),
        "seconds": elapsed,
        "timed_passes": passes,
        "per_type": dict(sorted(per_type.items())),
        "missed": missed,
        "false_positive_examples": fp_examples,
    }


# --------------------------------------------------------------------------- cross-validation

#: the seed of the patient folds everything in this project reports (docs/deid.md)
CV_SEED = 14
#: the seed of the re-drawn PHI values of a test fold (``cross_validate(redraw=True)``)
REDRAW_SEED = 1014
#: what a score keeps in a cross-validation report (no note text: examples stay out)
_CV_KEEP = ("notes", "gold_spans", "found", "predicted_spans", "false_positives", "recall",
            "precision", "f1", "notes_per_s", "per_type")
#: which notes each system has seen before it is scored on a fold (written into the report)
TUNED_ON = {
    "rules": "all dev notes: the bundled rules were written looking at both folds before the CV "
             "protocol, so their fold scores are tuned-on numbers, not held-out ones (rule changes "
             "since follow the protocol in docs/deid.md)",
    "model": "the other folds only (trained per fold on them plus synthetic notes): held-out",
    "combined": "model: the other folds only; rules: all dev notes (see rules)",
}


def patient_of(note_id: str) -> str:
    """The patient of a note id (``"<pid>-<note>"`` as :func:`load_physionet` names them)."""
    return note_id.split("-", 1)[0]


def patient_folds(notes: Sequence[Note], folds: int = 2, seed: int = CV_SEED) -> list[list[Note]]:
    """``notes`` cut into ``folds`` patient-disjoint parts of about the same number of notes.

    The patients are shuffled with ``random.Random(seed)``, then each goes to the fold with the
    fewest notes so far (ties: the lowest fold number). The same notes, folds and seed always
    give the same folds; the notes of a fold keep their input order."""
    import random

    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    by_patient: dict[str, list[Note]] = {}
    for n in notes:
        by_patient.setdefault(patient_of(n.id), []).append(n)
    if len(by_patient) < folds:
        raise ValueError(f"{len(by_patient)} patient(s) cannot fill {folds} patient-disjoint folds")
    pids = sorted(by_patient, key=lambda p: (len(p), p))
    random.Random(seed).shuffle(pids)
    sizes = [0] * folds
    fold_of: dict[str, int] = {}
    for pid in pids:
        k = min(range(folds), key=lambda i: (sizes[i], i))
        fold_of[pid] = k
        sizes[k] += len(by_patient[pid])
    return [[n for n in notes if fold_of[patient_of(n.id)] == k] for k in range(folds)]


def cv_notes(text_path: str | Path, gold_path: str | Path, fold: int, folds: int = 2,
             seed: int = CV_SEED) -> list[Note]:
    """The notes of one fold (what a rule writer may look at: see docs/deid.md)."""
    return patient_folds(load_physionet(text_path, gold_path), folds, seed)[fold]


def _default_systems() -> dict[str, Callable[[list[Note]], Callable[[str], Sequence[Any]]]]:
    """name -> factory(training notes) -> predict(text). Imported lazily (the model is optional
    for the scorer)."""
    from sagehealth.privacy.deid import model as _model

    return {
        "rules": lambda train: _model.rules_predictor(),
        "model": lambda train: _model.train_predictor(train, combine=False),
        "combined": lambda train: _model.train_predictor(train, combine=True),
    }


def cross_validate(text_path: str | Path, gold_path: str | Path, folds: int = 2, seed: int = CV_SEED,
                   systems: Sequence[str] = ("rules", "model", "combined"), *, repeat: int = 1,
                   factories: dict[str, Callable[[list[Note]], Callable[[str], Sequence[Any]]]] | None = None,
                   redraw: bool = False) -> dict[str, Any]:
    """Patient-disjoint k-fold cross-validation on a PhysioNet ``deid`` corpus.

    For each fold, each system is built from the notes of the *other* folds (``factories``:
    name -> ``factory(training notes) -> predict``; by default ``rules``: the bundled rules,
    nothing to train; ``model``: the learned token classifier alone; ``combined``: rules and
    model, see :mod:`sagehealth.privacy.deid.model`) and scored with :func:`score` on the fold's
    notes. Returns a JSON-serialisable dict::

        {"folds": k, "seed": s, "patients": [[pid, ...], ...],
         "per_fold": [{"fold": i, "notes": n, "patients": p, "<system>": {recall, precision,
                       f1, notes_per_s, ...}}, ...],
         "mean": {"<system>": {recall, precision, f1, notes_per_s}},
         "tuned_on": {"<system>": "which notes it saw"}}

    ``mean`` is the unweighted mean over folds. Nothing of the note text is kept.

    ``redraw``: each system is also scored on its test fold with every gold PHI value replaced
    by a made-up one of its kind (names by names drawn from census lists or made up, places by
    places, dates by dates; :func:`sagehealth.privacy.deid.model.synthesise`, seed
    ``REDRAW_SEED + fold``): the contexts are the fold's own, the values are ones no rule was
    written for — a proxy for the names and places of unseen patients (``per_fold[i]["redrawn"]``,
    ``redrawn_mean``).
    """
    notes = load_physionet(text_path, gold_path)
    parts = patient_folds(notes, folds, seed)
    makers = factories if factories is not None else _default_systems()
    unknown = [s for s in systems if s not in makers]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; known: {sorted(makers)}")
    redrawn_parts: list[list[Note]] = []
    if redraw:
        from sagehealth.privacy.deid.lexicon import lexicon
        from sagehealth.privacy.deid.detector import default_rules
        from sagehealth.privacy.deid.model import synthesise

        lex = lexicon(default_rules().clinical_words)
        for k, p in enumerate(parts):
            redrawn_parts.append([
                Note(n.id, text, [GoldSpan(a, b, t, text[a:b]) for a, b, t in gold])
                for n, (text, gold) in zip(p, synthesise(p, lex, REDRAW_SEED + k))])
    per_fold: list[dict[str, Any]] = []
    for k, test in enumerate(parts):
        train = [n for j, p in enumerate(parts) if j != k for n in p]
        row: dict[str, Any] = {"fold": k, "notes": len(test),
                               "patients": len({patient_of(n.id) for n in test}),
                               "gold_spans": sum(len(n.gold) for n in test)}
        for name in systems:
            predict = makers[name](train)
            r = score(test, predict, repeat=repeat)
            row[name] = {m: r[m] for m in _CV_KEEP}
            if redraw:
                r = score(redrawn_parts[k], predict)
                row.setdefault("redrawn", {})[name] = {m: r[m] for m in _CV_KEEP if m != "notes_per_s"}
        per_fold.append(row)
    mean = {name: {m: sum(f[name][m] for f in per_fold) / len(per_fold)
                   for m in ("recall", "precision", "f1", "notes_per_s")} for name in systems}
    out_redrawn = {}
    if redraw:
        out_redrawn = {"redrawn_mean": {name: {m: sum(f["redrawn"][name][m] for f in per_fold) / len(per_fold)
                                               for m in ("recall", "precision", "f1")} for name in systems}}
    return {
        "folds": folds,
        "seed": seed,
        "patients": [sorted({patient_of(n.id) for n in p}, key=lambda x: (len(x), x)) for p in parts],
        "per_fold": per_fold,
        "mean": mean,
        "tuned_on": {name: TUNED_ON.get(name, "") for name in systems},
        **out_redrawn,
    }
