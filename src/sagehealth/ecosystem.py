"""The library API: ``Ecosystem`` is the one object every door (CLI, REST, MCP) calls."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from sagehealth.config import resolve_home
from sagehealth.data.lakehouse import Commit, Lakehouse
from sagehealth.data.model import ALL_SCHEMAS, TABLE_OF_PREFIX
from sagehealth.data.pipeline import IngestRun, IngestSummary, Progress
from sagehealth.errors import RowNotFound
from sagehealth.governance.audit import AuditLog

#: columns left out of ``trace`` output (large or binary)
BULKY = {"thumbnail", "resource_json"}


class Ecosystem:
    """A SAGE-Health store: a versioned lakehouse of the common clinical model.

    >>> eco = Ecosystem.open("./sage-data")          # doctest: +SKIP
    >>> eco.ingest(["bundle.json"]).to_dict()        # doctest: +SKIP
    >>> eco.sql("SELECT count(*) FROM patients")     # doctest: +SKIP
    """

    def __init__(self, lake: Lakehouse) -> None:
        self.lake = lake

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None) -> Ecosystem:
        """Open (creating when new) the store at ``home``, ``$SAGEHEALTH_HOME`` or ./sage-data."""
        return cls(Lakehouse(resolve_home(home)))

    @property
    def home(self) -> str:
        return self.lake.uri

    @property
    def audit(self) -> AuditLog:
        """The store's audit log (``<home>/audit``)."""
        return AuditLog(Path(self.lake.uri) / "audit")

    # -- writing ----------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        format: str = "auto",
        message: str | None = None,
        options: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> IngestSummary:
        """Ingest files or folders as one new version; returns the run summary."""
        run = IngestRun(self.lake, message=message, options=options, progress=progress)
        return run.ingest([Path(p) for p in paths], format)

    def set_consent(self, patient_id: str, *, research_allowed: bool, note: str = "",
                    key: str | bytes | None = None) -> Commit:
        """Record a research-consent decision; a withdrawal removes the patient from the
        research zone in the same new version (the refresh needs the de-identification key)."""
        from datetime import UTC, datetime

        from sagehealth.privacy.research import refresh

        with self.lake.write_lock():
            self.lake.rollback_uncommitted()
            self.lake.table("consent").add(pa.Table.from_pylist(
                [{"patient_id": patient_id, "research_allowed": research_allowed,
                  "updated_at": datetime.now(UTC), "note": note}], schema=ALL_SCHEMAS["consent"]))
            result = refresh(self.lake, key)
            verb = "grants" if research_allowed else "withdraws"
            return self.lake.commit(f"consent: a patient {verb} research use", run_id=None,
                                    summary={"research": result})

    def refresh_research(self, *, key: str | bytes | None = None) -> dict[str, int]:
        """Bring the research zone up to date (e.g. after setting the key) as a new version."""
        from sagehealth.privacy.research import refresh

        with self.lake.write_lock():
            self.lake.rollback_uncommitted()
            result = refresh(self.lake, key)
            if result:
                self.lake.commit("refresh the research zone", run_id=None, summary={"research": result})
            return result

    def export_deidentified_files(self, paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str],
                                  *, key: str | bytes | None = None) -> list[dict[str, str]]:
        """De-identified copies of DICOM and VCF files (PS3.15 basic profile; keyed sample ids),
        with the same pseudonyms and UIDs as the research tables."""
        from sagehealth.privacy.files import deidentify_files
        from sagehealth.privacy.structured import RowDeidentifier

        index: dict[str, str] = {}
        for p in self.read("patients", columns=["patient_id", "identifiers"]).to_pylist():
            index[p["patient_id"]] = p["patient_id"]
            for ident in p["identifiers"] or []:
                if ident.get("value"):
                    index.setdefault(ident["value"], p["patient_id"])
        return deidentify_files([Path(p) for p in paths], Path(out), RowDeidentifier(key),
                                find_patient=index.get)

    # -- reading ----------------------------------------------------------------------
    def sql(self, query: str, *, version: int | None = None) -> pa.Table:
        """DuckDB SQL over every table as of ``version`` (latest when None)."""
        return self.lake.sql(query, version)

    def read(self, table: str, *, version: int | None = None, **scan: Any) -> pa.Table:
        """One table as of ``version``; ``columns=`` and ``filter=`` are passed to Lance."""
        return self.lake.read(table, version, **scan)

    def tables(self, *, version: int | None = None) -> dict[str, int]:
        """Row count of every table as of ``version``."""
        commit = self.lake.resolve(version)
        return {name: self.lake.dataset(name, commit).count_rows()
                for name in ALL_SCHEMAS if name != "commits" and name in commit.table_versions}

    def versions(self) -> list[Commit]:
        """Every version of the store, oldest first."""
        return self.lake.commits()

    def trace(self, row_id: str, *, version: int | None = None) -> dict[str, Any]:
        """Where a row came from: its table, the row itself and its provenance record."""
        prefix = row_id.split("_", 1)[0]
        table = TABLE_OF_PREFIX.get(prefix)
        if table is None:
            raise RowNotFound(
                f"{row_id!r} is not a row id (row ids start with a table prefix such as pat_, doc_)"
            )
        cols = [c for c in ALL_SCHEMAS[table].names if c not in BULKY]
        rows = self.lake.read(table, version, columns=cols, filter=f"row_id = '{_q(row_id)}'").to_pylist()
        if not rows:
            raise RowNotFound(f"no row {row_id!r} in table {table}")
        row = rows[0]
        out: dict[str, Any] = {"row_id": row_id, "table": table, "row": row}
        if table == "quarantine":
            out["provenance"] = {k: row[k] for k in ("source_uri", "source_sha256", "locator", "reader", "run_id")}
            return out
        prov = self.lake.read("provenance", version, filter=f"provenance_id = '{_q(row['provenance_id'])}'").to_pylist()
        out["provenance"] = prov[0] if prov else None
        return out

    def quarantine(self, *, run_id: str | None = None, version: int | None = None,
                   limit: int | None = None, superseded: bool = False) -> list[dict[str, Any]]:
        """Quarantined records (reason, locator, source, raw), newest first.

        By default only those of each file's latest ingested content: when a corrected file is
        ingested again (same URI, new sha256), the quarantine of its earlier content is
        superseded; it stays in the table and ``superseded=True`` shows it too.
        """
        flt = f"run_id = '{_q(run_id)}'" if run_id else None
        rows = self.lake.read("quarantine", version, filter=flt).to_pylist()
        if not superseded:
            src = self.lake.read("sources", version, columns=["source_uri", "sha256", "ingested_at"])
            latest: dict[str, str] = {}
            for s in sorted(src.to_pylist(), key=lambda r: r["ingested_at"]):
                latest[s["source_uri"]] = s["sha256"]
            rows = [r for r in rows if latest.get(r["source_uri"], r["source_sha256"]) == r["source_sha256"]]
        rows.sort(key=lambda r: (r["quarantined_at"], r["source_uri"], r["locator"]), reverse=True)
        return rows[:limit] if limit else rows


def _q(value: str) -> str:
    """Escape a string literal for a Lance filter."""
    return value.replace("'", "''")
