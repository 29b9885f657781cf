"""The concept tables in the lakehouse and the hierarchy queries over them.

``load(lake, paths)`` reads vocabulary files (:mod:`sagehealth.knowledge.vocab`), merges them
with what the store already holds (a concept met again keeps its label and gains synonyms and
parents; crosswalk links are de-duplicated) and writes ``concepts`` and ``concept_links``
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
from sagehealth.errors import SourceNotFound, VocabularyError
from sagehealth.knowledge.vocab import Concept, Link, merge, read_vocabulary

RunSql = Callable[[str], pa.Table]


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


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
            try:
                merge(read_vocabulary(f), new_c, new_l)
            except VocabularyError:
                if path.is_dir():  # a folder may hold licences, READMEs...
                    continue
                raise
            for cid in new_c:
                sources.setdefault(cid, f.resolve().as_uri())
            merge(iter([*new_c.values(), *new_l.values()]), concepts, links)
            files[str(f)] = {"concepts": len(new_c), "links": len(new_l),
                             "new_concepts": len(concepts) - before_c, "new_links": len(links) - before_l}
    if not files:
        raise VocabularyError("no vocabulary file found in " + ", ".join(map(str, paths)))
    now = datetime.now(UTC)
    tbl = lake.table("concepts")
    if tbl.count_rows():  # merge with what earlier loads wrote
        old = tbl.to_arrow().to_pylist()
        for r in old:
            if r["concept_id"] in concepts:
                merge(iter([Concept(r["concept_id"], r["system"], r["code"], r["label"], r["synonyms"] or [],
                                    r["parents"] or [], r["definition"])]), concepts, {})
                sources[r["concept_id"]] = r["source_uri"]
        ids = list(concepts)
        for i in range(0, len(ids), 2000):
            tbl.delete("concept_id IN (" + ", ".join(_lit(c) for c in ids[i:i + 2000]) + ")")
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
