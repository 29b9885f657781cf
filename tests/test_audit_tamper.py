"""The audit log resists cutting, emptying, deleting and rewriting (issue 14, item 3): a keyed
chain, heads anchored in the store's commits and in exported anchor files, a verify that writes
nothing before it checks, and a library that fails closed on a broken log."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import STEWARD

from sagehealth import Ecosystem
from sagehealth.errors import AuditError, ConfigError
from sagehealth.governance import AuditLog, Principal
from sagehealth.governance.audit import FIELDS, audit_key

AUDITOR = Principal("aud", "auditor", "audit")
RESEARCHER = Principal("rita", "researcher", "research")


def _store(tmp_path: Path, samples: Path) -> Ecosystem:
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([samples / "notes" / "mtsamples_sample.csv"], format="notes")
    eco.tables()
    eco.as_principal(RESEARCHER).tables()
    eco.ingest([samples / "literature"], format="literature")   # a commit that anchors entry 4
    eco.tables()
    return eco


def _lines(eco: Ecosystem) -> list[str]:
    return (Path(eco.home) / "audit" / "audit.jsonl").read_text().splitlines(keepends=True)


def _write(eco: Ecosystem, lines: list[str]) -> None:
    (Path(eco.home) / "audit" / "audit.jsonl").write_text("".join(lines))


@pytest.fixture
def store(tmp_path, samples):
    return _store(tmp_path, samples)


def test_a_cut_tail_is_refused_not_healed(store):
    lines = _lines(store)
    _write(store, lines[:-2])
    with pytest.raises(AuditError, match="entries removed"):
        store.tables()                      # the next access cannot paper over the cut
    auditor = store.as_principal(AUDITOR)
    for _ in range(2):                      # verify writes nothing first: the cut stays visible
        v = auditor.verify_audit()
        assert not v.ok and "removed from the end" in v.problem
    assert len(_lines(store)) == len(lines) - 2


def test_a_cut_tail_with_a_rewritten_head_is_caught_by_the_store_anchors(store):
    lines = _lines(store)
    anchored = [c.summary["audit"]["seq"] for c in store.lake.commits() if "audit" in c.summary]
    assert anchored and max(anchored) >= 1
    cut = max(anchored) - 1                 # remove entries up to before the last anchored one
    _write(store, lines[:cut])
    last = json.loads(lines[cut - 1])
    (Path(store.home) / "audit" / "audit.head").write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    fresh = Ecosystem.open(store.home, STEWARD)   # a new process: the anchors are checked once
    with pytest.raises(AuditError, match="recorded entry"):
        fresh.tables()
    v = fresh.as_principal(AUDITOR).verify_audit()
    assert not v.ok and "recorded entry" in v.problem


@pytest.mark.parametrize("how", ["empty", "delete_folder"])
def test_an_emptied_or_deleted_log_of_a_store_with_versions_is_refused(store, how):
    folder = Path(store.home) / "audit"
    if how == "empty":
        (folder / "audit.jsonl").write_text("")
    else:
        shutil.rmtree(folder)
    fresh = Ecosystem.open(store.home, STEWARD)
    with pytest.raises(AuditError):
        fresh.tables()
    v = fresh.as_principal(AUDITOR).verify_audit()
    assert not v.ok and ("empty or missing" in v.problem or "head" in v.problem)


def test_an_edited_entry_with_recomputed_plain_hashes_does_not_verify(store):
    """The old chain had no key: an attacker could edit an entry and recompute every hash and the
    head. Now the entries carry an HMAC under a key outside the store."""
    lines = [json.loads(x) for x in _lines(store)]
    lines[0]["user"] = "eve"
    prev = "0" * 64
    for e in lines:                          # what the attacker can compute: plain SHA-256 ...
        e["prev"] = prev
        body = {k: e[k] for k in FIELDS}
        body["alg"] = e["alg"]
        raw = prev + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        e["hash"] = prev = hashlib.sha256(raw.encode()).hexdigest()
    _write(store, [json.dumps(e, sort_keys=True) + "\n" for e in lines])
    (Path(store.home) / "audit" / "audit.head").write_text(json.dumps({"seq": lines[-1]["seq"], "hash": prev}))
    v = store.as_principal(AUDITOR).verify_audit()
    assert not v.ok and v.line == 1 and "edited" in v.problem
    # ... or a chain under a key of their own
    for e in lines:
        e.pop("alg")
    _write(store, [json.dumps(e, sort_keys=True) + "\n" for e in lines])
    log = AuditLog(Path(store.home) / "audit", key=b"the-attackers-own-key-123")
    assert not log.verify().ok


def test_anchor_export_catches_what_happened_after_the_last_commit(store, tmp_path):
    auditor = store.as_principal(AUDITOR)
    anchor = auditor.audit_anchor()
    assert anchor["seq"] >= 1 and len(anchor["hash"]) == 64 and anchor["alg"].startswith("hmac-sha256:")
    anchor_file = tmp_path / "anchors.jsonl"
    anchor_file.write_text(json.dumps(anchor) + "\n")
    # the attacker cuts the entries since the last commit and rewrites the head to match
    lines = _lines(store)
    seq_of_last_commit = max(c.summary["audit"]["seq"] for c in store.lake.commits() if "audit" in c.summary)
    kept = lines[:seq_of_last_commit]
    _write(store, kept)
    last = json.loads(kept[-1])
    (Path(store.home) / "audit" / "audit.head").write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    assert auditor.verify_audit().ok          # nothing in the store can tell ...
    cmd = [sys.executable, "-m", "sagehealth.cli", "--role", "auditor", "audit", "verify", "--home", store.home,
           "--anchor", str(anchor_file), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr   # ... the exported anchor can
    assert "anchors.jsonl:1 recorded entry" in json.loads(r.stdout)["problem"]


def test_cli_anchor_appends_to_a_file(store, tmp_path):
    out = tmp_path / "worm" / "anchors.jsonl"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "sagehealth.cli", "--role", "auditor", "audit", "anchor", "--home", store.home,
           "--out", str(out)]
    for _ in range(2):
        assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[1]["seq"] > rows[0]["seq"]
    ok = subprocess.run([sys.executable, "-m", "sagehealth.cli", "--role", "auditor", "audit", "verify", "--home",
                         store.home, "--anchor", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_a_corrupt_last_line_blocks_access_and_verify_reports_it(store):
    _write(store, [*_lines(store), '{"seq": 999, "trunc'])
    with pytest.raises(AuditError, match="unreadable"):
        store.tables()
    v = store.as_principal(AUDITOR).verify_audit()
    assert not v.ok and "not a valid audit entry" in v.problem and v.line == len(_lines(store))


def test_restart_keeps_the_broken_log_as_evidence_and_starts_a_new_chain(store):
    _write(store, _lines(store)[:-1])
    with pytest.raises(AuditError):
        store.tables()
    auditor = Ecosystem.open(store.home, AUDITOR)
    with pytest.raises(Exception):          # a researcher cannot restart it (and cannot be audited)
        Ecosystem.open(store.home, RESEARCHER).restart_audit("nope")
    entry = auditor.restart_audit("INC-42: tail cut found by the nightly verify")
    assert entry.seq == 1 and entry.action == "audit_restart" and "INC-42" in entry.reason
    kept = [p.name for p in (Path(store.home) / "audit").iterdir() if ".broken-" in p.name]
    assert any(k.startswith("audit.jsonl.broken-") for k in kept)
    Ecosystem.open(store.home, STEWARD).tables()                # the store is in service again
    assert Ecosystem.open(store.home, AUDITOR).verify_audit().ok
    with pytest.raises(Exception, match="nothing to restart"):
        auditor.restart_audit("again")


def test_audit_key_lives_outside_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv("SAGEHEALTH_AUDIT_KEY", raising=False)
    monkeypatch.setenv("SAGEHEALTH_AUDIT_KEY_FILE", str(tmp_path / "store" / "key"))
    with pytest.raises(ConfigError, match="inside the store"):
        audit_key(tmp_path / "store")
    monkeypatch.delenv("SAGEHEALTH_AUDIT_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = audit_key(tmp_path / "store")
    path = tmp_path / "config" / "sagehealth" / "audit.key"
    assert len(key) == 64 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert audit_key(tmp_path / "store") == key
    monkeypatch.setenv("SAGEHEALTH_AUDIT_KEY", "short")
    with pytest.raises(ConfigError, match="too short"):
        audit_key()
