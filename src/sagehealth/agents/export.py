"""Feedback out of the clinical zone: de-identified JSON lines for the radiology workflow and
model adaptation (one example per feedback row: question, model answer, clinician's version).

Every row names the patients it is about (the trace's patient and those of its evidence); a row
any of whose patients withdrew research consent is left out, and every text is run through the
de-identifier again on the way out, whoever wrote it (a researcher's answer is research-zone
text, but the detector may have improved since, and nothing leaves unscanned)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sagehealth.agents.ledger import Ledger
from sagehealth.privacy.research import check_key, withdrawn_patients
from sagehealth.privacy.structured import RowDeidentifier, known_identifiers


def _text(deid: RowDeidentifier, text: str | None, patient: str, linked: set[str]) -> str | None:
    """``text`` de-identified for ``patient``, with the own names and ids of every linked patient."""
    if not text:
        return text
    known = [v for pid in sorted(linked) for v in deid.known.get(pid, [])]
    return deid.text.apply(text, deid.spans(text, patient, known), patient)


def export_feedback(lake: Any, ledger: Ledger, out: Path, *, key: str | bytes | None = None) -> dict[str, Any]:
    """Write ``out`` (JSON lines, atomically); returns rows written and withheld."""
    deid = RowDeidentifier(key)
    check_key(lake, deid)  # the research zone's key, so pseudonyms match its rows
    withdrawn = withdrawn_patients(lake)
    withdrawn |= {deid.pseudonym(pid) for pid in withdrawn}  # researchers' traces name pseudonyms
    deid.known = known_identifiers(lake.table("patients").to_lance().to_table(
        columns=["patient_id", "given_names", "family_name", "identifiers", "telecom"]).to_pylist())
    traces = {t["trace_id"]: t for t in ledger.read("traces")}
    rows = ledger.read("feedback")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    written = withheld = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for fb in reversed(rows):  # oldest first
            trace = traces.get(fb["trace_id"], {})
            patient = fb.get("patient_id") or ""
            linked = {patient, *(fb.get("patients") or []), *(trace.get("patients") or [])} - {""}
            if linked & withdrawn:  # any patient the question, evidence or answer is about
                withheld += 1
                continue
            research = trace.get("role") == "researcher"  # already research-zone ids and text
            example = {
                "feedback_id": deid.key_of("row_id", fb["feedback_id"]),
                "trace_id": deid.key_of("row_id", fb["trace_id"]),
                "year": fb["created_at"].year if fb.get("created_at") else None,
                "role": fb["role"],
                "verdict": fb["verdict"],
                "target": fb["target"],
                "question": _text(deid, trace.get("question"), patient, linked),
                "answer": _text(deid, fb.get("original_text"), patient, linked),
                "edited": _text(deid, fb.get("edited_text"), patient, linked),
                "reason": _text(deid, fb.get("reason"), patient, linked),
                "patient": (patient if research else deid.pseudonym(patient)) if patient else None,
                "evidence": [e if research else deid.key_of("row_id", e) for e in fb.get("evidence_ids") or []],
                "provider": fb.get("provider"),
                "prompt_version": fb.get("prompt_version"),
            }
            fh.write(json.dumps(example, ensure_ascii=False) + "\n")
            written += 1
    os.replace(tmp, out)
    return {"rows": written, "withdrawn": withheld, "path": str(out)}
