"""Contextual querying: one patient's timeline, ready to be put in a prompt.

``build_context(run_sql, patient_id, since=, until=)`` gathers, inside the time window, the
patient's problems (conditions with onset, status), medications, recent labs and vitals with
their trend (last value, the one before, change, the range it left), allergies, procedures,
immunizations, encounters and prior reports (radiology/imaging first, with their impression), each item
citing the ``row_id`` it came from. ``run_sql`` is the caller's governed SQL function, so a
clinician's context comes from the clinical zone and a researcher's from the research zone
(pseudonymous id, shifted dates) through the same access checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from sagehealth.data.sqltext import in_list
from sagehealth.data.sqltext import lit as _lit

#: items per part of the context (most recent first)
LIMITS = {"problems": 30, "medications": 30, "labs": 25, "allergies": 20, "procedures": 15,
          "immunizations": 15, "encounters": 10, "reports": 8}
REPORT_KINDS = ("radiology_report", "imaging_report", "report", "discharge_summary", "note")


@dataclass(frozen=True)
class Item:
    """One fact of the timeline with the row that says it."""

    row_id: str
    date: datetime | None
    text: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PatientContext:
    """A patient's timeline in a window; ``to_prompt()`` renders it with ``[row_id]`` citations."""

    patient_id: str
    since: datetime | None
    until: datetime | None
    demographics: dict[str, Any]
    problems: list[Item]
    medications: list[Item]
    labs: list[Item]
    allergies: list[Item]
    procedures: list[Item]
    encounters: list[Item]
    reports: list[Item]
    immunizations: list[Item] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def copy(self) -> PatientContext:
        """A copy whose lists and demographics the caller may change (items are immutable)."""
        return replace(self, demographics=dict(self.demographics),
                       **{f.name: list(v) for f in fields(self) if isinstance(v := getattr(self, f.name), list)})

    def citations(self) -> list[str]:
        """Every row id the context cites."""
        return [i.row_id for part in self._parts().values() for i in part]

    def _parts(self) -> dict[str, list[Item]]:
        return {"Problems": self.problems, "Medications": self.medications, "Recent labs and vitals": self.labs,
                "Allergies": self.allergies, "Procedures": self.procedures, "Immunizations": self.immunizations,
                "Encounters": self.encounters,
                "Prior reports": self.reports}

    def to_prompt(self) -> str:
        """Markdown for a model's context window; every line ends with the row it cites."""
        d = self.demographics
        window = " ".join(f"{w} {_day(v)}" for w, v in (("from", self.since), ("until", self.until)) if v) or "all dates"
        lines = [f"# Patient {self.patient_id} ({window})",
                 ", ".join(f"{k}: {v}" for k, v in d.items() if v not in (None, "")) or "(no demographics)"]
        for title, items in self._parts().items():
            lines.append(f"\n## {title}")
            if not items:
                lines.append("- none recorded in this window")
            for it in items:
                lines.append(f"- {_day(it.date) or 'undated'}: {it.text} [{it.row_id}]")
        return "\n".join(lines) + "\n"


def _day(value: datetime | date | None) -> str | None:
    return value.date().isoformat() if isinstance(value, datetime) else value.isoformat() if value else None



def _window(col: str, since: datetime | None, until: datetime | None) -> str:
    parts = []
    if since:
        parts.append(f"{col} >= {_lit(since.isoformat())}::TIMESTAMPTZ")
    if until:
        parts.append(f"{col} <= {_lit(until.isoformat())}::TIMESTAMPTZ")
    return (" AND " + " AND ".join(parts)) if parts else ""


def _as_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return datetime.fromisoformat(str(value))


def build_context(run_sql: Callable[[str], pa.Table], patient_id: str, *, since: Any = None,
                  until: Any = None) -> PatientContext:
    """The patient's context from the tables ``run_sql`` can see."""
    since, until = _as_dt(since), _as_dt(until)
    pid = _lit(patient_id)
    demo = run_sql(f"SELECT gender, birth_date, deceased, race, ethnicity, language FROM patients "
                   f"WHERE patient_id = {pid} LIMIT 1").to_pylist()
    demographics = demo[0] if demo else {}
    if demographics.get("birth_date"):
        demographics["birth_year"] = demographics.pop("birth_date").year

    # one query for every kind of event the context lists (each query costs a DuckDB plan)
    kinds = {"condition": LIMITS["problems"], "medication": LIMITS["medications"], "allergy": LIMITS["allergies"],
             "procedure": LIMITS["procedures"], "immunization": LIMITS["immunizations"]}
    limit_of = " ".join(f"WHEN {_lit(k)} THEN {n}" for k, n in kinds.items())
    by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in run_sql(f"""SELECT kind, row_id, start, "end", status, code.display AS name, code.code AS code
                         FROM events WHERE patient_id = {pid} AND kind IN ({in_list(list(kinds))})
                         {_window('start', since, until)}
                         QUALIFY row_number() OVER (PARTITION BY kind ORDER BY start DESC NULLS LAST, row_id)
                                 <= CASE kind {limit_of} END
                         ORDER BY kind, start DESC NULLS LAST, row_id""").to_pylist():
        by_kind[r["kind"]].append(r)

    def events(kind: str, limit: int) -> list[dict[str, Any]]:
        return by_kind[kind][:limit]

    problems = [Item(r["row_id"], r["start"], f"{r['name'] or r['code']}"
                     + (f" ({r['status']})" if r["status"] else "") + (f", until {_day(r['end'])}" if r["end"] else ""),
                     {"code": r["code"], "status": r["status"]}) for r in events("condition", LIMITS["problems"])]
    medications = [Item(r["row_id"], r["start"], f"{r['name'] or r['code']}" + (f" ({r['status']})" if r["status"] else ""),
                        {"code": r["code"], "status": r["status"]}) for r in events("medication", LIMITS["medications"])]
    allergies = [Item(r["row_id"], r["start"], r["name"] or r["code"] or "allergy", {"code": r["code"]})
                 for r in events("allergy", LIMITS["allergies"])]
    procedures = [Item(r["row_id"], r["start"], r["name"] or r["code"] or "procedure", {"code": r["code"]})
                  for r in events("procedure", LIMITS["procedures"])]
    immunizations = [Item(r["row_id"], r["start"], r["name"] or r["code"] or "immunization", {"code": r["code"]})
                     for r in events("immunization", LIMITS["immunizations"])]
    labs = _labs(run_sql, pid, since, until)
    encounters = [Item(r["row_id"], r["start"], (" ".join(x for x in (r["class_code"], r["type"]) if x) or "encounter")
                       + (f" for {r['reason']}" if r["reason"] else ""), {})
                  for r in run_sql(f"""SELECT row_id, start, class_code, type.display AS type, reason.display AS reason
                                       FROM encounters WHERE patient_id = {pid}{_window('start', since, until)}
                                       ORDER BY start DESC NULLS LAST LIMIT {LIMITS['encounters']}""").to_pylist()]
    reports = _reports(run_sql, pid, since, until)
    return PatientContext(patient_id, since, until, demographics, problems, medications, labs, allergies,
                          procedures, encounters, reports, immunizations)


def _labs(run_sql: Callable[[str], pa.Table], pid: str, since: datetime | None,
          until: datetime | None) -> list[Item]:
    """Numeric observations per test: the latest value with the previous one and the trend."""
    rows = run_sql(f"""
        WITH o AS (
            SELECT row_id, start, code.code AS code, code.display AS name, value_num, unit, ref_low, ref_high,
                   row_number() OVER (PARTITION BY coalesce(code.code, code.display) ORDER BY start DESC) AS rn,
                   count(*) OVER (PARTITION BY coalesce(code.code, code.display)) AS n
            FROM events WHERE patient_id = {pid} AND kind = 'observation' AND value_num IS NOT NULL
                  {_window('start', since, until)})
        SELECT a.row_id, a.start, a.code, a.name, a.value_num, a.unit, a.ref_low, a.ref_high, a.n,
               b.value_num AS prev_value, b.start AS prev_start, b.row_id AS prev_row
        FROM o a LEFT JOIN o b ON b.code IS NOT DISTINCT FROM a.code AND b.name IS NOT DISTINCT FROM a.name AND b.rn = 2
        WHERE a.rn = 1 ORDER BY a.start DESC LIMIT {LIMITS['labs']}""").to_pylist()
    out = []
    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        text = f"{r['name'] or r['code']}: {_num(r['value_num'])}{unit}"
        flag = None
        if r["ref_low"] is not None and r["value_num"] < r["ref_low"]:
            flag = "low"
        elif r["ref_high"] is not None and r["value_num"] > r["ref_high"]:
            flag = "high"
        if flag:
            text += f" ({flag})"
        trend = None
        if r["prev_value"] is not None:
            delta = r["value_num"] - r["prev_value"]
            trend = "up" if delta > 0 else "down" if delta < 0 else "stable"
            text += f", {trend} from {_num(r['prev_value'])} on {_day(r['prev_start'])}"
        if r["n"] > 2:
            text += f" ({r['n']} results)"
        out.append(Item(r["row_id"], r["start"], text, {"code": r["code"], "value": r["value_num"], "unit": r["unit"],
                                                      "previous": r["prev_value"], "previous_row_id": r["prev_row"],
                                                      "trend": trend, "flag": flag, "results": r["n"]}))
    return out


def _num(v: float) -> str:
    return f"{v:.4g}"


def _reports(run_sql: Callable[[str], pa.Table], pid: str, since: datetime | None,
             until: datetime | None) -> list[Item]:
    """Prior reports, imaging first, each summarised by its impression (else its opening)."""
    kinds = in_list(REPORT_KINDS)
    rows = run_sql(f"""SELECT row_id, date, kind, title, text, sections FROM documents
                       WHERE patient_id = {pid} AND kind IN ({kinds}){_window('date', since, until)}
                       ORDER BY (kind IN ('radiology_report', 'imaging_report')) DESC, date DESC NULLS LAST
                       LIMIT {LIMITS['reports']}""").to_pylist()
    out = []
    for r in rows:
        text = r["text"] or ""
        summary = None
        for s in r["sections"] or []:
            if s["name"] in ("IMPRESSION", "CONCLUSION", "ASSESSMENT AND PLAN", "ASSESSMENT"):
                summary = text[s["start"]:s["end"]]
                break
        summary = " ".join((summary or text).split())[:300]
        out.append(Item(r["row_id"], r["date"], f"{r['kind']}: {r['title'] or ''} — {summary}".strip(),
                        {"kind": r["kind"], "title": r["title"]}))
    return out
