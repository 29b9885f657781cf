"""Defects a review of the agent layer found (each failed before its fix): traces and feedback
kept apart by role as well as user, numbers and negations checked against the right fact,
tokens revocable by the id they are listed under."""

from __future__ import annotations

from sagehealth.agents.checks import support
from sagehealth.errors import AccessDenied
from sagehealth.genai.base import Evidence
from sagehealth.governance import Principal


def _ev(text: str) -> Evidence:
    return Evidence(ref="E1", id="chk_1", text=text)


# -- traces and feedback are matched on the user name only, not the role ----------------------
def _clinician_trace(world) -> str:
    doc = world["eco"].as_principal(world["who"]["clinician"])
    return doc.ask("cough chest radiograph", patient=world["mine"]).trace_id


def test_researcher_with_a_clinicians_user_name_does_not_read_the_clinical_trace(world):
    trace_id = _clinician_trace(world)
    same_name = world["eco"].as_principal(Principal(world["who"]["clinician"].user, "researcher", "research"))
    seen = same_name.traces(trace_id=trace_id)
    # a researcher must never see identified answers or clinical patient ids
    assert [t for t in seen if t["role"] == "clinician"] == []


def test_researcher_with_a_clinicians_user_name_cannot_give_feedback_on_the_clinical_trace(world):
    trace_id = _clinician_trace(world)
    same_name = world["eco"].as_principal(Principal(world["who"]["clinician"].user, "researcher", "research"))
    try:
        row = same_name.record_feedback(trace_id, "accept")
    except AccessDenied:
        return
    raise AssertionError(f"feedback stored, copying the identified answer into the research role's rows: "
                         f"patient {row['patient_id']!r}, text {row['original_text'][:60]!r}")


# -- grounding check false accepts -----------------------------------------------------------
def test_support_refuses_a_number_taken_from_another_fact_of_the_evidence():
    ev = [_ev("Hemoglobin 9.8 g/dL. Creatinine 1.2 mg/dL.")]
    assert not support("Creatinine was 9.8 mg/dL.", ev).supported


def test_support_refuses_a_sentence_that_swaps_which_finding_is_negated():
    ev = [_ev("There is a pleural effusion but no consolidation.")]
    assert not support("There is consolidation but no pleural effusion.", ev).supported


def test_support_keeps_sentences_that_agree_with_their_evidence():
    ev = [_ev("Hemoglobin 9.8 g/dL. Creatinine 1.2 mg/dL. There is a pleural effusion but no consolidation.")]
    assert support("Creatinine was 1.2 mg/dL.", ev).supported
    assert support("No consolidation; there is a pleural effusion.", ev).supported
    assert support("Pneumothorax is ruled out.", [_ev("Pneumothorax ruled out.")]).supported
    assert not support("Pneumothorax is present.", [_ev("Pneumothorax ruled out.")]).supported


def test_a_token_is_revoked_by_the_id_it_is_listed_under(tmp_path):
    from sagehealth import Ecosystem

    from helpers import STEWARD

    st = Ecosystem.open(tmp_path / "s", STEWARD)
    who = Principal("rita", "researcher", "research")
    tok = st.issue_token(who)
    listed = st.tokens()
    assert len(listed) == 1 and tok not in str(listed)
    assert not st.revoke_token(listed[0]["id"][:8])  # too short to name one token
    assert st.revoke_token(listed[0]["id"])
    assert st.tokens() == []
    from sagehealth.governance.tokens import TokenStore

    assert TokenStore(st.home).principal(tok) is None
