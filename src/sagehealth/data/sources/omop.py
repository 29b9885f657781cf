"""OMOP CDM 5.4 reader: one folder of table CSVs (``PERSON.csv``, ``person.csv.gz``, ...).

``files(folder)`` lists the clinical tables in dependency order (``PERSON``, then
``VISIT_OCCURRENCE``, then the event tables, ``NOTE`` and the directory tables). Each CSV data
row is one record (locator ``row:N``):

========================  ==========================================================
PERSON                    ``patients`` (``patient_id`` = ``omop-{person_id}``)
VISIT_OCCURRENCE          ``encounters`` (``omop-visit-{visit_occurrence_id}``)
CONDITION_OCCURRENCE      ``events`` kind ``condition``
DRUG_EXPOSURE             ``events`` kind ``medication`` (quantity, sig, dose unit)
PROCEDURE_OCCURRENCE      ``events`` kind ``procedure``
MEASUREMENT               ``events`` kind ``observation``, category ``measurement``
OBSERVATION               ``events`` kind ``observation``, category ``observation``
DEVICE_EXPOSURE           ``events`` kind ``device`` (UDI kept in ``codes``)
DEATH                     ``events`` kind ``death`` (cause as code); PERSON also reads
                          DEATH to set ``deceased``/``deceased_at``
NOTE                      ``documents`` kind ``note``
PROVIDER / CARE_SITE /    ``directory`` kinds ``practitioner`` / ``organization`` /
LOCATION                  ``location``
========================  ==========================================================

Concept ids resolve through ``CONCEPT.csv`` of the same folder, streamed once per folder into
a compact ``{concept_id: (vocabulary_id, concept_code, concept_name)}`` dict when first needed
(a few well-known Gender/Race/Ethnicity/Visit concepts are built in for vocabulary shards that
lack them). A code is ``{system: vocabulary_id, code: concept_code, display: concept_name}``;
``codes`` also holds the concept id (system ``OMOP``), the source concept when it differs and
the ``*_source_value`` (system ``source_value``). Concept id ``0`` means "no concept".

Not ingested as records (:data:`SKIPPED_TABLES`): the vocabulary tables, derived tables
(eras, cohorts, observation periods), metadata, cost/payer tables, ``SPECIMEN``, ``NOTE_NLP``,
``VISIT_DETAIL``, ``EPISODE*`` and ``FACT_RELATIONSHIP``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sagehealth.data.model import row_id
from sagehealth.data.sources.csvtables import cached_datetime, iter_csv, required_str, table_name
from sagehealth.data.sources.base import (
    Bad,
    BadValue,
    Item,
    Reader,
    ReadContext,
    Record,
    Row,
    clip,
    parse_date,
    to_float,
)

SOURCE_SYSTEM = "omop"
OMOP_SYSTEM = "OMOP"  # code system of raw concept ids
SOURCE_VALUE = "source_value"  # code system of *_source_value strings

#: clinical tables in the order they are read (patients first so references resolve)
TABLE_ORDER: tuple[str, ...] = (
    "person",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "device_exposure",
    "death",
    "note",
    "location",
    "care_site",
    "provider",
)

_VOCAB = "vocabulary table"
_DERIVED = "derived table (recomputable from the clinical tables)"
#: tables found in CDM folders that are deliberately not ingested, with the reason
SKIPPED_TABLES: dict[str, str] = {
    **{
        t: _VOCAB
        for t in (
            "concept", "concept_ancestor", "concept_class", "concept_relationship",
            "concept_synonym", "domain", "drug_strength", "relationship",
            "source_to_concept_map", "vocabulary",
        )
    },
    **{
        t: _DERIVED
        for t in ("condition_era", "drug_era", "dose_era", "observation_period",
                  "episode", "episode_event")
    },
    "cohort": "analysis output", "cohort_definition": "analysis output",
    "cohort_attribute": "analysis output", "attribute_definition": "analysis output",
    "metadata": "dataset metadata", "cdm_source": "dataset metadata",
    "fact_relationship": "links between rows, no clinical content of its own",
    "cost": "financial table (no claims mapping yet)",
    "payer_plan_period": "financial table (no claims mapping yet)",
    "specimen": "no specimen table in the clinical model",
    "note_nlp": "derived NLP output",
    "visit_detail": "sub-visits duplicate VISIT_OCCURRENCE in the encounters table",
}

#: concept ids often absent from vocabulary shards: (vocabulary_id, concept_code, concept_name)
WELL_KNOWN: dict[int, tuple[str, str, str]] = {
    8507: ("Gender", "M", "MALE"),
    8532: ("Gender", "F", "FEMALE"),
    8551: ("Gender", "U", "UNKNOWN"),
    8521: ("Gender", "O", "OTHER"),
    8570: ("Gender", "A", "AMBIGUOUS"),
    8657: ("Race", "1", "American Indian or Alaska Native"),
    8515: ("Race", "2", "Asian"),
    8516: ("Race", "3", "Black or African American"),
    8557: ("Race", "4", "Native Hawaiian or Other Pacific Islander"),
    8527: ("Race", "5", "White"),
    38003563: ("Ethnicity", "Hispanic", "Hispanic or Latino"),
    38003564: ("Ethnicity", "Not Hispanic", "Not Hispanic or Latino"),
    9201: ("Visit", "IP", "Inpatient Visit"),
    9202: ("Visit", "OP", "Outpatient Visit"),
    9203: ("Visit", "ER", "Emergency Room Visit"),
    262: ("Visit", "ERIP", "Emergency Room and Inpatient Visit"),
}

GENDER: dict[int, str] = {8507: "male", 8532: "female", 8551: "unknown", 8521: "other",
                          8570: "other"}
GENDER_SOURCE: dict[str, str] = {"m": "male", "male": "male", "f": "female",
                                 "female": "female", "u": "unknown", "o": "other"}
#: visit_concept_id -> FHIR v3 ActCode encounter class
VISIT_CLASS: dict[int, str] = {9201: "IMP", 262: "IMP", 9202: "AMB", 581477: "AMB",
                               9203: "EMER", 5083: "VR", 581476: "HH"}


@dataclass(frozen=True, slots=True)
class EventSpec:
    """How an OMOP event table maps onto ``events``."""

    kind: str
    category: str | None
    id_col: str | None  # None: keyed by person_id (DEATH)
    concept: str  # column prefix: {p}_concept_id, {p}_source_concept_id, {p}_source_value
    start: tuple[str, str]  # (datetime column, date column)
    end: tuple[str, str] | None = None


EVENT_TABLES: dict[str, EventSpec] = {
    "condition_occurrence": EventSpec(
        "condition", None, "condition_occurrence_id", "condition",
        ("condition_start_datetime", "condition_start_date"),
        ("condition_end_datetime", "condition_end_date"),
    ),
    "drug_exposure": EventSpec(
        "medication", None, "drug_exposure_id", "drug",
        ("drug_exposure_start_datetime", "drug_exposure_start_date"),
        ("drug_exposure_end_datetime", "drug_exposure_end_date"),
    ),
    "procedure_occurrence": EventSpec(
        "procedure", None, "procedure_occurrence_id", "procedure",
        ("procedure_datetime", "procedure_date"),
        ("procedure_end_datetime", "procedure_end_date"),
    ),
    "measurement": EventSpec(
        "observation", "measurement", "measurement_id", "measurement",
        ("measurement_datetime", "measurement_date"),
    ),
    "observation": EventSpec(
        "observation", "observation", "observation_id", "observation",
        ("observation_datetime", "observation_date"),
    ),
    "device_exposure": EventSpec(
        "device", None, "device_exposure_id", "device",
        ("device_exposure_start_datetime", "device_exposure_start_date"),
        ("device_exposure_end_datetime", "device_exposure_end_date"),
    ),
    "death": EventSpec("death", None, None, "cause", ("death_datetime", "death_date")),
}

#: columns without which a table cannot be read at all
REQUIRED: dict[str, tuple[str, ...]] = {
    "person": ("person_id", "gender_concept_id", "year_of_birth"),
    "visit_occurrence": ("visit_occurrence_id", "person_id", "visit_concept_id",
                         "visit_start_date"),
    **{
        t: tuple(c for c in (s.id_col, "person_id", f"{s.concept}_concept_id", s.start[1]) if c)
        for t, s in EVENT_TABLES.items()
    },
    "note": ("note_id", "person_id", "note_date", "note_text"),
    "location": ("location_id",),
    "care_site": ("care_site_id",),
    "provider": ("provider_id",),
}


def when(r: dict[str, str], cols: tuple[str, str] | None) -> datetime | None:
    """The ``(datetime column, date column)`` pair as one UTC datetime (datetime preferred)."""
    if cols is None:
        return None
    dt_col, d_col = cols
    if v := r.get(dt_col):
        return cached_datetime(v, dt_col)
    return cached_datetime(r.get(d_col), d_col)


# -- lookups -------------------------------------------------------------------------------


def _find_table(folder: Path, name: str) -> Path | None:
    """The file of table ``name`` in ``folder`` (any case, ``.csv`` or ``.csv.gz``)."""
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.is_file() and table_name(p) == name and p.name.lower().endswith((".csv", ".csv.gz")):
            return p
    return None


def load_concepts(path: Path) -> dict[int, tuple[str, str, str]]:
    """Stream ``CONCEPT.csv`` into ``{concept_id: (vocabulary_id, concept_code, concept_name)}``."""
    out: dict[int, tuple[str, str, str]] = {}
    intern = sys.intern
    for item in iter_csv(path, ("concept_id", "vocabulary_id", "concept_code", "concept_name")):
        if isinstance(item, Bad):
            continue
        r = item[1]
        try:
            out[int(r["concept_id"])] = (intern(r["vocabulary_id"]), r["concept_code"],
                                         r["concept_name"])
        except ValueError:
            continue
    return out


class _Folder:
    """Lazily loaded lookups of one CDM folder: concepts, locations, deaths."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._concepts: dict[int, tuple[str, str, str]] | None = None
        self._locations: dict[str, Row] | None = None
        self._deaths: dict[str, datetime] | None = None
        self.has_death = _find_table(folder, "death") is not None

    @property
    def concepts(self) -> dict[int, tuple[str, str, str]]:
        if self._concepts is None:
            p = _find_table(self.folder, "concept")
            self._concepts = {**WELL_KNOWN, **(load_concepts(p) if p else {})}
        return self._concepts

    def concept(self, r: dict[str, str], col: str) -> tuple[int, tuple[str, str, str] | None]:
        """``(concept_id, (vocabulary, code, name) or None)``; id 0 when empty."""
        v = r.get(col, "")
        if not v or v == "0":
            return 0, None
        try:
            cid = int(v)
        except ValueError:
            raise BadValue(f"{col}: {v!r} is not a concept id") from None
        return cid, self.concepts.get(cid)

    def code(self, r: dict[str, str], col: str) -> dict[str, Any] | None:
        cid, c = self.concept(r, col)
        if c is not None:
            return {"system": c[0], "code": c[1], "display": c[2]}
        return {"system": OMOP_SYSTEM, "code": str(cid), "display": None} if cid else None

    def name(self, r: dict[str, str], col: str) -> str | None:
        return c[2] if (c := self.concept(r, col)[1]) else None

    def codes(self, r: dict[str, str], prefix: str) -> list[dict[str, Any]]:
        """Standard concept, its id, the source concept and the source value, as codes."""
        out: list[dict[str, Any]] = []
        seen = 0
        for col in (f"{prefix}_concept_id", f"{prefix}_source_concept_id"):
            cid, c = self.concept(r, col)
            if not cid or cid == seen:
                continue
            seen = seen or cid
            if c is not None:
                out.append({"system": c[0], "code": c[1], "display": c[2]})
            out.append({"system": OMOP_SYSTEM, "code": str(cid), "display": c[2] if c else None})
        if sv := r.get(f"{prefix}_source_value"):
            out.append({"system": SOURCE_VALUE, "code": sv, "display": None})
        return out

    def location(self, location_id: str) -> Row:
        if not location_id:
            return {}
        if self._locations is None:
            self._locations = {}
            if p := _find_table(self.folder, "location"):
                for item in iter_csv(p, ("location_id",)):
                    if not isinstance(item, Bad):
                        self._locations[item[1]["location_id"]] = _address(item[1])
        return self._locations.get(location_id, {})

    def death(self, person_id: str) -> datetime | None:
        if self._deaths is None:
            self._deaths = {}
            if p := _find_table(self.folder, "death"):
                for item in iter_csv(p, ("person_id", "death_date")):
                    if isinstance(item, Bad):
                        continue
                    try:
                        if d := when(item[1], ("death_datetime", "death_date")):
                            self._deaths[item[1]["person_id"]] = d
                    except BadValue:
                        continue
        return self._deaths.get(person_id)


def _address(r: dict[str, str]) -> Row:
    line = ", ".join(v for v in (r.get("address_1"), r.get("address_2")) if v) or None
    return {
        "address_line": line,
        "city": r.get("city") or None,
        "state": r.get("state") or None,
        "postal_code": r.get("zip") or None,
        "country": r.get("country_source_value") or None,
    }


# -- mappers -------------------------------------------------------------------------------

Mapper = Callable[[_Folder, dict[str, str], str], tuple[list[tuple[str, Row]], tuple[str, ...]]]


def _pid(r: dict[str, str]) -> str:
    return f"omop-{required_str(r, 'person_id')}"


def _visit(r: dict[str, str]) -> str | None:
    v = r.get("visit_occurrence_id")
    return f"omop-visit-{v}" if v else None


def _ref(kind: str, v: str | None) -> str | None:
    return f"omop-{kind}-{v}" if v else None


def _birth_date(r: dict[str, str]) -> date | None:
    if v := r.get("birth_datetime"):
        return parse_date(v, "birth_datetime")
    if not r.get("year_of_birth"):
        return None
    parts = []
    for col in ("year_of_birth", "month_of_birth", "day_of_birth"):
        v = r.get(col) or "1"
        if not v.isdigit():
            raise BadValue(f"{col}: {v!r} is not a number")
        parts.append(int(v))
    try:
        return date(*parts)
    except ValueError as exc:
        raise BadValue(f"year_of_birth/month_of_birth/day_of_birth: "
                       f"{'-'.join(map(str, parts))} is not a valid date ({exc})") from None


def _person(f: _Folder, r: dict[str, str], table: str) -> tuple[list[tuple[str, Row]], tuple]:
    pid = _pid(r)
    gcid, _ = f.concept(r, "gender_concept_id")
    gender = GENDER.get(gcid) or GENDER_SOURCE.get((r.get("gender_source_value") or "").lower())
    died = f.death(r["person_id"])
    ids = [{"system": "omop/person_id", "value": r["person_id"], "type": "person_id"}]
    if sv := r.get("person_source_value"):
        ids.append({"system": "omop/person_source_value", "value": sv, "type": "source"})
    row = {
        "row_id": row_id("patients", pid),
        "patient_id": pid,
        "identifiers": ids,
        "gender": gender,
        "birth_date": _birth_date(r),
        "deceased": True if died else (False if f.has_death else None),
        "deceased_at": died,
        "race": f.name(r, "race_concept_id") or r.get("race_source_value") or None,
        "ethnicity": f.name(r, "ethnicity_concept_id") or r.get("ethnicity_source_value") or None,
        **f.location(r.get("location_id", "")),
        "source_system": SOURCE_SYSTEM,
    }
    return [("patients", row)], ()


def _visit_occurrence(f: _Folder, r: dict[str, str], table: str):
    pid = _pid(r)
    eid = f"omop-visit-{required_str(r, 'visit_occurrence_id')}"
    vcid, vc = f.concept(r, "visit_concept_id")
    start = when(r, ("visit_start_datetime", "visit_start_date"))
    if start is None:
        raise BadValue("visit_start_date: missing required value")
    row = {
        "row_id": row_id("encounters", eid),
        "encounter_id": eid,
        "patient_id": pid,
        "class_code": VISIT_CLASS.get(vcid) or (vc[2] if vc else None),
        "type": f.code(r, "visit_concept_id"),
        "start": start,
        "end": when(r, ("visit_end_datetime", "visit_end_date")),
        "provider": _ref("provider", r.get("provider_id")),
        "location": _ref("care_site", r.get("care_site_id")),
        "discharge_disposition": f.name(r, "discharged_to_concept_id")
        or r.get("discharged_to_source_value") or None,
        "source_system": SOURCE_SYSTEM,
    }
    return [("encounters", row)], (pid,)


def _num(r: dict[str, str], col: str) -> float | None:
    return to_float(r.get(col), col)


def _event_extras(f: _Folder, r: dict[str, str], table: str) -> Row:
    """Table-specific values of an event row."""
    if table == "measurement":
        num = _num(r, "value_as_number")
        vcode = f.code(r, "value_as_concept_id")
        return {
            "value_num": num,
            "value_code": vcode,
            "value_text": None if num is not None or vcode else r.get("value_source_value") or None,
            "unit": (c[1] if (c := f.concept(r, "unit_concept_id")[1]) else None)
            or r.get("unit_source_value") or None,
            "ref_low": _num(r, "range_low"),
            "ref_high": _num(r, "range_high"),
        }
    if table == "observation":
        return {
            "value_num": _num(r, "value_as_number"),
            "value_text": r.get("value_as_string") or None,
            "value_code": f.code(r, "value_as_concept_id"),
            "unit": (c[1] if (c := f.concept(r, "unit_concept_id")[1]) else None)
            or r.get("unit_source_value") or None,
        }
    if table == "drug_exposure":
        return {"value_num": _num(r, "quantity"), "value_text": r.get("sig") or None,
                "unit": r.get("dose_unit_source_value") or None}
    if table in ("procedure_occurrence", "device_exposure"):
        return {"value_num": _num(r, "quantity")}
    return {}


def _event(f: _Folder, r: dict[str, str], table: str):
    spec = EVENT_TABLES[table]
    pid = _pid(r)
    key = required_str(r, spec.id_col) if spec.id_col else r["person_id"]
    eid = f"omop-{table}-{key}"
    codes = f.codes(r, spec.concept)
    if table == "device_exposure" and (udi := r.get("unique_device_id")):
        codes.append({"system": "UDI", "code": udi, "display": None})
    start = when(r, spec.start)
    if start is None:
        raise BadValue(f"{spec.start[1]}: missing required value")
    row = {
        "row_id": row_id("events", eid),
        "event_id": eid,
        "patient_id": pid,
        "encounter_id": _visit(r),
        "kind": spec.kind,
        "category": spec.category,
        "code": codes[0] if codes else None,
        "codes": codes,
        "start": start,
        "end": when(r, spec.end),
        **_event_extras(f, r, table),
        "source_system": SOURCE_SYSTEM,
    }
    return [("events", row)], (pid,)


def _note(f: _Folder, r: dict[str, str], table: str):
    pid = _pid(r)
    did = f"omop-note-{required_str(r, 'note_id')}"
    row = {
        "row_id": row_id("documents", did),
        "document_id": did,
        "patient_id": pid,
        "encounter_id": _visit(r),
        "kind": "note",
        "title": r.get("note_title") or None,
        "code": f.code(r, "note_class_concept_id") or f.code(r, "note_type_concept_id"),
        "date": when(r, ("note_datetime", "note_date")),
        "author": _ref("provider", r.get("provider_id")),
        "content_type": "text/plain",
        "text": r.get("note_text") or None,
        "source_system": SOURCE_SYSTEM,
    }
    return [("documents", row)], (pid,)


def _directory(entity: str, kind: str, name: str | None, code: dict | None,
               ids: list[tuple[str, str, str | None]], address: Row) -> list[tuple[str, Row]]:
    row = {
        "row_id": row_id("directory", entity),
        "entity_id": entity,
        "kind": kind,
        "name": name or None,
        "code": code,
        "identifiers": [{"system": s, "value": v, "type": t} for s, v, t in ids if v],
        **address,
        "source_system": SOURCE_SYSTEM,
    }
    return [("directory", row)]


def _provider(f: _Folder, r: dict[str, str], table: str):
    v = required_str(r, "provider_id")
    code = f.code(r, "specialty_concept_id")
    if sv := r.get("specialty_source_value"):
        if code is None:
            code = {"system": SOURCE_VALUE, "code": sv, "display": sv}
        elif code["display"] is None:  # concept absent from the vocabulary shard
            code["display"] = sv
    ids = [("omop/provider_id", v, "provider_id"),
           ("http://hl7.org/fhir/sid/us-npi", r.get("npi", ""), "NPI"),
           ("DEA", r.get("dea", ""), "DEA"),
           ("omop/provider_source_value", r.get("provider_source_value", ""), "source")]
    return _directory(f"omop-provider-{v}", "practitioner", r.get("provider_name"), code, ids,
                      {}), ()


def _care_site(f: _Folder, r: dict[str, str], table: str):
    v = required_str(r, "care_site_id")
    ids = [("omop/care_site_id", v, "care_site_id"),
           ("omop/care_site_source_value", r.get("care_site_source_value", ""), "source")]
    return _directory(f"omop-care_site-{v}", "organization", r.get("care_site_name"),
                      f.code(r, "place_of_service_concept_id"), ids,
                      f.location(r.get("location_id", ""))), ()


def _location(f: _Folder, r: dict[str, str], table: str):
    v = required_str(r, "location_id")
    ids = [("omop/location_id", v, "location_id"),
           ("omop/location_source_value", r.get("location_source_value", ""), "source")]
    return _directory(f"omop-location-{v}", "location", r.get("location_source_value"), None,
                      ids, _address(r)), ()


MAPPERS: dict[str, Mapper] = {
    "person": _person,
    "visit_occurrence": _visit_occurrence,
    **{t: _event for t in EVENT_TABLES},
    "note": _note,
    "location": _location,
    "care_site": _care_site,
    "provider": _provider,
}


# -- reader --------------------------------------------------------------------------------


class OmopReader(Reader):
    """Reads the clinical tables of an OMOP CDM 5.4 CSV folder (see the module docstring)."""

    name = "omop"
    version = "1"
    source_system = SOURCE_SYSTEM

    def __init__(self) -> None:
        self._folders: dict[Path, _Folder] = {}

    def files(self, path: Path) -> list[Path]:
        if path.is_file():
            return [path] if table_name(path) in MAPPERS else []
        found = {t: p for t in TABLE_ORDER if (p := _find_table(path, t))}
        return list(found.values())

    def _folder(self, folder: Path) -> _Folder:
        key = folder.resolve()
        if key not in self._folders:
            self._folders[key] = _Folder(key)
        return self._folders[key]

    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        table = table_name(path)
        mapper = MAPPERS.get(table)
        if mapper is None:
            why = SKIPPED_TABLES.get(table, "not an OMOP CDM clinical table")
            raise ValueError(f"{path.name}: OMOP table {table!r} is not ingested ({why})")
        folder = self._folder(path.parent)
        for item in iter_csv(path, REQUIRED[table], ctx):
            if isinstance(item, Bad):
                yield item
                continue
            n, r, line = item
            try:
                rows, requires = mapper(folder, r, table)
            except BadValue as exc:
                yield Bad(f"row:{n}", f"{table}: {exc}", clip(line))
                continue
            yield Record(f"row:{n}", rows, requires, line.encode("utf-8", "surrogatepass"))


def detect(path: Path) -> bool:
    """True for a folder holding ``PERSON.csv``/``person.csv.gz`` (any case), or a clinical
    table file inside such a folder."""
    if path.is_file():
        return table_name(path) in MAPPERS and _find_table(path.parent, "person") is not None
    return _find_table(path, "person") is not None
