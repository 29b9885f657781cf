"""Issue 14's red-team findings on governance, each reproduced first: stewards read operations,
not identities (7); the store is private (10); research ages from the record's own dates (11);
no row-existence oracle (12); sandbox attempts and invalid principals are denials (13); every
door's SQL has a timeout and a memory limit (14); feedback rows name their patients and are
withheld on withdrawal (4)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import STEWARD, note_file

from sagehealth import Ecosystem
from sagehealth.errors import AccessDenied, QueryError, RowNotFound
from sagehealth.governance import Principal

KEY = "trust-tests-key-0123456789abcdef"
AUDITOR = Principal("aud", "auditor", "audit")
RESEARCHER = Principal("rita", "researcher", "research")
FIXTURES = Path(__file__).parent / "fixtures"


def last_entry(eco: Ecosystem):
    return list(eco.as_principal(AUDITOR)._audit.entries())[-1]


def _entries(eco: Ecosystem):
    return list(eco._audit.entries())


# -- 7: stewards see operations, not identities ---------------------------------------------
@pytest.fixture
def fhir_store(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([samples / "fhir", samples / "bad"], options={"deid_key": KEY})
    return eco


def test_stewards_see_source_files_masked_and_quarantine_raw_withheld(fhir_store, samples):
    uris = {r["source_uri"] for r in fhir_store.lake.read("provenance", columns=["source_uri"]).to_pylist()}
    names = {Path(u).name for u in uris}
    assert any(n.endswith(".json") for n in names)            # Synthea file names carry patient names
    seen = fhir_store.sql("SELECT DISTINCT source_uri FROM provenance").column("source_uri").to_pylist()
    assert seen and all(u.startswith("masked:") for u in seen)
    dump = json.dumps(fhir_store.sql("SELECT * FROM sources").to_pylist(), default=str)
    dump += json.dumps(fhir_store.sql("SELECT * FROM quarantine").to_pylist(), default=str)
    dump += json.dumps(fhir_store.sql("SELECT summary FROM commits").to_pylist(), default=str)
    dump += json.dumps([c.summary for c in fhir_store.versions()], default=str)
    dump += json.dumps(fhir_store.read("provenance").to_pylist(), default=str)
    for n in names:
        assert Path(n).stem not in dump, n
    rows = fhir_store.quarantine()
    assert rows and all(r["source_uri"].startswith("masked:") for r in rows)
    assert all(r["raw"].startswith("[withheld") for r in rows if r["raw"] is not None)
    assert any(r["raw"] for r in rows)
    traced = fhir_store.trace(next(r for r in rows if r["raw"])["row_id"])
    assert traced["row"]["raw"].startswith("[withheld") and traced["provenance"]["source_uri"].startswith("masked:")
    # a break-glass read shows the raw content, and the audit log says so
    with pytest.raises(QueryError, match="reason"):
        fhir_store.quarantine(break_glass=" ")
    raw = fhir_store.quarantine(break_glass="INC-7: parser bug")
    assert not any(r["raw"].startswith("[withheld") for r in raw if r["raw"])
    e = last_entry(fhir_store)
    assert e.action == "read_quarantine" and "break-glass" in e.resource and "INC-7" in e.reason
    # the same file gets the same token everywhere (operations still work)
    q = fhir_store.sql("SELECT count(*) AS n FROM provenance p JOIN sources s ON p.source_uri = s.source_uri")
    assert q.column("n")[0].as_py() > 0


# -- 10: the store is private ----------------------------------------------------------------
def test_a_new_store_is_private_and_a_wide_one_is_warned_about(tmp_path, samples):
    old = os.umask(0o022)
    try:
        eco = Ecosystem.open(tmp_path / "new", STEWARD)
        eco.ingest([samples / "notes"])
    finally:
        os.umask(old)
    home = Path(eco.home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    files = [p for p in home.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in files), \
        [(str(p), oct(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077][:3]
    os.chmod(home, 0o755)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Ecosystem.open(home, STEWARD)
    assert any("open to other users" in str(w.message) for w in caught)


# -- 11: ages over 89 from the record's own dates ---------------------------------------------
def _gz_csv(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


def test_mimic_ages_over_89_are_bucketed_at_the_records_own_dates(tmp_path):
    """MIMIC shifts years into the 22nd century: an anchor age of 91 in 2160 was bucketed by
    comparing with today's year, so the research zone showed ages of 90 and more."""
    demo = tmp_path / "mimic"
    shutil.copytree(FIXTURES / "mimic" / "demo", demo)
    rows = _gz_csv(demo / "hosp" / "patients.csv.gz")
    rows[1]["anchor_age"] = "91"                      # 10000002: 91 in 2160, admitted 2164
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with gzip.open(demo / "hosp" / "patients.csv.gz", "wt") as fh:
        fh.write(buf.getvalue())
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([demo], format="mimic", options={"deid_key": KEY})
    research = eco.as_principal(RESEARCHER)
    query = """SELECT p.patient_id, max(year(e.d)) - min(year(p.birth_date)) AS age FROM patients p JOIN (
                   SELECT patient_id, start AS d FROM events UNION ALL SELECT patient_id, start FROM encounters
                   UNION ALL SELECT patient_id, deceased_at FROM patients) e USING (patient_id)
               WHERE p.birth_date IS NOT NULL AND e.d IS NOT NULL GROUP BY 1"""
    ages = research.sql(query).to_pylist()
    assert len(ages) == 2 and max(a["age"] for a in ages) <= 90, ages
    clinical = eco.lake.sql(query).column("age").to_pylist()
    assert max(clinical) > 90                         # the clinical zone keeps the true age


# -- 12: no row-existence oracle ---------------------------------------------------------------
def test_another_patients_row_answers_like_a_missing_row(fhir_store):
    pids = fhir_store.lake.sql("SELECT patient_id FROM events GROUP BY 1 ORDER BY 1 LIMIT 2").column("patient_id").to_pylist()
    other_row = fhir_store.lake.sql(f"SELECT row_id FROM events WHERE patient_id = '{pids[1]}' LIMIT 1"
                                    ).column("row_id")[0].as_py()
    doc = fhir_store.as_principal(Principal("dr.x", "clinician", "treatment", patients={pids[0]}))
    missing_row = other_row[:4] + "0" * (len(other_row) - 4)
    with pytest.raises(RowNotFound) as theirs:
        doc.trace(other_row)
    with pytest.raises(RowNotFound) as nothing:
        doc.trace(missing_row)
    assert str(theirs.value).replace(other_row, "X") == str(nothing.value).replace(missing_row, "X")
    denials = [e for e in _entries(fhir_store) if not e.allowed and other_row in e.resource]
    assert denials and denials[-1].patients == [pids[1]]   # the auditor still sees the attempt


# -- 13: attempts are denials, invalid principals are audited --------------------------------
@pytest.mark.parametrize("query", [
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/hosts')",
    "SELECT * FROM 'https://example.org/x.parquet'",
])
def test_sandbox_escape_attempts_are_denials(fhir_store, query):
    researcher = fhir_store.as_principal(RESEARCHER)
    with pytest.raises(AccessDenied, match="may not reach files"):
        researcher.sql(query)
    e = last_entry(fhir_store)
    assert not e.allowed and e.reason.startswith("sandbox:") and e.user == "rita"


def test_an_invalid_role_is_audited(tmp_path):
    home = tmp_path / "store"
    Ecosystem.open(home, STEWARD).tables()
    r = subprocess.run([sys.executable, "-m", "sagehealth.cli", "--role", "superuser", "--user", "mallory",
                        "tables", "--home", str(home)], capture_output=True, text=True)
    assert r.returncode == 1 and "no valid role" in r.stderr
    e = list(Ecosystem.open(home, AUDITOR)._audit.entries())[-1]
    assert not e.allowed and "invalid principal" in e.reason and "superuser" in e.reason


# -- 14: one SQL timeout and a memory limit for every door --------------------------------------
def test_cli_sql_stops_at_the_default_timeout_and_has_a_memory_limit(tmp_path):
    home = tmp_path / "store"
    Ecosystem.open(home, STEWARD).tables()
    env = {**os.environ, "SAGEHEALTH_SQL_TIMEOUT": "1"}
    cmd = [sys.executable, "-m", "sagehealth.cli", "--role", "steward", "sql", "--home", str(home)]
    r = subprocess.run([*cmd, "SELECT count(*) FROM range(1000000000000) a, range(10) b WHERE a.range % 7 = b.range"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "longer than 1 s" in r.stderr, r.stderr
    r = subprocess.run([*cmd, "SELECT current_setting('memory_limit') AS m", "--json"], capture_output=True,
                       text=True, env=env)
    limit = json.loads(r.stdout)[0]["m"]
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    value, unit = float(limit.split()[0]), limit.split()[1]
    size = value * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert size <= total * 0.55, limit


# -- 4: feedback rows name their patients; withdrawal withholds them --------------------------
NOTE = ("Patient Zvi Varnadoe, SSN 999-94-5397, phone 617-555-0143, e-mail zvarnadoe@example.org. "
        "Chief complaint: persistent dry cough for three weeks. Chest radiograph shows no consolidation. "
        "Plan: trial of inhaled budesonide.")


def _note(folder: Path, patient: str) -> Path:
    return note_file(folder, "trust-0001", patient, NOTE)


def test_a_researchers_feedback_is_withheld_when_the_patient_withdraws(tmp_path, samples):
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([samples / "fhir"], options={"deid_key": KEY})
    pid = eco.lake.sql("SELECT patient_id FROM patients ORDER BY 1 LIMIT 1").column("patient_id")[0].as_py()
    (tmp_path / "in").mkdir()
    eco.ingest([_note(tmp_path / "in", pid)], options={"deid_key": KEY, "index": True})
    researcher = eco.as_principal(RESEARCHER)
    a = researcher.ask("What was the chief complaint with the dry cough and the inhaled budesonide plan?")
    assert not a.abstained, a.reason
    researcher.record_feedback(a.trace_id, "edit", edited_text="Dry cough for three weeks.", reason="shorter")
    fb = eco.feedback(trace_id=a.trace_id)[0]
    from sagehealth.privacy.structured import RowDeidentifier

    assert RowDeidentifier(KEY).pseudonym(pid) in fb["patients"]     # the row names its patient
    out = tmp_path / "fb.jsonl"
    assert eco.export_feedback(out, key=KEY)["rows"] == 1
    text = out.read_text()
    for ident in ("Varnadoe", "999-94-5397", "617-555-0143", "zvarnadoe", "example.org"):
        assert ident not in text
    eco.set_consent(pid, research_allowed=False, key=KEY)
    result = eco.export_feedback(out, key=KEY)
    assert result["rows"] == 0 and result["withdrawn"] == 1


def test_a_trace_of_something_that_is_no_row_id_is_audited(fhir_store):
    with pytest.raises(RowNotFound, match="not a row id"):
        fhir_store.as_principal(RESEARCHER).trace("xyz")
    e = last_entry(fhir_store)
    assert e.user == "rita" and e.resource == "trace: xyz" and e.reason == "failed: not a row id"
