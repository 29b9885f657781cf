"""Leak scans of every research-facing door (issue 14): made-up PHI of every kind is injected
into clinical notes of real sample patients, and nothing a researcher can reach — the research
tables, search, the agent's answers and their stored traces, the tool registry, the feedback
export — may give any of it back. A patient who withdraws research consent leaves all of them.

Every identifier here is synthetic. A failure names the door, the kind and the identifier form
found (and where: a table, a query, a question), never the note text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers import STEWARD, note_file

from sagehealth import Ecosystem
from sagehealth.errors import AccessDenied
from sagehealth.governance import Principal

KEY = "leak-scan-key-0123456789abcdef"
RESEARCHER = Principal("rhea.leak", "researcher", "research")


# -- the injected PHI, every kind, as written in the notes -------------------------------------
@dataclass(frozen=True)
class Phi:
    kind: str
    value: str

    def forms(self) -> list[str]:
        """What must not come back: a name's tokens of 3+ letters; otherwise the value as written
        and, for a number or code written with separators, its letters and digits run together."""
        if self.kind == "name":
            return [t for t in re.findall(r"[A-Za-z]+", self.value) if len(t) >= 3]
        out = [self.value]
        if self.kind not in ("email", "url") and re.search(r"\d", self.value) and not re.search(r"\s", self.value):
            packed = re.sub(r"[^0-9A-Za-z]", "", self.value)
            if packed != self.value and len(packed) >= 5:
                out.append(packed)
        return out


PHI = [
    # names: patients, relatives, clinicians; with cues, credentials, in capitals and lower case
    Phi("name", "Zvi Varnadoe"), Phi("name", "Jaroslava Mbeki"), Phi("name", "Tomasz Ng"),
    Phi("name", "Ottoline Achterberg"), Phi("name", "Brunhilde Kasprzak"), Phi("name", "Wilhelmina Okafor"),
    Phi("name", "Dobromir Szczepanik"), Phi("name", "Ingeborg Wachowiak"), Phi("name", "Oyelaran Quist"),
    Phi("name", "Ignatius Wrexham"), Phi("name", "Ilsabet"),
    # SSNs with a cue, spelled out, bare
    Phi("ssn", "999-94-5397"), Phi("ssn", "999-12-3456"), Phi("ssn", "999-23-4567"),
    Phi("phone", "617-555-0143"), Phi("phone", "508-555-0199"), Phi("phone", "(508) 555-0177"),
    Phi("phone", "413.555.0162"),
    Phi("fax", "(617) 555-0188"),
    Phi("email", "zvarnadoe@example.org"), Phi("email", "w.okafor+cardio@mail.example-health.org"),
    Phi("url", "https://mychart.example.org/patients/varnadoe-88123"), Phi("url", "mychart.example.org"),
    Phi("url", "portal.example-health.org/records/4471-kq"),
    Phi("ip", "10.24.193.77"), Phi("ip", "192.168.41.207"),
    Phi("uuid", "3f2b9c1e-7d4a-4b8e-9f10-2a6c5d8e7b41"),
    Phi("mrn", "VX-4471-803"), Phi("mrn", "00-88-1234-X"), Phi("mrn", "7730192"),
    Phi("record id", "XQ7731204Z"), Phi("record id", "CH-55120-B"),
    Phi("device serial", "PZX884512K"), Phi("device serial", "AB-44719-Q"), Phi("device serial", "7731-XK-0042"),
    Phi("lot number", "4J882A"), Phi("lot number", "HX20931"),
    Phi("licence plate", "7ABC123"), Phi("licence plate", "XKR-4471"),
    Phi("accession number", "RAD-2024-118833"), Phi("accession number", "CT-88-41922"),
    Phi("pathology number", "S24-10233"), Phi("pathology number", "SP-22-00871"),
    Phi("health plan number", "HPN-778124-02"), Phi("health plan number", "1EG4-TE5-MK73"),
    Phi("member number", "W88213457"), Phi("member number", "QZX-118-2294"),
    Phi("account number", "00234-9981-7"),
    Phi("certificate number", "C-99812"), Phi("certificate number", "BC-4410927"),
    Phi("street address", "12 Birchwood Crescent"), Phi("street address", "Birchwood"),
    Phi("street address", "400 Harbor Plaza"), Phi("street address", "77 Larkspur Close"),
    Phi("street address", "Larkspur"), Phi("street address", "9 Quarry Terrace"),
    Phi("street address", "Quarry Terrace"), Phi("street address", "Box 5532"),
    Phi("address unit", "Apt 4B"), Phi("address unit", "Suite 210"), Phi("address unit", "Unit 12"),
    Phi("city", "Pittsfield"), Phi("city", "Worcester"), Phi("zip", "01201"), Phi("zip", "01609"),
    Phi("age over 89", "age 94"), Phi("age over 89", "92 y/o"), Phi("age over 89", "aged 91"),
    Phi("age over 89", "ninety-three"), Phi("age over 89", "95-year-old"),
    Phi("date", "03/14/2019"), Phi("date", "07/22/1926"), Phi("date", "March 3, 2021"),
    Phi("date", "14-AUG-2020"), Phi("date", "11/05/2022"),
]

KINDS = sorted({p.kind for p in PHI})

# Four notes of three sample patients; the clinical content is what search and ask retrieve.
NOTES = {
    "leak-pulm": ("Pulmonary clinic progress note: VARNADOE, ZVI", "2019-03-14T10:00:00Z", """\
PULMONARY CLINIC PROGRESS NOTE
Date of service: 03/14/2019. Patient Zvi Varnadoe (MRN: VX-4471-803), SSN 999-94-5397, date of birth 07/22/1926.
Mr. Varnadoe is a 92 y/o retired machinist who lives at 12 Birchwood Crescent, Apt 4B, Pittsfield, MA 01201 with \
his daughter Brunhilde Kasprzak.
Contact: phone 617-555-0143, fax (617) 555-0188, e-mail zvarnadoe@example.org. He reads his results on the portal at \
https://mychart.example.org/patients/varnadoe-88123.
HISTORY: Persistent dry cough for three weeks with nocturnal wheezing and exertional dyspnea after one flight of \
stairs. No fever and no hemoptysis. Former smoker of forty pack-years.
FINDINGS: Scattered expiratory wheezes in both lung fields. Oxygen saturation 93 percent on room air. Spirometry \
shows an FEV1/FVC ratio of 0.62 with partial bronchodilator reversibility.
ASSESSMENT: Asthma-COPD overlap with an acute exacerbation.
PLAN: Start inhaled budesonide-formoterol twice daily and a five day prednisone burst; refer to pulmonary \
rehabilitation. Return in four weeks.
His wife Ilsabet called with questions about the inhaler technique.
Insurance verified: health plan ID HPN-778124-02, member # W88213457, billing account no. 00234-9981-7.
Discussed with Jaroslava Mbeki, RN. Electronically signed by Tomasz Ng MD.
"""),
    "leak-cardio": ("Cardiology consultation", "2021-03-03T15:30:00Z", """\
Cardiology Consultation
Seen on March 3, 2021 at the request of Dr. Ottoline Achterberg.
Patient Wilhelmina Okafor, aged 91, medical record number 00-88-1234-X, patient ID XQ7731204Z.
Reason for consult: recurrent syncope and palpitations.
She has a dual-chamber pacemaker, device serial number PZX884512K, placed in 2018; the atrial lead is recorded as \
implant serial # AB-44719-Q and the defibrillator spare as S/N: 7731-XK-0042. Device interrogation today shows \
normal sensing and pacing thresholds, battery longevity of about eight years and two brief episodes of atrial \
fibrillation.
Echocardiogram: left ventricular ejection fraction 45 percent with mild mitral regurgitation.
Influenza vaccine given in the left deltoid, Lot # 4J882A. Enoxaparin lot number: HX20931 per pharmacy.
Her son drives her to clinic in the car with license plate 7ABC123.
Social security number 999-12-3456 on file. Home phone 508-555-0199, cell (508) 555-0177, e-mail \
w.okafor+cardio@mail.example-health.org.
Address: 400 Harbor Plaza, Suite 210, Worcester, MA 01609.
Remote monitoring transmits from IP address 10.24.193.77 under monitoring order \
3f2b9c1e-7d4a-4b8e-9f10-2a6c5d8e7b41.
Plan: start apixaban 5 mg twice daily for stroke prevention, continue metoprolol 25 mg twice daily, repeat the \
echocardiogram in six months.
Dictated by Ignatius Wrexham, PA-C.
"""),
    "leak-ct": ("CT chest report", "2020-08-14T09:00:00Z", """\
CT CHEST WITH CONTRAST. ACCESSION # RAD-2024-118833. EXAM DATE 14-AUG-2020.
CLINICAL HISTORY: ELDERLY WOMAN (AGE 94) WITH WEIGHT LOSS AND HEMOPTYSIS. REFERRING PHYSICIAN DR. DOBROMIR SZCZEPANIK. \
PRIOR STUDY ACCESSION NUMBER CT-88-41922.
FINDINGS: SPICULATED 2.1 CM NODULE IN THE RIGHT UPPER LOBE WITH HILAR LYMPHADENOPATHY. SMALL RIGHT PLEURAL EFFUSION. \
NO PNEUMOTHORAX.
IMPRESSION: FINDINGS SUSPICIOUS FOR PRIMARY LUNG MALIGNANCY. RECOMMEND PET-CT AND TISSUE SAMPLING.
ADDENDUM: CT-GUIDED BIOPSY PERFORMED. SURGICAL PATHOLOGY S24-10233 SHOWS ADENOCARCINOMA, TTF-1 POSITIVE. SPECIMEN \
NO. SP-22-00871. RESULTS CALLED TO INGEBORG WACHOWIAK, NP AT 413.555.0162. MRN# 7730192.
"""),
    "leak-sw": ("Social work discharge note", "2022-10-20T13:00:00Z", """\
social work discharge planning note.
pt is a ninety-three year old widow admitted with a right hip fracture after a fall at home; her 95-year-old \
brother lives with her. spoke with niece oyelaran quist at the bedside.
home address 77 larkspur close, unit 12; mail goes to 9 quarry terrace or to p.o. box 5532.
registration shows 999-23-4567 and medicare number 1EG4-TE5-MK73, member id QZX-118-2294, chart # CH-55120-B.
death certificate #C-99812 for her late husband and birth certificate number BC-4410927 were scanned.
niece's car plate number XKR-4471. family used the guest wifi from 192.168.41.207 and the records link \
portal.example-health.org/records/4471-kq.
follow-up appointment 11/05/2022 with orthopedics.
plan: home physical therapy with a walker, home safety evaluation, calcium and vitamin d, and alendronate for \
osteoporosis.
"""),
}
# the patient (by rank among the sample patients) each note is attached to
NOTE_PATIENT = {"leak-pulm": 0, "leak-cardio": 1, "leak-ct": 0, "leak-sw": 2}

CLINICAL_QUERIES = [
    "persistent dry cough nocturnal wheezing budesonide-formoterol",
    "asthma-COPD overlap spirometry FEV1/FVC bronchodilator reversibility",
    "pacemaker device interrogation battery longevity atrial fibrillation",
    "ejection fraction mitral regurgitation apixaban metoprolol",
    "spiculated nodule right upper lobe hilar lymphadenopathy",
    "surgical pathology adenocarcinoma TTF-1 biopsy",
    "hip fracture fall at home walker home safety evaluation alendronate",
    "influenza vaccine left deltoid enoxaparin",
    "insurance verified health plan member billing account",
    "social work discharge planning niece registration medicare",
    "remote monitoring order transmits",
    "contact phone fax e-mail portal",
]
QUESTIONS = [
    "What was the plan for the persistent dry cough with nocturnal wheezing?",
    "What did spirometry show for the asthma-COPD overlap?",
    "What did the pacemaker device interrogation show?",
    "What was the ejection fraction on the echocardiogram and the plan for stroke prevention?",
    "What did the CT chest show in the right upper lobe and what did the pathology show?",
    "What was the discharge plan after the hip fracture from the fall at home?",
]


def _note(folder: Path, doc_id: str, patient: str) -> Path:
    title, when, text = NOTES[doc_id]
    return note_file(folder, doc_id, patient, text, date=when, title=title)


# -- scanning ------------------------------------------------------------------------------------
def _pattern(form: str) -> re.Pattern[str]:
    """Case-insensitive; a form that starts or ends with a digit must not touch another digit
    there (so a vector's float or a hash's digit run is not taken for a ZIP code)."""
    left = r"(?<![0-9])" if form[0].isdigit() else ""
    right = r"(?![0-9])" if form[-1].isdigit() else ""
    return re.compile(left + re.escape(form) + right, re.IGNORECASE)


PATTERNS = [(p, form, _pattern(form)) for p in PHI for form in p.forms()]


def scan(parts: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(kind, form, where) for every injected identifier found in the (where, text) parts."""
    found = []
    for where, text in parts:
        for phi, form, pat in PATTERNS:
            if pat.search(text):
                found.append((phi.kind, form, where))
    return found


def report(door: str, found: list[tuple[str, str, str]]) -> str:
    by_kind: dict[str, dict[str, set[str]]] = {}
    for kind, form, where in found:
        by_kind.setdefault(kind, {}).setdefault(form, set()).add(where)
    lines = [f"{door}: {len(by_kind)} kind(s) leaked: {', '.join(sorted(by_kind))}"]
    for kind in sorted(by_kind):
        for form, wheres in sorted(by_kind[kind].items()):
            w = sorted(wheres)
            lines.append(f"  [{kind}] {form!r} via {', '.join(w[:4])}{f' (+{len(w) - 4} more)' if len(w) > 4 else ''}")
    return "\n".join(lines)


def dump(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows without vector columns (numbers only) and with bytes as their length."""
    keep = [f.name for f in table.schema
            if not ((pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type))
                    and pa.types.is_floating(f.type.value_type))]
    rows = table.select(keep).to_pylist()
    for r in rows:
        for k, v in r.items():
            if isinstance(v, bytes):
                r[k] = f"<{len(v)} bytes>"
    return rows


def answer_data(answer: Any) -> Any:
    if hasattr(answer, "model_dump"):
        return answer.model_dump(mode="json")
    if hasattr(answer, "as_dict"):
        return answer.as_dict()
    from dataclasses import asdict

    return asdict(answer)


# -- the store ------------------------------------------------------------------------------------
@dataclass
class World:
    eco: Ecosystem
    researcher: Ecosystem
    patients: dict[str, str]        # note id -> clinical patient id
    pseudonyms: dict[str, str]      # note id -> research patient id
    documents: dict[str, str]       # note id -> research document id
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from sagehealth.demo import sample_root
    from sagehealth.privacy.structured import RowDeidentifier

    tmp = tmp_path_factory.mktemp("leak")
    eco = Ecosystem.open(tmp / "store", STEWARD)
    eco.ingest([sample_root() / "fhir"], options={"deid_key": KEY, "index": True})
    pids = eco.lake.sql("SELECT patient_id FROM patients ORDER BY patient_id").column("patient_id").to_pylist()
    assert len(pids) >= 3
    (tmp / "in").mkdir()
    patients = {doc_id: pids[rank] for doc_id, rank in NOTE_PATIENT.items()}
    eco.ingest([_note(tmp / "in", doc_id, pid) for doc_id, pid in patients.items()],
               options={"deid_key": KEY, "index": True})
    deid = RowDeidentifier(KEY)
    return World(eco=eco, researcher=eco.as_principal(RESEARCHER), patients=patients,
                 pseudonyms={d: deid.pseudonym(p) for d, p in patients.items()},
                 documents={d: deid.key_of("document_id", d) for d in patients}, tmp=tmp)


@dataclass
class Asked:
    answers: list[Any]
    tool_answer: dict[str, Any]
    traces: list[dict[str, Any]]
    export_requoted: list[str]      # feedback export lines: edits that re-quote the answer
    export_pasted: list[str]        # lines of edits into which the researcher pasted the notes


@pytest.fixture(scope="module")
def asked(world: World) -> Asked:
    """Every write the doors need, done once: the questions (traces), feedback and the exports."""
    from sagehealth.agents import REGISTRY
    from sagehealth.privacy.structured import RowDeidentifier

    r = world.researcher
    answers = [r.ask(q) for q in QUESTIONS]
    tool_answer = REGISTRY.call_json(r, "answer_question", {"question": QUESTIONS[0]})
    traces = [t for a in answers for t in world.eco.traces(trace_id=a.trace_id, limit=None)]
    traces += world.eco.traces(trace_id=tool_answer["trace_id"], limit=None)
    deid = RowDeidentifier(KEY)
    requoted, pasted = set(), set()
    for a in answers:
        fb = r.record_feedback(a.trace_id, "edit", reason="shorter, same facts",
                               edited_text=f"As the evidence says: {a.answer or a.reason or 'no answer'}")
        requoted.add(deid.key_of("row_id", fb["feedback_id"]))
    raw = "\n".join(text for _, _, text in NOTES.values())
    fb = r.record_feedback(answers[0].trace_id, "edit", edited_text=raw,
                           reason="pasted from the chart of Zvi Varnadoe; checked with Jaroslava Mbeki, RN")
    pasted.add(deid.key_of("row_id", fb["feedback_id"]))
    out = world.tmp / "feedback.jsonl"
    result = world.eco.export_feedback(out, key=KEY)
    lines = [ln for ln in out.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert result["rows"] == len(lines) == len(answers) + 1, result
    by_id = {json.loads(ln)["feedback_id"]: ln for ln in lines}
    assert set(by_id) == requoted | pasted
    return Asked(answers=answers, tool_answer=tool_answer, traces=traces,
                 export_requoted=[by_id[i] for i in sorted(requoted)], export_pasted=[by_id[i] for i in pasted])


# -- the test is sound: the identifiers are in the clinical notes and nowhere in the samples ------
def test_every_injected_identifier_is_in_the_clinical_notes_and_not_in_the_samples(world):
    from sagehealth.demo import sample_root

    docs = world.eco.lake.sql("SELECT document_id, title, text FROM documents "
                              "WHERE document_id LIKE 'leak-%'").to_pylist()
    assert sorted(d["document_id"] for d in docs) == sorted(NOTES)
    text = dump(docs)
    missing = [(p.kind, p.value) for p in PHI if p.value.lower() not in text.lower()]
    assert not missing, f"identifiers not in the clinical notes as written: {sorted(missing)}"
    samples = [(str(f), f.read_text(errors="replace")) for f in sorted((sample_root() / "fhir").rglob("*"))
               if f.is_file()]
    clash = scan(samples)
    assert not clash, f"identifiers also in the bundled sample data (pick others): {clash}"


def test_the_research_zone_holds_the_injected_notes_and_the_doors_find_them(world, asked):
    r = world.researcher
    rows = r.sql("SELECT document_id, patient_id FROM documents").to_pylist()
    assert {(d["document_id"], d["patient_id"]) for d in rows} >= {
        (world.documents[n], world.pseudonyms[n]) for n in NOTES}
    found = {h.document_id for q in CLINICAL_QUERIES[:7] for h in r.search(q, k=20)}
    assert set(world.documents.values()) <= found
    answered = [a for a in asked.answers if not a.abstained]
    ours = set(world.pseudonyms.values())
    assert len(answered) >= len(QUESTIONS) // 2, [(a.question, a.reason) for a in asked.answers if a.abstained]
    assert any(e.patient_id in ours for a in answered for e in a.evidence)


# -- the doors -----------------------------------------------------------------------------------
def door_tables(world: World, asked: Asked) -> list[tuple[str, str]]:
    r = world.researcher
    names = sorted(r.tables())
    assert {"patients", "documents", "chunks"} <= set(names), names
    return [(f"table {t}", dump(table_rows(r.sql(f'SELECT * FROM "{t}"')))) for t in names]


def door_search(world: World, asked: Asked) -> list[tuple[str, str]]:
    r = world.researcher
    queries = CLINICAL_QUERIES + [p.value for p in PHI]
    parts = []
    for q in queries:
        hits = r.search(q, k=20)
        parts.append((f"search {q!r}", dump([h.as_dict() for h in hits])))
    for q in CLINICAL_QUERIES[:4]:
        parts.append((f"search per document {q!r}", dump([h.as_dict() for h in r.search(q, k=20, per_document=True)])))
        parts.append((f"search bm25 {q!r}", dump([h.as_dict() for h in r.search(q, k=20, mode="bm25")])))
    return parts


def door_ask(world: World, asked: Asked) -> list[tuple[str, str]]:
    parts = [(f"ask #{i + 1} {field}", dump(value)) for i, a in enumerate(asked.answers)
             for field, value in answer_data(a).items()]
    parts += [(f"answer_question tool {field}", dump(value)) for field, value in asked.tool_answer.items()]
    return parts


def door_trace(world: World, asked: Asked) -> list[tuple[str, str]]:
    assert len(asked.traces) == len(asked.answers) + 1
    return [(f"trace of ask #{i + 1} {field}", dump(value)) for i, t in enumerate(asked.traces)
            for field, value in t.items()]


def door_tools(world: World, asked: Asked) -> list[tuple[str, str]]:
    from sagehealth.agents import REGISTRY

    r = world.researcher
    parts = []
    for q in CLINICAL_QUERIES + [p.value for p in PHI if p.kind != "name"][:12] + ["Zvi Varnadoe", "Mbeki"]:
        parts.append((f"search_evidence {q!r}",
                      dump(REGISTRY.call_json(r, "search_evidence", {"query": q, "k": 20}))))
    for note, doc in world.documents.items():
        parts.append((f"get_document {note}", dump(REGISTRY.call_json(r, "get_document", {"document_id": doc}))))
        parts.append((f"similar_cases {note}", dump(REGISTRY.call_json(
            r, "similar_cases", {"document_id": doc, "k": 10, "other_patients_only": False}))))
    for q in CLINICAL_QUERIES[:3]:
        parts.append((f"similar_cases text {q!r}", dump(REGISTRY.call_json(r, "similar_cases", {"text": q, "k": 10}))))
    for psn in sorted(set(world.pseudonyms.values())):
        try:
            parts.append((f"patient_context {psn}",
                          dump(REGISTRY.call_json(r, "patient_context", {"patient_id": psn}))))
        except AccessDenied:  # not a researcher's tool: nothing to scan
            pass
    ids = ", ".join(f"'{d}'" for d in world.documents.values())
    parts.append(("query_sql documents", dump(REGISTRY.call_json(
        r, "query_sql", {"query": f"SELECT * FROM documents WHERE document_id IN ({ids})"}))))
    parts.append(("query_sql chunks", dump(REGISTRY.call_json(
        r, "query_sql", {"query": "SELECT * EXCLUDE (vector) FROM chunks", "max_rows": 5000}))))
    return parts


def door_feedback_export(world: World, asked: Asked) -> list[tuple[str, str]]:
    return [(f"export line of edit #{i + 1}", ln) for i, ln in enumerate(asked.export_requoted)]


def door_feedback_export_pasted(world: World, asked: Asked) -> list[tuple[str, str]]:
    """A researcher pastes the notes themselves into an edit: the export's de-identifier must
    still take every identifier out."""
    return [("export line of the pasted edit", ln) for ln in asked.export_pasted]


DOORS = {"research tables": door_tables, "search": door_search, "ask": door_ask, "stored traces": door_trace,
         "tool registry": door_tools, "feedback export": door_feedback_export,
         "feedback export (notes pasted into an edit)": door_feedback_export_pasted}


@pytest.mark.parametrize("door", list(DOORS))
def test_no_injected_identifier_comes_out_of(door, world, asked):
    parts = DOORS[door](world, asked)
    assert parts, f"{door}: nothing to scan"
    found = scan(parts)
    assert not found, report(door, found)


# -- withdrawal: the patient leaves every door ---------------------------------------------------
WITHDRAWN_NOTE = ("Patient Zvi Varnadoe, SSN 999-94-5397. Chief complaint: intermittent claudication of the left calf "
                  "after two blocks of walking. Ankle-brachial index 0.61 on the left. Plan: supervised exercise "
                  "therapy and cilostazol 100 mg twice daily.")
STAYING_NOTE = ("Chief complaint: intermittent claudication of the right calf after one block of walking. "
                "Ankle-brachial index 0.72 on the right. Plan: supervised exercise therapy and atorvastatin.")


def test_a_patient_who_withdraws_leaves_every_research_door(tmp_path):
    from sagehealth.demo import sample_root
    from sagehealth.privacy.structured import RowDeidentifier

    bundles = sorted((sample_root() / "fhir").glob("*.json"))
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest(bundles, options={"deid_key": KEY})           # two patients, no notes: quick to index
    pids = eco.lake.sql("SELECT patient_id FROM patients ORDER BY 1").column("patient_id").to_pylist()
    assert len(pids) >= 2
    gone, stays = pids[0], pids[1]
    (tmp_path / "in").mkdir()
    paths = [note_file(tmp_path / "in", doc_id, pid, text, date="2021-05-04T10:00:00Z")
             for doc_id, pid, text in (("wd-gone", gone, WITHDRAWN_NOTE), ("wd-stays", stays, STAYING_NOTE))]
    eco.ingest(paths, options={"deid_key": KEY, "index": True})
    deid = RowDeidentifier(KEY)
    psn_gone, psn_stays = deid.pseudonym(gone), deid.pseudonym(stays)
    marker_gone, marker_stays = re.compile("cilostazol", re.I), re.compile("atorvastatin", re.I)
    r = eco.as_principal(RESEARCHER)
    query = "intermittent claudication calf ankle-brachial index supervised exercise therapy"
    question = "What was the plan for the intermittent claudication of the left calf?"

    def tables() -> str:
        return "\n".join(dump(table_rows(r.sql(f'SELECT * FROM "{t}"'))) for t in sorted(r.tables()))

    def hits() -> list[Any]:
        return r.search(query, k=20) + r.search("cilostazol left calf", k=20, mode="bm25")

    # before: the patient is in every door (so the checks below are not vacuous)
    before = tables()
    assert psn_gone in before and marker_gone.search(before) and psn_stays in before
    assert any(h.patient_id == psn_gone for h in hits())
    a = r.ask(question)
    assert not a.abstained and any(e.patient_id == psn_gone for e in a.evidence), a.reason
    r.record_feedback(a.trace_id, "edit", reason="shorter",
                      edited_text=f"Supervised exercise therapy and cilostazol. (was: {a.answer})")
    b = r.ask("What was the plan for the intermittent claudication of the right calf?")
    r.record_feedback(b.trace_id, "accept", reason="fine")
    out = tmp_path / "fb.jsonl"
    first = eco.export_feedback(out, key=KEY)
    assert first["rows"] == 2 and first["withdrawn"] == 0 and marker_gone.search(out.read_text()), first

    eco.set_consent(gone, research_allowed=False, key=KEY)

    leaks = []
    after = tables()
    if psn_gone in after or marker_gone.search(after):
        leaks.append("research tables")
    assert psn_stays in after and marker_stays.search(after)      # the others stay
    found = hits()
    if any(h.patient_id == psn_gone or marker_gone.search(h.text or "") for h in found):
        leaks.append("search")
    assert any(h.patient_id == psn_stays for h in found)
    a2 = r.ask(question)
    if psn_gone in dump(answer_data(a2)) or marker_gone.search(dump(answer_data(a2))):
        leaks.append("ask evidence")
    result = eco.export_feedback(out, key=KEY)
    text = out.read_text()
    if psn_gone in text or marker_gone.search(text) or result["withdrawn"] < 1:
        leaks.append("feedback export")
    assert not leaks, f"the withdrawn patient is still reachable through: {', '.join(leaks)}"
