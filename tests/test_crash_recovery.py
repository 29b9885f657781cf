"""A process killed mid-ingest leaves the last committed version intact; a rerun completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lance

from sagehealth import Ecosystem
from helpers import STEWARD

N_OBS = 40_000


def _write_export(folder: Path) -> None:
    folder.mkdir()
    (folder / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n")
    with open(folder / "Observation.ndjson", "w") as fh:
        for i in range(N_OBS):
            fh.write(json.dumps({
                "resourceType": "Observation", "id": f"o{i}", "status": "final",
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "valueQuantity": {"value": i, "unit": "/min"},
            }) + "\n")


def test_kill_mid_ingest_then_rerun(tmp_path):
    home = tmp_path / "store"
    export = tmp_path / "export"
    _write_export(export)
    eco = Ecosystem.open(home, STEWARD)
    base = eco.versions()[-1]
    committed_events = base.table_versions["events"]
    env = {**os.environ, "SAGEHEALTH_BATCH_ROWS": "2000", "SAGEHEALTH_ROLE": "steward"}
    cmd = [sys.executable, "-m", "sagehealth.cli", "ingest", str(export), "--home", str(home), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    events_uri = str(home / "lake" / "events.lance")
    # wait until the run has written (but not committed) some batches, then kill it hard
    while time.time() < deadline:
        if lance.dataset(events_uri).version >= committed_events + 3:
            break
        assert proc.poll() is None, "ingest finished before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert lance.dataset(events_uri).count_rows() > 0  # partial data reached disk...

    after_kill = Ecosystem.open(home, STEWARD)
    assert [c.version for c in after_kill.versions()] == [base.version]  # ...but no commit
    assert after_kill.tables()["events"] == 0 and after_kill.tables()["sources"] == 0
    assert after_kill.lake.sql("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 0}]

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["records_in"] == N_OBS + 1 and summary["quarantined"] == 0
    assert any("rolled back uncommitted writes" in w for w in summary["warnings"])
    done = Ecosystem.open(home, STEWARD)
    assert done.tables()["events"] == N_OBS
    n_distinct = done.lake.sql("SELECT count(DISTINCT row_id) AS n FROM events").to_pylist()[0]["n"]
    assert n_distinct == N_OBS
    assert [c.version for c in done.versions()] == [base.version, base.version + 1]
