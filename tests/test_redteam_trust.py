"""Red-team findings against the issue-14 fixes (keyed audit log, masked steward views).

Every test here reproduces a leak or bypass that the current code still allows; each one fails
for that reason until it is fixed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import STEWARD

from sagehealth import Ecosystem
from sagehealth.governance import Principal
from sagehealth.governance.audit import FIELDS

AUDITOR = Principal("aud", "auditor", "audit")
MALLORY = Principal("dr.mallory", "clinician", "treatment", patients=frozenset({"p-x"}))
NAMED_FILE = "Abdul_Koepp_e925b0f3-8006-43f6-aa31-94bd215e55e7.json"   # a file name that names a patient


def _plain_chain(entries: list[dict]) -> str:
    """What someone with write access to the store but without the audit key can compute: the
    pre-key (unkeyed, plain SHA-256) chain, which verify still accepts as a prefix."""
    prev = "0" * 64
    for seq, e in enumerate(entries, 1):
        e.update(seq=seq, alg="", prev=prev)
        body = {k: e[k] for k in FIELDS}
        raw = prev + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        e["hash"] = prev = hashlib.sha256(raw.encode()).hexdigest()
    return prev


def test_a_forged_restart_entry_lets_a_keyless_writer_rewrite_the_whole_log(tmp_path, samples):
    """The log's first line decides from which store version the commits' anchors count
    (``_restart_version``), and unkeyed entries still verify as a prefix. A writer without the
    key forges an unkeyed "audit_restart" first entry naming the current version, drops the
    entry of their choice, recomputes the plain chain and the head: every anchor is skipped and
    verify says the log is intact."""
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([samples / "notes" / "mtsamples_sample.csv"], format="notes")
    eco.as_principal(MALLORY).sql("SELECT count(*) FROM patients")   # the access to hide
    eco.ingest([samples / "literature"], format="literature")        # a commit anchors the head
    eco.tables()
    folder = Path(eco.home) / "audit"
    lines = [json.loads(x) for x in (folder / "audit.jsonl").read_text().splitlines()]
    assert any(e["user"] == "dr.mallory" for e in lines)
    assert any("audit" in c.summary for c in eco.lake.commits())

    restart = {"at": lines[0]["at"], "user": "aud", "role": "auditor", "purpose": "audit",
               "action": "audit_restart", "patients": [], "allowed": True, "reason": "disk fault",
               "resource": f"audit log restarted at store version {eco.lake.head().version}; the previous "
                           "log was kept as (nothing: it was gone) (sha256 none)"}
    forged = [restart, *[e for e in lines if e["user"] != "dr.mallory"]]
    head = _plain_chain(forged)
    (folder / "audit.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in forged))
    (folder / "audit.head").write_text(json.dumps({"seq": len(forged), "hash": head}))

    fresh = Ecosystem.open(eco.home, STEWARD)       # a new process
    v = fresh.as_principal(AUDITOR).verify_audit()
    assert not v.ok, "a log rewritten without the audit key verifies as intact (dr.mallory's read is gone)"


def _steward_store(tmp_path: Path, samples: Path) -> Ecosystem:
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([samples / "fhir" / NAMED_FILE])                       # no -m: the message is made up
    eco.ingest([samples / "bad" / "observations_with_errors.ndjson"])  # quarantined raw content
    return eco


def test_a_steward_reads_the_source_file_name_in_the_commit_message(tmp_path, samples):
    """Source URIs are masked for stewards because file names carry patient names, but an ingest
    without ``-m`` writes ``ingest <file names>`` as the commit message (and into the summary's
    ``message``), which a steward reads in SQL and in ``versions``."""
    eco = _steward_store(tmp_path, samples)
    seen = json.dumps([eco.sql("SELECT message, summary FROM commits").to_pylist(),
                       [(c.message, c.summary) for c in eco.versions()]], default=str)
    assert "Abdul_Koepp" not in seen, "the patient's name in the source file name reaches a steward"


@pytest.mark.parametrize("table, column, present", [
    ("sources", "source_uri", "%Abdul_Koepp%"),
    ("provenance", "source_uri", "%Abdul_Koepp%"),
    ("quarantine", "raw", "%Heart rate%"),
])
def test_a_steward_read_filter_sees_the_unmasked_columns(tmp_path, samples, table, column, present):
    """``Ecosystem.read(table, filter=...)`` hands a steward's filter to Lance over the stored
    rows and masks only what it returns: the filter is an oracle on the masked source URIs and
    on the withheld quarantine content (one LIKE per character reads them out)."""
    eco = _steward_store(tmp_path, samples)
    hit = eco.read(table, filter=f"{column} LIKE '{present}'").num_rows
    miss = eco.read(table, filter=f"{column} LIKE '%no-such-text-anywhere%'").num_rows
    masked = eco.sql(f"SELECT count(*) AS n FROM {table} WHERE {column} LIKE '{present}'").column("n")[0].as_py()
    assert masked == 0                                   # SQL sees only the masked values ...
    assert (hit, miss) == (0, 0), f"... but read(filter=) matched {hit} rows on the unmasked {table}.{column}"


def test_a_quarantine_reason_quotes_withheld_raw_content(tmp_path):
    """Raw quarantined content is withheld from stewards without a break-glass read, but the
    reason quotes the offending value verbatim (a name and an SSN in a bad birthDate here)."""
    src = tmp_path / "in" / "batch.ndjson"
    src.parent.mkdir()
    src.write_text(json.dumps({"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}],
                               "birthDate": "Jane Doe SSN 123-45-6789"}) + "\n")
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([src], format="fhir")
    seen = json.dumps([eco.quarantine(), eco.sql("SELECT * FROM quarantine").to_pylist()], default=str)
    assert "123-45-6789" not in seen and "Jane Doe" not in seen, \
        "the withheld raw record reaches a steward through the quarantine reason"


# -- the research zone ---------------------------------------------------------------------
RESEARCHER = Principal("rita", "researcher", "research")
PATIENT_ID = "pat-zq"


def _named_bundle(path: Path) -> Path:
    """One patient (Zebulon Quixote, MRN-778899) whose name sits where FHIR allows free text:
    CodeableConcept.text of codes, categories, reasons, dispositions, interpretations, and in
    the note itself."""
    ref = {"reference": f"Patient/{PATIENT_ID}"}
    res = [
        {"resourceType": "Patient", "id": PATIENT_ID, "name": [{"family": "Quixote", "given": ["Zebulon"]}],
         "gender": "male", "birthDate": "1950-02-03", "identifier": [{"system": "urn:mrn", "value": "MRN-778899"}]},
        {"resourceType": "Encounter", "id": "enc-zq", "status": "finished", "class": {"code": "AMB"}, "subject": ref,
         "period": {"start": "2020-01-01T10:00:00Z", "end": "2020-01-01T11:00:00Z"},
         "type": [{"text": "Visit with Zebulon Quixote"}],
         "reasonCode": [{"text": "Zebulon Quixote complains of chest pain"}],
         "hospitalization": {"dischargeDisposition": {"text": "home to wife Dulcinea Quixote"}}},
        {"resourceType": "Observation", "id": "obs-zq", "status": "final", "subject": ref,
         "category": [{"text": "Quixote panel"}],
         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                              "display": "Heart rate of Zebulon Quixote"}]},
         "effectiveDateTime": "2020-01-01T10:30:00Z", "valueQuantity": {"value": 80, "unit": "/min"},
         "interpretation": [{"text": "called Zebulon Quixote at 555-867-5309"}]},
        {"resourceType": "Condition", "id": "cond-zq", "subject": ref,
         "code": {"text": "Zebulon Quixote's windmill phobia"}, "onsetDateTime": "2020-01-01"},
        {"resourceType": "DocumentReference", "id": "doc-zq", "status": "current", "subject": ref,
         "type": {"text": "Letter to Zebulon Quixote"}, "date": "2020-01-02T00:00:00Z",
         "description": "Letter for Zebulon Quixote MRN-778899",
         "content": [{"attachment": {"contentType": "text/plain",
                                     "data": "UGF0aWVudCBaZWJ1bG9uIFF1aXhvdGUgd2FzIHNlZW4gdG9kYXku"}}]},
    ]  # the note's data is base64 of "Patient Zebulon Quixote was seen today."
    path.write_text("".join(json.dumps(r) + "\n" for r in res))
    return path


def _indexed_named_store(tmp_path: Path, monkeypatch) -> Ecosystem:
    """A store holding the named bundle, indexed for search (as a steward)."""
    monkeypatch.setenv("SAGEHEALTH_DEID_KEY", "redteam-deid-key-0123456789abcdef")
    src = tmp_path / "in"
    src.mkdir()
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([_named_bundle(src / "batch.ndjson")], format="fhir", options={"index": True})
    return eco


@pytest.fixture
def named_research(tmp_path, monkeypatch) -> Ecosystem:
    monkeypatch.setenv("SAGEHEALTH_DEID_KEY", "redteam-deid-key-0123456789abcdef")
    src = tmp_path / "in"
    src.mkdir()
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([_named_bundle(src / "batch.ndjson")], format="fhir")
    return eco.as_principal(RESEARCHER)


def _leaks(rows: list[dict], needles=("Quixote", "Zebulon", "Dulcinea", "778899", "867-5309")) -> list[str]:
    found = []
    for row in rows:
        for col, value in row.items():
            text = json.dumps(value, default=str)
            found += [f"{col}: {needle}" for needle in needles if needle in text]
    return sorted(set(found))


@pytest.mark.parametrize("table", ["encounters", "events"])
def test_free_text_of_coded_fields_reaches_researchers_verbatim(named_research, table):
    """``keep`` copies CodeableConcepts (with their display/text), categories, encounter reasons
    and types, discharge dispositions and interpretations as they are: free text in them (here
    the patient's name and phone) reaches the research zone untouched."""
    leaks = _leaks(named_research.sql(f"SELECT * FROM {table}").to_pylist())
    assert not leaks, f"identifiers in research_{table}: {leaks}"


def test_the_patients_own_name_and_mrn_survive_in_their_research_note(named_research):
    """The store knows the patient's name and MRN (patients table), but the note text, title and
    type of that very patient reach the research zone with them (the free-text de-identifier
    uses no per-patient dictionary: 'Patient Zebulon Quixote', a kept surname, 'MRN-778899')."""
    leaks = _leaks(named_research.sql("SELECT title, text, code FROM documents").to_pylist())
    assert not leaks, f"identifiers in research_documents: {leaks}"


# -- audit gaps ------------------------------------------------------------------------------
def test_a_sandbox_escape_with_a_lone_surrogate_leaves_no_audit_entry(eco):
    """The audit entry is JSON-encoded to UTF-8; a query holding a lone surrogate (what the CLI
    makes of a non-UTF-8 byte in argv, what any JSON string can carry as \\ud800) cannot be
    encoded, so the escape attempt raises UnicodeEncodeError and is recorded nowhere."""
    researcher = eco.as_principal(RESEARCHER)
    auditor = eco.as_principal(AUDITOR)
    before = len(auditor.audit_entries())
    with pytest.raises(Exception) as caught:
        researcher.sql("SELECT * FROM read_text('/etc/passwd') -- \udcff")
    entries = auditor.audit_entries()[before:]
    denials = [e for e in entries if e.user == "rita" and not e.allowed]
    assert denials, (f"the escape attempt ({type(caught.value).__name__}) left no audit entry: "
                     f"{[(e.user, e.action) for e in entries]}")


def _set(field: str, value, line: int):
    def edit(folder: Path) -> None:
        path = folder / "audit.jsonl"
        lines = path.read_text().splitlines()
        entry = json.loads(lines[line])
        entry[field] = value
        lines[line] = json.dumps(entry)
        path.write_text("\n".join(lines) + "\n")
    return edit


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda folder: (folder / "audit.head").write_text("garbage"), id="unreadable-head"),
    pytest.param(_set("hash", 7, -1), id="last-hash-not-a-string"),
    pytest.param(_set("prev", 0, 0), id="first-prev-not-a-string"),
])
def test_a_malformed_entry_or_head_crashes_verify_and_restart(tmp_path, samples, tamper):
    """A log tampered with (a non-string hash or prev, an unreadable head) should be reported by
    verify and be restartable; instead verify raises (TypeError / AuditError) and so does
    restart, which calls it: with a bad tail or head, no command can ever run again until someone
    repairs the files by hand."""
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([samples / "notes" / "mtsamples_sample.csv"], format="notes")
    eco.tables()
    tamper(Path(eco.home) / "audit")
    auditor = Ecosystem.open(eco.home, AUDITOR)
    v = auditor.verify_audit()                      # raises today
    assert not v.ok
    auditor.restart_audit("incident 7")
    Ecosystem.open(eco.home, STEWARD).tables()      # back in service


def test_the_feedback_export_carries_the_patients_name_and_mrn(tmp_path, monkeypatch):
    """``feedback export`` is the de-identified way out of the clinical zone, but it runs the same
    free-text de-identifier over the clinician's question and the model's answer: the name the
    store holds for that very patient, and the MRN, leave in the exported JSON lines."""
    eco = _indexed_named_store(tmp_path, monkeypatch)
    clinician = eco.as_principal(Principal("dr.ana", "clinician", "treatment", patients=frozenset({PATIENT_ID})))
    clinician.ask("What is the heart rate of Zebulon Quixote?", patient=PATIENT_ID)
    trace_id = clinician.traces()[0]["trace_id"]
    clinician.record_feedback(trace_id, "accept")
    out = tmp_path / "export" / "feedback.jsonl"
    assert eco.export_feedback(out)["rows"] == 1
    leaks = _leaks([json.loads(line) for line in out.read_text().splitlines()])
    assert not leaks, f"identifiers in the de-identified feedback export: {leaks}"


def test_a_researchers_answer_passes_the_output_guard_with_the_patients_name(tmp_path, monkeypatch):
    """The researcher door of the tool registry (what MCP and REST serve): the answer quotes the
    research note with the patient's full name and the privacy check still passes."""
    from sagehealth.agents import REGISTRY

    eco = _indexed_named_store(tmp_path, monkeypatch)
    out = REGISTRY.call_json(eco.as_principal(RESEARCHER), "answer_question",
                             {"question": "Which patient was seen today and what did they complain of?"})
    leaks = _leaks([{"answer": out["answer"], "evidence": out["evidence"]}])
    assert not leaks, f"a researcher's answer names the patient: {leaks} ({out['answer']!r})"


def test_a_vcf_id_holding_the_sample_id_reaches_research_variants(tmp_path, monkeypatch):
    """``export-deid`` keys sample ids also inside ID values (they are known to carry them), but
    the research table keeps ``variant_id`` as it is: the sample id keyed in ``sample_id`` (here
    the patient's MRN) stands in clear in ``variant_id`` next to it."""
    monkeypatch.setenv("SAGEHEALTH_DEID_KEY", "redteam-deid-key-0123456789abcdef")
    src = tmp_path / "in"
    src.mkdir()
    vcf = src / "calls.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1>\n"
                   '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tMRN-778899\n"
                   "chr1\t1000\tMRN-778899_var1\tA\tG\t50\tPASS\t.\tGT\t0/1\n")
    eco = Ecosystem.open(tmp_path / "store", STEWARD)
    eco.ingest([_named_bundle(src / "batch.ndjson")], format="fhir")
    eco.ingest([vcf], format="vcf")
    rows = eco.as_principal(RESEARCHER).sql("SELECT sample_id, variant_id FROM variants").to_pylist()
    assert rows and "778899" not in rows[0]["sample_id"]      # the sample id itself is keyed ...
    assert not _leaks(rows), f"... but not where the ID column repeats it: {rows}"


def test_a_masked_source_token_is_an_unkeyed_hash_of_the_path(tmp_path, samples):
    """The steward's ``masked:<token>`` is the first 16 hex digits of a plain SHA-256 of the URI:
    anyone who can guess a path (landing folder + a naming scheme + a patient's name) confirms
    it offline against the token, no key needed."""
    eco = _steward_store(tmp_path, samples)
    tokens = {r["source_uri"] for r in eco.sql("SELECT source_uri FROM sources").to_pylist()}
    guess = (samples / "fhir" / NAMED_FILE).resolve().as_uri()
    assert f"masked:{hashlib.sha256(guess.encode()).hexdigest()[:16]}.json" not in tokens, \
        "a guessed file name is confirmed against the steward's masked token without any key"


def test_a_steward_reads_traces_and_feedback_without_the_patients_name(tmp_path, monkeypatch):
    """Stewards run operations on the ledger (providers, timings, verdicts), not its contents: a
    clinician's question naming the patient reaches them de-identified."""
    eco = _indexed_named_store(tmp_path, monkeypatch)
    clinician = eco.as_principal(Principal("dr.ana", "clinician", "treatment", patients=frozenset({PATIENT_ID})))
    a = clinician.ask("What is the heart rate of Mr. Zebulon Quixote?", patient=PATIENT_ID)
    clinician.record_feedback(a.trace_id, "edit", edited_text="Heart rate 80/min for Mr. Quixote.", reason="short")
    assert "Quixote" in clinician.traces()[0]["question"]          # the asker sees their own
    seen = eco.traces(trace_id=a.trace_id) + eco.feedback(trace_id=a.trace_id)
    assert seen and seen[0]["trace_id"] == a.trace_id and seen[0]["provider"]
    assert not _leaks(seen, needles=("Quixote", "Zebulon")), _leaks(seen, needles=("Quixote", "Zebulon"))
