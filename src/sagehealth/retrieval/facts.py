"""Facts a question asks for by name: a patient's results of one lab test or vital sign.

Questions name a test in many ways ("Hgb", "haemoglobin", "Hb", "hemoglobin level") and stores
name it in others (MIMIC-IV "Hemoglobin", LOINC "Hemoglobin [Mass/volume] in Blood", OMOP concept
names). :data:`TESTS` holds both sides as data: how a question may name each test, and the
stored names (after :func:`stored_key` drops LOINC's bracketed property and "in Blood"-style
specimen tails) that are that test. Tests of another fluid are other tests ("Glucose (urine)",
"Creatinine, Urine"): blood is what a bare test name means.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from sagehealth.data.sqltext import in_list, lit


@dataclass(frozen=True)
class Test:
    """One lab test or vital sign: ``asked`` are the phrases a question may use (lower case,
    matched as whole words), ``stored`` the stored names (as :func:`stored_key` gives them)."""

    key: str
    label: str
    asked: tuple[str, ...]
    stored: frozenset[str]


def _t(key: str, label: str, asked: str, stored: str) -> Test:
    return Test(key, label, tuple(a.strip() for a in asked.split("|")), frozenset(s.strip() for s in stored.split("|")))


TESTS: tuple[Test, ...] = (
    _t("hba1c", "HbA1c", "hba1c|hb a1c|a1c|hemoglobin a1c|haemoglobin a1c|glycated hemoglobin|glycated haemoglobin|"
       "glycosylated hemoglobin|glycohemoglobin", "hemoglobin a1c|hemoglobin a1c/hemoglobin.total|hba1c|a1c"),
    _t("hemoglobin", "Hemoglobin", "hemoglobin|haemoglobin|hgb|hb", "hemoglobin|hgb|haemoglobin"),
    _t("hematocrit", "Hematocrit", "hematocrit|haematocrit|hct", "hematocrit|haematocrit|hct"),
    _t("wbc", "White blood cells", "wbc|white blood cells|white blood cell count|white cell count|white count|"
       "leukocytes|leukocyte count", "white blood cells|wbc count|wbc|leukocytes"),
    _t("platelets", "Platelets", "platelets|platelet count|platelet|plt|plts", "platelet count|platelets"),
    _t("creatinine", "Creatinine", "creatinine|creat|cr", "creatinine"),
    _t("bun", "Urea nitrogen", "bun|urea nitrogen|blood urea nitrogen|urea", "urea nitrogen|bun"),
    _t("potassium", "Potassium", "potassium|k", "potassium|potassium, whole blood"),
    _t("sodium", "Sodium", "sodium|na", "sodium|sodium, whole blood"),
    _t("chloride", "Chloride", "chloride|cl", "chloride|chloride, whole blood"),
    _t("bicarbonate", "Bicarbonate", "bicarbonate|bicarb|hco3|serum co2|total co2", "bicarbonate|carbon dioxide"),
    _t("glucose", "Glucose", "glucose|blood glucose|blood sugar|sugar|bg|blood sugar level", "glucose"),
    _t("calcium", "Calcium", "calcium|ca", "calcium, total|calcium"),
    _t("magnesium", "Magnesium", "magnesium|mag|mg level", "magnesium"),
    _t("phosphate", "Phosphate", "phosphate|phosphorus|phos", "phosphate|phosphorus"),
    _t("albumin", "Albumin", "albumin", "albumin"),
    _t("bilirubin", "Total bilirubin", "bilirubin|total bilirubin|bili|t bili|tbili", "bilirubin, total|bilirubin.total"),
    _t("alt", "ALT", "alt|alanine aminotransferase|sgpt", "alanine aminotransferase (alt)|alanine aminotransferase"),
    _t("ast", "AST", "ast|aspartate aminotransferase|sgot",
       "asparate aminotransferase (ast)|aspartate aminotransferase (ast)|aspartate aminotransferase"),
    _t("inr", "INR", "inr|international normalized ratio", "inr(pt)|inr"),
    _t("troponin", "Troponin", "troponin|trop|tnt|troponin t|tni|troponin i", "troponin t|troponin i|troponin"),
    _t("lactate", "Lactate", "lactate|lactic acid|lactate level", "lactate|lactic acid"),
    _t("tsh", "TSH", "tsh|thyroid stimulating hormone|thyrotropin", "thyroid stimulating hormone|tsh|thyrotropin"),
    _t("ldl", "LDL cholesterol", "ldl|ldl cholesterol|ldl-c", "cholesterol, ldl, calculated|cholesterol, ldl, measured|"
       "cholesterol in ldl|low density lipoprotein cholesterol"),
    _t("cholesterol", "Total cholesterol", "cholesterol|total cholesterol", "cholesterol, total|cholesterol"),
    _t("heart_rate", "Heart rate", "heart rate|hr|pulse|pulse rate", "heart rate"),
    _t("resp_rate", "Respiratory rate", "respiratory rate|resp rate|rr|breathing rate", "respiratory rate"),
    _t("spo2", "Oxygen saturation", "spo2|o2 sat|o2 saturation|oxygen saturation|sats|sat",
       "o2 saturation pulseoxymetry|oxygen saturation|oxygen saturation in arterial blood"),
    _t("weight", "Body weight", "weight|body weight", "weight (lbs)|body weight|weight"),
    _t("bmi", "BMI", "bmi|body mass index", "bmi (kg/m2)|body mass index (bmi)|body mass index"),
    _t("temperature", "Body temperature", "temperature|temp|fever curve", "temperature fahrenheit|body temperature|"
       "temperature celsius"),
)

_BRACKETS = re.compile(r"\s*\[[^\]]*\]")
_SPECIMEN = re.compile(r"\s+(?:in|of)\s+(?:serum or plasma|serum|plasma|blood|arterial blood|venous blood|"
                       r"capillary blood|platelet poor plasma)\b.*$")
_METHOD = re.compile(r"\s+by\s+.*$")


def stored_key(name: str) -> str:
    """A stored test name in the form :data:`TESTS` list: lower case, without LOINC's bracketed
    property, method and blood-specimen tail ("Hemoglobin [Mass/volume] in Blood" ->
    "hemoglobin"); names of other specimens keep them ("glucose (urine)")."""
    key = _BRACKETS.sub("", " ".join(name.lower().split()))
    key = _METHOD.sub("", key)
    return _SPECIMEN.sub("", key).strip().lstrip("%# ").strip()  # MIMIC: "% Hemoglobin A1c"


def _phrase_re(phrases: tuple[str, ...]) -> re.Pattern[str]:
    alts = sorted(phrases, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(a).replace(r"\ ", r"[\s-]+") for a in alts) + r")(?![\w-])",
                      re.IGNORECASE)


_ASKED = [(t, _phrase_re(t.asked)) for t in TESTS]
#: words too short or common to name a test alone in a longer question ("hr", "k", "na", "ca",
#: "cr", "bg", "sat", "temp" ...): they count only when the question is about a result
_SHORT = re.compile(r"\b(?:latest|last|most recent|recent|current|level|levels|value|values|result|results|"
                    r"lab|labs|trend|today|now|what(?:'s| is| was| were| are)|how(?:'s| is| was))\b", re.IGNORECASE)


def named_tests(question: str) -> list[Test]:
    """The tests a question names, in the order it names them (see :func:`named_test_spans`)."""
    out: list[Test] = []
    for _, _, t in named_test_spans(question):
        if t not in out:
            out.append(t)
    return out


def named_test_spans(question: str) -> list[tuple[int, int, Test]]:
    """Where a question names tests: (start, end, test) in order (a longer name wins: "hemoglobin
    A1c" is HbA1c, not hemoglobin). Ambiguous short names ("K", "Na", "Cr", "HR") count only in a
    question that asks for a result."""
    taken: list[tuple[int, int, Test]] = []
    spans: list[tuple[int, int, Test, str]] = []
    for t, rx in _ASKED:
        for m in rx.finditer(question):
            spans.append((m.start(), m.end(), t, m.group().lower()))
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    resultish = bool(_SHORT.search(question)) or len(question.split()) <= 2  # "Hb?", "K today"
    for s, e, t, text in spans:
        if any(s < te and ts < e for ts, te, _ in taken):
            continue  # inside a longer name already taken
        if len(text) <= 3 and text.isalpha() and not resultish:
            continue
        taken.append((s, e, t))
    return sorted(taken, key=lambda x: x[0])


@dataclass(frozen=True)
class Result:
    """One result of a test, with the row that holds it."""

    row_id: str
    date: datetime | None
    name: str
    value: float | None
    text_value: str | None
    unit: str | None
    ref_low: float | None = None
    ref_high: float | None = None
    flag: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def sentence(self, label: str | None = None) -> str:
        """The result as one line of evidence ("Hemoglobin: 7.9 g/dL (low; reference 12-16) on
        2150-05-02 06:10")."""
        v = _num(self.value) if self.value is not None else (self.text_value or "no value")
        unit = f" {self.unit}" if self.unit else ""
        ref = ""
        if self.ref_low is not None or self.ref_high is not None:
            lo = _num(self.ref_low) if self.ref_low is not None else ""
            hi = _num(self.ref_high) if self.ref_high is not None else ""
            ref = f"reference {lo}-{hi}"
        flag = "; ".join(x for x in (self.flag, ref) if x)
        when = f" on {self.date:%Y-%m-%d %H:%M}" if self.date else " (undated)"
        return f"{self.name}: {v}{unit}" + (f" ({flag})" if flag else "") + when


def _num(v: float) -> str:
    return f"{v:.4g}"


def results(run_sql: Callable[[str], pa.Table], patient_id: str, test: Test, *, since: datetime | None = None,
            until: datetime | None = None, limit: int = 20) -> list[Result]:
    """The patient's results of ``test`` (numeric or not), latest first (``limit`` of them)."""
    pid = lit(patient_id)
    window = "".join(f" AND start {op} {lit(v.isoformat())}::TIMESTAMPTZ"
                     for op, v in ((">=", since), ("<=", until)) if v)
    names = [r["name"] for r in run_sql(
        f"SELECT DISTINCT code.display AS name FROM events WHERE patient_id = {pid} AND kind = 'observation' "
        f"AND code.display IS NOT NULL{window}").to_pylist() if stored_key(r["name"]) in test.stored]
    if not names:
        return []
    rows = run_sql(f"""SELECT row_id, start, code.display AS name, value_num, value_text, unit, ref_low, ref_high,
                              interpretation
                       FROM events WHERE patient_id = {pid} AND kind = 'observation'
                            AND code.display IN ({in_list(names)}) AND (value_num IS NOT NULL OR value_text IS NOT NULL)
                            {window}
                       ORDER BY start DESC NULLS LAST, row_id LIMIT {int(limit)}""").to_pylist()
    out = []
    for r in rows:
        flag = r["interpretation"]
        if r["value_num"] is not None and (not flag or flag.lower() == "abnormal"):
            # the direction, where the source says only "abnormal" (MIMIC) or nothing
            if r["ref_low"] is not None and r["value_num"] < r["ref_low"]:
                flag = "low"
            elif r["ref_high"] is not None and r["value_num"] > r["ref_high"]:
                flag = "high"
        out.append(Result(r["row_id"], r["start"], r["name"], r["value_num"], r["value_text"], r["unit"],
                          r["ref_low"], r["ref_high"], flag))
    return out


# -- medications --------------------------------------------------------------------------------
#: statuses that end a medication whatever its dates say (FHIR MedicationRequest/Statement)
ENDED = ("stopped", "completed", "cancelled", "entered-in-error", "not-taken", "ended", "inactive")


@dataclass(frozen=True)
class Medication:
    """One medication row and whether it is active as of the list's date."""

    row_id: str
    name: str
    start: datetime | None
    end: datetime | None
    status: str | None
    dose: str | None

    active: bool = True

    def sentence(self, as_of: datetime) -> str:
        since = f" since {self.start:%Y-%m-%d}" if self.start else ""
        until = f", ordered until {self.end:%Y-%m-%d %H:%M}" if self.end else ""
        dose = f" {self.dose}" if self.dose else ""
        state = "active" if self.active else "not active"
        status = f" ({self.status})" if self.status and not self.active else ""
        return f"Medication {state} on {as_of:%Y-%m-%d}: {self.name}{dose}{since}{until}{status}"


def current_medications(run_sql: Callable[[str], pa.Table], patient_id: str, *,
                        until: datetime | None = None, limit: int = 30, inactive: bool = False,
                        name: str | None = None) -> tuple[datetime | None, list[Medication]]:
    """The medications active at the end of the record (or at ``until``): started by then, not
    ended before it by date or by status. The record's end is the end of the latest encounter
    (a discharge), else the latest event. Returns (that date, the medications, latest first).
    ``inactive``: the others instead (ended by date or status), latest first. ``name``: only
    the medications whose name contains it (case-insensitive: "warfarin" finds "Warfarin Sodium")."""
    pid = lit(patient_id)
    if until is None:
        row = run_sql(f"""SELECT greatest(
                              (SELECT max(coalesce("end", start)) FROM encounters WHERE patient_id = {pid}),
                              (SELECT max(start) FROM events WHERE patient_id = {pid} AND kind = 'medication'))
                          AS as_of""").to_pylist()
        until = row[0]["as_of"] if row else None
    if until is None:
        return None, []
    at = lit(until.isoformat())
    ended = in_list(list(ENDED))
    named = f"AND strpos(lower(coalesce(code.display, code.code, '')), {lit(name.lower())}) > 0" if name else ""
    active = f"""(start IS NULL OR start <= {at}::TIMESTAMPTZ)
                  AND ("end" IS NULL OR "end" >= {at}::TIMESTAMPTZ)
                  AND (status IS NULL OR lower(status) NOT IN ({ended}))"""
    rows = run_sql(f"""SELECT row_id, coalesce(code.display, code.code) AS name, start, "end", status,
                              value_num, value_text, unit
                       FROM events WHERE patient_id = {pid} AND kind = 'medication'
                            AND {'NOT ' if inactive else ''}({active})
                            {f'AND (start IS NULL OR start <= {at}::TIMESTAMPTZ)' if inactive else ''}
                            {named}
                       ORDER BY start DESC NULLS LAST, row_id""").to_pylist()
    out, seen = [], set()
    for r in rows:
        if len(out) >= limit:
            break
        key = (r["name"] or "").lower()
        if key in seen:  # the same drug ordered twice at once: the latest order speaks
            continue
        seen.add(key)
        dose = None
        if r["value_num"] or r["value_text"]:  # (a 0 dose is a source's placeholder, not a dose)
            dose = (_num(r["value_num"]) if r["value_num"] is not None else r["value_text"]) + (
                f" {r['unit']}" if r["unit"] else "")
        out.append(Medication(r["row_id"], r["name"] or "medication", r["start"], r["end"], r["status"], dose,
                              active=not inactive))
    return until, out
