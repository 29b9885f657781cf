"""MIMIC-IV reader: a folder with ``hosp/*.csv.gz`` and ``icu/*.csv.gz`` (or one flat folder).

``files(folder)`` lists ``hosp/patients`` first, then ``admissions``, ``transfers``,
``icustays``, then the event tables (:data:`TABLE_ORDER`). Each CSV data row is one record
(locator ``row:N``). Ids: patients ``mimic-{subject_id}``; encounters ``mimic-hadm-{hadm_id}``
(admissions), ``mimic-stay-{stay_id}`` (ICU stays), ``mimic-transfer-{transfer_id}``; every
event of an admission (ICU events included) carries ``encounter_id`` ``mimic-hadm-{hadm_id}``.

==================  ===============================================================
patients            ``patients``: gender; ``birth_date`` approximated as 1 January of
                    ``anchor_year - anchor_age`` (MIMIC shifts dates and gives only an
                    age at an anchor year); ``dod`` -> ``deceased``/``deceased_at``
admissions          ``encounters``: class from ``admission_type`` (IMP / OBSENC), type
                    = admission_type, ``discharge_location`` -> discharge_disposition
transfers           ``encounters`` class ``transfer`` (ward movements: ED, admit,
                    transfer, discharge; location = careunit)
icustays            ``encounters`` class ``ICU`` (location = first_careunit)
diagnoses_icd       ``events`` condition, system ``ICD9CM``/``ICD10CM`` by icd_version
procedures_icd      ``events`` procedure, system ``ICD9Proc``/``ICD10PCS``
hcpcsevents         ``events`` procedure, system ``HCPCS``
drgcodes            ``events`` kind ``drg``, system ``MS-DRG`` (HCFA) / ``APR-DRG``
labevents           ``events`` observation, category ``laboratory``, code
                    ``mimic-iv/d_labitems`` itemid, flag -> interpretation
microbiologyevents  ``events`` observation, category ``microbiology``: code = test,
                    value_code = organism, codes add specimen and antibiotic,
                    interpretation = S/R/I, value_num = dilution_value
prescriptions       ``events`` medication: code NDC when present, else the formulary
                    code; a numeric dose_val_rx -> value_num, else value_text
omr                 ``events`` observation, category ``vital-signs`` ("120/80" stays text)
outputevents        ``events`` observation, category ``output`` (``mimic-iv/d_items``)
procedureevents     ``events`` procedure (``mimic-iv/d_items``)
chartevents         ``events`` observation, category ``chart``
datetimeevents      ``events`` observation, category ``datetime`` (value as text)
inputevents         ``events`` medication (amount -> value_num)
==================  ===============================================================

Dictionary tables (``d_labitems``, ``d_items``, ``d_icd_diagnoses``, ``d_icd_procedures``,
``d_hcpcs``) are streamed into lookups when first needed, never ingested as records; the tables
in :data:`SKIPPED_TABLES` are not ingested, each for the reason given there. A code's display is
None when its dictionary is absent (the 2.2 demo ships no ``d_icd_*`` nor ``d_hcpcs``), except
for ICD codes: those are stored dotted as the code sets print them (``J9601`` -> ``J96.01``,
``4280`` -> ``428.0``) and titled from the CMS code files when MIMIC's dictionary is absent
(:mod:`sagehealth.knowledge.icd`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sagehealth.data.model import row_id, stable_id
from sagehealth.data.sources.base import (
    Bad,
    BadValue,
    Item,
    Reader,
    ReadContext,
    Record,
    Row,
    clip,
    open_text,
    to_float,
    to_int,
)
from sagehealth.data.sources.csvtables import cached_datetime, iter_csv, required_str, table_name
from sagehealth.knowledge import icd

SOURCE_SYSTEM = "mimic-iv"
LABITEMS = "mimic-iv/d_labitems"
ITEMS = "mimic-iv/d_items"

#: tables in the order they are read (patients, then encounters, then events)
TABLE_ORDER: tuple[str, ...] = (
    "patients", "admissions", "transfers", "icustays",
    "diagnoses_icd", "procedures_icd", "hcpcsevents", "drgcodes",
    "labevents", "microbiologyevents", "prescriptions", "omr",
    "outputevents", "procedureevents", "chartevents", "datetimeevents", "inputevents",
)
DICTIONARIES = ("d_labitems", "d_items", "d_icd_diagnoses", "d_icd_procedures", "d_hcpcs")
#: tables deliberately not ingested, with the reason
SKIPPED_TABLES: dict[str, str] = {
    **{t: "dictionary table, used as a lookup" for t in DICTIONARIES},
    "services": "service changes within an admission: no matching table in the model",
    "emar": "administration records duplicating prescriptions/inputevents",
    "emar_detail": "administration detail of emar",
    "pharmacy": "pharmacy order detail duplicating prescriptions",
    "poe": "provider order entry: orders, not clinical facts",
    "poe_detail": "provider order entry detail",
    "provider": "provider ids only, no names",
    "caregiver": "caregiver ids only, no names",
    "ingredientevents": "ingredients of inputevents (duplicates them)",
    "demo_subject_id": "list of demo subjects",
}

GENDER = {"M": "male", "F": "female"}
#: admission_type -> FHIR v3 ActCode encounter class
ADMISSION_CLASS = {
    "EW EMER.": "IMP", "DIRECT EMER.": "IMP", "URGENT": "IMP", "ELECTIVE": "IMP",
    "SURGICAL SAME DAY ADMISSION": "IMP", "OBSERVATION ADMIT": "OBSENC",
    "EU OBSERVATION": "OBSENC", "DIRECT OBSERVATION": "OBSENC",
    "AMBULATORY OBSERVATION": "OBSENC",
}
ICD_DX = {"9": "ICD9CM", "10": "ICD10CM"}
ICD_PX = {"9": "ICD9Proc", "10": "ICD10PCS"}
DRG_SYSTEM = {"HCFA": "MS-DRG", "APR": "APR-DRG"}

REQUIRED: dict[str, tuple[str, ...]] = {
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year"),
    "admissions": ("subject_id", "hadm_id", "admittime"),
    "transfers": ("subject_id", "transfer_id", "eventtype", "intime"),
    "icustays": ("subject_id", "stay_id", "intime"),
    "diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "procedures_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "hcpcsevents": ("subject_id", "hadm_id", "seq_num", "hcpcs_cd"),
    "drgcodes": ("subject_id", "hadm_id", "drg_type", "drg_code"),
    "labevents": ("labevent_id", "subject_id", "itemid", "charttime", "valuenum"),
    "microbiologyevents": ("microevent_id", "subject_id", "chartdate", "test_name"),
    "prescriptions": ("subject_id", "pharmacy_id", "drug", "starttime"),
    "omr": ("subject_id", "chartdate", "seq_num", "result_name", "result_value"),
    "outputevents": ("subject_id", "stay_id", "itemid", "charttime", "value"),
    "procedureevents": ("subject_id", "stay_id", "orderid", "itemid", "starttime"),
    "chartevents": ("subject_id", "stay_id", "itemid", "charttime", "value"),
    "datetimeevents": ("subject_id", "stay_id", "itemid", "charttime", "value"),
    "inputevents": ("subject_id", "stay_id", "orderid", "itemid", "starttime"),
}


# -- lookups -------------------------------------------------------------------------------


def _root(path: Path) -> Path:
    """The dataset root of a table file (the folder above ``hosp``/``icu`` when present)."""
    parent = path.parent
    return parent.parent if parent.name.lower() in ("hosp", "icu") else parent


def _tables(root: Path) -> dict[str, Path]:
    """``{table name: file}`` of the CSVs in ``root``, ``root/hosp`` and ``root/icu``."""
    out: dict[str, Path] = {}
    for folder in (root, root / "hosp", root / "icu"):
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")):
                    out.setdefault(table_name(p), p)
    return out


class _Lookups:
    """The dictionary tables of one dataset root, each loaded when first needed."""

    _SPECS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
        # name: (key columns, value columns)
        "d_labitems": (("itemid",), ("label", "fluid", "category")),
        "d_items": (("itemid",), ("label", "category", "unitname")),
        "d_icd_diagnoses": (("icd_version", "icd_code"), ("long_title",)),
        "d_icd_procedures": (("icd_version", "icd_code"), ("long_title",)),
        "d_hcpcs": (("code",), ("short_description", "long_description")),
    }

    def __init__(self, root: Path) -> None:
        self._files = {k: v for k, v in _tables(root).items() if k in self._SPECS}
        self._loaded: dict[str, dict[Any, tuple[str, ...]]] = {}

    def get(self, name: str, *key: str) -> tuple[str, ...] | None:
        table = self._loaded.get(name)
        if table is None:
            table = self._loaded[name] = self._load(name)
        return table.get(key[0] if len(key) == 1 else key)

    def _load(self, name: str) -> dict[Any, tuple[str, ...]]:
        out: dict[Any, tuple[str, ...]] = {}
        path = self._files.get(name)
        if path is None:
            return out
        keys, values = self._SPECS[name]
        for item in iter_csv(path, keys):
            if isinstance(item, Bad):
                continue
            r = item[1]
            k = r[keys[0]] if len(keys) == 1 else tuple(r[c] for c in keys)
            out[k] = tuple(r.get(c, "") for c in values)
        return out

    def item_code(self, r: dict[str, str], dictionary: str) -> dict[str, Any]:
        itemid = required_str(r, "itemid")
        hit = self.get(dictionary, itemid)
        system = LABITEMS if dictionary == "d_labitems" else ITEMS
        display = hit[0] if hit else None
        if display and dictionary == "d_labitems" and hit[1] and hit[1].lower() != "blood" \
                and hit[1].lower() not in display.lower():
            # the same label names tests of several fluids ("Glucose": blood 50931, urine 51478)
            display = f"{display} ({hit[1].lower()})"
        return {"system": system, "code": itemid, "display": display}


# -- mappers -------------------------------------------------------------------------------

Rows = list[tuple[str, Row]]
Mapper = Callable[[_Lookups, dict[str, str]], Rows]


def _pid(r: dict[str, str]) -> str:
    return f"mimic-{required_str(r, 'subject_id')}"


def _hadm(r: dict[str, str]) -> str | None:
    v = r.get("hadm_id")
    return f"mimic-hadm-{v}" if v else None


def _ts(r: dict[str, str], col: str) -> datetime | None:
    return cached_datetime(r.get(col), col)


def _opt(v: str | None) -> str | None:
    return v or None


def _soft_float(v: str | None) -> float | None:
    """A number when ``v`` is one, else None (for free-text value columns)."""
    try:
        return float(v) if v else None
    except ValueError:
        return None


def _encounter(eid: str, r: dict[str, str], **fields: Any) -> Rows:
    row = {"row_id": row_id("encounters", eid), "encounter_id": eid, "patient_id": _pid(r),
           **fields, "source_system": SOURCE_SYSTEM}
    return [("encounters", row)]


def _event(eid: str, r: dict[str, str], kind: str, code: dict[str, Any] | None,
           codes: list[dict[str, Any]] | None = None, **fields: Any) -> Rows:
    row = {
        "row_id": row_id("events", eid), "event_id": eid, "patient_id": _pid(r),
        "encounter_id": _hadm(r), "kind": kind, "code": code,
        "codes": codes if codes is not None else ([code] if code else []),
        **fields, "source_system": SOURCE_SYSTEM,
    }
    return [("events", row)]


def _patients(lk: _Lookups, r: dict[str, str]) -> Rows:
    pid = _pid(r)
    age, year = to_int(r["anchor_age"], "anchor_age"), to_int(r["anchor_year"], "anchor_year")
    try:
        birth = date(year - age, 1, 1) if age is not None and year is not None else None
    except ValueError:
        raise BadValue(f"anchor_year/anchor_age: {year} - {age} is not a valid year") from None
    dod = _ts(r, "dod")
    row = {
        "row_id": row_id("patients", pid),
        "patient_id": pid,
        "identifiers": [{"system": "mimic-iv/subject_id", "value": r["subject_id"],
                         "type": "subject_id"}],
        "gender": GENDER.get(r["gender"], _opt(r["gender"])),
        "birth_date": birth,
        "deceased": dod is not None,
        "deceased_at": dod,
        "source_system": SOURCE_SYSTEM,
    }
    return [("patients", row)]


def _admissions(lk: _Lookups, r: dict[str, str]) -> Rows:
    t = r.get("admission_type", "")
    start = _ts(r, "admittime")
    if start is None:
        raise BadValue("admittime: missing required value")
    return _encounter(
        f"mimic-hadm-{required_str(r, 'hadm_id')}", r,
        class_code=ADMISSION_CLASS.get(t, _opt(t)),
        type={"system": "mimic-iv/admission_type", "code": t, "display": t} if t else None,
        start=start, end=_ts(r, "dischtime"), provider=_opt(r.get("admit_provider_id")),
        discharge_disposition=_opt(r.get("discharge_location")),
    )


def _transfers(lk: _Lookups, r: dict[str, str]) -> Rows:
    et = r["eventtype"]
    return _encounter(
        f"mimic-transfer-{required_str(r, 'transfer_id')}", r, class_code="transfer",
        type={"system": "mimic-iv/transfers/eventtype", "code": et, "display": et} if et else None,
        start=_ts(r, "intime"), end=_ts(r, "outtime"), location=_opt(r.get("careunit")),
        part_of=_hadm(r),
    )


def _icustays(lk: _Lookups, r: dict[str, str]) -> Rows:
    return _encounter(
        f"mimic-stay-{required_str(r, 'stay_id')}", r, class_code="ICU",
        start=_ts(r, "intime"), end=_ts(r, "outtime"), location=_opt(r.get("first_careunit")),
        part_of=_hadm(r),
    )


def _icd(lk: _Lookups, r: dict[str, str], systems: dict[str, str], dictionary: str) -> dict:
    version = r["icd_version"]
    system = systems.get(version)
    if system is None:
        raise BadValue(f"icd_version: {version!r} is not 9 or 10")
    code = required_str(r, "icd_code").strip()
    hit = lk.get(dictionary, version, code)  # MIMIC's own dictionary, undotted like its rows
    # stored dotted, as the vocabularies have them ("J96.01", "428.0"), titled from MIMIC's
    # dictionary when present, else from the CMS code files (None: not in the code set)
    return {"system": system, "code": icd.normalise(system, code),
            "display": hit[0] if hit else icd.label(system, code)}


def _diagnoses(lk: _Lookups, r: dict[str, str]) -> Rows:
    code = _icd(lk, r, ICD_DX, "d_icd_diagnoses")
    eid = f"mimic-dx-{required_str(r, 'hadm_id')}-{required_str(r, 'seq_num')}"
    return _event(eid, r, "condition", code, category="encounter-diagnosis")


def _procedures(lk: _Lookups, r: dict[str, str]) -> Rows:
    code = _icd(lk, r, ICD_PX, "d_icd_procedures")
    eid = f"mimic-px-{required_str(r, 'hadm_id')}-{required_str(r, 'seq_num')}"
    return _event(eid, r, "procedure", code, start=_ts(r, "chartdate"))


def _hcpcs(lk: _Lookups, r: dict[str, str]) -> Rows:
    cd = required_str(r, "hcpcs_cd")
    hit = lk.get("d_hcpcs", cd)
    display = (hit[0] or hit[1]) if hit else _opt(r.get("short_description"))
    eid = f"mimic-hcpcs-{required_str(r, 'hadm_id')}-{required_str(r, 'seq_num')}"
    return _event(eid, r, "procedure", {"system": "HCPCS", "code": cd, "display": display},
                  start=_ts(r, "chartdate"))


def _drg(lk: _Lookups, r: dict[str, str]) -> Rows:
    t, cd = required_str(r, "drg_type"), required_str(r, "drg_code")
    code = {"system": DRG_SYSTEM.get(t, t), "code": cd, "display": _opt(r.get("description"))}
    sev, mort = r.get("drg_severity"), r.get("drg_mortality")
    interp = "; ".join(f"{k} {v}" for k, v in (("severity", sev), ("mortality", mort)) if v)
    eid = f"mimic-drg-{required_str(r, 'hadm_id')}-{t}-{cd}"
    return _event(eid, r, "drg", code, category=t, interpretation=interp or None)


def _labevents(lk: _Lookups, r: dict[str, str]) -> Rows:
    num = to_float(r["valuenum"], "valuenum")
    return _event(
        f"mimic-lab-{required_str(r, 'labevent_id')}", r, "observation",
        lk.item_code(r, "d_labitems"), category="laboratory",
        start=_ts(r, "charttime"), value_num=num,
        value_text=None if num is not None else _opt(r.get("value") or r.get("comments")),
        unit=_opt(r.get("valueuom")),
        ref_low=to_float(r.get("ref_range_lower"), "ref_range_lower"),
        ref_high=to_float(r.get("ref_range_upper"), "ref_range_upper"),
        interpretation=_opt(r.get("flag")),
    )


def _micro_code(r: dict[str, str], kind: str, id_col: str, name_col: str) -> dict | None:
    name, cid = r.get(name_col), r.get(id_col)
    if not (name or cid):
        return None
    return {"system": f"mimic-iv/microbiology/{kind}", "code": _opt(cid), "display": _opt(name)}


def _microbiology(lk: _Lookups, r: dict[str, str]) -> Rows:
    test = _micro_code(r, "test", "test_itemid", "test_name")
    organism = _micro_code(r, "organism", "org_itemid", "org_name")
    extra = [_micro_code(r, "specimen", "spec_itemid", "spec_type_desc"), organism,
             _micro_code(r, "antibiotic", "ab_itemid", "ab_name")]
    return _event(
        f"mimic-micro-{required_str(r, 'microevent_id')}", r, "observation", test,
        [c for c in (test, *extra) if c], category="microbiology",
        start=_ts(r, "charttime") or _ts(r, "chartdate"),
        value_code=organism, value_num=to_float(r.get("dilution_value"), "dilution_value"),
        value_text=_opt(r.get("dilution_text") or r.get("comments", "").strip()),
        interpretation=_opt(r.get("interpretation")),
    )


def _prescriptions(lk: _Lookups, r: dict[str, str]) -> Rows:
    drug = required_str(r, "drug")
    ndc, form, gsn = r.get("ndc", ""), r.get("formulary_drug_cd", ""), r.get("gsn", "")
    codes = []
    if ndc and ndc != "0":
        codes.append({"system": "NDC", "code": ndc, "display": drug})
    if form:
        codes.append({"system": "mimic-iv/formulary_drug_cd", "code": form, "display": drug})
    if gsn:
        codes.append({"system": "GSN", "code": gsn, "display": drug})
    code = codes[0] if codes else {"system": "mimic-iv/drug", "code": drug, "display": drug}
    dose = r.get("dose_val_rx", "")
    num = _soft_float(dose)
    key = stable_id(r.get("drug_type"), drug, form, ndc, gsn)[:12]
    return _event(
        f"mimic-rx-{required_str(r, 'pharmacy_id')}-{key}", r, "medication", code,
        codes or [code], start=_ts(r, "starttime"), end=_ts(r, "stoptime"),
        value_num=num, value_text=_opt(dose) if num is None else None,
        unit=_opt(r.get("dose_unit_rx")),
    )


_UNIT = re.compile(r"\(([^)]*)\)\s*$")


def _omr(lk: _Lookups, r: dict[str, str]) -> Rows:
    name, value = r["result_name"], r["result_value"]
    num = _soft_float(value)
    unit = m.group(1) if (m := _UNIT.search(name)) else None
    eid = f"mimic-omr-{r['subject_id']}-{r['chartdate']}-{r['seq_num']}-{name}"
    return _event(eid, r, "observation",
                  {"system": "mimic-iv/omr", "code": name, "display": name},
                  category="vital-signs", start=_ts(r, "chartdate"), value_num=num,
                  value_text=_opt(value) if num is None else None, unit=unit)


def _outputevents(lk: _Lookups, r: dict[str, str]) -> Rows:
    eid = f"mimic-out-{required_str(r, 'stay_id')}-{r['itemid']}-{r['charttime']}"
    return _event(eid, r, "observation", lk.item_code(r, "d_items"), category="output",
                  start=_ts(r, "charttime"), value_num=to_float(r["value"], "value"),
                  unit=_opt(r.get("valueuom")))


def _procedureevents(lk: _Lookups, r: dict[str, str]) -> Rows:
    eid = f"mimic-icuproc-{required_str(r, 'orderid')}"
    return _event(eid, r, "procedure", lk.item_code(r, "d_items"),
                  category=_opt(r.get("ordercategoryname")),
                  status=_opt(r.get("statusdescription")),
                  start=_ts(r, "starttime"), end=_ts(r, "endtime"),
                  value_num=to_float(r.get("value"), "value"), unit=_opt(r.get("valueuom")))


def _chartevents(lk: _Lookups, r: dict[str, str]) -> Rows:
    value = r["value"]
    num = to_float(r.get("valuenum"), "valuenum") if "valuenum" in r else None
    eid = (f"mimic-chart-{required_str(r, 'stay_id')}-{r['itemid']}-{r['charttime']}-"
           f"{stable_id(value, r.get('storetime'))[:8]}")
    return _event(eid, r, "observation", lk.item_code(r, "d_items"), category="chart",
                  start=_ts(r, "charttime"), value_num=num,
                  value_text=_opt(value) if num is None else None,
                  unit=_opt(r.get("valueuom")),
                  interpretation="warning" if r.get("warning") == "1" else None)


def _datetimeevents(lk: _Lookups, r: dict[str, str]) -> Rows:
    eid = f"mimic-dt-{required_str(r, 'stay_id')}-{r['itemid']}-{r['charttime']}"
    _ts(r, "value")  # validate
    return _event(eid, r, "observation", lk.item_code(r, "d_items"), category="datetime",
                  start=_ts(r, "charttime"), value_text=_opt(r["value"]))


def _inputevents(lk: _Lookups, r: dict[str, str]) -> Rows:
    eid = f"mimic-input-{required_str(r, 'orderid')}-{r['itemid']}-{r['starttime']}"
    return _event(eid, r, "medication", lk.item_code(r, "d_items"),
                  category=_opt(r.get("ordercategoryname")),
                  status=_opt(r.get("statusdescription")),
                  start=_ts(r, "starttime"), end=_ts(r, "endtime"),
                  value_num=to_float(r.get("amount"), "amount"),
                  unit=_opt(r.get("amountuom")))


MAPPERS: dict[str, Mapper] = {
    "patients": _patients, "admissions": _admissions, "transfers": _transfers,
    "icustays": _icustays, "diagnoses_icd": _diagnoses, "procedures_icd": _procedures,
    "hcpcsevents": _hcpcs, "drgcodes": _drg, "labevents": _labevents,
    "microbiologyevents": _microbiology, "prescriptions": _prescriptions, "omr": _omr,
    "outputevents": _outputevents, "procedureevents": _procedureevents,
    "chartevents": _chartevents, "datetimeevents": _datetimeevents,
    "inputevents": _inputevents,
}


# -- reader --------------------------------------------------------------------------------


class MimicReader(Reader):
    """Reads a MIMIC-IV (or demo) folder (see the module docstring)."""

    name = "mimic"
    version = "1"
    source_system = SOURCE_SYSTEM

    def __init__(self) -> None:
        self._lookups: dict[Path, _Lookups] = {}

    def files(self, path: Path) -> list[Path]:
        if path.is_file():
            return [path] if table_name(path) in MAPPERS else []
        found = _tables(path)
        return [found[t] for t in TABLE_ORDER if t in found]

    def _lookup(self, path: Path) -> _Lookups:
        root = _root(path.resolve())
        if root not in self._lookups:
            self._lookups[root] = _Lookups(root)
        return self._lookups[root]

    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        table = table_name(path)
        mapper = MAPPERS.get(table)
        if mapper is None:
            why = SKIPPED_TABLES.get(table, "not a MIMIC-IV table this reader knows")
            raise ValueError(f"{path.name}: MIMIC-IV table {table!r} is not ingested ({why})")
        lk = self._lookup(path)
        is_patients = table == "patients"
        for item in iter_csv(path, REQUIRED[table], ctx):
            if isinstance(item, Bad):
                yield item
                continue
            n, r, line = item
            try:
                rows = mapper(lk, r)
            except BadValue as exc:
                yield Bad(f"row:{n}", f"{table}: {exc}", clip(line))
                continue
            requires = () if is_patients else (rows[0][1]["patient_id"],)
            yield Record(f"row:{n}", rows, requires, line.encode("utf-8", "surrogatepass"))


def _header(path: Path) -> list[str]:
    """The lower-cased column names of a CSV (first line only)."""
    with open_text(path) as fh:
        first = next(csv.reader(fh), [])
    return [h.strip().lower().lstrip("\ufeff") for h in first]


def detect(path: Path) -> bool:
    """True for a folder with ``hosp/patients.csv(.gz)``, or a folder or file ``patients.csv(.gz)``
    whose header has ``subject_id`` and ``anchor_age``."""
    if path.is_file():
        if table_name(path) != "patients":
            return table_name(path) in MAPPERS and detect(_root(path))
        candidates = [path]
    else:
        found = _tables(path)
        if found.get("patients") and found["patients"].parent.name.lower() == "hosp":
            return True
        candidates = [found["patients"]] if "patients" in found else []
    try:
        return any({"subject_id", "anchor_age"} <= set(_header(p)) for p in candidates)
    except (OSError, EOFError):
        return False
