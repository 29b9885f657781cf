"""Shared test fixtures: a fresh store per test, the bundled samples, the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import STEWARD

from sagehealth import Ecosystem
from sagehealth.demo import sample_root

FIXTURES = Path(__file__).parent / "fixtures"
# Embedding every ingest's documents costs seconds per test: tests that search turn indexing on
# themselves (options={"index": True}); CLI subprocesses inherit this too.
os.environ.setdefault("SAGEHEALTH_INDEX", "0")
# the audit key lives outside every store: one key file per test session (CLI subprocesses
# inherit it), never the user's own ~/.config/sagehealth/audit.key
if not os.environ.get("SAGEHEALTH_AUDIT_KEY"):
    import tempfile

    os.environ.setdefault("SAGEHEALTH_AUDIT_KEY_FILE",
                          os.path.join(tempfile.mkdtemp(prefix="sagehealth-audit-key-"), "audit.key"))
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def eco(tmp_path: Path) -> Ecosystem:
    """An empty store in a temporary folder."""
    return Ecosystem.open(tmp_path / "store", STEWARD)


@pytest.fixture
def samples() -> Path:
    return sample_root()


@pytest.fixture
def shared() -> Path:
    """../shared/data, or skip when this checkout has none."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not present at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The agent-layer store (tests/agent_world.py), built once per session."""
    from agent_world import build_world

    return build_world(tmp_path_factory.mktemp("world") / "store", tmp_path_factory.mktemp("inj"))
