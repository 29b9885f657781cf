"""A newcomer's first hour (issue 16): the CLI starts without loading the store's libraries, a
denial is exit 1 on every command, and a search says when stored documents are not indexed.

Each runs the real ``sagehealth`` command in a subprocess and checks its output and exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sagehealth.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_help_and_the_cli_module_do_not_load_the_store_libraries():
    """``sagehealth --help`` must start in well under a second: the heavy libraries (Lance,
    LanceDB, DuckDB, Arrow, the de-identifier, the embedders) load only when a command opens a
    store. Checked by what is imported, not by a clock."""
    code = ("import sys, sagehealth.cli, sagehealth.cli_agents; "
            "print(sorted(m for m in ('lancedb', 'lance', 'duckdb', 'pyarrow', 'numpy', 'onnxruntime', "
            "'sagehealth.ecosystem', 'sagehealth.privacy.deid.detector', 'fastapi', 'mcp') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
    r = run("--help")
    assert r.returncode == 0 and "Usage" in r.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from sagehealth.demo import sample_root

    home = tmp_path_factory.mktemp("first-hour") / "h"
    # an ingest that does not index: documents are stored, none is searchable yet
    r = run("--role", "steward", "ingest", str(sample_root() / "fhir"), "--home", str(home), "--json",
            env={"SAGEHEALTH_INDEX": "0"})
    assert r.returncode == 0, r.stderr
    return home


def _patients(home: Path) -> list[str]:
    from sagehealth.data.lakehouse import Lakehouse

    return Lakehouse(str(home)).read("patients", columns=["patient_id"]).column("patient_id").to_pylist()


def test_ask_about_a_patient_outside_the_care_team_is_exit_1(store):
    mine, other = _patients(store)[:2]
    who = ["--role", "clinician", "--user", "dr.first", "--patients", mine]
    r = run(*who, "ask", "What medications?", "--patient", other, "--home", str(store))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "access denied" in (r.stdout + r.stderr).lower()
    r = run(*who, "ask", "What medications?", "--patient", other, "--home", str(store), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["denied"] is True
    # the same clinician asking about their own patient is not denied (exit 0, answered or not)
    r = run(*who, "ask", "What medications?", "--patient", mine, "--home", str(store), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["denied"] is False


def test_search_says_when_stored_documents_are_not_indexed(store):
    steward = ["--role", "steward"]
    doctor = ["--role", "clinician", "--user", "dr.first", "--patients", ",".join(_patients(store))]
    r = run(*doctor, "search", "medication", "--home", str(store))
    assert r.returncode == 0, r.stderr
    assert "not indexed for search yet" in r.stdout and "sagehealth index" in r.stdout
    r = run(*steward, "status", "--home", str(store), "--json")
    status = json.loads(r.stdout)
    assert status["index"]["chunks"]["unindexed"] > 0
    # once indexed, the warning is gone and the documents are found
    r = run(*steward, "index", "--home", str(store), "--json")
    assert r.returncode == 0, r.stderr
    r = run(*steward, "status", "--home", str(store), "--json")
    assert json.loads(r.stdout)["index"]["chunks"]["unindexed"] == 0
    r = run(*doctor, "search", "medication", "--home", str(store))
    assert "not indexed" not in r.stdout and "(no hits)" not in r.stdout


def test_a_scripted_ingest_reports_every_stage_on_stderr_and_keeps_stdout_json(tmp_path):
    """Not a terminal and --json (a script, a CI log): plain progress lines for the files, the
    research zone, chunking and embedding on stderr; stdout is the JSON summary alone."""
    from sagehealth.demo import sample_root

    r = run("--role", "steward", "ingest", str(sample_root() / "notes"), "--home", str(tmp_path / "h"),
            "--json", env={"SAGEHEALTH_DEID_KEY": "first-hour-test-key-0123456789abcdef", "SAGEHEALTH_INDEX": "1"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ingested"] > 0
    lines = r.stderr.splitlines()
    for stage in ("reading files:", "research zone:", "chunking chunks:", "embedding chunks:",
                  "embedding research_chunks:"):
        assert any(line.startswith(stage) and "(100%)" in line for line in lines), (stage, r.stderr)
    assert "mtsamples" not in r.stderr  # no file names in a log (they can name patients)


def test_stewards_find_patient_ids_without_names_or_national_ids(tmp_path):
    """Setting up a clinician's care team needs patient ids (issue 16): a governed directory of
    ids and record identifiers for stewards — no names, dates or national ids — audited."""
    from sagehealth.demo import sample_root

    home = str(tmp_path / "h")
    r = run("--role", "steward", "ingest", str(sample_root() / "fhir"), "--home", home, "--json")
    assert r.returncode == 0, r.stderr
    r = run("--role", "steward", "patients", "--home", home, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(set(x) == {"patient_id", "source_system", "identifiers"} for x in rows)
    shown = json.dumps(rows)
    assert "us-ssn" not in shown and "passport" not in shown.lower() and '"DL"' not in shown
    mrn = next(i["value"] for x in rows for i in x["identifiers"] if i["type"] == "MR")
    r = run("--role", "steward", "patients", "--identifier", mrn, "--home", home, "--json")
    assert len(json.loads(r.stdout)) == 1
    r = run("--role", "researcher", "patients", "--home", home)
    assert r.returncode == 1 and "may not" in r.stderr
    from sagehealth.governance.audit import AuditLog

    entries = [e for e in AuditLog(Path(home) / "audit").entries() if e.resource.startswith("patient directory")]
    assert any(e.allowed for e in entries) and any(not e.allowed for e in entries)


@pytest.mark.slow
def test_ctrl_c_while_embedding_keeps_the_committed_version_and_says_how_to_go_on(tmp_path, shared):
    """Ctrl-C (SIGINT) during a real ingest's embedding stage: exit 130 with one line saying what
    is committed, the data searchable by BM25, and `status` showing the chunks left to embed."""
    import signal
    import time

    notes = shared / "notes" / "mtsamples.csv.gz"
    home = str(tmp_path / "h")
    env = {**os.environ, "SAGEHEALTH_INDEX": "1", "SAGEHEALTH_ROLE": "steward"}
    env.pop("SAGEHEALTH_DEID_KEY", None)
    # Ctrl-C as a user's terminal delivers it: a suite started in the background by a shell
    # without job control inherits SIGINT ignored, and so would the child
    cli = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "sys.argv = ['sagehealth'] + sys.argv[1:]; runpy.run_module('sagehealth.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", cli, "ingest", str(notes), "--home", home, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # plain progress lines: stderr is not a terminal
        seen.append(line)
        if line.startswith("embedding chunks:"):
            time.sleep(2)
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(seen)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    assert "interrupted" in rest and "sagehealth index" in rest
    r = run("--role", "steward", "status", "--home", home, "--json")
    st = json.loads(r.stdout)
    assert r.returncode == 0 and st["index"]["chunks"]["chunks"] > 0
    assert st["index"]["chunks"]["pending"] > 0 and st["index"]["chunks"]["unindexed"] == 0
    r = run("--role", "auditor", "audit", "verify", "--home", home)
    assert r.returncode == 0, r.stdout + r.stderr


def test_simple_reads_do_not_load_lancedb(store):
    """Opening a local store and reading it (status, SQL, the patient directory, audit verify)
    goes through Lance and DuckDB: LanceDB (about a second to import, most of it its REST
    namespace client) loads only for writes and indexes. Checked by what is imported."""
    for role, *args in (["steward", "status"], ["steward", "sql", "SELECT count(*) AS n FROM sources"],
                        ["steward", "patients"], ["auditor", "audit", "verify"]):
        argv = ["sagehealth", "--role", role, *args, "--home", str(store)]
        code = (f"import sys; sys.argv = {argv!r}; from sagehealth.cli import main\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "print('lancedb loaded:', 'lancedb' in sys.modules)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stdout.strip().splitlines()[-1] == "lancedb loaded: False", (args, r.stdout[-500:])
