"""De-identification of rows of the clinical model (the research zone's building block).

``RowDeidentifier(key).row(table, row)`` returns the research-zone version of a row, or None
when the table does not go to the research zone. The rules per column are data (``RULES``):

- ``keep``: copied (codes, values, units, kinds, statuses);
- ``drop``: set to null (names, telecom, street address, identifiers, free-text authors);
- ``pseudonym``: patient ids become ``psn_`` + a keyed hash (HMAC-SHA256 of the secret key), the
  same for the same patient in every table and source; other ids get a keyed hash too;
- ``shift``: timestamps move by the patient's secret offset (the same offset as in the text of
  that patient's notes, so intervals survive);
- ``year``: dates keep their year only (birth dates); ages over 89 are grouped into one bucket,
  the age taken at the patient's latest own record (``latest``) or today, whichever is later
  (MIMIC shifts its years a century or more ahead: today's year would leave a 93-year-old as 93);
- ``zip3``: US ZIP codes keep their first three digits, except the 3-digit areas of fewer than
  20,000 people (HIPAA Safe Harbor list), which become ``000``;
- ``text``: free text de-identified with consistent surrogates for the row's patient; beside
  what the detector finds, the patient's own names, identifiers and phone numbers as the
  patients table holds them (``known``) are replaced wherever they occur in that patient's text;
- ``coded``: codes kept, the free text of a coded value (``display``/``text``, where FHIR allows
  anything: "Visit with <name>") de-identified (tags; the same label always gives the same
  result, so it is computed once per distinct label);
- ``variant``: a variant id with the row's sample id inside it gets the keyed sample id;
- ``uid``: DICOM UIDs replaced by keyed UIDs under the ``2.25`` root.

Tables with no rules (directory, fhir_other, quarantine, provenance, sources) never enter the
research zone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sagehealth.privacy.deid import Span, detect
from sagehealth.privacy.deid.transform import Transformer, secret_key

#: 3-digit ZIP areas with 20,000 or fewer people (HHS Safe Harbor guidance, 2000 census)
RESTRICTED_ZIP3 = frozenset(
    "036 059 063 102 203 556 692 790 821 823 830 831 878 879 884 890 893".split()
)

_COMMON = {"row_id": "id", "source_system": "keep", "provenance_id": "id"}
RULES: dict[str, dict[str, str]] = {
    "patients": {
        **_COMMON, "patient_id": "pseudonym", "identifiers": "drop", "family_name": "drop",
        "given_names": "drop", "gender": "keep", "birth_date": "year", "deceased": "keep",
        "deceased_at": "shift", "race": "keep", "ethnicity": "keep", "marital_status": "keep",
        "language": "keep", "address_line": "drop", "city": "drop", "state": "keep",
        "postal_code": "zip3", "country": "keep", "telecom": "drop",
    },
    "encounters": {
        **_COMMON, "encounter_id": "id", "patient_id": "pseudonym", "status": "keep",
        "class_code": "keep", "type": "coded", "start": "shift", "end": "shift", "reason": "coded",
        "provider": "drop", "location": "drop", "discharge_disposition": "coded", "part_of": "id",
    },
    "events": {
        **_COMMON, "event_id": "id", "patient_id": "pseudonym", "encounter_id": "id",
        "kind": "keep", "category": "coded", "code": "coded", "codes": "coded", "status": "keep",
        "start": "shift", "end": "shift", "value_num": "keep", "value_text": "text",
        "value_code": "coded", "unit": "keep", "ref_low": "keep", "ref_high": "keep",
        "interpretation": "coded", "parent_id": "id",
    },
    "documents": {
        **_COMMON, "document_id": "id", "patient_id": "pseudonym", "encounter_id": "id",
        "kind": "keep", "title": "text", "code": "coded", "date": "shift", "author": "drop",
        "status": "keep", "content_type": "keep", "text": "text", "sections": "resplit",
    },
    "imaging_studies": {
        **_COMMON, "study_uid": "uid", "patient_id": "pseudonym", "source_patient_id": "drop",
        "accession": "drop", "date": "shift", "description": "text", "modalities": "keep",
        "referring_physician": "drop", "institution": "drop",
    },
    "imaging_series": {
        **_COMMON, "series_uid": "uid", "study_uid": "uid", "patient_id": "pseudonym",
        "modality": "keep", "body_part": "keep", "description": "text", "series_number": "keep",
    },
    "imaging_instances": {
        **_COMMON, "sop_instance_uid": "uid", "series_uid": "uid", "study_uid": "uid",
        "patient_id": "pseudonym", "sop_class_uid": "keep", "instance_number": "keep",
        "rows": "keep", "columns": "keep", "frames": "keep", "photometric": "keep",
        "transfer_syntax": "keep", "pixel_status": "keep",
        "thumbnail": "drop",  # pixels may carry burned-in annotations
        "file_uri": "drop",
    },
    "variants": {
        **_COMMON, "patient_id": "pseudonym", "sample_id": "id", "chrom": "keep", "pos": "keep",
        "ref": "keep", "alt": "keep", "variant_id": "variant", "qual": "keep", "filter": "keep",
        "genotype": "keep", "zygosity": "keep", "depth": "keep", "gene": "keep",
        "consequence": "keep", "impact": "keep", "hgvs_c": "keep", "hgvs_p": "keep",
    },
    "claims": {
        **_COMMON, "claim_id": "id", "patient_id": "pseudonym", "encounter_id": "id",
        "kind": "keep", "status": "keep", "start": "shift", "end": "shift", "total": "keep",
        "currency": "keep", "provider": "drop",
    },
    "literature": {name: "keep" for name in (
        "row_id", "doc_id", "collection", "title", "text", "year", "mesh", "extra",
        "source_system", "provenance_id")},
}


class RowDeidentifier:
    """Turns clinical-zone rows into research-zone rows with one secret key."""

    def __init__(self, key: str | bytes | None = None, *, reference: date | None = None) -> None:
        self.key = secret_key(key)
        self.text = Transformer("surrogate", self.key)
        self.reference = reference or date.today()
        #: patient id -> the latest date of the patient's own records (see ``year``)
        self.latest: dict[str, date] = {}
        #: patient id -> identifying strings the store holds for them (see ``text``)
        self.known: dict[str, list[tuple[str, str]]] = {}
        self._labels: dict[str, str] = {}

    def pseudonym(self, patient_id: str) -> str:
        """The research-zone id of a patient: the same for the same id everywhere."""
        return "psn_" + self._mac("patient", patient_id)[:24]

    def key_of(self, col: str, value: str) -> str:
        """The research-zone form of an id column (``row_id``, ``event_id``, ...); a row id keeps
        its table prefix (``evt_…``) so a research row can be traced to its research table."""
        prefix = str(value).split("_", 1)[0] if col == "row_id" and "_" in str(value) else col.split("_")[0]
        return f"{prefix}_{self._mac(col, str(value))[:24]}"

    def free_text(self, text: str, patient: str = "") -> str:
        """Free text with every identifier found replaced by the patient's consistent surrogates
        (what the detector finds, and the patient's own names and ids wherever they occur)."""
        return self.text.apply(text, self.spans(text, patient), patient)

    def spans(self, text: str, patient: str, known: list[tuple[str, str]] | None = None) -> list[Span]:
        """The identifiers in ``text``: what the detector finds and the patient's own names and ids
        (``known``, else ``self.known[patient]``)."""
        return _merge(detect(text), known_spans(text, self.known.get(patient, []) if known is None else known))

    def label(self, text: str) -> str:
        """The free text of a coded value with identifiers replaced by tags (once per label)."""
        out = self._labels.get(text)
        if out is None:
            spans = detect(text)
            out = self._labels[text] = _TAGS.apply(text, spans) if spans else text
            if len(self._labels) > 200_000:
                self._labels.clear()
        return out

    def key_check(self) -> str:
        """A value that tells whether two parties hold the same key, without revealing it."""
        return self._mac("key-check", "sagehealth")[:32]

    def uid(self, value: str) -> str:
        """A DICOM UID replaced by a keyed one under the ``2.25`` (UUID-derived) root."""
        return "2.25." + str(int(self._mac("uid", str(value))[:30], 16))

    def row(self, table: str, row: dict[str, Any]) -> dict[str, Any] | None:
        """The research-zone row, or None when ``table`` never enters the research zone."""
        rules = RULES.get(table)
        if rules is None:
            return None
        patient = row.get("patient_id") or ""
        out: dict[str, Any] = {}
        for col, value in row.items():
            rule = rules.get(col, "drop")  # a column without a rule is not trusted
            out[col] = self._apply(rule, col, value, patient, row)
        return out

    # -- rules ------------------------------------------------------------------------------
    def _apply(self, rule: str, col: str, value: Any, patient: str, row: dict[str, Any]) -> Any:
        if value is None or rule == "drop":
            return None
        if rule == "keep":
            return value
        if rule == "pseudonym":
            return self.pseudonym(str(value))
        if rule == "id":
            return self.key_of(col, str(value))
        if rule == "uid":
            return self.uid(str(value))
        if rule == "shift":
            return _shift(value, self.text.date_offset(patient))
        if rule == "year":
            return self._birth_year(value, patient)
        if rule == "zip3":
            digits = "".join(c for c in str(value) if c.isdigit())
            if len(digits) < 3:
                return None
            return "000" if digits[:3] in RESTRICTED_ZIP3 else digits[:3]
        if rule == "text":
            return self.free_text(str(value), patient)
        if rule == "coded":
            return self._coded(value, patient)
        if rule == "variant":
            sample = row.get("sample_id")
            if sample and len(str(sample)) >= 3 and str(sample) in str(value):
                return str(value).replace(str(sample), self.key_of("sample_id", str(sample)))
            return value
        if rule == "resplit":
            from sagehealth.data.sections import split_sections

            new_text = self._apply("text", "text", row.get("text"), patient, row)
            return split_sections(new_text) if new_text else []
        raise ValueError(f"unknown de-identification rule {rule!r} for column {col}")

    def _coded(self, value: Any, patient: str) -> Any:
        """Codes as they are; the display/text of each coded value de-identified (the patient's
        own names and ids too)."""
        if isinstance(value, dict):
            # a display of a real code is a vocabulary label (a brand name "Camila" is no person):
            # only the patient's own names and ids are looked for there
            coded = bool(value.get("system")) and bool(value.get("code"))
            return {k: ((self._known_only(v, patient) if coded else self._text_label(v, patient))
                        if k in ("display", "text") and isinstance(v, str) else self._coded(v, patient))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._coded(v, patient) for v in value]
        if isinstance(value, str):
            return self._text_label(value, patient)
        return value

    def _known_only(self, text: str, patient: str) -> str:
        spans = known_spans(text, self.known.get(patient, []))
        return self.text.apply(text, spans, patient) if spans else text

    def _text_label(self, text: str, patient: str) -> str:
        if known_spans(text, self.known.get(patient, [])):  # surrogates for this patient's own ids
            return self.text.apply(text, self.spans(text, patient), patient)
        return self.label(text)

    def _birth_year(self, value: Any, patient: str = "") -> date:
        """Birth date -> 1 January of its year; people over 89 (at their latest record or today,
        whichever is later) share one bucket year: 90 years before that date."""
        year = value.year if isinstance(value, (date, datetime)) else int(str(value)[:4])
        oldest = max(self.reference.year, self.latest[patient].year if patient in self.latest else 0) - 90
        return date(min(max(year, oldest), 9999), 1, 1) if year < oldest else date(year, 1, 1)

    def _mac(self, *parts: str) -> str:
        msg = "\x1f".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()


def _shift(value: Any, days: int) -> Any:
    if isinstance(value, (date, datetime)):
        return value + timedelta(days=days)
    return value


_TAGS = Transformer("tags")


def _merge(found: list[Span], extra: list[Span]) -> list[Span]:
    """Both lists as one sorted, non-overlapping list; where spans overlap the longer wins."""
    if not extra:
        return found
    out: list[Span] = []
    for sp in sorted([*found, *extra], key=lambda s: (s.start, -(s.end - s.start))):
        if out and sp.start < out[-1].end:
            if sp.end - sp.start > out[-1].end - out[-1].start:
                out[-1] = sp  # starts at or after the one before ended: still no overlap
            continue
        out.append(sp)
    return out


@lru_cache(maxsize=4096)
def _known_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    """One case-insensitive, whole-word alternation of ``values`` (longest first)."""
    if not values:
        return None
    return re.compile(r"(?<![\w])(?:" + "|".join(re.escape(v) for v in values) + r")(?![\w])", re.I)


def known_spans(text: str, known: list[tuple[str, str]]) -> list[Span]:
    """Where the ``known`` (value, PHI type) strings of a patient occur in ``text``."""
    pattern = _known_pattern(tuple(sorted({v for v, _ in known if len(v) >= 3}, key=lambda v: (-len(v), v))))
    if pattern is None:
        return []
    kinds = {v.lower(): k for v, k in known}
    return [Span(m.start(), m.end(), kinds.get(m.group(0).lower(), "NAME"), m.group(0), "known")
            for m in pattern.finditer(text)]


def known_identifiers(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Patient id -> (value, PHI type) of what identifies them in the patients table: each
    name word, the full name, identifier values, telecom values."""
    out: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        vals: list[tuple[str, str]] = []
        names = [w for part in (r.get("given_names"), r.get("family_name")) if part for w in re.split(r"[\s,]+", part) if w]
        vals += [(w.strip(".'"), "NAME") for w in names if len(w.strip(".'")) >= 3]
        for ident in r.get("identifiers") or []:
            v = (ident or {}).get("value")
            if v and len(v) >= 4:
                vals.append((v, "MRN"))
                digits = re.sub(r"\D", "", v)
                if len(digits) >= 5 and digits != v:
                    vals.append((digits, "MRN"))
        for t in r.get("telecom") or []:
            v = (t or {}).get("value")
            if v and len(v) >= 5:
                vals.append((v, "EMAIL" if "@" in v else "PHONE"))
        if vals:
            out[r["patient_id"]] = vals
    return out


def redact(text: str, known: list[tuple[str, str]] = ()) -> str:
    """``text`` with what the detector finds and the ``known`` (value, type) strings replaced by
    type tags (no key needed: for showing, not for the research zone)."""
    spans = _merge(detect(text), known_spans(text, list(known)))
    return _TAGS.apply(text, spans) if spans else text
