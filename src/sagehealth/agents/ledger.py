"""Agent traces and clinician feedback, kept as data: two append-only Lance tables under
``<home>/ledger`` (``traces.lance``, ``feedback.lance``).

They sit beside the versioned clinical tables rather than in them: every answer would
otherwise be a new store version. Each append is still a Lance version of its own, so the
ledger time-travels too. Traces hold the question, the plan, every tool call, the evidence ids,
the model and prompt version, the checks and the timings; feedback rows link to their trace.
Both live in the clinical zone (a clinician's question may name a patient): the library API
decides who reads them (``Ecosystem.traces`` / ``Ecosystem.feedback``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

from sagehealth.config import is_local
from sagehealth.data.sqltext import lit
from sagehealth.errors import StoreError

TRACE_SCHEMA = pa.schema([
    ("trace_id", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("user", pa.string()),
    ("role", pa.string()),
    ("purpose", pa.string()),
    ("question", pa.string()),
    ("patient_id", pa.string()),
    ("provider", pa.string()),
    ("prompt_version", pa.string()),
    ("plan", pa.string()),  # JSON: [{tool, arguments, why}]
    ("tool_calls", pa.string()),  # JSON: [{tool, arguments, ok, error, seconds, result_ids}]
    ("evidence_ids", pa.list_(pa.string())),
    ("answer", pa.string()),
    ("sentences", pa.string()),  # JSON: kept and removed sentences with citations and support
    ("abstained", pa.bool_()),
    ("reason", pa.string()),
    ("checks", pa.string()),  # JSON
    ("timings", pa.string()),  # JSON: seconds per stage
    ("store_version", pa.int64()),
    ("status", pa.string()),  # ok | error
    ("patients", pa.list_(pa.string())),  # every patient the question, evidence or answer is about
])

FEEDBACK_SCHEMA = pa.schema([
    ("feedback_id", pa.string()),
    ("trace_id", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("user", pa.string()),
    ("role", pa.string()),
    ("purpose", pa.string()),
    ("verdict", pa.string()),  # accept | reject | edit
    ("target", pa.string()),  # answer | draft | sentence:<n>
    ("original_text", pa.string()),
    ("edited_text", pa.string()),
    ("reason", pa.string()),
    ("patient_id", pa.string()),
    ("provider", pa.string()),
    ("prompt_version", pa.string()),
    ("evidence_ids", pa.list_(pa.string())),
    ("store_version", pa.int64()),
    ("patients", pa.list_(pa.string())),  # the trace's patients: withdrawal and export filter on them
])

#: radiology sign-offs (issue 17): one row per signature (a second one on a study is an addendum)
SIGNOFF_SCHEMA = pa.schema([
    ("signoff_id", pa.string()),
    ("draft_id", pa.string()),  # the draft's trace id
    ("study_id", pa.string()),
    ("document_id", pa.string()),  # the signed report in the clinical zone
    ("report_version", pa.int32()),  # 1 = first signature, 2.. = addenda
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("drafted_at", pa.timestamp("us", tz="UTC")),
    ("seconds_to_sign", pa.float64()),
    ("user", pa.string()),
    ("role", pa.string()),
    ("patient_id", pa.string()),
    ("provider", pa.string()),
    ("prompt_version", pa.string()),
    ("draft_text", pa.string()),
    ("signed_text", pa.string()),
    ("edit_class", pa.string()),  # none | style | minor | major
    ("edit_distance", pa.int32()),  # words
    ("word_diff", pa.string()),  # JSON: [{op, from, to}]
    ("clinical_changes", pa.string()),  # JSON: {added, removed, flipped}
    ("flags", pa.string()),  # JSON: the checks on the signed report
    ("store_version", pa.int64()),
    ("research", pa.string()),  # copied | withdrawn | no key | no patient consent needed
    ("patients", pa.list_(pa.string())),
])

#: de-identified training pairs from sign-offs (the research side of the loop): findings ->
#: signed impression (``training``), and the draft rejected for the signed text (``preference``)
PAIR_SCHEMA = pa.schema([
    ("pair_id", pa.string()),
    ("kind", pa.string()),  # training | preference
    ("signoff_id", pa.string()),  # keyed
    ("patient", pa.string()),  # research pseudonym (null: a report of no patient)
    ("year", pa.int32()),
    ("prompt", pa.string()),  # de-identified indication + findings
    ("chosen", pa.string()),  # de-identified signed impression
    ("rejected", pa.string()),  # de-identified draft (preference pairs)
    ("edit_class", pa.string()),
    ("provider", pa.string()),
    ("prompt_version", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])

#: the model registry: models adapted from the store's exported datasets
MODEL_SCHEMA = pa.schema([
    ("model_id", pa.string()),
    ("kind", pa.string()),  # embedder | generator
    ("path", pa.string()),
    ("base", pa.string()),
    ("adapter", pa.string()),  # null for a full fine-tune
    ("dataset", pa.string()),  # the export folder trained on
    ("store_version", pa.int64()),  # the store version the dataset was exported from
    ("examples", pa.int64()),
    ("settings", pa.string()),  # JSON
    ("metrics", pa.string()),  # JSON
    ("created_by", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])

TABLES = {"traces": TRACE_SCHEMA, "feedback": FEEDBACK_SCHEMA, "signoffs": SIGNOFF_SCHEMA, "report_pairs": PAIR_SCHEMA,
          "models": MODEL_SCHEMA}
_LOCK = threading.Lock()


class Ledger:
    """The traces and feedback tables of the store at ``uri``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.folder = f"{uri.rstrip('/')}/ledger"

    def _path(self, name: str) -> str:
        if name not in TABLES:
            raise StoreError(f"unknown ledger table {name!r}")
        return f"{self.folder}/{name}.lance"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One appender at a time, across threads and processes (local stores)."""
        with _LOCK:
            if not is_local(self.uri):
                yield
                return
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            fd = os.open(Path(self.folder) / ".append.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def append(self, name: str, row: dict[str, Any]) -> None:
        """Append one row (JSON-encoding dict/list values of string columns)."""
        schema = TABLES[name]
        clean: dict[str, Any] = {}
        for f in schema:
            v = row.get(f.name)
            if pa.types.is_string(f.type) and isinstance(v, (dict, list, tuple)):
                v = json.dumps(v, default=str, ensure_ascii=False)
            clean[f.name] = v
        if clean.get("created_at") is None:
            clean["created_at"] = datetime.now(UTC)
        table = pa.Table.from_pylist([clean], schema=schema)
        path = self._path(name)
        with self._locked():
            try:
                exists = os.path.isdir(path) if is_local(self.uri) else True
                if exists:
                    _add_missing_columns(path, schema)
                lance.write_dataset(table, path, mode="append" if exists else "create")
            except Exception as exc:  # the answer was given: say clearly what was not kept
                raise StoreError(f"cannot append to the {name} ledger at {path}: {exc}") from exc

    def read(self, name: str, *, where: dict[str, str] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of ``name`` (newest first) whose columns equal ``where``'s values."""
        path = self._path(name)
        if is_local(self.uri) and not os.path.isdir(path):
            return []
        flt = " AND ".join(f"{k} = {lit(v)}" for k, v in (where or {}).items()) or None
        try:
            rows = lance.dataset(path).to_table(filter=flt).to_pylist()
        except Exception as exc:
            raise StoreError(f"cannot read the {name} ledger at {path}: {exc}") from exc
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return rows[:limit] if limit is not None else rows

    def get(self, name: str, key: str, value: str) -> dict[str, Any] | None:
        rows = self.read(name, where={key: value}, limit=1)
        return rows[0] if rows else None

    def compact(self) -> None:
        """Merge the small fragments that one-row appends leave behind."""
        for name in TABLES:
            path = self._path(name)
            if is_local(self.uri) and not os.path.isdir(path):
                continue
            with self._locked():
                lance.dataset(path).optimize.compact_files()


def _add_missing_columns(path: str, schema: pa.Schema) -> None:
    """Bring a ledger written by an older release up to ``schema`` (new columns, all null)."""
    try:
        ds = lance.dataset(path)
    except Exception:  # noqa: BLE001 - nothing there yet (another process may be creating it)
        return
    missing = [f for f in schema if f.name not in ds.schema.names]
    if missing:
        ds.add_columns(missing)
