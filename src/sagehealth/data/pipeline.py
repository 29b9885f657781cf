"""The ingest pipeline: plan the inputs, stream every reader, quarantine bad records, write
batches to the lakehouse and commit the run as one new version.

Accounting: every input record is either ingested (it gave zero or more rows) or quarantined
with its reason and locator, so ``records_in == ingested + quarantined`` for each file and for
the run. Files whose sha256 is already in the store are skipped (idempotent by content); rows
keep stable ids, so an updated export of the same records replaces them (upsert). A run killed
before its commit leaves the previous version as it was; the next writer rolls back the
uncommitted table versions and a rerun of the same command does the whole job again.

Work is done in slices of a file (:mod:`sagehealth.data.batches`). Readers that can split a
file into independent slices (FHIR NDJSON) have large files read, validated, mapped and
encoded to Arrow in worker processes, in order, with a bounded number of slices in flight;
the main process keeps the run's state (known patients, row ids seen, quarantine) and a
background thread writes batches to Lance.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from sagehealth.data.batches import REC, Chunk, FileMeta, encode, init_worker, work
from sagehealth.data.detect import plan_inputs
from sagehealth.data.lakehouse import Lakehouse
from sagehealth.data.model import ALL_SCHEMAS, SCHEMAS, row_id
from sagehealth.data.sources.base import Item, Reader, ReadContext, clip, sha256_file
from sagehealth.errors import SourceNotFound

#: rows buffered per table before a write (large-text and image tables flush sooner)
BATCH_ROWS = int(os.environ.get("SAGEHEALTH_BATCH_ROWS", "50000"))
BATCH_ROWS_SMALL = {"documents": min(BATCH_ROWS, 2_000), "imaging_instances": min(BATCH_ROWS, 500),
                    "literature": min(BATCH_ROWS, 5_000)}
#: items per slice when a reader is read in the main process
SLICE_ITEMS = 2_000
#: files at least this large are read by worker processes when their reader can split them
PARALLEL_MIN_BYTES = int(os.environ.get("SAGEHEALTH_PARALLEL_MIN_BYTES", str(32 << 20)))


def default_workers() -> int:
    """Worker processes for splittable files and large research refreshes: $SAGEHEALTH_WORKERS,
    else the cores this process may run on (max 8)."""
    env = os.environ.get("SAGEHEALTH_WORKERS")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, int(env)) if env else min(8, cores)


def indexing_on(options: dict[str, Any] | None) -> bool:
    """Whether an ingest chunks and embeds: the ``index`` option, else ``$SAGEHEALTH_INDEX``
    (on by default)."""
    flag = (options or {}).get("index")
    if flag is None:
        flag = os.environ.get("SAGEHEALTH_INDEX", "1").lower() not in ("0", "false", "no", "off")
    return bool(flag)


class Progress(Protocol):
    """What the pipeline reports while it works (the CLI draws it as progress bars)."""

    def start(self, total_bytes: int, files: int) -> None: ...
    def file(self, uri: str) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    # optional: ``stage(name, done, total)`` for the stages after the files (embedding)


class _NoProgress:
    def start(self, total_bytes: int, files: int) -> None:
        pass

    def file(self, uri: str) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


@dataclass
class FileSummary:
    """What one input file gave."""

    uri: str
    format: str
    sha256: str
    records_in: int = 0
    ingested: int = 0
    quarantined: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None
    size_bytes: int = 0


@dataclass
class IngestSummary:
    """What one ingest run did; ``to_dict`` is the ``--json`` output."""

    run_id: str
    version: int | None
    message: str
    records_in: int = 0
    ingested: int = 0
    quarantined: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: list[FileSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    research: dict[str, int] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files_ingested"] = sum(1 for f in self.files if not f.skipped)
        d["files_skipped"] = sum(1 for f in self.files if f.skipped)
        return d


@dataclass
class _Held:
    """Records of one slice whose patients were not known yet (resolved at the end)."""

    tables: dict[str, pa.Table]
    provenance: pa.Table | None
    requires: dict[int, tuple[str, ...]]
    locators: dict[int, str]
    meta: FileMeta
    fs: FileSummary


class IngestRun:
    """One ingest run over some inputs, committed as one version of the lakehouse."""

    def __init__(
        self,
        lake: Lakehouse,
        *,
        message: str | None = None,
        options: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.lake = lake
        self.options = options or {}
        self.progress = progress or _NoProgress()
        self.run_id = f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.message = message or ""
        self.now = datetime.now(UTC)
        self.workers = int(self.options.get("workers", default_workers()))
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self._buffered: dict[str, int] = defaultdict(int)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._upsert: dict[str, bool] = {}
        self._written: dict[str, int] = defaultdict(int)
        self._held: list[_Held] = []
        self._quarantined_rows: list[dict[str, Any]] = []
        self._patients: set[str] = set()
        self._identifiers: dict[str, str | None] = {}
        self._done: dict[str, str] = {}
        self._writer = _Writer()
        self._pool: ProcessPoolExecutor | None = None

    # -- public -----------------------------------------------------------------------
    def ingest(self, paths: Iterable[str | Path], fmt: str = "auto") -> IngestSummary:
        """Ingest ``paths`` (files or folders) and commit them as one new version."""
        # The run holds many small, acyclic objects (buffered rows, id sets): the cyclic
        # garbage collector would rescan them over and over (measured: 40% of ingest time).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._ingest(paths, fmt)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if was_enabled:
                gc.enable()

    # -- the run ----------------------------------------------------------------------
    def _ingest(self, paths: Iterable[str | Path], fmt: str) -> IngestSummary:
        start = time.perf_counter()
        paths = [Path(p).expanduser() for p in paths]
        for p in paths:
            if not p.exists():
                raise SourceNotFound(f"{p}: no such file or folder")
        units, warnings = plan_inputs(paths, fmt)
        summary = IngestSummary(self.run_id, None, self.message, warnings=warnings)
        with self.lake.write_lock():
            moved = self.lake.rollback_uncommitted()
            if moved:
                summary.warnings.append(
                    "rolled back uncommitted writes of an interrupted run in: " + ", ".join(moved)
                )
            self._load_state()
            self.progress.start(sum(f.stat().st_size for _, f in units), len(units))
            for reader, path in units:
                summary.files.append(self._ingest_file(reader, path, summary))
            self._resolve_held(summary)
            for fs in summary.files:
                if not fs.skipped and fs.records_in == 0:
                    fs.skipped = "no records in this file"
                if not fs.skipped:
                    self._add_rows("sources", [{
                        "source_uri": fs.uri, "sha256": fs.sha256, "size_bytes": fs.size_bytes,
                        "format": fs.format, "run_id": self.run_id, "records_in": fs.records_in,
                        "rows_written": sum(fs.rows.values()), "quarantined": fs.quarantined,
                        "ingested_at": self.now,
                    }])
            self._add_rows("quarantine", self._quarantined_rows)
            self._flush_all()
            if any(not f.skipped for f in summary.files):
                self._refresh_research(summary)
                self._refresh_index(summary)
            summary.rows = {t: n for t, n in sorted(self._written.items()) if n}
            summary.seconds = round(time.perf_counter() - start, 3)
            if not self.message:  # file names can name patients: say how many and what, not which
                done = [f for f in summary.files if not f.skipped]
                kinds = ", ".join(sorted({f.format for f in done})) or "nothing new"
                summary.message = self.message = f"ingest {len(done)} file{'s' if len(done) != 1 else ''} ({kinds})"
            if any(not f.skipped for f in summary.files):
                commit = self.lake.commit(self.message, run_id=self.run_id, summary=summary.to_dict())
                summary.version = commit.version
            else:
                summary.version = self.lake.head().version
                summary.warnings.append("nothing new to ingest: no new version was created")
        return summary

    def _refresh_research(self, summary: IngestSummary) -> None:
        """De-identify the new rows into the research zone (needs the de-identification key)."""
        from sagehealth.privacy.deid.transform import KEY_ENV

        if self.options.get("research") is False:  # e.g. a public evaluation corpus
            return
        key = self.options.get("deid_key") or os.environ.get(KEY_ENV)
        if not key:
            summary.warnings.append(
                f"research zone not refreshed: set {KEY_ENV} (the de-identification key)")
            return
        from sagehealth.privacy.research import refresh

        summary.research = refresh(self.lake, key, run_id=self.run_id, progress=getattr(self.progress, "stage", None),
                                   expected=dict(self._written))

    def _refresh_index(self, summary: IngestSummary) -> None:
        """Chunk, embed and index the new documents of both zones (``index`` option, else
        ``$SAGEHEALTH_INDEX``, on by default; the embedder from ``embedder`` or
        ``$SAGEHEALTH_EMBEDDER``)."""
        if not indexing_on(self.options):
            return
        from sagehealth.retrieval.embedders import chosen
        from sagehealth.retrieval.index import refresh_chunks, stored_embedder

        from sagehealth.knowledge.linking import refresh_mentions

        # chunks only: the vectors follow after the commit (Ecosystem._embed), so the data and
        # its BM25 index are committed without waiting for the embedder
        summary.index = refresh_chunks(self.lake, chosen(self.options.get("embedder"), stored_embedder(self.lake)),
                                       embed=False, chunking=getattr(self.progress, "stage", None))
        summary.index["mentions"] = refresh_mentions(self.lake)

    def _load_state(self) -> None:
        """Known file hashes and patients of the committed store."""
        head = self.lake.head()  # one read of the commit log for all that follows
        src = self.lake.dataset("sources", head).to_table(columns=["sha256", "run_id"])
        self._done = dict(zip(src.column("sha256").to_pylist(), src.column("run_id").to_pylist()))
        pats = self.lake.dataset("patients", head).to_table(columns=["patient_id", "identifiers"])
        for p in pats.to_pylist():
            self._register_patient(p)
        for name in ALL_SCHEMAS:
            if name != "commits":
                self._upsert[name] = name in head.table_versions and self.lake.dataset(name, head).count_rows() > 0

    def _register_patient(self, row: dict[str, Any]) -> None:
        """Know a patient id and index its identifier values (ambiguous values link nobody)."""
        pid = row["patient_id"]
        self._patients.add(pid)
        for ident in row.get("identifiers") or []:
            value = ident.get("value")
            if value:
                prev = self._identifiers.get(value, pid)
                self._identifiers[value] = pid if prev == pid else None

    def _find_patient(self, value: str) -> str | None:
        """The patient a DICOM PatientID or VCF sample id names: a patient id, or an
        identifier value held by exactly one patient."""
        if value in self._patients:
            return value
        return self._identifiers.get(value)

    # -- one file ---------------------------------------------------------------------
    def _ingest_file(self, reader: Reader, path: Path, summary: IngestSummary) -> FileSummary:
        uri = path.resolve().as_uri()
        self.progress.file(uri)
        digest = sha256_file(path)
        size = path.stat().st_size
        fs = FileSummary(uri, reader.name, digest, size_bytes=size)
        if digest in self._done:
            fs.skipped = f"already ingested (same sha256) by {self._done[digest]}"
            self.progress.advance(size)
            return fs
        self._done[digest] = self.run_id
        if size == 0:
            summary.warnings.append(f"{uri}: empty file, nothing to ingest")
        consumed = 0

        def on_bytes(n: int) -> None:
            nonlocal consumed
            consumed += n
            self.progress.advance(n)

        ctx = ReadContext(uri, find_patient=self._find_patient, on_bytes=on_bytes, options=self.options)
        meta = FileMeta(uri, digest, reader.name, reader.version, reader.source_system,
                        self.run_id, self.now)
        last = "start of file"
        slices = self._slices(reader, path, ctx, meta)
        while True:
            try:
                piece = next(slices)
            except StopIteration:
                break
            except Exception as exc:  # the reader failed mid-file (truncated gzip, I/O error)
                fs.records_in += 1
                self._quarantine(meta, f"after {last}",
                                 f"file unreadable past this point: {type(exc).__name__}: {exc}",
                                 None, fs)
                break
            # encoding and worker failures are bugs, not bad input: they stop the run uncommitted
            chunk = encode(piece, meta) if isinstance(piece, list) else piece.result()
            last = chunk.last_locator or last
            self._take(chunk, meta, fs)
        if size > consumed:
            self.progress.advance(size - consumed)
        summary.records_in += fs.records_in
        summary.quarantined += fs.quarantined
        summary.ingested += fs.ingested
        return fs

    def _slices(self, reader: Reader, path: Path, ctx: ReadContext,
                meta: FileMeta) -> Iterator[list[Item] | Future[Chunk]]:
        """Slices of one file, in order: futures of slices encoded by worker processes when the
        reader can split the file and it is large, else lists of items read here. Only reading
        raises from here; what was read before a failure is yielded first."""
        split = getattr(reader, "split", None)
        if (split is not None and self.workers > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES
                and reader.splittable(path)):
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=init_worker,
                )
            window: deque[Future[Chunk]] = deque()
            try:
                for unit in split(path, ctx):
                    window.append(self._pool.submit(work, reader.name, unit, self.options, meta))
                    if len(window) >= 2 * self.workers:
                        yield window.popleft()
            finally:
                while window:
                    yield window.popleft()
            return
        batch: list[Item] = []
        try:
            for item in reader.read(path, ctx):
                batch.append(item)
                if len(batch) >= SLICE_ITEMS:
                    yield batch
                    batch = []
        finally:
            if batch:
                yield batch

    # -- slices -----------------------------------------------------------------------
    def _take(self, chunk: Chunk, meta: FileMeta, fs: FileSummary) -> None:
        """Account for an encoded slice; buffer its rows, hold those whose patient is unknown."""
        fs.records_in += chunk.records
        for bad in chunk.bad:
            self._quarantine(meta, bad.locator, bad.reason, bad.raw, fs)
        for p in chunk.patients:
            self._register_patient(p)
        held = {i: req for i, req in chunk.requires.items()
                if any(pid not in self._patients for pid in req)}
        fs.ingested += chunk.records - len(chunk.bad) - len(held)
        tables, prov = chunk.tables, chunk.provenance
        if held:
            ids = pa.array(list(held), pa.int32())
            hold_t = {t: tbl.filter(pc.is_in(tbl[REC], value_set=ids)) for t, tbl in tables.items()}
            tables = {t: tbl.filter(pc.invert(pc.is_in(tbl[REC], value_set=ids))) for t, tbl in tables.items()}
            hold_p = prov.filter(pc.is_in(prov[REC], value_set=ids)) if prov is not None else None
            prov = prov.filter(pc.invert(pc.is_in(prov[REC], value_set=ids))) if prov is not None else None
            self._held.append(_Held(hold_t, hold_p, held,
                                    {i: chunk.locators[i] for i in held}, meta, fs))
        for table, tbl in tables.items():
            self._buffer(table, tbl, fs)
        if prov is not None:
            self._buffer("provenance", prov, None)

    def _resolve_held(self, summary: IngestSummary) -> None:
        """Keep held records whose patients arrived later; quarantine the dangling rest."""
        for h in self._held:
            keep = []
            for i, req in h.requires.items():
                missing = [pid for pid in req if pid not in self._patients]
                if missing:
                    summary.quarantined += 1
                    self._quarantine(
                        h.meta, h.locators[i],
                        "dangling reference: " + ", ".join(f"Patient/{m}" for m in missing)
                        + " is not in the store nor in this ingest", None, h.fs)
                else:
                    keep.append(i)
            if not keep:
                continue
            summary.ingested += len(keep)
            h.fs.ingested += len(keep)
            ids = pa.array(keep, pa.int32())
            for table, tbl in h.tables.items():
                self._buffer(table, tbl.filter(pc.is_in(tbl[REC], value_set=ids)), h.fs)
            if h.provenance is not None:
                self._buffer("provenance", h.provenance.filter(pc.is_in(h.provenance[REC], value_set=ids)), None)
        self._held.clear()

    def _quarantine(self, meta: FileMeta, locator: str, reason: str, raw: str | None,
                    fs: FileSummary) -> None:
        fs.quarantined += 1
        self._quarantined_rows.append({
            "row_id": row_id("quarantine", meta.source_sha256, locator),
            "run_id": self.run_id, "source_uri": meta.source_uri,
            "source_sha256": meta.source_sha256, "locator": locator, "reader": meta.reader,
            "reason": reason, "raw": clip(raw), "quarantined_at": self.now,
        })

    # -- buffering and writing --------------------------------------------------------
    def _buffer(self, table: str, tbl: pa.Table, fs: FileSummary | None) -> None:
        """Buffer a batch: drop rows this run already has (same row id), then ``_rec``."""
        if tbl.num_rows == 0:
            return
        if "row_id" in tbl.column_names:
            seen = self._seen[table]
            ids = tbl.column("row_id").to_pylist()
            fresh = set(ids)
            if len(fresh) == len(ids) and seen.isdisjoint(fresh):
                seen |= fresh
            else:  # keep the first row of each id
                keep = []
                for i, rid in enumerate(ids):
                    if rid not in seen:
                        seen.add(rid)
                        keep.append(i)
                tbl = tbl.take(pa.array(keep, pa.int64()))
        if REC in tbl.column_names:
            tbl = tbl.drop_columns([REC])
        if fs is not None:
            fs.rows[table] = fs.rows.get(table, 0) + tbl.num_rows
        self._buffers[table].append(tbl)
        self._buffered[table] += tbl.num_rows
        if self._buffered[table] >= BATCH_ROWS_SMALL.get(table, BATCH_ROWS):
            self._flush(table)

    def _add_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._buffer(table, pa.Table.from_pylist(rows, schema=ALL_SCHEMAS[table]), None)

    def _flush(self, table: str) -> None:
        parts = self._buffers.pop(table, None)
        self._buffered.pop(table, None)
        if not parts:
            return
        data = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if data.num_rows == 0:
            return
        self._writer.submit(self.lake.table(table), data, self._upsert.get(table, False))
        if table in SCHEMAS:
            self._written[table] += data.num_rows

    def _flush_all(self) -> None:
        for table in list(self._buffers):
            self._flush(table)
        self._writer.drain()


class _Writer:
    """Writes Arrow batches to Lance on one background thread (Lance releases the GIL), so
    reading and mapping go on while a batch is written. At most ``depth`` batches wait."""

    def __init__(self, depth: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lance-writer")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def submit(self, tbl: Any, data: pa.Table, upsert: bool) -> None:
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, tbl, data, upsert))

    @staticmethod
    def _write(tbl: Any, data: pa.Table, upsert: bool) -> None:
        if upsert and "row_id" in data.column_names:
            tbl.merge_insert("row_id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        else:
            tbl.add(data)

    def drain(self) -> None:
        """Wait for every submitted write; re-raises the first failure."""
        while self._pending:
            self._pending.popleft().result()
