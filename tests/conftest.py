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


#: modules whose tests build indexed stores, run models or real servers (the fast tier,
#: `scripts/test.sh -m "not slow"`, leaves them out); and single slow tests elsewhere
SLOW_MODULES = {"test_agent", "test_agent_guard", "test_agent_safety", "test_doors", "test_body_limit",
                "test_rerank", "test_retrieval", "test_leak_scan", "test_concepts", "test_providers",
                "test_integration_shared", "test_cli_deid_cv", "test_embed_stage", "test_web_ui",
                "test_ray_engine"}
SLOW_TESTS = {"test_demo_runs_end_to_end_then_ask_answers_with_citations", "test_cli_deid_eval_on_physionet_dev",
              "test_a_researchers_feedback_is_withheld_when_the_patient_withdraws",
              "test_shared_vocabularies_load_with_crosswalks", "test_kill_mid_ingest_then_rerun",
              "test_the_feedback_export_carries_the_patients_name_and_mrn",
              "test_a_researchers_answer_passes_the_output_guard_with_the_patients_name",
              "test_a_steward_reads_traces_and_feedback_without_the_patients_name"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


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
