"""What each role sees of the store: the table names its queries may use, where each is stored
and whether its rows are limited to the principal's patients.

- clinician: the identified clinical tables, rows of the care-team patients only, plus the
  reference tables (literature, the practitioner/organisation directory);
- researcher: the research zone (de-identified copies), under the plain table names
  (``patients`` is ``research_patients``) and under their own names;
- steward: the operational tables (provenance, source files, versions, consent, quarantine),
  with what names a person masked (``MASKS``): source URIs (file names often carry patient
  names and record numbers) become stable tokens, quarantined raw content is withheld (a
  break-glass read, audited as such, shows it);
- auditor: no data table (the audit log has its own API).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import posixpath
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from sagehealth.data.model import ALL_SCHEMAS, RESEARCH_TABLES
from sagehealth.data.sqltext import in_list
from sagehealth.governance.policy import Principal

#: tables whose rows belong to one patient (``patient_id``)
PATIENT_TABLES = ("patients", "encounters", "events", "documents", "imaging_studies", "imaging_series",
                  "imaging_instances", "variants", "claims", "fhir_other")
#: shared reference data, not about a patient
REFERENCE_TABLES = ("literature", "directory")
#: vocabularies and crosswalks: readable by every role that reads data
VOCAB_TABLES = ("concepts", "concept_links")
#: operational tables of the data steward
SYSTEM_TABLES = ("provenance", "sources", "commits", "consent", "quarantine")
#: the action a role's data reads are checked against
READ_ACTION = {"clinician": "read_clinical", "researcher": "read_research", "steward": "read_system",
               "auditor": "read_clinical"}

#: query name -> (stored table, Lance row filter or None)
Views = dict[str, tuple[str, str | None]]


def patient_filter(patients: frozenset[str]) -> str:
    """A Lance filter keeping the rows of ``patients`` (none when the list is empty)."""
    if not patients:
        return "false"
    return f"patient_id IN ({in_list(sorted(patients))})"


def views_for(principal: Principal, withdrawn: frozenset[str] = frozenset()) -> Views:
    """The tables ``principal`` may query, by the name a query uses; for researchers, rows of
    the ``withdrawn`` pseudonyms are left out of every version."""
    if principal.role == "clinician":
        flt = patient_filter(principal.patients)
        views: Views = {t: (t, flt) for t in PATIENT_TABLES}
        views.update({t: (t, None) for t in REFERENCE_TABLES})
        views["chunks"] = ("chunks", f"({flt}) OR source_table = 'literature'")
        views["mentions"] = ("mentions", flt)
        views.update({t: (t, None) for t in VOCAB_TABLES})
        return views
    if principal.role == "researcher":
        out = f"patient_id IS NULL OR patient_id NOT IN ({in_list(sorted(withdrawn))})" if withdrawn else None
        names = (*RESEARCH_TABLES, "chunks", "mentions")
        views = {t: (f"research_{t}", out if t not in ("literature",) else None) for t in names}
        views.update({f"research_{t}": v for t, v in list(views.items())})
        views.update({t: (t, None) for t in VOCAB_TABLES})
        return views
    if principal.role == "steward":
        return {t: (t, None) for t in (*SYSTEM_TABLES, *VOCAB_TABLES)}
    return {}


def hidden_tables(principal: Principal) -> list[str]:
    """Stored tables that ``principal`` may not query (to turn 'no such table' into a denial)."""
    visible = views_for(principal)
    return [t for t in ALL_SCHEMAS if t not in visible]


@functools.lru_cache(maxsize=1)
def _token_key() -> bytes:
    """The key of the masking tokens, derived from the audit key (which lives outside the
    store): a token cannot be checked against a guessed path without it."""
    from sagehealth.governance.audit import audit_key

    return hmac.new(audit_key(), b"sagehealth: masked source tokens", hashlib.sha256).digest()


def mask_uri(uri: str | None) -> str | None:
    """A source URI as a stable, keyed token that keeps the file type, not the path or name
    (``masked:3f9a21c0b27d4e11.ndjson``): the same file gets the same token in every table."""
    if uri is None:
        return None
    name = posixpath.basename(uri.rstrip("/"))
    ext = "".join(posixpath.splitext(name)[1:])[:12] if "." in name else ""
    if not ext.replace(".", "").isalnum():
        ext = ""
    mac = hmac.new(_token_key(), uri.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"masked:{mac[:16]}{ext}"


_PATHLIKE = re.compile(r"""[^\s,;()'"]*/[^\s,;()'"]+|[^\s,;:()'"/]+\.[A-Za-z][A-Za-z0-9]{0,7}(?:\.gz)?\b""")
_QUOTED = re.compile("'[^'\\n]*'|\"[^\"\\n]*\"")


def mask_message(text: str | None) -> str | None:
    """A commit message with every path or file name in it masked."""
    return _PATHLIKE.sub(lambda m: mask_uri(m.group(0)) or "", text) if text else text


def mask_reason(text: str | None) -> str | None:
    """A quarantine reason with the values it quotes from the record withheld (they can name
    patients); the rule that failed and where stay."""
    return _QUOTED.sub("'[withheld]'", text) if text else text


def mask_raw(raw: str | None) -> str | None:
    if raw is None:
        return None
    return f"[withheld: {len(raw)} characters; a break-glass read (audited) shows them]"


_URI_KEYS = frozenset({"uri", "path", "source_uri", "file"})


def mask_summary(summary: Any) -> Any:
    """A run summary (JSON or parsed) with every file URI or path in it masked; warnings, which
    may quote them, are reduced to their count."""
    parsed = json.loads(summary) if isinstance(summary, str) else summary

    def walk(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            if key == "warnings":
                return [f"[{len(v)} warnings withheld]"] if v else []
            if key == "paths":
                return [mask_uri(x) if isinstance(x, str) else walk(x) for x in v]
            return [walk(x) for x in v]
        if isinstance(v, str) and key in _URI_KEYS:
            return mask_uri(v)
        if isinstance(v, str) and key == "message":
            return mask_message(v)
        return v

    out = walk(parsed)
    return json.dumps(out, sort_keys=True, default=str) if isinstance(summary, str) else out


def _mask_columns(table: pa.Table, how: dict[str, Callable[[Any], Any]]) -> pa.Table:
    for col, fn in how.items():
        if col in table.column_names:
            i = table.column_names.index(col)
            table = table.set_column(i, col, pa.array([fn(v) for v in table.column(col).to_pylist()],
                                                      type=table.schema.field(col).type))
    return table


#: role -> table -> column -> mask: what a role reads of a table it may query, masked
MASKS: dict[str, dict[str, dict[str, Callable[[Any], Any]]]] = {
    "steward": {
        "provenance": {"source_uri": mask_uri},
        "sources": {"source_uri": mask_uri},
        "quarantine": {"source_uri": mask_uri, "raw": mask_raw, "reason": mask_reason},
        "commits": {"summary": mask_summary, "message": mask_message},
    },
}


def masks_for(principal: Principal | None, *, break_glass: bool = False) -> dict[str, Callable[[pa.Table], pa.Table]]:
    """Table name -> a function masking what ``principal`` may not see of that table's rows
    (``break_glass``: the quarantine's raw content shown, the rest still masked)."""
    tables = MASKS.get(principal.role, {}) if principal else {}
    return {table: lambda t, cols=_masked(principal, table, break_glass): _mask_columns(t, cols) for table in tables}


#: what a break-glass read of the quarantine shows (the record and the values its reason quotes)
BREAK_GLASS = {"quarantine": ("raw", "reason")}


def _masked(principal: Principal | None, table: str, break_glass: bool) -> dict[str, Callable[[Any], Any]]:
    how = MASKS.get(principal.role, {}).get(table, {}) if principal else {}
    shown = BREAK_GLASS.get(table, ()) if break_glass else ()
    return {c: f for c, f in how.items() if c not in shown}


def mask_rows(principal: Principal | None, table: str, rows: list[dict[str, Any]],
              *, break_glass: bool = False) -> list[dict[str, Any]]:
    """``rows`` of ``table`` (as dicts) masked for ``principal`` (see ``MASKS``)."""
    how = _masked(principal, table, break_glass)
    if not how:
        return rows
    return [{k: (how[k](v) if k in how else v) for k, v in r.items()} for r in rows]
