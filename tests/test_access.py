"""Governance below every door: every role against every kind of data through the library API
(``Ecosystem``), each access audited, clinicians limited to their care team, researchers to
the research zone, SQL sandboxed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagehealth import Ecosystem
from sagehealth.errors import AccessDenied, QueryError, RowNotFound
from sagehealth.governance import Principal
from sagehealth.governance.policy import principal_from_env

KEY = "access-test-key-0123456789"
ROLES = ("clinician", "researcher", "steward", "auditor", None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from sagehealth.demo import sample_root

    root = sample_root()
    home = tmp_path_factory.mktemp("access") / "store"
    steward = Ecosystem.open(home, Principal("st", "steward", "operations"))
    for folder in ("fhir", "dicom", "vcf", "literature", "bad"):
        steward.ingest([root / folder], options={"deid_key": KEY})
    lake = steward.lake
    by_docs = lake.sql("SELECT patient_id FROM documents WHERE patient_id IS NOT NULL "
                       "GROUP BY 1 ORDER BY count(*) DESC").column("patient_id").to_pylist()
    mine, other = by_docs[0], by_docs[1]
    people = {
        "clinician": Principal("dr.a", "clinician", "treatment", patients={mine}),
        "researcher": Principal("re", "researcher", "research"),
        "steward": Principal("st", "steward", "operations"),
        "auditor": Principal("au", "auditor", "audit"),
        None: None,
    }
    return {"eco": steward, "home": home, "root": root, "mine": mine, "other": other, "people": people}


def as_(store, role):
    return Ecosystem(store["eco"].lake, store["people"][role])


def last_entry(store):
    log = store["eco"]._audit  # the raw log (tests read it under the API)
    *_, last = log.entries()
    return last


# operation -> (what it does, roles allowed)
OPS = {
    "sql_clinical": (lambda e, s: e.sql("SELECT patient_id FROM events"), {"clinician", "researcher"}),
    "read_documents": (lambda e, s: e.read("documents"), {"clinician", "researcher"}),
    "read_research_table": (lambda e, s: e.read("research_patients"), {"researcher"}),
    "read_provenance": (lambda e, s: e.read("provenance"), {"steward"}),
    "sql_sources": (lambda e, s: e.sql("SELECT * FROM sources"), {"steward"}),
    "read_consent": (lambda e, s: e.read("consent"), {"steward"}),
    "table_counts": (lambda e, s: e.tables(), {"clinician", "researcher", "steward"}),
    "versions": (lambda e, s: e.versions(), {"clinician", "researcher", "steward"}),
    "quarantine": (lambda e, s: e.quarantine(), {"steward"}),
    "audit_log": (lambda e, s: e.audit_entries(limit=3), {"auditor"}),
    "audit_verify": (lambda e, s: e.verify_audit(), {"auditor"}),
    "ingest": (lambda e, s: e.ingest([s["root"] / "vcf"]), {"steward"}),
    "consent": (lambda e, s: e.set_consent("nobody-1", research_allowed=True, key=KEY), {"steward"}),
    "refresh_research": (lambda e, s: e.refresh_research(key=KEY), {"steward"}),
    "export": (lambda e, s: e.export_deidentified_files([s["root"] / "vcf"], s["home"].parent / "out", key=KEY),
               {"steward"}),
}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "nobody")
@pytest.mark.parametrize("op", list(OPS))
def test_role_matrix_through_the_library(store, op, role):
    fn, allowed_roles = OPS[op]
    eco = as_(store, role)
    if role in allowed_roles:
        fn(eco, store)
        entry = last_entry(store)
        assert entry.allowed and entry.user == (store["people"][role].user)
    else:
        with pytest.raises(AccessDenied) as err:
            fn(eco, store)
        entry = last_entry(store)
        assert not entry.allowed and entry.reason == str(err.value)
        assert entry.user == (store["people"][role].user if role else "(none)")
        if role is None:
            assert "no principal" in str(err.value)


def test_clinician_sees_only_the_care_team(store):
    doc = as_(store, "clinician")
    mine, other = store["mine"], store["other"]
    for table in ("patients", "encounters", "events", "documents", "claims"):
        ids = set(doc.sql(f"SELECT DISTINCT patient_id FROM {table}").column("patient_id").to_pylist())
        assert ids <= {mine}, table
    assert set(doc.read("events", columns=["event_id"]).column_names) == {"event_id"}
    assert doc.read("events", filter=f"patient_id = '{other}'").num_rows == 0
    # a join or subquery cannot reach around the filter
    n = doc.sql(f"SELECT count(*) AS n FROM documents WHERE patient_id IN (SELECT '{other}')")
    assert n.to_pylist() == [{"n": 0}]
    assert last_entry(store).patients == sorted(doc.principal.patients)  # whose rows it could read
    own = doc.sql("SELECT row_id FROM documents LIMIT 1").to_pylist()[0]["row_id"]
    traced = doc.trace(own)
    assert traced["provenance"]["source_uri"].startswith("file://")
    assert last_entry(store).patients == [mine]
    theirs = store["eco"].lake.sql(f"SELECT row_id FROM documents WHERE patient_id = '{other}' LIMIT 1")
    with pytest.raises(RowNotFound, match="no row"):  # answered like a missing row (no oracle)
        doc.trace(theirs.to_pylist()[0]["row_id"])
    assert not last_entry(store).allowed and last_entry(store).patients == [other]
    with pytest.raises(AccessDenied, match="may not read table research_patients"):
        doc.sql("SELECT * FROM research_patients")


def test_researcher_reads_the_research_zone_under_plain_names(store):
    re_ = as_(store, "researcher")
    lake = store["eco"].lake
    clinical_ids = set(lake.sql("SELECT patient_id FROM patients").column("patient_id").to_pylist())
    ids = set(re_.sql("SELECT patient_id FROM patients").column("patient_id").to_pylist())
    assert ids and all(i.startswith("psn_") for i in ids) and not ids & clinical_ids
    assert re_.sql("SELECT count(*) AS n FROM events").to_pylist() == \
        re_.sql("SELECT count(*) AS n FROM research_events").to_pylist()
    counts = re_.tables()
    assert counts["patients"] == len(ids) and not any(k.startswith("research_") for k in counts)
    row = re_.sql("SELECT row_id FROM documents LIMIT 1").to_pylist()[0]["row_id"]
    traced = re_.trace(row)
    assert traced["table"] == "documents" and traced["provenance"] is None
    clinical_row = lake.sql("SELECT row_id FROM documents LIMIT 1").to_pylist()[0]["row_id"]
    with pytest.raises(RowNotFound, match="research zone"):
        re_.trace(clinical_row)
    assert all(v.message == "" and v.summary == {} for v in re_.versions())


def test_steward_traces_quarantine_not_clinical_rows(store):
    st = as_(store, "steward")
    q = st.quarantine()
    assert q and st.trace(q[0]["row_id"])["provenance"]["locator"] == q[0]["locator"]
    row = store["eco"].lake.sql("SELECT row_id FROM patients LIMIT 1").to_pylist()[0]["row_id"]
    with pytest.raises(AccessDenied, match="may not read table patients"):
        st.trace(row)
    assert any(v.message for v in st.versions())


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('{path}')",
    "SELECT * FROM read_json_auto('{path}')",
    "COPY (SELECT 1) TO '{out}'",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "ATTACH '{out}.db' AS x",
])
def test_sql_is_sandboxed(store, query):
    src = next((store["root"] / "fhir").rglob("*.json"))
    out = store["home"].parent / "leak.csv"
    with pytest.raises((QueryError, AccessDenied)):
        as_(store, "researcher").sql(query.format(path=src, out=out))
    assert not out.exists()


def test_principal_from_the_environment(tmp_path):
    f = tmp_path / "team.txt"
    f.write_text("p1\np2\n\n")
    p = principal_from_env({"SAGEHEALTH_ROLE": "clinician", "SAGEHEALTH_USER": "dr.x",
                            "SAGEHEALTH_PATIENTS": f"@{f}"})
    assert (p.user, p.role, p.purpose, p.patients) == ("dr.x", "clinician", "treatment", {"p1", "p2"})
    assert principal_from_env({}) is None
    with pytest.raises(AccessDenied, match="no valid role"):
        principal_from_env({"SAGEHEALTH_ROLE": "root"})
    with pytest.raises(AccessDenied, match="cannot read the care-team list"):
        principal_from_env({"SAGEHEALTH_ROLE": "clinician", "SAGEHEALTH_PATIENTS": "@/no/such/file"})


def test_every_access_is_in_a_verifiable_chain(store):
    au = as_(store, "auditor")
    entries = au.audit_entries()
    assert len(entries) > 20 and {e.allowed for e in entries} == {True, False}
    assert au.verify_audit().ok
    raw = Path(store["home"]) / "audit" / "audit.jsonl"
    assert all(json.loads(line)["hash"] for line in raw.read_text().splitlines())


def test_review_fixes_filter_injection_trace_scope_time_travel_and_failures(store, tmp_path):
    doc = as_(store, "clinician")
    mine = store["mine"]
    # a caller's filter cannot close the access filter's parentheses
    with pytest.raises(QueryError, match="bad filter"):
        doc.read("events", columns=["patient_id"], filter="true) OR (true")  # no longer spliced: invalid
    rows = doc.read("events", columns=["patient_id"], filter="patient_id IS NOT NULL OR true")
    assert set(rows.column("patient_id").to_pylist()) == {mine}
    # failures after an allowed check are audited too
    with pytest.raises(QueryError):
        doc.sql("SELECT no_such_column FROM events")
    last = last_entry(store)
    assert last.allowed and last.reason.startswith("failed:")
    # reaching for files is an attempt, audited as a denial (issue 14, item 13)
    with pytest.raises(AccessDenied):
        doc.sql("SELECT * FROM read_text('/etc/passwd')")
    assert not last_entry(store).allowed
    # the audit log keeps working after a very long entry (a big care team)
    big = Principal("dr.big", "clinician", "treatment", patients=frozenset(f"p{i:06d}" for i in range(5000)) | {mine})
    eco = Ecosystem(store["eco"].lake, big)
    eco.sql("SELECT 1 AS one")
    eco.sql("SELECT 1 AS one")
    assert as_(store, "auditor").verify_audit().ok


def test_withdrawn_patient_is_gone_from_every_version_for_researchers(tmp_path):
    from sagehealth.demo import sample_root
    from sagehealth.privacy.structured import RowDeidentifier

    steward = Ecosystem.open(tmp_path / "s", Principal("st", "steward", "operations"))
    steward.ingest([sample_root() / "fhir"], options={"deid_key": KEY})
    before = steward.versions()[-1].version
    pid = steward.lake.sql("SELECT patient_id FROM events GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
                           ).to_pylist()[0]["patient_id"]
    psn = RowDeidentifier(KEY).pseudonym(pid)
    research = steward.as_principal(Principal("re", "researcher", "research"))
    q = f"SELECT count(*) AS n FROM events WHERE patient_id = '{psn}'"
    assert research.sql(q).to_pylist()[0]["n"] > 0
    steward.set_consent(pid, research_allowed=False, key=KEY)
    assert research.sql(q).to_pylist()[0]["n"] == 0
    assert research.sql(q, version=before).to_pylist()[0]["n"] == 0  # time travel does not bring them back
    assert research.read("patients", version=before, filter=f"patient_id = '{psn}'").num_rows == 0
    steward.set_consent(pid, research_allowed=True, key=KEY)
    assert research.sql(q).to_pylist()[0]["n"] > 0
