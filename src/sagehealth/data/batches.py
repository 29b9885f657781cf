"""Turning reader items into Arrow batches: the unit of work of the ingest pipeline.

:func:`encode` takes the items a reader produced for one slice of one file and returns a
:class:`Chunk`: one Arrow table per lakehouse table (each row tagged with ``_rec``, the index of
its input record in the slice), the provenance rows, the bad records, and what the pipeline must
check before it keeps a record (the patients each record requires, the patients it defines).
Encoding runs in the main process or in worker processes (it is picklable both ways); the
pipeline only filters, de-duplicates and writes the batches it gets back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from typing import Any

import pyarrow as pa

from sagehealth.config import PIPELINE_VERSION
from sagehealth.data.model import ALL_SCHEMAS, stable_id
from sagehealth.data.sources.base import Bad, Item, clip

REC = "_rec"
#: the schema of each table as a batch: the table's columns plus ``_rec``
BATCH_SCHEMAS: dict[str, pa.Schema] = {
    name: schema.append(pa.field(REC, pa.int32())) for name, schema in ALL_SCHEMAS.items()
}


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What provenance needs to know about the file being read."""

    source_uri: str
    source_sha256: str
    reader: str
    reader_version: str
    source_system: str
    run_id: str
    ingested_at: datetime


@dataclass
class Chunk:
    """One encoded slice of a file."""

    records: int = 0
    tables: dict[str, pa.Table] = field(default_factory=dict)
    provenance: pa.Table | None = None
    bad: list[Bad] = field(default_factory=list)
    requires: dict[int, tuple[str, ...]] = field(default_factory=dict)
    patients: list[dict[str, Any]] = field(default_factory=list)
    locators: dict[int, str] = field(default_factory=dict)  # for records with requires
    last_locator: str | None = None


def provenance_id(source_sha256: str, locator: str) -> str:
    """The id of the provenance row of one input record (stable across runs)."""
    return "prv_" + stable_id(source_sha256, locator)


#: what pyarrow raises when a value does not fit its column
ARROW_VALUE_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                      OverflowError, TypeError, ValueError)


def encode(items: list[Item], meta: FileMeta) -> Chunk:
    """Encode a slice of reader items into Arrow batches (see the module docstring).

    A record whose rows do not fit the model's schema (a reader let a wrongly typed value
    through) becomes a :class:`Bad` naming the table and the error; the rest of the slice is
    kept.
    """
    chunk = Chunk(records=len(items), last_locator=items[-1].locator if items else None)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    prov: list[dict[str, Any]] = []
    sha, system = meta.source_sha256, meta.source_system
    for idx, item in enumerate(items):
        if isinstance(item, Bad):
            chunk.bad.append(item)
            continue
        pid = provenance_id(sha, item.locator)
        prov.append({
            "provenance_id": pid, "source_uri": meta.source_uri, "source_sha256": sha,
            "locator": item.locator,
            "record_sha256": sha256(item.content).hexdigest() if item.content is not None else None,
            "reader": meta.reader, "reader_version": meta.reader_version,
            "pipeline_version": PIPELINE_VERSION, "run_id": meta.run_id,
            "ingested_at": meta.ingested_at, REC: idx,
        })
        if item.requires:
            chunk.requires[idx] = item.requires
            chunk.locators[idx] = item.locator
        for table, row in item.rows:
            row["provenance_id"] = pid
            if not row.get("source_system"):
                row["source_system"] = system
            row[REC] = idx
            rows[table].append(row)
            if table == "patients":
                chunk.patients.append(
                    {"patient_id": row["patient_id"], "identifiers": row.get("identifiers")}
                )
    try:
        chunk.tables = {t: pa.Table.from_pylist(r, schema=BATCH_SCHEMAS[t]) for t, r in rows.items()}
    except (*ARROW_VALUE_ERRORS, KeyError) as exc:
        misfits = _misfits(items)
        if not misfits:  # not a value problem: a bug, let it surface
            raise RuntimeError(f"cannot encode a batch of {meta.source_uri}: {exc}") from exc
        return encode([Bad(it.locator, misfits[i], clip(it.content)) if i in misfits else it
                       for i, it in enumerate(items)], meta)
    if prov:
        chunk.provenance = pa.Table.from_pylist(prov, schema=BATCH_SCHEMAS["provenance"])
    return chunk


def _misfits(items: list[Item]) -> dict[int, str]:
    """Records (by index) with a row that does not fit its table's schema, and why (rows of
    a table whose batch does not convert are converted one at a time to find the culprits)."""
    by_table: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for idx, item in enumerate(items):
        if not isinstance(item, Bad):
            for table, row in item.rows:
                by_table[table].append((idx, row))
    out: dict[int, str] = {}
    for table, pairs in by_table.items():
        schema = ALL_SCHEMAS.get(table)
        if schema is None:
            for idx, _ in pairs:
                out.setdefault(idx, f"reader produced a row for unknown table {table!r}")
            continue
        try:
            pa.Table.from_pylist([r for _, r in pairs], schema=schema)
            continue
        except ARROW_VALUE_ERRORS:
            pass
        for idx, row in pairs:
            for fld in schema:
                try:
                    pa.array([row.get(fld.name)], type=fld.type)
                except ARROW_VALUE_ERRORS as exc:
                    out.setdefault(idx, f"{table}.{fld.name}: value {row.get(fld.name)!r:.80} "
                                        f"does not fit {fld.type} ({exc})")
                    break
    return out


# -- worker processes (imported by the spawned workers: keep this module's imports light) --

_READERS: dict[str, Any] = {}


def init_worker() -> None:
    """Worker start-up: no cyclic GC (the work makes no reference cycles)."""
    import gc

    gc.disable()


def work(fmt: str, unit: Any, options: dict[str, Any], meta: FileMeta) -> Chunk:
    """Read, validate, map and encode one slice of a file (runs in a worker process)."""
    from sagehealth.data.detect import reader_for

    reader = _READERS.get(fmt)
    if reader is None:
        reader = _READERS[fmt] = reader_for(fmt)
    return encode(list(reader.read_unit(unit, options)), meta)
