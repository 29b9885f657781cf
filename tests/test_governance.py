"""Governance building blocks: principals, the role matrix, the hash-chained audit log."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pytest

from sagehealth.errors import AccessDenied
from sagehealth.governance import ACTIONS, ROLES, AuditLog, Principal, authorize
from sagehealth.governance.policy import MATRIX, ROLE_PURPOSES

ALLOWED = {
    ("clinician", "read_clinical"), ("researcher", "read_research"), ("steward", "ingest"),
    ("steward", "read_quarantine"), ("steward", "configure"), ("steward", "read_system"),
    ("steward", "export"), ("auditor", "read_audit"),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
def test_role_matrix(role, action):
    p = Principal("u1", role, ROLE_PURPOSES[role][0], patients={"p1"})
    if (role, action) in ALLOWED:
        authorize(p, action, patients={"p1"})
    else:
        with pytest.raises(AccessDenied, match=f"u1 \\({role}\\) may not"):
            authorize(p, action, patients={"p1"})
    assert {(r, a) for r, acts in MATRIX.items() for a in acts} == ALLOWED


def test_clinician_reads_only_own_patients():
    doc = Principal("dr_a", "clinician", "treatment", patients={"p1", "p2"})
    authorize(doc, "read_clinical", patients={"p1"})
    with pytest.raises(AccessDenied, match="not on the care team of 1 of the 2"):
        authorize(doc, "read_clinical", patients={"p1", "p9"})
    with pytest.raises(AccessDenied, match="must name the patients"):
        authorize(doc, "read_clinical")


@pytest.mark.parametrize(("user", "role", "purpose", "message"), [
    ("u", "", "treatment", "no valid role"),
    ("u", "admin", "treatment", "no valid role"),
    ("u", "researcher", "", "no valid purpose"),
    ("", "researcher", "research", "needs a user"),
])
def test_principal_without_role_purpose_or_user_is_refused(user, role, purpose, message):
    with pytest.raises(AccessDenied, match=message):
        Principal(user, role, purpose)


def _fill(log: AuditLog, n: int = 5) -> None:
    p = Principal("ana", "researcher", "research")
    for i in range(n):
        log.record(p, "read_research", f"table:events#{i}", allowed=i % 2 == 0,
                   patients=[f"p{i}"], reason="" if i % 2 == 0 else "denied for test")


def test_audit_chain_verifies_and_entries_stream(tmp_path):
    log = AuditLog(tmp_path)
    _fill(log)
    v = log.verify()
    assert v.ok and v.entries == 5
    entries = list(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1].allowed is False and entries[1].reason == "denied for test"
    assert entries[0].prev == "0" * 64 and entries[1].prev == entries[0].hash


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(("tamper", "problem", "line"), [
    ("edit", "entry 3 was edited", 3),
    ("remove", "1 entries removed before entry 4", 3),
    ("reorder", "entries reordered", 2),
    ("truncate", "entries removed from the end", 5),
    ("garbage", "line 2 is not a valid audit entry", 2),
])
def test_tampering_is_detected_and_located(tmp_path, tamper, problem, line):
    log = AuditLog(tmp_path)
    _fill(log)
    lines = _lines(log)
    if tamper == "edit":
        e = json.loads(lines[2])
        e["allowed"] = not e["allowed"]
        lines[2] = json.dumps(e, sort_keys=True) + "\n"
    elif tamper == "remove":
        del lines[2]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "truncate":
        lines = lines[:-1]
    elif tamper == "garbage":
        lines[1] = "{not json\n"
    log.path.write_text("".join(lines))
    v = log.verify()
    assert not v.ok and problem in v.problem and v.line == line


def _append_many(folder: str, user: str) -> None:
    log = AuditLog(folder)
    p = Principal(user, "auditor", "audit")
    for i in range(100):
        log.record(p, "read_audit", f"r{i}", allowed=True)


def test_concurrent_writers_keep_the_chain(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), u)) for u in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    v = AuditLog(tmp_path).verify()
    assert v.ok and v.entries == 200


def test_cli_audit_verify_and_show(tmp_path):
    home = tmp_path / "h"
    log = AuditLog(home / "audit")
    _fill(log)
    cmd = [sys.executable, "-m", "sagehealth.cli", "--role", "auditor", "audit"]
    ok = subprocess.run([*cmd, "verify", "--home", str(home), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"ok": True, "entries": 5, "problem": None, "line": None}
    # reading the log is itself audited: entry 6 is the verification above
    shown = subprocess.run([*cmd, "show", "--home", str(home), "--json", "--limit", "2"],
                           capture_output=True, text=True)
    assert [e["seq"] for e in json.loads(shown.stdout)] == [5, 6]
    assert json.loads(shown.stdout)[1]["action"] == "read_audit"
    lines = _lines(log)
    lines[0] = lines[0].replace('"ana"', '"eve"')
    log.path.write_text("".join(lines))
    bad = subprocess.run([*cmd, "verify", "--home", str(home)], capture_output=True, text=True)
    assert bad.returncode == 1 and "entry 1 was edited" in bad.stderr and "line 1" in bad.stderr
