"""FHIR R4 reader: bulk-export NDJSON and transaction/collection/searchset Bundles (JSON).

NDJSON is read line by line (orjson); a Bundle is streamed entry by entry with ijson, so no file
is ever loaded whole. Each resource is one record mapped by resource type (``MAPPERS``) into the
clinical model; types without a mapping are kept whole in ``fhir_other``. The fields a mapping
reads are type-checked as it reads them (a wrong type is a quarantined record naming the
field); ``options["validate"] == "strict"`` adds full validation with ``fhir.resources`` R4B
models (slower, every element checked). References to patients are resolved to Patient ids
(``Patient/x``, bundle-internal ``urn:uuid:`` full URLs) and listed in ``Record.requires`` so
the pipeline quarantines dangling ones.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ijson
import orjson

from sagehealth.data.model import row_id
from sagehealth.data.sources.fhir_shape import check as check_shape
from sagehealth.data.sources.base import (
    Bad,
    BadValue,
    Item,
    ReadContext,
    Reader,
    Record,
    Row,
    clip,
    open_binary,
    parse_date,
    parse_datetime,
    to_float,
)
from sagehealth.knowledge import icd

Resource = dict[str, Any]
Refs = dict[str, tuple[str, str]]  # bundle fullUrl -> (resourceType, id)

#: NDJSON files are read in this order of resource type so that references resolve.
TYPE_ORDER = [
    "Patient", "Practitioner", "Organization", "Location", "PractitionerRole", "Encounter",
]
PATIENT_REF_FIELDS = ("subject", "patient", "beneficiary")
RADIOLOGY_CODES = {"LP29684-5", "RAD", "18748-4", "18726-0", "18782-3", "36643-5"}


# -- typed accessors (each raises BadValue naming the field) --------------------------------


def _obj(res: Resource, key: str, where: str) -> dict[str, Any] | None:
    v = res.get(key)
    if v is None or isinstance(v, dict):
        return v
    raise BadValue(f"{where}.{key}: expected an object, got {type(v).__name__}")


def _list(res: Resource, key: str, where: str) -> list[Any]:
    v = res.get(key)
    if v is None:
        return []
    if isinstance(v, list):
        return v
    raise BadValue(f"{where}.{key}: expected an array, got {type(v).__name__}")


def _str(res: Resource, key: str, where: str) -> str | None:
    v = res.get(key)
    if v is None or isinstance(v, str):
        return v
    raise BadValue(f"{where}.{key}: expected a string, got {type(v).__name__}")


#: FHIR code-system URIs of the ICD code sets (their codes are stored dotted)
ICD_URIS = {"http://hl7.org/fhir/sid/icd-10-cm": icd.ICD10CM, "http://hl7.org/fhir/sid/icd-9-cm": icd.ICD9CM,
            "http://www.cms.gov/Medicare/Coding/ICD10": icd.ICD10PCS}


def _coding(c: Any, where: str) -> dict[str, Any]:
    if not isinstance(c, dict):
        raise BadValue(f"{where}: expected a Coding object, got {type(c).__name__}")
    code = c.get("code")
    if code is not None and not isinstance(code, str):
        raise BadValue(f"{where}.code: expected a string, got {type(code).__name__}")
    system = c.get("system")
    icd_set = ICD_URIS.get(system) if isinstance(system, str) else None
    if icd_set and code:  # one form for ICD codes whatever the sender wrote ("J9601" -> "J96.01")
        code = icd.normalise(icd_set, code)
    return {"system": system, "code": code, "display": c.get("display")}


def _cc(res: Resource, key: str, where: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A CodeableConcept field: its first coding (text as display fallback) and all codings."""
    cc = _obj(res, key, where)
    if cc is None:
        return None, []
    codings = [_coding(c, f"{where}.{key}.coding[{i}]") for i, c in enumerate(_list(cc, "coding", f"{where}.{key}"))]
    text = cc.get("text")
    if codings:
        first = dict(codings[0])
        if first["display"] is None:
            first["display"] = text
        return first, codings
    if text is not None:
        return {"system": None, "code": None, "display": text}, []
    return None, []


def _cc_first(res: Resource, key: str, where: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The first CodeableConcept of an array field."""
    items = _list(res, key, where)
    if not items:
        return None, []
    return _cc({"x": items[0]}, "x", f"{where}.{key}[0]")


def _code_str(cc: dict[str, Any] | None) -> str | None:
    return None if cc is None else cc.get("code") or cc.get("display")


def _period(res: Resource, key: str, where: str) -> tuple[Any, Any]:
    p = _obj(res, key, where)
    if p is None:
        return None, None
    return (
        parse_datetime(p.get("start"), f"{where}.{key}.start"),
        parse_datetime(p.get("end"), f"{where}.{key}.end"),
    )


def _ref(value: Any, where: str, refs: Refs) -> tuple[str | None, str | None]:
    """Resolve a Reference to (resourceType, id); conditional references give (type, None)."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise BadValue(f"{where}: expected a Reference object, got {type(value).__name__}")
    ref = value.get("reference")
    if ref is None:
        return None, None
    if not isinstance(ref, str):
        raise BadValue(f"{where}.reference: expected a string, got {type(ref).__name__}")
    if ref in refs:
        return refs[ref]
    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        return None, ref.rsplit(":", 1)[-1]
    if "?" in ref:
        return ref.split("?", 1)[0], None
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2:
        if len(parts) >= 4 and parts[-2] == "_history":
            return parts[-4], parts[-3]
        return parts[-2], parts[-1]
    return None, ref


def _patient(res: Resource, where: str, refs: Refs) -> str | None:
    for key in PATIENT_REF_FIELDS:
        if key in res:
            rtype, rid = _ref(res[key], f"{where}.{key}", refs)
            if rid is not None and rtype in (None, "Patient"):
                return rid
    return None


def _encounter(res: Resource, where: str, refs: Refs) -> str | None:
    if "encounter" in res:
        return _ref(res["encounter"], f"{where}.encounter", refs)[1]
    ctx = res.get("context")
    if isinstance(ctx, dict):
        enc = ctx.get("encounter")
        if isinstance(enc, list) and enc:
            return _ref(enc[0], f"{where}.context.encounter[0]", refs)[1]
    return None


def _first_display(items: list[Any], *path: str) -> str | None:
    for item in items:
        v: Any = item
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, str):
            return v
    return None


def _identifiers(res: Resource, where: str) -> list[dict[str, Any]]:
    out = []
    for i, ident in enumerate(_list(res, "identifier", where)):
        if not isinstance(ident, dict):
            raise BadValue(f"{where}.identifier[{i}]: expected an Identifier object")
        t, _ = _cc(ident, "type", f"{where}.identifier[{i}]")
        out.append({"system": ident.get("system"), "value": ident.get("value"), "type": _code_str(t)})
    return out


def _address(res: Resource, where: str) -> dict[str, Any]:
    addrs = _list(res, "address", where) if isinstance(res.get("address"), list) else (
        [res["address"]] if isinstance(res.get("address"), dict) else []
    )
    if not addrs:
        return {}
    a = addrs[0]
    if not isinstance(a, dict):
        raise BadValue(f"{where}.address[0]: expected an Address object")
    lines = a.get("line") or []
    return {
        "address_line": ", ".join(x for x in lines if isinstance(x, str)) or None,
        "city": a.get("city"),
        "state": a.get("state"),
        "postal_code": a.get("postalCode"),
        "country": a.get("country"),
    }


def _telecom(res: Resource) -> list[dict[str, Any]]:
    return [
        {"system": t.get("system"), "value": t.get("value"), "use": t.get("use")}
        for t in res.get("telecom") or []
        if isinstance(t, dict)
    ]


def _human_name(res: Resource, where: str) -> tuple[str | None, str | None]:
    names = _list(res, "name", where)
    if not names:
        return None, None
    name = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), names[0])
    if not isinstance(name, dict):
        raise BadValue(f"{where}.name[0]: expected a HumanName object")
    given = name.get("given") or []
    if not isinstance(given, list):
        raise BadValue(f"{where}.name.given: expected an array")
    return name.get("family"), " ".join(g for g in given if isinstance(g, str)) or name.get("text")


def _ext_display(res: Resource, url_suffix: str) -> str | None:
    for ext in res.get("extension") or []:
        if isinstance(ext, dict) and str(ext.get("url", "")).endswith(url_suffix):
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and sub.get("url") == "text":
                    return sub.get("valueString")
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and "valueCoding" in sub:
                    return sub["valueCoding"].get("display")
    return None


def _attachment_text(att: Any, where: str) -> tuple[str | None, str | None]:
    """(text, content type) of an Attachment with base64 ``data`` (URLs are not fetched)."""
    if not isinstance(att, dict):
        raise BadValue(f"{where}: expected an Attachment object")
    ctype = att.get("contentType")
    data = att.get("data")
    if data is None:
        return None, ctype
    if not isinstance(data, str):
        raise BadValue(f"{where}.data: expected a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadValue(f"{where}.data: invalid base64 ({exc})") from exc
    if ctype and not ctype.startswith("text/") and "xml" not in ctype and "json" not in ctype:
        return None, ctype  # binary content (PDF, image): kept as metadata only
    return raw.decode("utf-8", errors="replace"), ctype


# -- mappers: resource -> rows ---------------------------------------------------------------

Mapped = tuple[list[tuple[str, Row]], str | None]  # rows, required patient id


def _patient_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    family, given = _human_name(res, w)
    marital, _ = _cc(res, "maritalStatus", w)
    comm = _list(res, "communication", w)
    lang = None
    if comm and isinstance(comm[0], dict):
        lc, _ = _cc(comm[0], "language", f"{w}.communication[0]")
        lang = _code_str(lc)
    deceased_at = parse_datetime(res.get("deceasedDateTime"), f"{w}.deceasedDateTime")
    deceased = res.get("deceasedBoolean")
    if deceased is not None and not isinstance(deceased, bool):
        raise BadValue(f"{w}.deceasedBoolean: expected a boolean, got {type(deceased).__name__}")
    gender = _str(res, "gender", w)
    row = {
        "row_id": row_id("patients", "fhir", rid),
        "patient_id": rid,
        "identifiers": _identifiers(res, w),
        "family_name": family,
        "given_names": given,
        "gender": gender,
        "birth_date": parse_date(res.get("birthDate"), f"{w}.birthDate"),
        "deceased": bool(deceased) or deceased_at is not None,
        "deceased_at": deceased_at,
        "race": _ext_display(res, "us-core-race"),
        "ethnicity": _ext_display(res, "us-core-ethnicity"),
        "marital_status": marital and (marital.get("display") or marital.get("code")),
        "language": lang,
        "telecom": _telecom(res),
        **_address(res, w),
    }
    return [("patients", row)], None


def _encounter_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    pid = _patient(res, w, refs)
    cls = _obj(res, "class", w)
    etype, _ = _cc_first(res, "type", w)
    reason, _ = _cc_first(res, "reasonCode", w)
    start, end = _period(res, "period", w)
    hosp = _obj(res, "hospitalization", w) or {}
    disp, _ = _cc(hosp, "dischargeDisposition", f"{w}.hospitalization")
    sp = _obj(res, "serviceProvider", w) or {}
    row = {
        "row_id": row_id("encounters", "fhir", rid),
        "encounter_id": rid,
        "patient_id": pid,
        "status": _str(res, "status", w),
        "class_code": cls.get("code") if cls else None,
        "type": etype,
        "start": start,
        "end": end,
        "reason": reason,
        "provider": _first_display(_list(res, "participant", w), "individual", "display")
        or sp.get("display"),
        "location": _first_display(_list(res, "location", w), "location", "display"),
        "discharge_disposition": _code_str(disp),
        "part_of": _ref(res.get("partOf"), f"{w}.partOf", refs)[1],
    }
    return [("encounters", row)], pid


def _event(res: Resource, rid: str, w: str, refs: Refs, kind: str, code_key: str, **extra: Any) -> Mapped:
    pid = _patient(res, w, refs)
    code, codes = _cc(res, code_key, w)
    cat = extra.pop("category", None)
    if cat is None and "category" in res:
        c, _ = _cc_first(res, "category", w) if isinstance(res["category"], list) else _cc(res, "category", w)
        cat = _code_str(c)
    status = extra.pop("status", None)
    if status is None:
        st = res.get("status")
        if isinstance(st, dict):
            status = _code_str(_cc(res, "status", w)[0])
        else:
            status = _str(res, "status", w)
    row = {
        "row_id": row_id("events", "fhir", res.get("resourceType"), rid),
        "event_id": rid,
        "patient_id": pid,
        "encounter_id": _encounter(res, w, refs),
        "kind": kind,
        "category": cat,
        "code": code,
        "codes": codes,
        "status": status,
        **extra,
    }
    return [("events", row)], pid


def _value_fields(res: Resource, w: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "valueQuantity" in res:
        q = _obj(res, "valueQuantity", w) or {}
        out["value_num"] = to_float(q.get("value"), f"{w}.valueQuantity.value")
        out["unit"] = q.get("unit") or q.get("code")
    elif "valueCodeableConcept" in res:
        vc, _ = _cc(res, "valueCodeableConcept", w)
        out["value_code"] = vc
        out["value_text"] = vc and vc.get("display")
    elif "valueString" in res:
        out["value_text"] = _str(res, "valueString", w)
    elif "valueInteger" in res:
        out["value_num"] = to_float(res["valueInteger"], f"{w}.valueInteger")
    elif "valueBoolean" in res:
        out["value_text"] = str(res["valueBoolean"]).lower()
    elif "valueDateTime" in res:
        out["value_text"] = _str(res, "valueDateTime", w)
    return out


def _observation_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    start, end = _period(res, "effectivePeriod", w)
    start = parse_datetime(res.get("effectiveDateTime") or res.get("effectiveInstant"), f"{w}.effectiveDateTime") or start
    ranges = _list(res, "referenceRange", w)
    rr = ranges[0] if ranges and isinstance(ranges[0], dict) else {}
    interp, _ = _cc_first(res, "interpretation", w)
    rows, pid = _event(
        res, rid, w, refs, "observation", "code", start=start, end=end,
        ref_low=to_float((rr.get("low") or {}).get("value"), f"{w}.referenceRange[0].low.value"),
        ref_high=to_float((rr.get("high") or {}).get("value"), f"{w}.referenceRange[0].high.value"),
        interpretation=_code_str(interp), **_value_fields(res, w),
    )
    parent = rows[0][1]
    for i, comp in enumerate(_list(res, "component", w)):
        cw = f"{w}.component[{i}]"
        if not isinstance(comp, dict):
            raise BadValue(f"{cw}: expected an object")
        code, codes = _cc(comp, "code", cw)
        rows.append(("events", {
            **parent,
            "row_id": row_id("events", "fhir", "Observation", rid, i),
            "event_id": f"{rid}#{i}",
            "code": code,
            "codes": codes,
            "value_num": None, "value_text": None, "value_code": None, "unit": None,
            **_value_fields(comp, cw),
            "parent_id": parent["row_id"],
        }))
    return rows, pid


def _condition_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    ost, oen = _period(res, "onsetPeriod", w)
    start = parse_datetime(res.get("onsetDateTime"), f"{w}.onsetDateTime") or ost or parse_datetime(
        res.get("recordedDate"), f"{w}.recordedDate")
    end = parse_datetime(res.get("abatementDateTime"), f"{w}.abatementDateTime") or oen
    clin, _ = _cc(res, "clinicalStatus", w)
    return _event(res, rid, w, refs, "condition", "code", start=start, end=end, status=_code_str(clin))


def _medication_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    code_key = "medicationCodeableConcept"
    extra: dict[str, Any] = {}
    if code_key not in res and "medicationReference" in res:
        mref = _obj(res, "medicationReference", w) or {}
        extra["value_text"] = mref.get("display")
    when = res.get("authoredOn") or res.get("effectiveDateTime") or res.get("occurrenceDateTime")
    start, end = _period(res, "effectivePeriod", w)
    dosage = _list(res, "dosageInstruction", w) or _list(res, "dosage", w)
    if dosage and isinstance(dosage[0], dict) and dosage[0].get("text"):
        extra["value_text"] = dosage[0]["text"]
    cat = {"MedicationRequest": "request", "MedicationAdministration": "administration",
           "MedicationStatement": "statement", "MedicationDispense": "dispense"}[res["resourceType"]]
    rows, pid = _event(res, rid, w, refs, "medication", code_key, category=None, start=parse_datetime(
        when, f"{w}.authoredOn") or start, end=end, **extra)
    rows[0][1]["category"] = rows[0][1]["category"] or cat
    return rows, pid


def _procedure_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    start, end = _period(res, "performedPeriod", w)
    start = parse_datetime(res.get("performedDateTime"), f"{w}.performedDateTime") or start
    return _event(res, rid, w, refs, "procedure", "code", start=start, end=end)


def _immunization_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    when = parse_datetime(res.get("occurrenceDateTime"), f"{w}.occurrenceDateTime")
    return _event(res, rid, w, refs, "immunization", "vaccineCode", start=when)


def _allergy_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    when = parse_datetime(res.get("onsetDateTime") or res.get("recordedDate"), f"{w}.recordedDate")
    clin, _ = _cc(res, "clinicalStatus", w)
    cats = _list(res, "category", w)
    reaction = _list(res, "reaction", w)
    manif = None
    if reaction and isinstance(reaction[0], dict):
        m, _ = _cc_first(reaction[0], "manifestation", f"{w}.reaction[0]")
        manif = m and m.get("display")
    return _event(res, rid, w, refs, "allergy", "code", start=when, status=_code_str(clin),
                  category=cats[0] if cats and isinstance(cats[0], str) else None,
                  value_text=manif, interpretation=_str(res, "criticality", w))


def _device_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    udi = _list(res, "udiCarrier", w)
    return _event(res, rid, w, refs, "device", "type",
                  start=parse_datetime(res.get("manufactureDate"), f"{w}.manufactureDate"),
                  end=parse_datetime(res.get("expirationDate"), f"{w}.expirationDate"),
                  value_text=udi[0].get("deviceIdentifier") if udi and isinstance(udi[0], dict) else None)


def _careplan_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    start, end = _period(res, "period", w)
    rows, pid = _event(res, rid, w, refs, "careplan", "-", category="careplan", start=start, end=end)
    cats = [c for c in (_cc({"x": x}, "x", w)[0] for x in _list(res, "category", w)) if c]
    if cats:
        rows[0][1]["code"] = cats[-1]
        rows[0][1]["codes"] = cats
    return rows, pid


def _goal_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    return _event(res, rid, w, refs, "goal", "description", status=_str(res, "lifecycleStatus", w),
                  start=parse_datetime(res.get("startDate"), f"{w}.startDate"))


def _kind_of(codes: list[dict[str, Any]], fallback: str) -> str:
    return "radiology_report" if any(c.get("code") in RADIOLOGY_CODES for c in codes) else fallback


def _document_row(res: Resource, rid: str, w: str, refs: Refs, kind: str, code: Any, date: Any,
                  text: str | None, ctype: str | None, title: str | None, author: str | None) -> Row:
    from sagehealth.data.sections import split_sections

    return {
        "row_id": row_id("documents", "fhir", res["resourceType"], rid),
        "document_id": rid,
        "patient_id": _patient(res, w, refs),
        "encounter_id": _encounter(res, w, refs),
        "kind": kind,
        "title": title,
        "code": code,
        "date": date,
        "author": author,
        "status": res.get("docStatus") or _str(res, "status", w),
        "content_type": ctype,
        "text": text,
        "sections": split_sections(text) if text else [],
    }


def _documentreference_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    code, codes = _cc(res, "type", w)
    cat_codes = [c for x in _list(res, "category", w) for c in _cc({"x": x}, "x", w)[1]]
    text, ctype = None, None
    for i, content in enumerate(_list(res, "content", w)):
        if not isinstance(content, dict):
            raise BadValue(f"{w}.content[{i}]: expected an object")
        t, ct = _attachment_text(content.get("attachment"), f"{w}.content[{i}].attachment")
        ctype = ctype or ct
        if t is not None:
            text, ctype = t, ct
            break
    kind = _kind_of(codes + cat_codes, "note")
    row = _document_row(
        res, rid, w, refs, kind, code, parse_datetime(res.get("date"), f"{w}.date"), text, ctype,
        _str(res, "description", w) or (code and code.get("display")),
        _first_display(_list(res, "author", w), "display"),
    )
    return [("documents", row)], row["patient_id"]


def _diagnosticreport_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    code, codes = _cc(res, "code", w)
    cat_codes = [c for x in _list(res, "category", w) for c in _cc({"x": x}, "x", w)[1]]
    texts, ctype = [], None
    for i, att in enumerate(_list(res, "presentedForm", w)):
        t, ct = _attachment_text(att, f"{w}.presentedForm[{i}]")
        if t:
            texts.append(t)
            ctype = ct
    conclusion = _str(res, "conclusion", w)
    if not texts and conclusion:
        texts, ctype = [f"IMPRESSION: {conclusion}"], "text/plain"
    when = parse_datetime(res.get("effectiveDateTime") or res.get("issued"), f"{w}.effectiveDateTime")
    if texts:
        row = _document_row(res, rid, w, refs, _kind_of(codes + cat_codes, "report"), code, when,
                            "\n\n".join(texts), ctype, code and code.get("display"),
                            _first_display(_list(res, "performer", w), "display"))
        return [("documents", row)], row["patient_id"]
    # a report without text (e.g. a lab panel pointing at Observations) is an event
    return _event(res, rid, w, refs, "diagnostic_report", "code", start=when)


def _imagingstudy_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    pid = _patient(res, w, refs)
    uid = next((i["value"].removeprefix("urn:oid:") for i in _identifiers(res, w)
                if (i.get("system") or "") == "urn:dicom:uid" and i.get("value")), rid)
    started = parse_datetime(res.get("started"), f"{w}.started")
    rows: list[tuple[str, Row]] = []
    modalities = []
    for si, series in enumerate(_list(res, "series", w)):
        sw = f"{w}.series[{si}]"
        if not isinstance(series, dict):
            raise BadValue(f"{sw}: expected an object")
        mod = _coding(series.get("modality") or {}, f"{sw}.modality")
        modalities.append(mod["code"])
        body = _coding(series.get("bodySite") or {}, f"{sw}.bodySite")
        suid = series.get("uid") or f"{uid}.{si}"
        rows.append(("imaging_series", {
            "row_id": row_id("imaging_series", suid), "series_uid": suid, "study_uid": uid,
            "patient_id": pid, "modality": mod["code"], "body_part": body["display"] or body["code"],
            "description": series.get("description"), "series_number": series.get("number"),
        }))
        for ii, inst in enumerate(_list(series, "instance", sw)):
            if not isinstance(inst, dict):
                raise BadValue(f"{sw}.instance[{ii}]: expected an object")
            iuid = inst.get("uid") or f"{suid}.{ii}"
            rows.append(("imaging_instances", {
                "row_id": row_id("imaging_instances", iuid), "sop_instance_uid": iuid,
                "series_uid": suid, "study_uid": uid, "patient_id": pid,
                "sop_class_uid": (inst.get("sopClass") or {}).get("code"),
                "instance_number": inst.get("number"), "pixel_status": "no_pixels",
            }))
    rows.insert(0, ("imaging_studies", {
        "row_id": row_id("imaging_studies", uid), "study_uid": uid, "patient_id": pid,
        "source_patient_id": pid, "date": started, "description": _str(res, "description", w),
        "modalities": sorted({m for m in modalities if m}),
    }))
    return rows, pid


def _claim_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    pid = _patient(res, w, refs)
    start, end = _period(res, "billablePeriod", w)
    total = res.get("total")
    if isinstance(total, list):  # ExplanationOfBenefit.total[].amount
        total = (total[0] or {}).get("amount") if total else None
    if total is not None and not isinstance(total, dict):
        raise BadValue(f"{w}.total: expected a Money object")
    enc = None
    for item in _list(res, "item", w):
        if isinstance(item, dict) and item.get("encounter"):
            enc = _ref(item["encounter"][0], f"{w}.item.encounter[0]", refs)[1]
            break
    row = {
        "row_id": row_id("claims", "fhir", res["resourceType"], rid), "claim_id": rid,
        "patient_id": pid, "encounter_id": enc,
        "kind": "claim" if res["resourceType"] == "Claim" else "eob",
        "status": _str(res, "status", w), "start": start, "end": end,
        "total": to_float((total or {}).get("value"), f"{w}.total.value"),
        "currency": (total or {}).get("currency"),
        "provider": (_obj(res, "provider", w) or {}).get("display"),
    }
    return [("claims", row)], pid


DIRECTORY_KIND = {
    "Practitioner": "practitioner", "Organization": "organization", "Location": "location",
    "PractitionerRole": "practitioner_role",
}


def _directory_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    rtype = res["resourceType"]
    name = res.get("name")
    if isinstance(name, list):
        family, given = _human_name(res, w)
        name = " ".join(x for x in (given, family) if x) or None
    elif name is not None and not isinstance(name, str):
        raise BadValue(f"{w}.name: expected a string")
    code, _ = _cc_first(res, "type" if rtype != "PractitionerRole" else "code", w) if isinstance(
        res.get("type" if rtype != "PractitionerRole" else "code"), list) else (None, [])
    if rtype == "PractitionerRole":
        name = (_obj(res, "practitioner", w) or {}).get("display")
    row = {
        "row_id": row_id("directory", "fhir", rtype, rid), "entity_id": rid,
        "kind": DIRECTORY_KIND[rtype], "name": name, "code": code,
        "identifiers": _identifiers(res, w), "telecom": _telecom(res), **_address(res, w),
    }
    return [("directory", row)], None


def _other_rows(res: Resource, rid: str, w: str, refs: Refs) -> Mapped:
    pid = _patient(res, w, refs)
    row = {
        "row_id": row_id("fhir_other", "fhir", res["resourceType"], rid),
        "resource_type": res["resourceType"], "resource_id": rid, "patient_id": pid,
        "resource_json": orjson.dumps(res).decode(),
    }
    return [("fhir_other", row)], pid


MAPPERS: dict[str, Callable[[Resource, str, str, Refs], Mapped]] = {
    "Patient": _patient_rows,
    "Encounter": _encounter_rows,
    "Observation": _observation_rows,
    "Condition": _condition_rows,
    "MedicationRequest": _medication_rows,
    "MedicationAdministration": _medication_rows,
    "MedicationStatement": _medication_rows,
    "MedicationDispense": _medication_rows,
    "Procedure": _procedure_rows,
    "Immunization": _immunization_rows,
    "AllergyIntolerance": _allergy_rows,
    "Device": _device_rows,
    "CarePlan": _careplan_rows,
    "Goal": _goal_rows,
    "DocumentReference": _documentreference_rows,
    "DiagnosticReport": _diagnosticreport_rows,
    "ImagingStudy": _imagingstudy_rows,
    "Claim": _claim_rows,
    "ExplanationOfBenefit": _claim_rows,
    **{t: _directory_rows for t in DIRECTORY_KIND},
}


def map_resource(res: Any, where: str, refs: Refs, validate: str = "schema") -> Record | Bad:
    """Map one parsed resource to a :class:`Record`, or a :class:`Bad` saying what is wrong.

    ``validate``: ``"schema"`` (default) checks the whole structure against the R4 definitions
    (:mod:`fhir_shape`), ``"strict"`` validates with the fhir.resources models, ``"none"``
    only type-checks the elements the mapping reads.
    """
    if not isinstance(res, dict):
        return Bad(where, f"expected a JSON object, got {type(res).__name__}")
    rtype = res.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return Bad(where, "missing resourceType")
    rid = res.get("id")
    if not isinstance(rid, str) or not rid:
        return Bad(where, f"{rtype} without an id")
    w = f"{rtype}/{rid}"
    if validate == "schema":
        reason = check_shape(res)
        if reason:
            return Bad(where, w + reason[len(rtype):] if reason.startswith(rtype) else f"{w}: {reason}")
    elif validate == "strict":
        reason = strict_errors(res)
        if reason:
            return Bad(where, f"{w}: {reason}")
    try:
        rows, pid = MAPPERS.get(rtype, _other_rows)(res, rid, w, refs)
    except BadValue as exc:
        return Bad(where, str(exc))
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        return Bad(where, f"{w}: malformed element ({type(exc).__name__}: {exc})")
    return Record(where, rows, requires=(pid,) if pid else ())


def strict_errors(res: Resource) -> str | None:
    """Full R4 validation with fhir.resources; the first errors as one line, or None."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        get_fhir_model_class(res["resourceType"]).model_validate(res)
    except KeyError:
        return f"unknown resource type {res['resourceType']!r}"
    except ValidationError as exc:
        errs = exc.errors()[:3]
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errs
        ) + (f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else "")
    return None


# -- the reader ------------------------------------------------------------------------------


def _type_rank(path: Path) -> tuple[int, str]:
    stem = path.name.split(".", 1)[0]
    return (TYPE_ORDER.index(stem) if stem in TYPE_ORDER else len(TYPE_ORDER), path.name)


def _peek(path: Path, n: int = 4096) -> bytes:
    with open_binary(path) as fh:
        return fh.read(n)


def _looks_like_fhir_file(path: Path) -> bool:
    name = path.name.lower()
    if not (name.endswith((".ndjson", ".json", ".ndjson.gz", ".json.gz", ".jsonl", ".jsonl.gz"))):
        return False
    try:
        head = _peek(path)
    except (OSError, EOFError):
        return name.endswith((".ndjson", ".ndjson.gz"))
    return b'"resourceType"' in head or (name.endswith((".ndjson", ".ndjson.gz")) and not head.strip())


def detect(path: Path) -> bool:
    """A FHIR NDJSON/Bundle file, or a folder holding some."""
    if path.is_dir():
        return any(_looks_like_fhir_file(p) for p in sorted(path.iterdir())[:200] if p.is_file())
    return _looks_like_fhir_file(path)


class FhirReader(Reader):
    """FHIR R4 bulk NDJSON and Bundle reader."""

    name = "fhir"
    version = "1"
    source_system = "fhir"

    def files(self, path: Path) -> list[Path]:
        if path.is_file():
            return [path]
        return self.order([p for p in path.rglob("*") if p.is_file() and _looks_like_fhir_file(p)])

    def order(self, files: list[Path]) -> list[Path]:
        return sorted(files, key=_type_rank)

    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        validate = str(ctx.options.get("validate") or "schema")
        if self._is_ndjson(path):
            yield from self._read_ndjson(path, ctx, validate)
        else:
            yield from self._read_json(path, ctx, validate)

    @staticmethod
    def _is_ndjson(path: Path) -> bool:
        name = path.name.lower()
        if ".ndjson" in name or ".jsonl" in name:
            return True
        head = _peek(path, 65536).lstrip()
        # one resource per line even if named .json
        return head[:1] == b"{" and b"\n{" in head and b'"resourceType"' in head.split(b"\n", 1)[0]

    def splittable(self, path: Path) -> bool:
        return self._is_ndjson(path)

    def split(self, path: Path, ctx: ReadContext, block: int = 4 << 20) -> Iterator[tuple[int, bytes, str]]:
        """Slices of an NDJSON file: (first line number, whole lines, validation mode).

        Reads in pieces of 64 KiB so that when a gzip stream is cut short, every whole line
        decompressed before the cut is still yielded before the error is raised.
        """
        validate = str(ctx.options.get("validate") or "schema")
        line_no = 1
        parts: list[bytes] = []
        size = 0
        with open_binary(path) as fh:
            read = getattr(fh, "read1", fh.read)
            try:
                while piece := read(1 << 16):
                    ctx.on_bytes(len(piece))
                    parts.append(piece)
                    size += len(piece)
                    if size >= block:
                        data = b"".join(parts)
                        cut = data.rfind(b"\n") + 1
                        if cut:
                            yield line_no, data[:cut], validate
                            line_no += data.count(b"\n", 0, cut)
                        parts, size = [data[cut:]], len(data) - cut
            except (EOFError, OSError):
                data = b"".join(parts)
                cut = data.rfind(b"\n") + 1
                if cut:
                    yield line_no, data[:cut], validate
                raise
        data = b"".join(parts)
        if data:
            yield line_no, data, validate

    def read_unit(self, unit: tuple[int, bytes, str], options: dict[str, Any]) -> Iterator[Item]:
        """The items of one slice made by :meth:`split`."""
        first, data, validate = unit
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        return _ndjson_items(((n, line.rstrip(b"\r")) for n, line in enumerate(lines, first)), validate)

    def _read_ndjson(self, path: Path, ctx: ReadContext, validate: str) -> Iterator[Item]:
        with open_binary(path) as fh:
            def numbered() -> Iterator[tuple[int, bytes]]:
                for n, line in enumerate(fh, 1):
                    ctx.on_bytes(len(line))
                    yield n, line.rstrip(b"\r\n")
            yield from _ndjson_items(numbered(), validate)

    def _read_json(self, path: Path, ctx: ReadContext, validate: str) -> Iterator[Item]:
        with open_binary(path) as fh:
            head = fh.read(65536)
        if not head.strip():
            return  # an empty file holds no record; the pipeline reports it
        rtype = _bundle_type(head)
        if rtype is not None and rtype != "Bundle":
            yield from self._read_single(path, ctx, validate)
            return
        refs, entry_kind = _bundle_index(path)
        if entry_kind not in (None, "start_array"):
            yield Bad("/entry", f"Bundle.entry: expected an array, got {entry_kind.replace('start_', 'an ')}")
            return
        n = 0
        with open_binary(path) as fh:
            try:
                for entry in ijson.items(fh, "entry.item", use_float=True):
                    where = f"/entry/{n}/resource"
                    n += 1
                    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                        yield Bad(f"/entry/{n - 1}", "bundle entry without a resource", clip(orjson.dumps(entry)))
                        continue
                    res = entry["resource"]
                    item = map_resource(res, where, refs, validate)
                    raw = orjson.dumps(res)
                    if isinstance(item, Record):
                        item.content = raw
                    else:
                        item.raw = clip(raw)
                    yield item
            except ijson.JSONError as exc:
                yield Bad(f"/entry/{n}", f"invalid or truncated JSON after {n} entries: {exc}")
                return
        if n == 0 and rtype is None:
            yield Bad("/", "not a FHIR resource or Bundle (no resourceType, no entries)", clip(head))
        ctx.on_bytes(path.stat().st_size)

    def _read_single(self, path: Path, ctx: ReadContext, validate: str) -> Iterator[Item]:
        with open_binary(path) as fh:
            data = fh.read()
        ctx.on_bytes(len(data))
        try:
            res = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            yield Bad("/", f"invalid or truncated JSON: {exc}", clip(data))
            return
        item = map_resource(res, "/", {}, validate)
        if isinstance(item, Record):
            item.content = data
        yield item


def _ndjson_items(lines: Iterator[tuple[int, bytes]], validate: str) -> Iterator[Item]:
    """Items of numbered NDJSON lines (blank lines are not records)."""
    refs: Refs = {}
    for n, line in lines:
        if not line.strip():
            continue
        where = f"line:{n}"
        try:
            res = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield Bad(where, f"invalid JSON: {exc}", clip(line))
            continue
        item = map_resource(res, where, refs, validate)
        if isinstance(item, Record):
            item.content = line
        else:
            item.raw = clip(line)
        yield item


def _bundle_index(path: Path) -> tuple[Refs, str | None]:
    """First pass over a Bundle (streamed, no objects built): every entry's fullUrl mapped to
    (resourceType, id), so references resolve whatever the entry order; and the JSON event that
    opens ``entry`` (``start_array`` when well-formed, None when absent)."""
    refs: Refs = {}
    entry_kind: str | None = None
    full = rtype = rid = None
    with open_binary(path) as fh:
        try:
            for prefix, event, value in ijson.parse(fh):
                if prefix == "entry" and entry_kind is None and event != "map_key":
                    entry_kind = event
                elif prefix == "entry.item.fullUrl" and event == "string":
                    full = value
                elif prefix == "entry.item.resource.resourceType" and event == "string":
                    rtype = value
                elif prefix == "entry.item.resource.id" and event == "string":
                    rid = value
                elif prefix == "entry.item" and event == "end_map":
                    if full and rid:
                        refs[full] = (rtype, rid)
                    full = rtype = rid = None
        except ijson.JSONError:
            pass  # the second pass reports where the JSON breaks
    return refs, entry_kind


def _bundle_type(head: bytes) -> str | None:
    """The resourceType of a JSON document, from its first 64 KiB (cheap streaming peek)."""
    try:
        for prefix, event, value in ijson.parse(head):
            if prefix == "resourceType" and event == "string":
                return value
    except ijson.JSONError:
        pass
    return None
