"""Helpers shared by the reader tests (importable: the tests folder is on sys.path)."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pyarrow as pa
import pytest

from sagehealth.data.model import SCHEMAS
from sagehealth.governance import Principal
from sagehealth.data.sources.base import Record, open_text

#: ../shared/data, or $SAGEHEALTH_SHARED_DATA
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA")
              or Path(__file__).resolve().parents[2] / "shared" / "data")


def shared_path(rel: str) -> Path:
    """A path under the shared data, or skip the test when it is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared data not present: {p}")
    return p


def rows_of(items: list, table: str) -> list[dict]:
    """The rows of ``table`` in reader items."""
    return [r for it in items if isinstance(it, Record) for t, r in it.rows if t == table]


def validate_rows(items: list) -> None:
    """Every row uses only its table's columns, leaves provenance to the pipeline and fits
    the table's Arrow schema."""
    by: dict[str, list] = {}
    for it in items:
        if isinstance(it, Record):
            for t, r in it.rows:
                assert set(r) <= set(SCHEMAS[t].names), set(r) - set(SCHEMAS[t].names)
                assert "provenance_id" not in r
                by.setdefault(t, []).append(r)
    for t, rs in by.items():
        pa.Table.from_pylist(rs, schema=SCHEMAS[t])


def data_rows(path: Path) -> int:
    """Non-blank data rows of a (possibly gzipped) CSV, counted independently of the readers."""
    with open_text(path) as fh:
        reader = csv.reader(fh)
        next(reader, None)
        return sum(1 for row in reader if row)

#: the data steward the tests ingest as (reads of clinical rows in tests go through ``eco.lake``,
#: the storage layer; the access rules themselves are tested in test_access.py)
STEWARD = Principal("test-steward", "steward", "operations")


def clinician_of(eco, patients=None):  # noqa: ANN001, ANN201 - test helper
    """The same store opened by a clinician whose care team is ``patients`` (default: everyone)."""
    if patients is None:
        patients = eco.lake.read("patients", columns=["patient_id"]).column("patient_id").to_pylist()
    return eco.as_principal(Principal("test-clinician", "clinician", "treatment", patients=frozenset(patients)))


def free_port() -> int:
    """A loopback port nothing listens on (for a test server, or to test a closed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
