"""``ask`` answers a question for a result with the result itself, in any usual phrasing, or
declines (issue 16): "What is the latest hemoglobin?" abstained although the value was there.

The MIMIC-IV fixture's patient 10000001 has creatinine 1.4 mg/dL (reference 0.5-1.2) on
2150-05-01 (a later row with a malformed value is quarantined) and no troponin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import STEWARD
from sagehealth import Ecosystem
from sagehealth.agents import REGISTRY
from sagehealth.errors import AccessDenied, RetrievalError
from sagehealth.governance import Principal
from sagehealth.retrieval.facts import stored_key, named_tests

MIMIC = Path(__file__).parent / "fixtures" / "mimic" / "demo"
PID = "mimic-10000001"


@pytest.fixture(scope="module")
def doctor(tmp_path_factory):
    eco = Ecosystem.open(tmp_path_factory.mktemp("facts") / "h", STEWARD)
    eco.ingest([MIMIC], format="mimic", options={"research": False})
    ids = eco.lake.read("patients", columns=["patient_id"]).column("patient_id").to_pylist()
    return eco.as_principal(Principal("dr.facts", "clinician", "treatment", patients=frozenset(ids)))


@pytest.mark.parametrize("question", [
    "What is the latest creatinine?", "last Cr?", "most recent creat value", "Creatinine?",
    "What was the patient's creatinine?", "creatinine level today",
])
def test_a_result_in_any_phrasing(doctor, question):
    a = doctor.ask(question, patient=PID)
    assert not a.abstained, a.reason
    first = a.sentences[0]
    assert "1.4 mg/dL" in first.text and "2150-05-01" in first.text and "high" in first.text
    row = doctor.trace(first.citations[0])["row"]  # the cited row holds the value said
    assert row["value_num"] == 1.4 and row["code"]["display"] == "Creatinine"
    assert a.provider == "facts" and all(c.passed for c in a.checks if c.name == "grounding")


def test_a_test_never_done_is_an_abstention_that_names_it(doctor):
    a = doctor.ask("What is the latest troponin?", patient=PID)
    assert a.abstained and "no Troponin result" in a.reason


def test_a_general_question_about_a_patient_is_declined_not_answered_from_the_record(doctor):
    for q in ("What is the first-line treatment for type 2 diabetes?", "How should vancomycin be dosed in renal failure?"):
        a = doctor.ask(q, patient=PID)
        assert a.abstained and "not a question about the patient's record" in a.reason, (q, a.answer)
    # pointing at the patient makes it a question about the record again (not declined as general)
    a = doctor.ask("What is the first-line treatment for her kidney disease?", patient=PID)
    assert "not a question about the patient's record" not in (a.reason or "")


@pytest.mark.parametrize("question", [
    "What foods are high in creatinine?",  # names a test the patient has, asks about food
    "What is a normal creatinine?", "What are normal creatinine levels?",
    "What are the symptoms of a heart attack?", "Is aspirin better than clopidogrel?",
    "What is the half-life of oxycodone?", "What is the target creatinine for people with kidney disease?",
    "Tell me a joke.", "What year did the Affordable Care Act pass?", "Can beta blockers be given in asthma?",
])
def test_a_question_the_record_cannot_answer_is_declined_even_when_it_names_what_the_record_holds(doctor, question):
    a = doctor.ask(question, patient=PID)
    assert a.abstained and "not a question about the patient's record" in a.reason, (question, a.answer)
    assert a.plan == []  # nothing of the patient's was read for it


@pytest.mark.parametrize("question", [
    "creatinine?", "What is the creatinine?", "Is the creatinine normal?", "cr today", "Creatinine value please",
])
def test_asking_only_for_a_value_is_still_a_question_for_the_result(doctor, question):
    a = doctor.ask(question, patient=PID)
    assert not a.abstained and "1.4 mg/dL" in a.sentences[0].text, (question, a.reason)


def test_is_the_patient_on_a_drug(doctor):
    """"Is she on aspirin?" is answered from that drug's orders: active at the end of the record
    (cited), ended, or none recorded (then the notes are searched and the abstention says so)."""
    for q in ("Is the patient on aspirin?", "Is she taking aspirin?", "does he take aspirin now?"):
        a = doctor.ask(q, patient=PID)
        assert not a.abstained and a.provider == "facts", (q, a.reason)
        assert a.sentences[0].text.startswith("Medication active on 2150-05-06: Aspirin 81 mg")
        assert len(a.sentences) == 1 and a.plan[0].arguments["name"] == "aspirin"
    a = doctor.ask("Is she on warfarin?", patient=PID)
    assert a.abstained and "no warfarin order is recorded" in a.reason
    out = REGISTRY.call(doctor, "current_medications", {"patient_id": PID, "name": "oxycod"})
    assert [m.name for m in out.medications] == ["Oxycodone"]


def test_question_names_of_tests():
    assert [t.key for t in named_tests("latest hemoglobin A1c?")] == ["hba1c"]  # the longer name wins
    assert [t.key for t in named_tests("Hgb and K today?")] == ["hemoglobin", "potassium"]
    assert named_tests("Does he have a history of CA?") == []  # short names need a question for a result
    assert named_tests("Any chest pain overnight?") == []
    assert stored_key("Hemoglobin [Mass/volume] in Blood") == "hemoglobin"
    assert stored_key("% Hemoglobin A1c") == "hemoglobin a1c"
    assert stored_key("Glucose (urine)") == "glucose (urine)"  # another specimen is another test


def test_the_lab_results_tool_is_governed(doctor):
    out = REGISTRY.call(doctor, "lab_results", {"patient_id": PID, "test": "Cr"})
    assert out.test == "creatinine" and [r.value for r in out.results] == [1.4]
    assert out.results[0].row_id.startswith("evt_") and out.results[0].flag == "high"
    with pytest.raises(RetrievalError, match="no lab test or vital sign is named"):
        doctor.lab_results(PID, "unobtainium")
    stranger = doctor.as_principal(Principal("dr.other", "clinician", "treatment", patients=frozenset({"someone"})))
    with pytest.raises(AccessDenied):
        stranger.lab_results(PID, "creatinine")
    a = stranger.ask("latest creatinine?", patient=PID)
    assert a.abstained and a.denied


def test_one_argument_vocabulary_across_tools(doctor):
    """Every tool names the patient ``patient_id`` (issue 16); the earlier ``patient`` of
    search_evidence and answer_question still works, with a deprecation warning."""
    from sagehealth.agents.tools import AskArgs, SearchArgs

    for tool in REGISTRY:
        props = tool.input_schema().get("properties", {})
        assert "patient" not in props, tool.name
    assert "patient_id" in SearchArgs.model_fields and "patient_id" in AskArgs.model_fields
    with pytest.warns(DeprecationWarning, match="'patient' is now 'patient_id'"):
        old = REGISTRY.call(doctor, "answer_question", {"question": "latest creatinine?", "patient": PID})
    new = REGISTRY.call(doctor, "answer_question", {"question": "latest creatinine?", "patient_id": PID})
    assert old.answer == new.answer and "1.4 mg/dL" in new.answer
    from sagehealth.errors import ToolArgumentError

    with pytest.raises(ToolArgumentError):
        REGISTRY.call(doctor, "search_evidence", {"query": "x", "patient": PID, "patient_id": PID})


def test_current_medications_are_those_active_at_the_end_of_the_record(doctor):
    """The fixture's admission ends 2150-05-06 12:00: aspirin (stops then), oxycodone and saline
    (no stop time) are active; the medication list is answered from the rows, each cited."""
    as_of, meds = doctor.current_medications(PID)
    assert f"{as_of:%Y-%m-%d %H:%M}" == "2150-05-06 12:00"
    assert sorted(m.name for m in meds) == ["Aspirin", "Oxycodone", "Sodium Chloride 0.9%"]
    for q in ("What medications is the patient on?", "current meds?", "active medications"):
        a = doctor.ask(q, patient=PID)
        assert not a.abstained and a.provider == "facts"
        assert len(a.sentences) == 3 and all(len(s.citations) == 1 for s in a.sentences)
        assert "Aspirin 81 mg" in a.answer and "2150-05-06" in a.answer
    # as of a date before the aspirin order: nothing was active yet
    as_of, meds = doctor.current_medications(PID, until="2150-04-30")
    assert meds == []


def test_a_question_for_a_part_of_the_record_gets_that_part_whole(doctor):
    """"What problems does she have?" is answered with the problem list as the rows say it,
    whatever else the record holds (the context used to offer 40 items in section order, so a
    later part could be cut off); "allergies?" with none recorded is an abstention that says so."""
    for q in ("What problems does the patient have?", "diagnoses?", "past medical history?"):
        a = doctor.ask(q, patient=PID)
        assert not a.abstained and a.provider == "facts", (q, a.reason)
        assert "Non-ST elevation (NSTEMI) myocardial infarction" in a.answer
        assert "Unspecified essential hypertension" in a.answer
        assert all(s.text.startswith("Problems:") for s in a.sentences)
    a = doctor.ask("Any allergies?", patient=PID)
    assert a.abstained and "no allergies are recorded" in a.reason
    out = REGISTRY.call(doctor, "patient_context", {"patient_id": PID, "sections": ["Problems"]})
    assert out.items and {i.section for i in out.items} == {"Problems"}


def test_forms_the_first_held_out_run_missed(doctor):
    """Failures of the first held-out run (benchmarks/ask_facts.py, docs in the README), each
    now a regression: "PT" is prothrombin time, not "pt" (the patient); a structured fact that
    is missing falls back to the notes only (the timeline holds the same rows: it answered
    "latest troponin?" with an unrelated lab); more names for the medication list, problems and
    a drug's orders."""
    a = doctor.ask("What is the difference between INR and PT?", patient=PID)
    assert a.abstained and a.plan == []
    for q in ("Show me this patient's most recent troponin result.", "tell me their latest troponin result"):
        a = doctor.ask(q, patient=PID)
        assert a.abstained and "no Troponin result" in a.reason, (q, a.answer)
        assert [st.tool for st in a.plan] == ["lab_results", "search_evidence"]
    a = doctor.ask("Show me the patient's allergy history", patient=PID)
    assert a.abstained and "no allergies are recorded" in a.reason, a.answer
    for q in ("Show me this patient's med list", "What is this patient taking at the moment?", "what is she on, med-wise"):
        a = doctor.ask(q, patient=PID)
        assert not a.abstained and len(a.sentences) == 3 and "Aspirin 81 mg" in a.answer, (q, a.reason)
    a = doctor.ask("What has the patient been diagnosed with?", patient=PID)
    assert "Unspecified essential hypertension" in a.answer
    for q in ("pt on aspirin?", "on aspirin?", "Is aspirin on her med list?", "Are they receiving aspirin right now?",
              "Does the patient have an active order for aspirin?", "Can you check whether he's still taking aspirin?"):
        a = doctor.ask(q, patient=PID)
        assert not a.abstained and a.plan[0].arguments.get("name") == "aspirin", (q, a.reason, a.plan)
        assert a.sentences[0].text.startswith("Medication active on 2150-05-06: Aspirin")
