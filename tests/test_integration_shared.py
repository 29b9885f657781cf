"""Integration: ingest all of ../shared/data in one run and check the accounting end to end.

Skips when the shared data is absent (a fresh clone elsewhere). Per-format record counts are
checked against the files by each reader's own tests; here the whole pipeline is checked:
every record is ingested or quarantined with a reason, every row traces to provenance, the
sources table agrees with the summary, and re-ingesting adds nothing.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sagehealth import Ecosystem
from helpers import STEWARD, clinician_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, request):
    from conftest import SHARED

    if not SHARED.is_dir():
        pytest.skip(f"shared data not present at {SHARED}")
    eco = Ecosystem.open(tmp_path_factory.mktemp("all") / "store", STEWARD)
    summary = eco.ingest([SHARED], message="all shared data")
    return eco, summary, SHARED


def test_every_record_is_ingested_or_quarantined(ingested):
    eco, s, _ = ingested
    assert s.records_in == s.ingested + s.quarantined
    for f in s.files:
        assert f.skipped or f.records_in == f.ingested + f.quarantined, f.uri
    by_format = Counter()
    quarantined = Counter()
    for f in s.files:
        by_format[f.format] += f.records_in
        quarantined[f.format] += f.quarantined
    # FHIR: 7,160 bulk resources + 2,718 bundle entries; OMOP and MIMIC rows (see their tests)
    assert by_format["fhir"] == 9_878 and quarantined["fhir"] == 0
    assert by_format["omop"] == 23_031 and quarantined["omop"] == 0
    assert by_format["mimic"] == 149_955 and quarantined["mimic"] == 0
    assert by_format["literature"] == 5_183 + 1_000
    assert by_format["vcf"] == 2_567


def test_the_store_agrees_with_the_summary(ingested):
    eco, s, _ = ingested
    counts = eco.tables()
    for table, n in s.rows.items():
        assert counts[table] == n, table
    assert counts["quarantine"] == s.quarantined
    src = eco.lake.sql("SELECT sum(records_in) AS r, sum(quarantined) AS q, count(*) AS files FROM sources"
                  ).to_pylist()[0]
    assert (src["r"], src["q"]) == (s.records_in, s.quarantined)
    assert src["files"] == sum(1 for f in s.files if not f.skipped)
    assert eco.versions()[-1].summary["records_in"] == s.records_in


def test_every_row_traces_to_a_provenance_record(ingested):
    eco, _, _ = ingested
    for table in ("patients", "encounters", "events", "documents", "imaging_instances",
                  "variants", "literature", "claims", "directory"):
        orphans = eco.lake.sql(
            f"SELECT count(*) AS n FROM {table} t ANTI JOIN provenance p USING (provenance_id)"
        ).to_pylist()[0]["n"]
        assert orphans == 0, table
    assert eco.lake.sql("SELECT count(*) AS n FROM quarantine WHERE reason IS NULL OR locator IS NULL"
                   ).to_pylist()[0]["n"] == 0


def test_cross_source_questions_answer_from_sql(ingested):
    eco, _, _ = ingested
    per_source = {r["source_system"]: r["n"] for r in eco.lake.sql(
        "SELECT source_system, count(*) AS n FROM patients GROUP BY 1").to_pylist()}
    assert per_source == {"fhir": 25, "omop": 28, "mimic-iv": 100}
    labs = eco.lake.sql("""SELECT count(*) AS n FROM events
                      WHERE kind = 'observation' AND value_num IS NOT NULL AND unit IS NOT NULL""").to_pylist()
    assert labs[0]["n"] > 100_000
    # every FHIR DocumentReference note decoded to text, with sections
    docs = eco.lake.sql("""SELECT count(*) AS n, count(text) AS t, sum(CASE WHEN len(sections) > 0 THEN 1 END) AS s
                      FROM documents WHERE source_system = 'fhir'""").to_pylist()[0]
    assert docs["n"] == docs["t"] == docs["s"] == 1_215


def test_reingesting_everything_adds_nothing(ingested):
    eco, s, shared = ingested
    before = eco.versions()[-1].version
    again = eco.ingest([shared])
    assert again.version == before and again.records_in == 0
    assert all(f.skipped for f in again.files)


def test_trace_of_a_mimic_lab_points_at_its_csv_row(ingested):
    eco, _, shared = ingested
    row = eco.lake.sql("""SELECT row_id FROM events WHERE source_system LIKE 'mimic%'
                     AND category = 'laboratory' ORDER BY row_id LIMIT 1""").to_pylist()[0]
    prov = clinician_of(eco).trace(row["row_id"])["provenance"]
    assert prov["source_uri"].endswith("hosp/labevents.csv.gz")
    assert prov["locator"].startswith("row:") and len(prov["source_sha256"]) == 64
    assert json.dumps(prov, default=str)


def test_mimic_transfers_and_icu_stays_belong_to_their_admission(ingested):
    eco, _, _ = ingested
    rows = {r["class_code"]: r for r in eco.lake.sql(
        """SELECT class_code, count(*) AS n, count(part_of) AS linked FROM encounters
           WHERE source_system = 'mimic-iv' GROUP BY 1""").to_pylist()}
    assert rows["ICU"]["n"] == rows["ICU"]["linked"] == 140
    assert rows["transfer"]["linked"] > 1_000  # ED-only transfers have no admission
    dangling = eco.lake.sql("""SELECT count(*) AS n FROM encounters c
                          ANTI JOIN encounters a ON c.part_of = a.encounter_id
                          WHERE c.part_of IS NOT NULL""").to_pylist()[0]["n"]
    assert dangling == 0
