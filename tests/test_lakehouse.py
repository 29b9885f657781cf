"""The lakehouse: tables, global versions, time travel, SQL, rollback of uncommitted writes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sagehealth.data.lakehouse import Lakehouse
from sagehealth.data.model import ALL_SCHEMAS, SCHEMAS, row_id
from sagehealth.errors import QueryError, StoreError, VersionNotFound


def _patients(*ids: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"row_id": row_id("patients", "t", i), "patient_id": i, "gender": "female"} for i in ids],
        schema=SCHEMAS["patients"],
    )


def test_new_store_has_every_table_and_version_1(tmp_path):
    lake = Lakehouse(str(tmp_path))
    assert set(lake.db.list_tables().tables) == set(ALL_SCHEMAS)
    assert [c.version for c in lake.commits()] == [1]
    assert lake.count("patients") == 0
    # reopening does not add a commit
    assert [c.version for c in Lakehouse(str(tmp_path)).commits()] == [1]


def test_commit_pins_versions_and_time_travel_reads_old_data(tmp_path):
    lake = Lakehouse(str(tmp_path))
    lake.table("patients").add(_patients("a", "b"))
    v2 = lake.commit("two patients", run_id="r1", summary={"records_in": 2})
    lake.table("patients").add(_patients("c"))
    v3 = lake.commit("third", run_id="r2", summary={})
    assert (v2.version, v3.version) == (2, 3)
    assert lake.count("patients", 2) == 2
    assert lake.count("patients") == 3
    assert lake.sql("SELECT count(*) AS n FROM patients", 2).to_pylist() == [{"n": 2}]
    assert lake.resolve(2).message == "two patients"
    assert lake.resolve(2).summary == {"records_in": 2}
    with pytest.raises(VersionNotFound, match="version 9 does not exist"):
        lake.sql("SELECT 1", 9)


def test_uncommitted_writes_are_invisible_and_rolled_back(tmp_path):
    lake = Lakehouse(str(tmp_path))
    lake.table("patients").add(_patients("a"))
    lake.commit("one", run_id=None, summary={})
    lake.table("patients").add(_patients("b", "c"))  # a writer that never commits
    assert lake.count("patients") == 1  # readers see the committed version only
    fresh = Lakehouse(str(tmp_path))
    assert fresh.rollback_uncommitted() == ["patients"]
    fresh.table("patients").add(_patients("d"))
    fresh.commit("after crash", run_id=None, summary={})
    ids = sorted(fresh.read("patients", columns=["patient_id"]).column(0).to_pylist())
    assert ids == ["a", "d"]


def test_sql_errors_are_query_errors(tmp_path):
    lake = Lakehouse(str(tmp_path))
    with pytest.raises(QueryError, match="nope"):
        lake.sql("SELECT * FROM nope")
    with pytest.raises(StoreError, match="unknown table"):
        lake.table("nope")


def test_sql_filters_on_struct_fields(tmp_path):
    """DuckDB pushes ``code.code = ...`` down to Lance, which refuses nested filters: the query
    still answers (the table is read whole and filtered by DuckDB)."""
    lake = Lakehouse(str(tmp_path))
    rows = [{"row_id": row_id("events", "t", str(i)), "patient_id": "a", "kind": "condition",
             "code": {"system": "http://snomed.info/sct", "code": c, "display": d}}
            for i, (c, d) in enumerate([("44054006", "Diabetes"), ("38341003", "Hypertension")])]
    lake.table("events").add(pa.Table.from_pylist(rows, schema=SCHEMAS["events"]))
    lake.commit("two events", run_id=None, summary={})
    got = lake.sql("SELECT code.display AS d FROM events WHERE code.code = '44054006'").to_pylist()
    assert got == [{"d": "Diabetes"}]
    assert lake.sql("SELECT count(*) AS n FROM events WHERE kind = 'condition' AND code.system LIKE '%snomed%'"
                    ).to_pylist() == [{"n": 2}]


def test_write_lock_is_exclusive(tmp_path):
    from sagehealth.errors import StoreLocked

    lake = Lakehouse(str(tmp_path))
    other = Lakehouse(str(tmp_path))
    with lake.write_lock():
        with pytest.raises(StoreLocked):
            with other.write_lock():
                pass
    with other.write_lock():
        pass


def test_optimize_compacts_small_files_into_a_new_version_with_the_same_data(eco, samples):
    """Every ingest writes fragments; optimize merges them as one new version: the same rows,
    the earlier version still readable as it was, nothing to do the second time, and only a
    data steward may run it (a refusal is audited)."""
    from sagehealth.errors import AccessDenied
    from sagehealth.governance import Principal

    for path in [*sorted((samples / "fhir").glob("*.json")), samples / "notes" / "mtsamples_sample.csv"]:
        eco.ingest([path])  # one ingest per file: each writes its own fragments
    before = eco.versions()[-1].version
    counts = eco.tables()
    frags = {n: len(eco.lake.dataset(n).get_fragments()) for n in ("patients", "events", "provenance")}
    assert all(f >= 2 for f in frags.values()), frags
    rows = eco.lake.read("events").sort_by("row_id")
    with pytest.raises(AccessDenied):
        eco.as_principal(Principal("re", "researcher", "research")).optimize()
    last = eco.as_principal(Principal("au", "auditor", "audit")).audit_entries()[-1]
    assert (last.allowed, last.action, last.user) == (False, "configure", "re")
    removed = eco.optimize()
    assert {"patients", "events", "provenance"} <= set(removed)
    assert eco.versions()[-1].version == before + 1 and eco.versions()[-1].message.startswith("optimize")
    assert eco.tables() == counts
    assert eco.lake.read("events").sort_by("row_id").equals(rows)
    assert len(eco.lake.dataset("events").get_fragments()) == 1
    assert len(eco.lake.dataset("events", before).get_fragments()) == frags["events"]
    assert eco.lake.read("events", before).sort_by("row_id").equals(rows)
    assert eco.optimize() == {} and eco.versions()[-1].version == before + 1
