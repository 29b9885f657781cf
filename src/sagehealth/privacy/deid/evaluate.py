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
    "GoldFormatError",
    "GoldSpan",
    "Note",
    "load_physionet",
    "load_presidio_synth",
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
