"""The research zone: de-identified copies of the clinical tables, kept in step with them.

``refresh(lake, key)`` writes, for every table of ``RESEARCH_TABLES``, the de-identified version
(:class:`~sagehealth.privacy.structured.RowDeidentifier`) of each clinical row the research
table does not hold yet (research row ids are keyed hashes of the clinical ones, so a refresh is
incremental and idempotent), and removes every row of patients who withdrew research consent
(``consent`` table, latest decision per patient). The caller commits: an ingest run refreshes
the zone before its own commit, so both zones move to the new version together.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from sagehealth.config import is_local
from sagehealth.data.model import ALL_SCHEMAS, RESEARCH_TABLES
from sagehealth.errors import ConfigError
from sagehealth.privacy.structured import RowDeidentifier, known_identifiers

BATCH = 20_000
#: a keyed check value (not the key) that tells a later refresh it has the same key
KEY_CHECK = "deid-key.check"


def check_key(lake: Any, deid: RowDeidentifier) -> None:
    """Refuse a key other than the one the research zone was built with (its pseudonyms would
    not match); the first refresh records the key's check value (an HMAC, not the key)."""
    if not is_local(lake.uri):
        return
    path = Path(lake.uri) / KEY_CHECK
    mark = deid.key_check()
    if path.exists():
        if path.read_text().strip() != mark:
            raise ConfigError(
                "the de-identification key (SAGEHEALTH_DEID_KEY) is not the one this store's research zone "
                f"was built with: its pseudonyms would not match; use the original key ({path} holds its check value)"
            )
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(mark + "\n")
    os.replace(tmp, path)


def withdrawn_patients(lake: Any) -> set[str]:
    """Patients whose latest consent decision refuses research use."""
    rows = lake.table("consent").to_arrow().to_pylist()  # live: includes a decision being written
    latest: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["updated_at"]):
        latest[r["patient_id"]] = r
    return {pid for pid, r in latest.items() if not r["research_allowed"]}


def withdrawn_pseudonyms(lake: Any) -> frozenset[str]:
    """Research pseudonyms of the patients who withdrew (recorded by the refresh that removed them)."""
    try:
        wd = lake.dataset("research_withdrawn")
    except Exception:  # noqa: BLE001 - a store from before the table existed
        return frozenset()
    return frozenset(wd.to_table(columns=["patient_id"]).column("patient_id").to_pylist())


def latest_dates(lake: Any) -> dict[str, Any]:
    """Patient id -> the latest date of the patient's own records (encounters, events,
    documents, death): the date a research-zone age is taken at (see ``RowDeidentifier``)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        parts = []
        for table, cols in (("encounters", ("start", "end")), ("events", ("start", "end")),
                            ("documents", ("date",)), ("patients", ("deceased_at",))):
            con.register(table, lake.table(table).to_lance())
            parts += [f'SELECT patient_id, CAST("{c}" AS DATE) AS d FROM {table} WHERE "{c}" IS NOT NULL'
                      for c in cols]
        rows = con.sql(f"SELECT patient_id, max(d) FROM ({' UNION ALL '.join(parts)}) "
                       "WHERE patient_id IS NOT NULL GROUP BY 1").fetchall()
    finally:
        con.close()
    return {pid: d for pid, d in rows if d is not None}


def _source_batches(lake: Any, table: str, run_id: str | None) -> Any:
    """Record batches of the live clinical table: all rows, or those written by ``run_id``."""
    source = lake.table(table).to_lance()  # the live table: rows of the running ingest too
    if run_id is None:
        return source.to_batches(batch_size=BATCH)
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.register("src", source)
    con.register("prov", lake.table("provenance").to_lance())
    safe = run_id.replace("'", "''")
    rel = con.sql("SELECT src.* FROM src WHERE provenance_id IN "
                  f"(SELECT provenance_id FROM prov WHERE run_id = '{safe}')")
    return rel.to_arrow_reader(BATCH)


#: rows to de-identify in one refresh from which worker processes share the work (a process
#: start and the detector's load cost ~1-2 s each: not worth it for a few rows)
PARALLEL_ROWS = 20_000

#: the de-identifier of a worker process (set by :func:`_init_worker`)
_WORKER: RowDeidentifier | None = None


def _init_worker(key: bytes, reference: Any, latest: dict[str, Any], known: dict[str, Any]) -> None:
    global _WORKER
    _WORKER = RowDeidentifier(key, reference=reference)
    _WORKER.latest, _WORKER.known = latest, known


def _deid_batch(table: str, batch: pa.RecordBatch, deid: RowDeidentifier | None = None) -> pa.Table:
    """The research rows of a batch of clinical rows (in a worker, or in this process)."""
    d = deid or _WORKER
    assert d is not None
    name = f"research_{table}"
    return pa.Table.from_pylist([d.row(table, r) for r in batch.to_pylist()], schema=ALL_SCHEMAS[name])


class _Pool:
    """De-identify batches in this process until :data:`PARALLEL_ROWS` rows have been seen,
    then in as many worker processes as the ingest uses (``$SAGEHEALTH_WORKERS``; started once,
    fed the key and the per-patient tables); results are written in the order the batches
    came, at most ``2 x workers`` batches in flight."""

    def __init__(self, deid: RowDeidentifier) -> None:
        from sagehealth.data.pipeline import default_workers

        self.deid, self.seen, self.n = deid, 0, default_workers()
        self.pool: Any = None

    def submit(self, table: str, batch: pa.RecordBatch) -> Any:
        from concurrent.futures import Future

        self.seen += batch.num_rows
        if self.pool is None and self.n > 1 and self.seen > PARALLEL_ROWS:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            d = self.deid
            self.pool = ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker,
                                            initargs=(d.key, d.reference, d.latest, d.known))
        if self.pool is not None:
            return self.pool.submit(_deid_batch, table, batch)
        done: Future = Future()
        done.set_result(_deid_batch(table, batch, self.deid))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def refresh(lake: Any, key: str | bytes | None = None, *, run_id: str | None = None,
            progress: Callable[[str, int, int], None] | None = None,
            expected: dict[str, int] | None = None) -> dict[str, int]:
    """Bring the research zone up to date with the (uncommitted or committed) clinical tables;
    with ``run_id`` only the rows that ingest run wrote are looked at (the incremental path).
    Rows are streamed in batches; which need de-identifying (new or changed: their keyed ids
    against the research table's) is decided here, the de-identification itself runs in worker
    processes once a refresh is large (:class:`_Pool`). Returns rows added per research table
    (and ``removed`` for withdrawn patients).

    ``progress("research zone", rows looked at, rows to look at)`` is called as batches are
    read; ``expected`` (clinical table -> rows this run wrote) sizes an incremental refresh,
    else every row of the clinical tables is counted."""
    deid = RowDeidentifier(key)
    check_key(lake, deid)
    withdrawn = withdrawn_patients(lake)
    deid.latest = latest_dates(lake)
    deid.known = known_identifiers(lake.table("patients").to_lance().to_table(
        columns=["patient_id", "given_names", "family_name", "identifiers", "telecom"]).to_pylist())
    gone = [deid.pseudonym(p) for p in withdrawn]
    _record_withdrawn(lake, gone)
    added: dict[str, int] = defaultdict(int)
    seen = [0]
    tick: Callable[[int], None] | None = None
    if progress is not None:
        total = sum((expected or {}).get(t, 0) if expected is not None else lake.table(t).count_rows()
                    for t in RESEARCH_TABLES)

        def _tick(n: int) -> None:
            seen[0] += n
            progress("research zone", min(seen[0], total), total)

        tick = _tick
        progress("research zone", 0, total)
    pool = _Pool(deid)
    try:
        for table in RESEARCH_TABLES:
            name = f"research_{table}"
            target = lake.table(name)
            if run_id is None or expected is None or expected.get(table):  # a run that wrote none: nothing new
                added[name] += _refresh_table(lake, table, target, deid, withdrawn, run_id, pool, tick)
            if gone and "patient_id" in ALL_SCHEMAS[name].names and target.count_rows():
                ids = ", ".join("'" + g + "'" for g in gone)
                before = target.count_rows()
                target.delete(f"patient_id IN ({ids})")
                added["removed"] += before - target.count_rows()
    finally:
        pool.close()
    return {k: v for k, v in added.items() if v or k == "removed"}


def _refresh_table(lake: Any, table: str, target: Any, deid: RowDeidentifier, withdrawn: set[str],
                   run_id: str | None, pool: _Pool, tick: Callable[[int], None] | None = None) -> int:
    have: dict[str, str] = {}
    if target.count_rows():
        cur = target.to_arrow().select(["row_id", "provenance_id"])
        have = dict(zip(cur.column("row_id").to_pylist(), cur.column("provenance_id").to_pylist()))
    inflight: list[tuple[Any, list[str]]] = []
    written = 0

    def drain(keep: int) -> None:
        nonlocal written
        while len(inflight) > keep:
            fut, stale = inflight.pop(0)
            written += _write(target, f"research_{table}", fut.result(), stale)

    for rb in _source_batches(lake, table, run_id):
        ids = rb.column("row_id").to_pylist()
        provs = rb.column("provenance_id").to_pylist()
        pats = rb.column("patient_id").to_pylist() if "patient_id" in rb.schema.names else [None] * len(ids)
        take: list[int] = []
        stale: list[str] = []
        for i, (row_id, prov_id, patient) in enumerate(zip(ids, provs, pats)):
            if patient in withdrawn:
                continue
            rid = deid.key_of("row_id", row_id)
            prov = deid.key_of("provenance_id", prov_id) if prov_id else None
            if rid in have:
                if have[rid] == prov:
                    continue
                stale.append(rid)  # the clinical row was replaced by a newer version
            have[rid] = prov or ""
            take.append(i)
        if take:
            inflight.append((pool.submit(table, rb.take(pa.array(take))), stale))
            drain(2 * max(1, pool.n))
        if tick is not None:
            tick(len(ids))
    drain(0)
    return written


def _record_withdrawn(lake: Any, pseudonyms: list[str]) -> None:
    """Keep ``research_withdrawn`` equal to the pseudonyms of the withdrawn patients."""
    from datetime import UTC, datetime

    tbl = lake.table("research_withdrawn")
    have = set(tbl.to_arrow().column("patient_id").to_pylist()) if tbl.count_rows() else set()
    if have == set(pseudonyms):
        return
    if have:
        tbl.delete("true")
    if pseudonyms:
        now = datetime.now(UTC)
        tbl.add(pa.Table.from_pylist([{"patient_id": p, "withdrawn_at": now} for p in pseudonyms],
                                     schema=ALL_SCHEMAS["research_withdrawn"]))


def _write(target: Any, name: str, rows: pa.Table, stale: list[str]) -> int:
    if stale:
        ids = ", ".join("'" + r + "'" for r in stale)
        target.delete(f"row_id IN ({ids})")
    target.add(rows)
    return rows.num_rows
