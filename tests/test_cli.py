"""The sagehealth CLI: commands, --json output, --home/$SAGEHEALTH_HOME, friendly errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sagehealth.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
STEW = ["--role", "steward"]


def doctor(home: str) -> list[str]:
    """Top-level options of a clinician whose care team is every patient of the store."""
    from sagehealth.data.lakehouse import Lakehouse

    ids = Lakehouse(home).read("patients", columns=["patient_id"]).column("patient_id").to_pylist()
    return ["--role", "clinician", "--user", "dr.test", "--patients", ",".join(ids)]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sagehealth.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_ingest_json_summary_then_sql_trace_versions(tmp_path, samples):
    home = str(tmp_path / "h")
    r = runner.invoke(app, [*STEW, "ingest", str(samples / "fhir"), "--home", home, "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert {"records_in", "quarantined", "rows"} <= set(s)
    assert s["records_in"] == s["ingested"] + s["quarantined"] and s["rows"]["patients"] == 5
    r = runner.invoke(app, [*doctor(home), "sql", "SELECT row_id FROM patients ORDER BY row_id", "--home", home, "--json"])
    rows = json.loads(r.stdout)
    assert len(rows) == 5
    r = runner.invoke(app, [*doctor(home), "trace", rows[0]["row_id"], "--home", home, "--json"])
    t = json.loads(r.stdout)
    assert t["table"] == "patients" and t["provenance"]["source_uri"].startswith("file://")
    r = runner.invoke(app, [*STEW, "versions", "--home", home, "--json"])
    assert [v["version"] for v in json.loads(r.stdout)] == [1, 2]
    r = runner.invoke(app, [*STEW, "tables", "--home", home, "--json"])
    assert json.loads(r.stdout)["patients"] == 5


def test_sql_time_travel_with_version(tmp_path, samples):
    home = str(tmp_path / "h")
    runner.invoke(app, [*STEW, "ingest", str(samples / "fhir" / "linked"), "--home", home])
    runner.invoke(app, [*STEW, "ingest", str(samples / "fhir"), "--home", home])
    q = "SELECT count(*) AS n FROM documents"
    now = json.loads(runner.invoke(app, [*doctor(home), "sql", q, "--home", home, "--json"]).stdout)
    then = json.loads(runner.invoke(app, [*doctor(home), "sql", q, "--home", home, "--json", "--version", "2"]).stdout)
    assert then == [{"n": 0}] and now[0]["n"] > 0
    # the same question from a researcher reads the research zone (no key here: empty)
    research = runner.invoke(app, ["--role", "researcher", "sql", q, "--home", home, "--json"])
    assert json.loads(research.stdout) == [{"n": 0}]


def test_home_from_environment(tmp_path, samples):
    home = tmp_path / "envhome"
    r = runner.invoke(app, ["ingest", str(samples / "vcf"), "--json"],
                      env={"SAGEHEALTH_HOME": str(home), "SAGEHEALTH_ROLE": "steward"})
    assert r.exit_code == 0, r.output
    assert (home / "lake").is_dir()


def test_quarantine_command_lists_reasons(tmp_path, samples):
    home = str(tmp_path / "h")
    runner.invoke(app, [*STEW, "ingest", str(samples / "fhir"), "--home", home])
    runner.invoke(app, [*STEW, "ingest", str(samples / "bad"), "--home", home])
    rows = json.loads(runner.invoke(app, [*STEW, "quarantine", "--home", home, "--json"]).stdout)
    reasons = sorted(r["reason"].split(":")[0] for r in rows)
    assert len(rows) == 3 and "dangling reference" in reasons and "invalid JSON" in reasons
    table = runner.invoke(app, [*STEW, "quarantine", "--home", home]).stdout
    assert "3 quarantined records" in table and "dangling reference" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*STEW, "ingest", "/no/such/path"], "no such file or folder"),
        ([*STEW, "sql", "SELECT * FROM no_such_table"], "no_such_table"),
        ([*STEW, "sql", "SELECT 1", "--version", "99"], "version 99 does not exist"),
        (["--role", "clinician", "trace", "pat_0000"], "no row 'pat_0000'"),
        (["--role", "researcher", "trace", "nonsense"], "is not a row id"),
        (["sql", "SELECT 1"], "no principal"),
        (["--role", "admin", "tables"], "no valid role ('admin')"),
        (["--role", "researcher", "sql", "SELECT * FROM provenance"], "may not read table provenance"),
        (["--role", "researcher", "--purpose", "treatment", "tables"], "may not act for the purpose of treatment"),
        (["--role", "clinician", "ingest", "."], "may not ingest"),
        (["--role", "steward", "audit", "show"], "may not read audit"),
    ],
)
def test_errors_are_one_clean_line_and_exit_1(tmp_path, args, message):
    r = run(*args, "--home", str(tmp_path / "h"))
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr


def test_bad_option_value_is_a_usage_error(tmp_path):
    r = run(*STEW, "ingest", ".", "--format", "xml", "--home", str(tmp_path / "h"))
    assert r.returncode == 2 and "xml" in r.stderr and "Traceback" not in r.stderr


def test_unknown_file_format_is_a_clear_error(tmp_path):
    junk = tmp_path / "notes.bin"
    junk.write_bytes(os.urandom(64))
    r = run(*STEW, "ingest", str(junk), "--home", str(tmp_path / "h"))
    assert r.returncode == 1 and "no reader recognises this file" in r.stderr


def test_demo_runs_end_to_end_then_ask_answers_with_citations(tmp_path):
    home = str(tmp_path / "demo")
    r = run("demo", "--home", home, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in ("What is in the store", "Time travel", "Provenance of one document row",
                     "dangling reference", "Most frequent conditions", "Hybrid search (BM25 + vectors)",
                     "Patient context for a prompt", "patients with any respiratory system disease"):
        assert expected in out
    assert "quarantined" in out
    # the agent section: a cited answer (sentences end with their evidence labels, each label
    # listed with its chunk id), then an abstention on a question the sample cannot answer
    fetal = out[out.index("Ask as rita.research: What was the fetal heart rate"):]
    answer = fetal.splitlines()[1]
    labels = re.findall(r"\[(E\d+(?:, E\d+)*)\]", answer)
    assert labels, answer
    for label in {x for group in labels for x in group.split(", ")}:
        assert re.search(rf"^\s+{label} chk_\w+", fetal, re.M), label
    warfarin = out[out.index("Ask as rita.research: What is the recommended dose of warfarin"):]
    assert warfarin.splitlines()[1].startswith("No answer:")

    # `sagehealth ask` on the demo's store, as a researcher: the same agent, as JSON
    env = {"SAGEHEALTH_ROLE": "researcher", "SAGEHEALTH_USER": "rita.cli", "SAGEHEALTH_PURPOSE": "research"}
    r = run("ask", "What was the fetal heart rate on the obstetric ultrasound?", "--home", home, "--json", env=env)
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)
    ids = {e["id"] for e in a["evidence"]}
    assert not a["abstained"] and a["sentences"] and a["trace_id"].startswith("trc_")
    assert all(s["citations"] and set(s["citations"]) <= ids for s in a["sentences"])
    assert all(e["patient_id"] is None or e["patient_id"].startswith("psn_") for e in a["evidence"])
    r = run("ask", "What is the capital of France?", "--home", home, env=env)
    assert r.returncode == 0 and "No answer:" in r.stdout, r.stdout + r.stderr


def test_every_command_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert commands, "no commands registered"
    for name in commands:
        assert re.search(rf"sagehealth {name}\b", readme), f"`sagehealth {name}` is not in README.md"


def test_explicit_format_that_finds_nothing_is_an_error(tmp_path):
    f = tmp_path / "whatever.csv"
    f.write_text("a,b\n1,2\n")
    r = run(*STEW, "ingest", str(f), "--format", "omop", "--home", str(tmp_path / "h"))
    assert r.returncode == 1 and "the omop reader finds nothing to ingest here" in r.stderr


def test_many_files_are_summarised_per_format(tmp_path, samples):
    r = runner.invoke(app, [*STEW, "ingest", str(samples), "--home", str(tmp_path / "h")],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "files" in r.stdout and "fhir" in r.stdout and "dicom" in r.stdout
    assert "Patient.000.ndjson" not in r.stdout  # one line per format, not per file
    assert "observations_with_errors" in r.stdout  # files with quarantined records are listed
