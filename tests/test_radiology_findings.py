"""Findings read from radiology report text (issue 17): affirmed, denied or possible, and the
critical ones. Sentences written for this test in the style of chest radiograph reports."""

from __future__ import annotations

import pytest

from sagehealth.radiology.findings import critical, find, is_abnormal, reported, split_sentences


@pytest.mark.parametrize("text", [
    "No pneumothorax, pleural effusion, or focal consolidation.",
    "The heart is not enlarged. Lungs are clear.",
    "Heart size and mediastinal contour are within normal limits.",
    "There is no focal airspace consolidation or suspicious pulmonary opacity.",
    "No acute cardiopulmonary abnormality.",
    "Interval resolution of the right lower lobe infiltrate.",
    "Negative for pneumothorax.",
    "Pleural effusion is not seen.",
])
def test_normal_sentences_report_nothing(text):
    assert not is_abnormal(text), [f for f in find(text) if f.reported]


@pytest.mark.parametrize("text, concept", [
    ("Small left pleural effusion.", "effusion"),
    ("The cardiac silhouette is mildly enlarged.", "cardiomegaly"),
    ("Calcified granuloma is again seen in the right upper lobe.", "granuloma"),
    ("Mild degenerative change of the thoracic spine.", "degenerative"),
    ("Streaky left basilar opacity, likely atelectasis.", "opacity"),
    ("Cannot exclude early pneumonia in the left base.", "consolidation"),
    ("No effusion. Right upper lobe nodule measuring 1.5 cm.", "mass"),
    ("Heart size normal. Hyperinflated lungs with flattened diaphragms.", "hyperinflation"),
])
def test_an_affirmed_or_possible_finding_is_reported(text, concept):
    got = reported(text)
    assert concept in {f.concept for f in got}, find(text)
    assert is_abnormal(text)


def test_a_possible_finding_is_reported_as_uncertain_never_dropped():
    (f,) = [f for f in reported("Cannot exclude early pneumonia.") if f.concept == "consolidation"]
    assert f.uncertain and not f.negated


def test_critical_results():
    assert [f.concept for f in critical("Large right pneumothorax with mediastinal shift.")] == ["pneumothorax"]
    assert [f.concept for f in critical("Free air under the right hemidiaphragm.")] == ["pneumoperitoneum"]
    assert critical("No pneumothorax. No free air under the diaphragm.") == []
    assert critical("Small left pleural effusion.") == []  # abnormal, not critical


def test_sentences_split_on_lists_and_ends_but_not_decimals():
    assert split_sentences("1. Nodule 1.5 cm in size. 2. No effusion") == ["Nodule 1.5 cm in size", "No effusion"]
    assert split_sentences("Lungs clear; no effusion.\nHeart normal.") == ["Lungs clear", "no effusion", "Heart normal"]
    assert split_sentences("  ") == []
