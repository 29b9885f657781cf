"""The concept tables in the lakehouse and the hierarchy queries over them.

``load(lake, paths)`` reads vocabulary files (:mod:`sagehealth.knowledge.vocab`), merges them
with what the store already holds (a stored concept takes the label, definition and source of
the new load — within one load, of the first file that names it — and keeps the union of
synonyms and parents; crosswalk links are de-duplicated) and writes ``concepts`` and ``concept_links``
(uncommitted: the caller commits one version). Hierarchy queries run in DuckDB over the
``parents`` lists as an edge list with recursive CTEs: ancestors, descendants (with depth), and
concepts equivalent through crosswalks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from sagehealth.data.model import ALL_SCHEMAS, stable_id
from sagehealth.data.sqltext import in_list
from sagehealth.data.sqltext import lit as _lit
from sagehealth.errors import SourceNotFound, VocabularyError
from sagehealth.knowledge.vocab import Concept, Link, merge, read_vocabulary, recognised

RunSql = Callable[[str], pa.Table]



def load(lake: Any, paths: Iterable[Path]) -> dict[str, Any]:
    """Read and merge vocabulary files into the concept tables; returns counts per file and in all."""
    concepts: dict[str, Concept] = {}
    links: dict[tuple[str, str, str], Link] = {}
    files: dict[str, dict[str, int]] = {}
    sources: dict[str, str] = {}
    for path in paths:
        if not path.exists():
            raise SourceNotFound(f"{path}: no such file")
        targets = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in targets:
            before_c, before_l = len(concepts), len(links)
            new_c: dict[str, Concept] = {}
            new_l: dict[tuple[str, str, str], Link] = {}
            if path.is_dir() and not recognised(f):
                continue  # a folder may hold licences, READMEs, history files...
            merge(read_vocabulary(f), new_c, new_l)  # a recognised file that does not read is an error
            for cid in new_c:
                sources.setdefault(cid, f.resolve().as_uri())
            merge(iter([*new_c.values(), *new_l.values()]), concepts, links)
            files[str(f)] = {"concepts": len(new_c), "links": len(new_l),
                             "new_concepts": len(concepts) - before_c, "new_links": len(links) - before_l}
    if not files:
        raise VocabularyError("no vocabulary file found in " + ", ".join(map(str, paths)))
    now = datetime.now(UTC)
    tbl = lake.table("concepts")
    if tbl.count_rows():  # merge with what earlier loads wrote: the new file's label and source
        old = tbl.to_arrow().to_pylist()  # win (a newer release), synonyms and parents add up
        for r in old:
            if r["concept_id"] in concepts:
                merge(iter([Concept(r["concept_id"], r["system"], r["code"], r["label"], r["synonyms"] or [],
                                    r["parents"] or [], r["definition"])]), concepts, {})
        ids = list(concepts)
        for i in range(0, len(ids), 2000):
            tbl.delete("concept_id IN (" + in_list(ids[i:i + 2000]) + ")")
    rows = [{"row_id": f"cpt_{stable_id('concepts', c.concept_id)}", "concept_id": c.concept_id, "system": c.system,
             "code": c.code, "label": c.label, "synonyms": c.synonyms, "parents": c.parents,
             "definition": c.definition, "source_uri": sources.get(c.concept_id), "loaded_at": now}
            for c in concepts.values()]
    for i in range(0, len(rows), 50_000):
        tbl.add(pa.Table.from_pylist(rows[i:i + 50_000], schema=ALL_SCHEMAS["concepts"]))
    ltbl = lake.table("concept_links")
    have = set()
    if ltbl.count_rows():
        have = set(ltbl.to_arrow().select(["row_id"]).column("row_id").to_pylist())
    lrows = []
    for (a, b, rel), _ in links.items():
        rid = f"cln_{stable_id('concept_links', a, b, rel)}"
        if rid not in have:
            lrows.append({"row_id": rid, "from_id": a, "to_id": b, "relation": rel, "source_uri": None, "loaded_at": now})
    for i in range(0, len(lrows), 50_000):
        ltbl.add(pa.Table.from_pylist(lrows[i:i + 50_000], schema=ALL_SCHEMAS["concept_links"]))
    return {"files": files, "concepts": len(concepts), "links_added": len(lrows)}


EDGES = "(SELECT concept_id AS child, unnest(parents) AS parent FROM concepts)"


def concept(run_sql: RunSql, concept_id: str) -> dict[str, Any]:
    """One concept with its crosswalks (both directions)."""
    rows = run_sql(f"SELECT concept_id, system, code, label, synonyms, parents, definition, source_uri "
                   f"FROM concepts WHERE concept_id = {_lit(concept_id)}").to_pylist()
    if not rows:
        raise VocabularyError(f"no concept {concept_id!r} in the loaded vocabularies (sagehealth vocab load ...)")
    out = rows[0]
    out["links"] = run_sql(f"""SELECT to_id AS concept_id, relation FROM concept_links WHERE from_id = {_lit(concept_id)}
                               UNION SELECT from_id, relation FROM concept_links WHERE to_id = {_lit(concept_id)}
                               ORDER BY 1""").to_pylist()
    return out


def ancestors(run_sql: RunSql, concept_id: str) -> list[dict[str, Any]]:
    """Every broader concept, nearest first (``depth`` 1 = a parent)."""
    return run_sql(f"""
        WITH RECURSIVE e AS {EDGES},
        up(id, depth) AS (SELECT parent, 1 FROM e WHERE child = {_lit(concept_id)}
                          UNION SELECT e.parent, up.depth + 1 FROM e JOIN up ON e.child = up.id WHERE up.depth < 50)
        SELECT c.concept_id, c.label, min(up.depth) AS depth FROM up JOIN concepts c ON c.concept_id = up.id
        GROUP BY ALL ORDER BY depth, c.concept_id""").to_pylist()


def descendants(run_sql: RunSql, concept_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Every narrower concept, nearest first (``depth`` 1 = a child)."""
    return run_sql(f"""
        WITH RECURSIVE e AS {EDGES},
        down(id, depth) AS (SELECT child, 1 FROM e WHERE parent = {_lit(concept_id)}
                            UNION SELECT e.child, down.depth + 1 FROM e JOIN down ON e.parent = down.id
                            WHERE down.depth < 50)
        SELECT c.concept_id, c.label, min(down.depth) AS depth FROM down JOIN concepts c ON c.concept_id = down.id
        GROUP BY ALL ORDER BY depth, c.concept_id {f'LIMIT {int(limit)}' if limit else ''}""").to_pylist()


#: code-system URIs and vocabulary ids of coded rows -> concept-id prefixes
CODE_SYSTEMS = {
    "http://snomed.info/sct": "SNOMEDCT", "SNOMED": "SNOMEDCT", "SNOMEDCT": "SNOMEDCT",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM", "ICD10CM": "ICD10CM", "ICD-10-CM": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10", "ICD10": "ICD10", "http://loinc.org": "LOINC", "LOINC": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM", "RxNorm": "RXNORM",
}


def _affirmed(alias: str = "") -> str:
    """SQL: a mention that asserts its concept for the patient now."""
    a = f"{alias}." if alias else ""
    return f"{a}concept_id IS NOT NULL AND NOT {a}negated AND NOT {a}family AND NOT {a}hypothetical"


def expand(run_sql: RunSql, concept_ids: Iterable[str], *, with_descendants: bool = True,
           crosswalks: bool = True) -> list[str]:
    """The concepts, those equivalent through crosswalks, and (optionally) all their descendants."""
    ids = {c for c in concept_ids}
    if crosswalks and ids:
        lit = in_list(ids)
        for r in run_sql(f"SELECT to_id AS c FROM concept_links WHERE from_id IN ({lit}) "
                         f"UNION SELECT from_id FROM concept_links WHERE to_id IN ({lit})").to_pylist():
            ids.add(r["c"])
    if with_descendants:
        for c in list(ids):
            ids |= {d["concept_id"] for d in descendants(run_sql, c)}
    return sorted(ids)


def documents_mentioning(run_sql: RunSql, concept_ids: list[str]) -> list[str]:
    """Source rows (documents) that affirm a mention of any of ``concept_ids``."""
    if not concept_ids:
        return []
    lit = in_list(concept_ids)
    return run_sql(f"SELECT DISTINCT source_row_id FROM mentions WHERE {_affirmed()} AND concept_id IN ({lit})"
                   ).column("source_row_id").to_pylist()


def _coded(concept_ids: list[str]) -> str:
    """SQL: events whose code, as SYSTEM:code, is one of ``concept_ids``."""
    cases = " ".join(f"WHEN {_lit(uri)} THEN {_lit(pfx)}" for uri, pfx in CODE_SYSTEMS.items())
    lit = in_list(concept_ids)
    return (f"SELECT patient_id, start AS date, row_id FROM events WHERE patient_id IS NOT NULL AND "
            f"(CASE code.system {cases} ELSE code.system END) || ':' || code.code IN ({lit})")


def patients_with(run_sql: RunSql, concept_ids: list[str]) -> list[dict[str, Any]]:
    """Patients with any of ``concept_ids``: affirmed mentions in their documents or coded rows;
    with first and last date and the number of each kind of evidence."""
    if not concept_ids:
        return []
    lit = in_list(concept_ids)
    return run_sql(f"""
        WITH text AS (SELECT patient_id, date, row_id FROM mentions
                      WHERE patient_id IS NOT NULL AND {_affirmed()} AND concept_id IN ({lit})),
             coded AS ({_coded(concept_ids)})
        SELECT patient_id, min(date) AS first_date, max(date) AS last_date,
               count(*) FILTER (WHERE kind = 'text') AS mentions, count(*) FILTER (WHERE kind = 'coded') AS coded_rows,
               list(row_id ORDER BY date NULLS LAST)[:5] AS evidence
        FROM (SELECT *, 'text' AS kind FROM text UNION ALL SELECT *, 'coded' FROM coded)
        GROUP BY patient_id ORDER BY mentions + coded_rows DESC, patient_id""").to_pylist()


def cooccurring(run_sql: RunSql, concept_ids: list[str], *, limit: int = 20) -> list[dict[str, Any]]:
    """Concepts affirmed in the documents of the patients who have ``concept_ids``, ranked by how
    many of those patients have them."""
    if not concept_ids:
        return []
    lit = in_list(concept_ids)
    return run_sql(f"""
        WITH cohort AS (SELECT DISTINCT patient_id FROM mentions
                        WHERE patient_id IS NOT NULL AND {_affirmed()} AND concept_id IN ({lit}))
        SELECT m.concept_id, any_value(m.label) AS label, count(DISTINCT m.patient_id) AS patients,
               (SELECT count(*) FROM cohort) AS cohort
        FROM mentions m JOIN cohort USING (patient_id)
        WHERE {_affirmed('m')}
              AND m.concept_id NOT IN ({lit})
        GROUP BY m.concept_id ORDER BY patients DESC, m.concept_id LIMIT {int(limit)}""").to_pylist()
