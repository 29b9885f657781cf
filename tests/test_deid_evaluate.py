"""The de-identification scorer and corpus loaders (sagehealth.privacy.deid.evaluate).

The unit tests pin the scoring rule of the de-identification issue with hand-made notes and a
stand-in detector; the integration tests load the shared PhysioNet dev split and Presidio's
synthetic set (skipped when ../shared/data is absent; SAGEHEALTH_SHARED_DATA overrides).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from sagehealth.privacy.deid.evaluate import (
    GoldFormatError,
    GoldSpan,
    Note,
    load_physionet,
    load_presidio_synth,
    score,
)
from sagehealth.privacy.deid.spans import Span

SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEID = SHARED / "deid"


def note(text: str, *phrases: str, typ: str = "NAME") -> Note:
    """A note whose gold spans are the first occurrences of ``phrases``."""
    gold = []
    for p in phrases:
        i = text.index(p)
        gold.append(GoldSpan(i, i + len(p), typ, p))
    return Note("n", text, gold)


def fixed(*spans: tuple[int, int]):
    """A detector that returns the same spans whatever the text."""
    return lambda text: [Span(s, e, "X", text[s:e], "test") for s, e in spans]


DATE = re.compile(r"\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b")


def date_detector(text: str) -> list[Span]:
    """A trivial stand-in for the real detector: numeric dates only."""
    return [Span(m.start(), m.end(), "DATE", m.group(), "date") for m in DATE.finditer(text)]


# ------------------------------------------------------------------ scoring semantics


def test_exact_cover_is_a_hit():
    n = note("Seen by Dr. John Smith today.", "John Smith")
    s, e = n.gold[0].start, n.gold[0].end
    r = score([n], fixed((s, e)))
    assert (r["found"], r["recall"], r["precision"], r["f1"]) == (1, 1.0, 1.0, 1.0)
    assert r["false_positives"] == 0 and r["missed"] == []


def test_partial_cover_of_letters_is_a_miss():
    n = note("Seen by Dr. John Smith today.", "John Smith")
    s = n.gold[0].start
    r = score([n], fixed((s, s + 4)))  # "John" only
    assert r["found"] == 0 and r["recall"] == 0.0
    # the prediction overlaps the gold span: not a false positive
    assert r["precision"] == 1.0 and r["false_positives"] == 0
    assert r["missed"][0]["text"] == "John Smith" and "Dr." in r["missed"][0]["context"]


def test_one_uncovered_digit_is_a_miss():
    n = note("Call 301 944-5032 now", "301 944-5032", typ="PHONE")
    s, e = n.gold[0].start, n.gold[0].end
    assert score([n], fixed((s, e - 1)))["found"] == 0


def test_uncovered_punctuation_and_space_inside_gold_is_still_a_hit():
    n = note("Call 301 944-5032 now", "301 944-5032", typ="PHONE")
    s = n.gold[0].start
    # "301", "944", "5032" covered separately; the space and the hyphen are not
    r = score([n], fixed((s, s + 3), (s + 4, s + 7), (s + 8, s + 12)))
    assert r["found"] == 1 and r["recall"] == 1.0
    assert r["predicted_spans"] == 3 and r["precision"] == 1.0


def test_trailing_punctuation_in_gold_need_not_be_covered():
    n = note("Dr. Smith, M.D. saw him", "Smith,")
    s = n.gold[0].start
    assert score([n], fixed((s, s + 5)))["found"] == 1


def test_prediction_overlapping_no_gold_is_a_false_positive():
    n = note("John Smith has a fever.", "John Smith")
    text = n.text
    f = text.index("fever")
    r = score([n], fixed((0, 10), (f, f + 5)))
    assert r["predicted_spans"] == 2 and r["false_positives"] == 1
    assert r["precision"] == 0.5 and r["recall"] == 1.0
    assert r["f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert r["false_positive_examples"][0]["text"] == "fever"


def test_adjacent_prediction_does_not_overlap():
    n = note("John Smith has a fever.", "John Smith")
    r = score([n], fixed((10, 14)))  # " has" starts right at the gold end
    assert r["false_positives"] == 1 and r["found"] == 0


def test_one_prediction_covering_two_gold_spans():
    n = note("Patient John Smith and Mary Jones visited.", "John Smith", "Mary Jones")
    s, e = n.gold[0].start, n.gold[1].end
    r = score([n], fixed((s, e)))
    assert r["predicted_spans"] == 1 and r["true_positive_predictions"] == 1
    assert r["gold_spans"] == 2 and r["found"] == 2
    assert r["precision"] == 1.0 and r["recall"] == 1.0


def test_union_of_predictions_covers_a_gold_span():
    n = note("Patient John Smith visited.", "John Smith")
    s = n.gold[0].start
    r = score([n], fixed((s, s + 6), (s + 3, s + 10)))  # overlapping pieces
    assert r["found"] == 1 and r["precision"] == 1.0


def test_empty_predictions_recall_zero_precision_one():
    n = note("John Smith on 7/22.", "John Smith", "7/22")
    r = score([n], lambda text: [])
    assert r["recall"] == 0.0
    assert r["precision"] == 1.0  # documented: no prediction, none wrong
    assert r["f1"] == 0.0 and r["predicted_spans"] == 0
    assert len(r["missed"]) == 2


def test_no_gold_and_no_predictions():
    r = score([Note("a", "Nothing here.", [])], lambda text: [])
    assert (r["recall"], r["precision"], r["gold_spans"]) == (1.0, 1.0, 0)


def test_out_of_range_predictions_are_clipped():
    n = note("on 7/22", "7/22", typ="DATE")
    r = score([n], fixed((3, 999)))
    assert r["found"] == 1 and r["false_positive_examples"] == []


def test_type_agnostic_and_per_type():
    n = Note("n", "John Smith on 7/22 at Calvert", [])
    n.gold.extend([
        GoldSpan(0, 10, "HCPName", "John Smith"),
        GoldSpan(14, 18, "Date", "7/22"),
        GoldSpan(22, 29, "Location", "Calvert"),
    ])
    r = score([n], date_detector)  # predicted type DATE vs gold "Date": types ignored
    assert r["found"] == 1 and r["gold_spans"] == 3
    assert r["per_type"]["Date"] == {"gold": 1, "found": 1, "recall": 1.0}
    assert r["per_type"]["HCPName"] == {"gold": 1, "found": 0, "recall": 0.0}
    assert r["notes"] == 1 and r["notes_per_s"] > 0
    json.dumps(r)  # JSON-serialisable


def test_several_notes_accumulate():
    a = note("seen 7/22", "7/22", typ="DATE")
    b = note("Dr. Kim 3/4/2020 and 5/6", "Kim", "3/4/2020")
    r = score([a, b], date_detector)
    assert r["notes"] == 2 and r["gold_spans"] == 3 and r["found"] == 2
    assert r["predicted_spans"] == 3 and r["false_positives"] == 1  # "5/6" is not gold
    assert r["missed"][0]["note"] == b.id


def test_examples_are_capped():
    text = " ".join(f"w{i}" for i in range(300))
    n = Note("big", text, [])
    r = score([n], lambda t: [Span(m.start(), m.end(), "X", m.group()) for m in re.finditer(r"\S+", t)])
    assert r["false_positives"] == 300 and len(r["false_positive_examples"]) == 200


# ------------------------------------------------------------------ loaders on small files


def _write_physionet(tmp_path: Path, gold_lines: list[str]) -> tuple[Path, Path]:
    text = (
        "START_OF_RECORD=1||||1||||\n"
        "Seen at CALVERT HOSPITAL on 7/22.\n"
        "Call 301 944-5032.\n"
        "||||END_OF_RECORD\n"
        "\n"
        "START_OF_RECORD=1||||2||||\n"
        "Nothing to see.||||END_OF_RECORD\n"
    )
    tp, gp = tmp_path / "id.text", tmp_path / "id-phi.phrase"
    tp.write_text(text, encoding="utf-8")
    gp.write_text("".join(line + "\n" for line in gold_lines), encoding="utf-8")
    return tp, gp


def test_load_physionet_small(tmp_path: Path):
    tp, gp = _write_physionet(tmp_path, ["1 1 8 15 Location CALVERT", "1 1 39 51 Phone 301 944-5032"])
    notes = load_physionet(tp, gp)
    assert [n.id for n in notes] == ["1-1", "1-2"]
    assert notes[0].text.startswith("Seen at CALVERT") and notes[0].text.endswith("5032.\n")
    assert notes[1].text == "Nothing to see." and notes[1].gold == []
    assert [(g.type, g.text) for g in notes[0].gold] == [("Location", "CALVERT"), ("Phone", "301 944-5032")]


def test_load_physionet_bad_offsets_name_the_line(tmp_path: Path):
    tp, gp = _write_physionet(tmp_path, ["1 1 8 15 Location CALVERT", "1 1 9 16 Location CALVERT"])
    with pytest.raises(GoldFormatError, match=r"id-phi\.phrase:2:.*'ALVERT '"):
        load_physionet(tp, gp)


def test_load_physionet_unknown_record(tmp_path: Path):
    tp, gp = _write_physionet(tmp_path, ["7 7 0 4 Date 7/22"])
    with pytest.raises(GoldFormatError, match=r"id-phi\.phrase:1: .*not in"):
        load_physionet(tp, gp)


def test_load_physionet_malformed_line(tmp_path: Path):
    tp, gp = _write_physionet(tmp_path, ["1 1 eight 15 Location CALVERT"])
    with pytest.raises(GoldFormatError, match=r":1: offsets are not integers"):
        load_physionet(tp, gp)


def test_load_presidio_synth_small(tmp_path: Path):
    p = tmp_path / "synth.json"
    p.write_text(json.dumps([
        {"full_text": "Hi John, call 555-1234", "spans": [
            {"entity_type": "PHONE_NUMBER", "entity_value": "555-1234", "start_position": 14, "end_position": 22},
            {"entity_type": "PERSON", "entity_value": "John", "start_position": 3, "end_position": 7},
        ]},
        {"full_text": "What are my options?", "spans": []},
    ]))
    notes = load_presidio_synth(p)
    assert [n.id for n in notes] == ["0", "1"]
    assert [g.text for g in notes[0].gold] == ["John", "555-1234"]  # sorted by offset
    p.write_text(json.dumps([{"full_text": "Hi John", "spans": [
        {"entity_type": "PERSON", "entity_value": "John", "start_position": 2, "end_position": 6}]}]))
    with pytest.raises(GoldFormatError, match="record 0"):
        load_presidio_synth(p)


# ------------------------------------------------------------------ the shared corpora


@pytest.fixture
def deid_data() -> Path:
    if not DEID.is_dir():
        pytest.skip(f"shared de-identification data not present at {DEID}")
    return DEID


@pytest.mark.integration
def test_physionet_dev_split(deid_data: Path):
    d = deid_data / "physionet_deid_dev"
    notes = load_physionet(d / "id.text", d / "id-phi.phrase")  # verifies every gold line
    assert len(notes) == 1450
    assert sum(len(n.gold) for n in notes) == 999
    assert len({n.id for n in notes}) == 1450
    for n in notes:
        for g in n.gold:
            assert n.text[g.start:g.end] == g.text
    r = score(notes, date_detector)
    assert r["gold_spans"] == 999 and 0 < r["found"] < 999
    assert 0 < r["per_type"]["Date"]["recall"] <= 1


@pytest.mark.integration
def test_presidio_synth_set(deid_data: Path):
    notes = load_presidio_synth(deid_data / "presidio_synth_v2.json")
    assert len(notes) == 1500
    assert sum(len(n.gold) for n in notes) == 2863
    for n in notes:
        for g in n.gold:
            assert n.text[g.start:g.end] == g.text


def test_repeated_timing_scores_the_first_pass_and_calls_the_hook():
    """``repeat``: the time is the best of several passes, the hook runs before each pass,
    the first pass's predictions are scored, and a spent time budget stops the passes."""
    n = note("Seen by Dr. John Smith today.", "John Smith")
    s, e = n.gold[0].start, n.gold[0].end
    calls = {"passes": 0, "hook": 0}

    def changing(text):  # finds the name in the first pass only
        calls["passes"] += 1
        return [Span(s, e, "NAME", text[s:e], "t")] if calls["passes"] == 1 else []

    def hook():
        calls["hook"] += 1

    r = score([n], changing, repeat=3, before_pass=hook)
    assert (calls["passes"], calls["hook"], r["timed_passes"]) == (3, 3, 3)
    assert r["found"] == 1 and r["predicted_spans"] == 1
    assert score([n], fixed((s, e)), repeat=5, time_budget_s=0.0)["timed_passes"] == 1
    assert score([n], fixed((s, e)))["timed_passes"] == 1


def test_detector_cold_and_warm_give_the_same_spans():
    from sagehealth.privacy.deid.detector import default_detector

    det = default_detector()
    text = "Seen by Dr. Quenby; wife Marisol visited from the Eastern Shore. CVA in 1998, 7/22."
    warm = det.detect(text)
    det.clear_caches()
    assert det.detect(text) == warm
