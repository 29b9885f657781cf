"""The ingest pipeline: plan the inputs, stream every reader, quarantine bad records, write
batches to the lakehouse and commit the run as one new version.

Accounting: every input record is either ingested (it gave zero or more rows) or quarantined
with its reason and locator, so ``records_in == ingested + quarantined`` for each file and for
the run. Files whose sha256 is already in the store are skipped (idempotent by content). A run
killed before its commit leaves the previous version as it was; the next writer rolls back the
uncommitted table versions and a rerun of the same command does the whole job again.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from sagehealth.config import PIPELINE_VERSION
from sagehealth.data.detect import plan_inputs
from sagehealth.data.lakehouse import Lakehouse
from sagehealth.data.model import ALL_SCHEMAS, SCHEMAS, row_id, stable_id
from sagehealth.data.sources.base import Bad, Reader, ReadContext, Record, clip, sha256_file
from sagehealth.errors import SourceNotFound

#: rows buffered per table before a write (large-text and image tables flush sooner)
BATCH_ROWS = int(os.environ.get("SAGEHEALTH_BATCH_ROWS", "50000"))
BATCH_ROWS_SMALL = {"documents": min(BATCH_ROWS, 2_000), "imaging_instances": min(BATCH_ROWS, 500),
                    "literature": min(BATCH_ROWS, 5_000)}


class Progress(Protocol):
    """What the pipeline reports while it works (the CLI draws it as progress bars)."""

    def start(self, total_bytes: int, files: int) -> None: ...
    def file(self, uri: str) -> None: ...
    def advance(self, nbytes: int) -> None: ...


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
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files_ingested"] = sum(1 for f in self.files if not f.skipped)
        d["files_skipped"] = sum(1 for f in self.files if f.skipped)
        return d


@dataclass(slots=True)
class _Pending:
    record: Record
    prov: dict[str, Any]
    fs: FileSummary
    system: str


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
        self._buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._upsert: dict[str, bool] = {}
        self._written: dict[str, int] = defaultdict(int)
        self._pending: list[_Pending] = []
        self._writer = _Writer()
        self._patients: set[str] = set()
        self._identifiers: dict[str, str] = {}

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
            if was_enabled:
                gc.enable()

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
            self._resolve_pending(summary)
            for fs in summary.files:
                if not fs.skipped:
                    self._add("sources", {
                        "source_uri": fs.uri, "sha256": fs.sha256, "size_bytes": fs.size_bytes,
                        "format": fs.format, "run_id": self.run_id, "records_in": fs.records_in,
                        "rows_written": sum(fs.rows.values()), "quarantined": fs.quarantined,
                        "ingested_at": self.now,
                    })
            self._flush_all()
            summary.rows = {t: n for t, n in sorted(self._written.items()) if n}
            summary.seconds = round(time.perf_counter() - start, 3)
            if not self.message:
                names = ", ".join(sorted({p.name for p in paths}))
                summary.message = self.message = f"ingest {names}"
            written = sum(1 for f in summary.files if not f.skipped)
            if written:
                commit = self.lake.commit(self.message, run_id=self.run_id, summary=summary.to_dict())
                summary.version = commit.version
            else:
                summary.version = self.lake.head().version
                summary.warnings.append("nothing new to ingest: no new version was created")
        return summary

    # -- internals --------------------------------------------------------------------
    def _load_state(self) -> None:
        """Known file hashes and patients of the committed store."""
        src = self.lake.read("sources", columns=["sha256", "run_id"])
        self._done = dict(zip(src.column("sha256").to_pylist(), src.column("run_id").to_pylist()))
        pats = self.lake.read("patients", columns=["patient_id", "identifiers"]).to_pylist()
        for p in pats:
            self._patients.add(p["patient_id"])
            for ident in p["identifiers"] or []:
                if ident.get("value"):
                    self._identifiers.setdefault(ident["value"], p["patient_id"])
        for name in ALL_SCHEMAS:
            if name != "commits":
                self._upsert[name] = self.lake.count(name) > 0

    def _find_patient(self, value: str) -> str | None:
        if value in self._patients:
            return value
        return self._identifiers.get(value)

    def _ingest_file(self, reader: Reader, path: Path, summary: IngestSummary) -> FileSummary:
        uri = path.resolve().as_uri()
        self.progress.file(uri)
        digest = sha256_file(path)
        fs = FileSummary(uri, reader.name, digest)
        if digest in self._done:
            fs.skipped = f"already ingested (same sha256) by {self._done[digest]}"
            self.progress.advance(path.stat().st_size)
            return fs
        self._done[digest] = self.run_id
        if path.stat().st_size == 0:
            summary.warnings.append(f"{uri}: empty file, nothing to ingest")
        consumed = 0

        def on_bytes(n: int) -> None:
            nonlocal consumed
            consumed += n
            self.progress.advance(n)

        ctx = ReadContext(uri, find_patient=self._find_patient, on_bytes=on_bytes, options=self.options)
        meta = {"source_uri": uri, "source_sha256": digest, "reader": reader.name,
                "reader_version": reader.version}
        last = "start of file"
        try:
            for item in reader.read(path, ctx):
                fs.records_in += 1
                last = item.locator
                if isinstance(item, Bad):
                    self._quarantine(meta, item.locator, item.reason, item.raw, fs)
                else:
                    self._accept(item, meta, fs, reader)
        except Exception as exc:  # noqa: BLE001 - a reader failing mid-file must not lose the run
            fs.records_in += 1
            self._quarantine(
                meta, f"after {last}", f"file unreadable past this point: {type(exc).__name__}: {exc}",
                None, fs,
            )
        rest = path.stat().st_size - consumed
        if rest > 0:
            self.progress.advance(rest)
        fs.size_bytes = path.stat().st_size
        summary.records_in += fs.records_in
        summary.quarantined += fs.quarantined
        summary.ingested += fs.ingested
        return fs

    def _provenance(self, meta: dict[str, Any], item: Record) -> dict[str, Any]:
        return {
            "provenance_id": "prv_" + stable_id(meta["source_sha256"], item.locator),
            "source_uri": meta["source_uri"],
            "source_sha256": meta["source_sha256"],
            "locator": item.locator,
            "record_sha256": sha256(item.content).hexdigest() if item.content is not None else None,
            "reader": meta["reader"],
            "reader_version": meta["reader_version"],
            "pipeline_version": PIPELINE_VERSION,
            "run_id": self.run_id,
            "ingested_at": self.now,
        }

    def _accept(self, item: Record, meta: dict[str, Any], fs: FileSummary, reader: Reader) -> None:
        for table, row in item.rows:
            if table == "patients":
                self._patients.add(row["patient_id"])
                for ident in row.get("identifiers") or []:
                    if ident.get("value"):
                        self._identifiers.setdefault(ident["value"], row["patient_id"])
        prov = self._provenance(meta, item)
        if any(pid not in self._patients for pid in item.requires):
            self._pending.append(_Pending(item, prov, fs, reader.source_system))
            return
        self._write_record(item, prov, fs, reader.source_system)

    def _write_record(self, item: Record, prov: dict[str, Any], fs: FileSummary, system: str) -> None:
        fs.ingested += 1
        self._add("provenance", prov)
        pid = prov["provenance_id"]
        for table, row in item.rows:
            row["provenance_id"] = pid
            if not row.get("source_system"):
                row["source_system"] = system
            if self._add(table, row):
                fs.rows[table] = fs.rows.get(table, 0) + 1

    def _quarantine(self, meta: dict[str, Any], locator: str, reason: str, raw: str | None,
                    fs: FileSummary) -> None:
        fs.quarantined += 1
        self._add("quarantine", {
            "row_id": row_id("quarantine", meta["source_sha256"], locator),
            "run_id": self.run_id, "source_uri": meta["source_uri"],
            "source_sha256": meta["source_sha256"], "locator": locator, "reader": meta["reader"],
            "reason": reason, "raw": clip(raw), "quarantined_at": self.now,
        })

    def _resolve_pending(self, summary: IngestSummary) -> None:
        """Write held records whose patients arrived later; quarantine the dangling rest."""
        for p in self._pending:
            missing = [pid for pid in p.record.requires if pid not in self._patients]
            if missing:
                summary.quarantined += 1
                meta = {k: p.prov[k] for k in ("source_uri", "source_sha256", "reader")}
                reason = ("dangling reference: " + ", ".join(f"Patient/{m}" for m in missing)
                          + " is not in the store nor in this ingest")
                self._quarantine(meta, p.record.locator, reason, clip(p.record.content), p.fs)
            else:
                summary.ingested += 1
                self._write_record(p.record, p.prov, p.fs, p.system)
        self._pending.clear()

    def _add(self, table: str, row: dict[str, Any]) -> bool:
        """Buffer a row (False when this run already has a row with its id)."""
        rid = row.get("row_id")
        if rid is not None:
            seen = self._seen[table]
            if rid in seen:
                return False
            seen.add(rid)
        buf = self._buffers[table]
        buf.append(row)
        if len(buf) >= BATCH_ROWS_SMALL.get(table, BATCH_ROWS):
            self._flush(table)
        return True

    def _flush(self, table: str) -> None:
        rows = self._buffers.pop(table, None)
        if not rows:
            return
        data = pa.Table.from_pylist(rows, schema=ALL_SCHEMAS[table])
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
