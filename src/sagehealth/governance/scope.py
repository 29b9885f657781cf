"""What each role sees of the store: the table names its queries may use, where each is stored
and whether its rows are limited to the principal's patients.

- clinician: the identified clinical tables, rows of the care-team patients only, plus the
  reference tables (literature, the practitioner/organisation directory);
- researcher: the research zone (de-identified copies), under the plain table names
  (``patients`` is ``research_patients``) and under their own names;
- steward: the operational tables (provenance, source files, versions, consent, quarantine);
- auditor: no data table (the audit log has its own API).
"""

from __future__ import annotations

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
