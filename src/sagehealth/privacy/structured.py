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
- ``text``: free text de-identified with consistent surrogates for the row's patient;
- ``uid``: DICOM UIDs replaced by keyed UIDs under the ``2.25`` root.

Tables with no rules (directory, fhir_other, quarantine, provenance, sources) never enter the
research zone.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime, timedelta
from typing import Any

from sagehealth.privacy.deid import detect
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
        "class_code": "keep", "type": "keep", "start": "shift", "end": "shift", "reason": "keep",
        "provider": "drop", "location": "drop", "discharge_disposition": "keep", "part_of": "id",
    },
    "events": {
        **_COMMON, "event_id": "id", "patient_id": "pseudonym", "encounter_id": "id",
        "kind": "keep", "category": "keep", "code": "keep", "codes": "keep", "status": "keep",
        "start": "shift", "end": "shift", "value_num": "keep", "value_text": "text",
        "value_code": "keep", "unit": "keep", "ref_low": "keep", "ref_high": "keep",
        "interpretation": "keep", "parent_id": "id",
    },
    "documents": {
        **_COMMON, "document_id": "id", "patient_id": "pseudonym", "encounter_id": "id",
        "kind": "keep", "title": "text", "code": "keep", "date": "shift", "author": "drop",
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
        "ref": "keep", "alt": "keep", "variant_id": "keep", "qual": "keep", "filter": "keep",
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

    def pseudonym(self, patient_id: str) -> str:
        """The research-zone id of a patient: the same for the same id everywhere."""
        return "psn_" + self._mac("patient", patient_id)[:24]

    def key_of(self, col: str, value: str) -> str:
        """The research-zone form of an id column (``row_id``, ``event_id``, ...); a row id keeps
        its table prefix (``evt_…``) so a research row can be traced to its research table."""
        prefix = str(value).split("_", 1)[0] if col == "row_id" and "_" in str(value) else col.split("_")[0]
        return f"{prefix}_{self._mac(col, str(value))[:24]}"

    def free_text(self, text: str, patient: str = "") -> str:
        """Free text with every identifier found replaced by the patient's consistent surrogates."""
        return self.text.apply(text, detect(text), patient)

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
        if rule == "resplit":
            from sagehealth.data.sections import split_sections

            new_text = self._apply("text", "text", row.get("text"), patient, row)
            return split_sections(new_text) if new_text else []
        raise ValueError(f"unknown de-identification rule {rule!r} for column {col}")

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
