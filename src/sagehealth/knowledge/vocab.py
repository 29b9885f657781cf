"""Medical vocabularies as lakehouse tables: concepts with labels, synonyms and hierarchy, and the
crosswalks between vocabularies.

Readers (each streams ``Concept`` and ``Link`` items from one file):

- OBO ontologies through ``pronto`` (Human Phenotype Ontology ``hp.obo``, Human Disease Ontology
  ``.obo`` files): id, name, exact/related synonyms, is_a parents, definition, xrefs;
- ICD-10-CM tabular XML (CMS/NCHS): chapters, blocks and codes nested as in the book (a code's
  parent is the code or block it stands in), inclusion terms as synonyms;
- Human Disease Ontology TSV exports: ``HumanDO.tsv`` (id, label, parent label) and the
  crosswalk files (``ICD10inDO.tsv``, ``MESHinDO.tsv``, ``allXREFinDO.tsv``);
- MeSH: descriptor names (``id,scheme,subject`` CSV with NLM URIs) and tree numbers
  (``Tree Number / Desc Ui / Term``), a descriptor's parents being the descriptors one tree
  level up;
- LOINC (files a user downloads under the LOINC licence): the table ``Loinc.csv`` (long common
  name as label; short, display and consumer names as synonyms; deprecated codes left out) and
  ``MultiAxialHierarchy.csv`` (LOINC parts ``LP…`` and codes under their immediate parents);
- SNOMED CT RF2 snapshot files (a user's national or international release): descriptions
  (preferred term as label — from the release's English language reference set when it is in
  the same release folder, else the fully specified name without its semantic tag — other
  active synonyms as synonyms; inactive concepts left out when the concept file is beside it)
  and relationships (active |is a| rows as parents).

Concept ids are ``SYSTEM:code`` with the systems ``ICD10CM``, ``HP``, ``DOID``, ``MESH``,
``LOINC``, ``SNOMEDCT`` (others as their OBO prefix): the same ids that coded rows (FHIR, OMOP)
map to, so a SNOMED or LOINC hierarchy loaded here answers "patients with any descendant of".
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sagehealth.errors import VocabularyError

#: OBO / xref prefixes -> our system names
PREFIXES = {"ICD10CM": "ICD10CM", "ICD10": "ICD10", "MESH": "MESH", "MSH": "MESH", "HP": "HP", "DOID": "DOID",
            "UMLS_CUI": "UMLS", "UMLS": "UMLS", "SNOMEDCT_US": "SNOMEDCT", "SNOMEDCT": "SNOMEDCT",
            "NCI": "NCIT", "OMIM": "OMIM", "MIM": "OMIM", "ORDO": "ORDO", "ICD9CM": "ICD9CM", "GARD": "GARD"}


@dataclass
class Concept:
    concept_id: str
    system: str
    code: str
    label: str
    synonyms: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    definition: str | None = None


@dataclass
class Link:
    from_id: str
    to_id: str
    relation: str  # xref (equivalent or close), maps_to


_EDITION = re.compile(r"_\d{4}_\d{2}_\d{2}$")


def normalise_id(raw: str) -> str | None:
    """``MSH:D003920`` -> ``MESH:D003920``; ids without a known-looking prefix -> None."""
    raw = raw.strip().strip('"')
    if ":" not in raw:
        return None
    prefix, code = raw.split(":", 1)
    # a release date in the prefix names the edition, not another system:
    # SNOMEDCT_US_2025_09_01 -> SNOMEDCT_US -> SNOMEDCT
    prefix = _EDITION.sub("", prefix.strip().upper())
    prefix = PREFIXES.get(prefix, prefix)
    return f"{prefix}:{code.strip()}" if code.strip() else None


def detect(path: Path) -> str | None:
    """The vocabulary format of ``path``: obo, icd10cm, do_tsv, mesh_tree, mesh_names,
    loinc, loinc_hierarchy, snomed_description, snomed_relationship (or None)."""
    name = path.name.lower()
    if name.endswith(".obo"):
        return "obo"
    if name.startswith(("sct2_description_", "sct2_textdefinition_", "sct2_relationship_",
                        "sct2_statedrelationship_", "sct2_concept_", "der2_")):
        return _rf2_kind(path)
    head = path.open("rb").read(4096).decode("utf-8", "replace").lstrip("\ufeff")
    if name.endswith(".xml") and "ICD10CM.tabular" in head:
        return "icd10cm"
    first = head.splitlines()[0] if head else ""
    if name.endswith(".tsv") and first.startswith("id\tlabel"):
        return "do_tsv"
    if first.startswith("Tree Number\tDesc Ui"):
        return "mesh_tree"
    if first.startswith("id,scheme,subject") and "mesh" in head.lower():
        return "mesh_names"
    cols = [c.strip().strip('"') for c in first.split(",")]
    if cols[:2] == ["LOINC_NUM", "COMPONENT"] and "STATUS" in cols and "LONG_COMMON_NAME" in cols:
        return "loinc"  # the LOINC table itself, not its linguistic variants (other languages)
    if cols[:5] == ["PATH_TO_ROOT", "SEQUENCE", "IMMEDIATE_PARENT", "CODE", "CODE_TEXT"]:
        return "loinc_hierarchy"
    return None


def recognised(path: Path) -> bool:
    """Whether ``path`` is a vocabulary file this version reads (a folder load skips the others:
    READMEs, licences, RF2 Full/Delta history, files of other kinds)."""
    try:
        return detect(path) is not None
    except (VocabularyError, OSError, UnicodeDecodeError):
        return False


def read_vocabulary(path: Path) -> Iterator[Concept | Link]:
    """Concepts and links of one vocabulary file; a file in no known format is an error."""
    fmt = detect(path)
    readers = {"obo": _obo, "icd10cm": _icd10cm, "do_tsv": _do_tsv, "mesh_tree": _mesh_tree,
               "mesh_names": _mesh_names, "loinc": _loinc, "loinc_hierarchy": _loinc_hierarchy,
               "snomed_description": _snomed_descriptions, "snomed_relationship": _snomed_relationships,
               "snomed_other": _nothing}
    if fmt is None:
        raise VocabularyError(
            f"{path}: not a vocabulary file this version reads (OBO, ICD-10-CM tabular XML, Disease Ontology TSV, "
            "MeSH tree numbers or descriptor names, LOINC Loinc.csv or MultiAxialHierarchy.csv, "
            "SNOMED CT RF2 snapshot descriptions or relationships)")
    try:
        yield from readers[fmt](path)
    except (ET.ParseError, csv.Error, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise VocabularyError(f"{path}: cannot read it as {fmt}: {exc}") from exc


def _obo(path: Path) -> Iterator[Concept | Link]:
    import warnings

    import pronto

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onto = pronto.Ontology(str(path))
    for term in onto.terms():
        if term.obsolete:
            continue
        cid = normalise_id(term.id)
        if cid is None:
            continue
        system, code = cid.split(":", 1)
        syns = sorted(_synonyms(term))
        parents = [p for p in (normalise_id(t.id) for t in term.superclasses(distance=1, with_self=False)) if p]
        yield Concept(cid, system, code, term.name or code, syns, parents,
                      str(term.definition) if term.definition else None)
        for x in term.xrefs:
            to = normalise_id(x.id)
            if to and to != cid:
                yield Link(cid, to, "xref")


def _synonyms(term: object) -> set[str]:
    """Exact and related synonyms; read from the raw stanza when the file uses a synonym type it
    does not declare (pronto refuses those, e.g. the Disease Ontology's OMO:0003012)."""
    try:
        syns = term.synonyms  # type: ignore[attr-defined]
    except ValueError:
        syns = term._data().synonyms  # type: ignore[attr-defined]
    return {s.description for s in syns if s.scope in ("EXACT", "RELATED") and s.description}


def _icd10cm(path: Path) -> Iterator[Concept]:
    root = ET.parse(path).getroot()
    for chapter in root.iter("chapter"):
        num = (chapter.findtext("name") or "").strip()
        cid = f"ICD10CM:chapter-{num}"
        yield Concept(cid, "ICD10CM", f"chapter-{num}", (chapter.findtext("desc") or "").strip())
        for section in chapter.findall("section"):
            sid = section.get("id") or ""
            scid = f"ICD10CM:{sid}"
            yield Concept(scid, "ICD10CM", sid, (section.findtext("desc") or "").strip(), parents=[cid])
            yield from _diags(section, scid)


def _diags(node: ET.Element, parent: str) -> Iterator[Concept]:
    for diag in node.findall("diag"):
        code = (diag.findtext("name") or "").strip()
        cid = f"ICD10CM:{code}"
        syns = [n.text.strip() for n in diag.findall("inclusionTerm/note") if n.text and n.text.strip()]
        yield Concept(cid, "ICD10CM", code, (diag.findtext("desc") or "").strip(), syns, [parent])
        yield from _diags(diag, cid)


def _tsv_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            yield {k: (v or "").strip().strip('"') for k, v in row.items() if k}


def _do_tsv(path: Path) -> Iterator[Concept | Link]:
    rows = list(_tsv_rows(path))
    xcol = next((c for c in ("xrefs", "xref") if rows and c in rows[0]), None)
    if xcol:  # a crosswalk export
        for r in rows:
            a, b = normalise_id(r["id"]), normalise_id(r[xcol])
            if a and b:
                yield Link(a, b, "xref")
        return
    by_label = {r["label"]: r["id"] for r in rows}
    seen: dict[str, Concept] = {}
    for r in rows:
        cid = normalise_id(r["id"])
        if cid is None:
            continue
        c = seen.get(cid) or Concept(cid, "DOID", cid.split(":", 1)[1], r["label"])
        parent = normalise_id(by_label.get(r.get("subClassOf", ""), "")) if r.get("subClassOf") else None
        if parent and parent not in c.parents:
            c.parents.append(parent)
        seen[cid] = c
    yield from seen.values()


def _mesh_tree(path: Path) -> Iterator[Concept]:
    by_tree: dict[str, str] = {}
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            tree, ui, term = r["Tree Number"].strip(), r["Desc Ui"].strip(), r["Term"].strip()
            by_tree[tree] = ui
            rows.append((tree, ui, term))
    concepts: dict[str, Concept] = {}
    for tree, ui, term in rows:
        c = concepts.setdefault(ui, Concept(f"MESH:{ui}", "MESH", ui, term))
        parent_tree = tree.rsplit(".", 1)[0] if "." in tree else None
        if parent_tree and parent_tree in by_tree:
            p = f"MESH:{by_tree[parent_tree]}"
            if p not in c.parents:
                c.parents.append(p)
    yield from concepts.values()


_MESH_URI = re.compile(r"/mesh/([A-Z]\d+)$")


def _mesh_names(path: Path) -> Iterator[Concept]:
    with path.open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            m = _MESH_URI.search(r["id"].strip())
            if m and r.get("subject"):
                yield Concept(f"MESH:{m.group(1)}", "MESH", m.group(1), r["subject"].strip())


# -- LOINC -------------------------------------------------------------------------------------

def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            yield {k: (v or "").strip() for k, v in row.items() if k}


def _loinc(path: Path) -> Iterator[Concept]:
    for r in _csv_rows(path):
        code = r["LOINC_NUM"]
        if not code or r.get("STATUS", "").upper() == "DEPRECATED":
            continue
        label = r.get("LONG_COMMON_NAME") or r.get("DisplayName") or r.get("SHORTNAME") or r["COMPONENT"]
        syns = sorted({v for k in ("SHORTNAME", "DisplayName", "CONSUMER_NAME")
                       if (v := r.get(k, "")) and v != label})
        yield Concept(f"LOINC:{code}", "LOINC", code, label, syns,
                      definition=r.get("DefinitionDescription") or None)


def _loinc_hierarchy(path: Path) -> Iterator[Concept]:
    concepts: dict[str, Concept] = {}
    for r in _csv_rows(path):
        code = r["CODE"]
        if not code:
            continue
        # parts (LP...) are named here; codes are named by Loinc.csv, whatever the load order
        label = r["CODE_TEXT"] if code.startswith("LP") else ""
        c = concepts.setdefault(code, Concept(f"LOINC:{code}", "LOINC", code, label))
        parent = r["IMMEDIATE_PARENT"]
        if parent and f"LOINC:{parent}" not in c.parents:
            c.parents.append(f"LOINC:{parent}")
    yield from concepts.values()


# -- SNOMED CT RF2 ------------------------------------------------------------------------------

#: RF2 metadata concepts
SCT_FSN, SCT_SYNONYM, SCT_IS_A = "900000000000003001", "900000000000013009", "116680003"
SCT_PREFERRED = "900000000000548007"
SCT_US_ENGLISH, SCT_GB_ENGLISH = "900000000000509007", "900000000000508004"
_SEMANTIC_TAG = re.compile(r"\s+\([^()]+\)$")


def _rf2_kind(path: Path) -> str:
    name = path.name.lower()
    if "_full" in name or "_delta" in name or "snapshot" not in name:
        raise VocabularyError(f"{path}: an RF2 Full or Delta file; load the Snapshot files of the release")
    if name.startswith("sct2_description_"):
        return "snomed_description"
    if name.startswith("sct2_relationship_"):
        return "snomed_relationship"
    return "snomed_other"  # concepts, stated relationships, refsets: read beside the others


def _nothing(path: Path) -> Iterator[Concept]:
    return iter(())


def _rf2_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        for n, line in enumerate(fh, start=2):
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) != len(header):
                raise VocabularyError(f"{path}:{n}: {len(cells)} columns, the header has {len(header)}")
            yield dict(zip(header, cells))


_RF2_RELEASE = re.compile(r"_([A-Za-z0-9]+_\d{8})\.txt$")


def _rf2_sibling(path: Path, prefix: str) -> Path | None:
    """A Snapshot file of the same release (same namespace and date: ``..._INT_20250101.txt``)
    in its release folder (``Snapshot/Terminology/...``, ``Snapshot/Refset/...``), or beside it."""
    m = _RF2_RELEASE.search(path.name)
    if m is None:
        return None
    in_release = path.parent.name.lower() == "terminology"
    root = path.parent.parent if in_release else path.parent
    found = sorted(p for p in (root.rglob(f"{prefix}*") if in_release else root.glob(f"{prefix}*"))
                   if p.is_file() and "snapshot" in p.name.lower() and p.name.endswith(f"_{m.group(1)}.txt"))
    return found[0] if found else None


def _snomed_active_concepts(path: Path) -> set[str] | None:
    concept_file = _rf2_sibling(path, "sct2_Concept_")
    if concept_file is None:
        return None
    return {r["id"] for r in _rf2_rows(concept_file) if r["active"] == "1"}


def _snomed_descriptions(path: Path) -> Iterator[Concept]:
    active = _snomed_active_concepts(path)
    preferred: set[str] = set()
    refset = _rf2_sibling(path, "der2_cRefset_Language")
    if refset is not None:
        rows = [r for r in _rf2_rows(refset) if r["active"] == "1" and r["acceptabilityId"] == SCT_PREFERRED]
        ids = {r["refsetId"] for r in rows}
        use = SCT_US_ENGLISH if SCT_US_ENGLISH in ids else (SCT_GB_ENGLISH if SCT_GB_ENGLISH in ids else None)
        preferred = {r["referencedComponentId"] for r in rows if use is None or r["refsetId"] == use}
    fsn: dict[str, str] = {}
    pref: dict[str, str] = {}
    syns: dict[str, set[str]] = {}
    for r in _rf2_rows(path):
        cid = r["conceptId"]
        if r["active"] != "1" or (active is not None and cid not in active):
            continue
        if r["typeId"] == SCT_FSN:
            fsn[cid] = r["term"]
        elif r["typeId"] == SCT_SYNONYM:
            syns.setdefault(cid, set()).add(r["term"])
            if r["id"] in preferred:
                pref[cid] = r["term"]
    for cid in fsn.keys() | syns.keys():
        label = pref.get(cid) or _SEMANTIC_TAG.sub("", fsn.get(cid, "")) or min(syns[cid])
        yield Concept(f"SNOMEDCT:{cid}", "SNOMEDCT", cid, label, sorted(syns.get(cid, set()) - {label}))


def _snomed_relationships(path: Path) -> Iterator[Concept]:
    active = _snomed_active_concepts(path)
    parents: dict[str, list[str]] = {}
    for r in _rf2_rows(path):
        if r["active"] != "1" or r["typeId"] != SCT_IS_A:
            continue
        src = r["sourceId"]
        if active is not None and (src not in active or r["destinationId"] not in active):
            continue
        parents.setdefault(src, []).append(f"SNOMEDCT:{r['destinationId']}")
    for cid, ps in parents.items():
        yield Concept(f"SNOMEDCT:{cid}", "SNOMEDCT", cid, "", parents=sorted(set(ps)))


def merge(items: Iterator[Concept | Link], concepts: dict[str, Concept], links: dict[tuple[str, str, str], Link]) -> None:
    """Fold items into ``concepts``/``links``: the same concept from several files keeps the label
    and definition it already has (if any) and the union of synonyms and parents."""
    for it in items:
        if isinstance(it, Link):
            links[(it.from_id, it.to_id, it.relation)] = it
            continue
        have = concepts.get(it.concept_id)
        if have is None:
            concepts[it.concept_id] = it
            continue
        have.label = have.label or it.label
        have.definition = have.definition or it.definition
        have.synonyms = sorted(set(have.synonyms) | set(it.synonyms))
        have.parents = have.parents + [p for p in it.parents if p not in have.parents]
