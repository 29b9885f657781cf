"""``sagehealth demo``: ingest the sample data that ships in the package and show the store.

Each source format is one ingest run, so the demo ends with one version per source and can show
time travel, provenance and quarantine on real (synthetic or public) records.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from sagehealth.ecosystem import Ecosystem
from sagehealth.governance import Principal

#: section rules stay this wide when the output is piped (tables may be wider)
RULE_WIDTH = 110


def _rule(out: Console, title: str) -> None:
    out.print(Rule(title), width=min(out.width, RULE_WIDTH))


DEMO_HOME = "./sage-demo"
#: the demo's de-identification key: public, so only for the synthetic sample data
DEMO_KEY = "sagehealth-demo-key-not-a-secret"

#: (folder under sample_data, format, commit message)
SAMPLES = [
    ("fhir", "fhir", "Synthea FHIR bundles and a bulk-export NDJSON sample"),
    ("notes", "notes", "MTSamples transcriptions (notes and radiology reports)"),
    ("dicom", "dicom", "pydicom test images and a structured report"),
    ("vcf", "vcf", "a small annotated VCF"),
    ("literature", "literature", "SciFact abstracts"),
    ("omop", "omop", "an OMOP CDM 5.4 extract"),
    ("bad", "fhir", "records with errors, to show the quarantine"),
]

QUESTIONS = [
    (
        "Patients per source system (one model for FHIR, OMOP, ...)",
        """SELECT source_system, count(*) AS patients, min(birth_date) AS oldest_birth_date
           FROM patients GROUP BY 1 ORDER BY 2 DESC""",
    ),
    (
        "One patient linked across FHIR, DICOM and genomics (by identifier)",
        """SELECT p.patient_id, p.given_names || ' ' || p.family_name AS patient,
                  list(DISTINCT i.source_patient_id) AS dicom_patient_ids,
                  list(DISTINCT s.modality) AS modalities,
                  list(DISTINCT v.gene || ' ' || v.consequence) FILTER (WHERE v.gene IS NOT NULL) AS variants
           FROM patients p
           JOIN imaging_studies i ON i.patient_id = p.patient_id
           JOIN imaging_series s ON s.study_uid = i.study_uid
           LEFT JOIN variants v ON v.patient_id = p.patient_id
           GROUP BY ALL""",
    ),
    (
        "Patients: encounters, clinical events and documents per patient",
        """SELECT p.given_names || ' ' || p.family_name AS patient, p.gender, p.birth_date,
                  (SELECT count(*) FROM encounters e WHERE e.patient_id = p.patient_id) AS encounters,
                  (SELECT count(*) FROM events v WHERE v.patient_id = p.patient_id) AS events,
                  (SELECT count(*) FROM documents d WHERE d.patient_id = p.patient_id) AS documents
           FROM patients p ORDER BY events DESC LIMIT 8""",
    ),
    (
        "Most frequent conditions (code system, code, display)",
        """SELECT code.system AS system, code.code AS code, code.display AS display, count(*) AS n
           FROM events WHERE kind = 'condition' GROUP BY ALL ORDER BY n DESC LIMIT 8""",
    ),
    (
        "Latest vital signs and labs with values and units",
        """SELECT patient_id[:8] AS patient, start::DATE AS date, code.display AS test,
                  round(value_num, 1) AS value, unit
           FROM events WHERE kind = 'observation' AND value_num IS NOT NULL
           ORDER BY start DESC LIMIT 8""",
    ),
    (
        "Documents by kind, with their sections",
        """SELECT kind, count(*) AS documents, round(avg(length(text))) AS avg_chars,
                  round(avg(len(sections)), 1) AS avg_sections
           FROM documents GROUP BY kind ORDER BY documents DESC""",
    ),
    (
        "Imaging: studies, series and instances with a thumbnail",
        """SELECT s.modality, count(DISTINCT s.study_uid) AS studies, count(DISTINCT s.series_uid) AS series,
                  count(i.sop_instance_uid) AS instances, count(i.thumbnail) AS thumbnails
           FROM imaging_series s LEFT JOIN imaging_instances i USING (series_uid)
           GROUP BY s.modality ORDER BY instances DESC""",
    ),
]


def sample_root() -> Path:
    """The folder of bundled sample data."""
    return Path(str(resources.files("sagehealth") / "sample_data"))


#: the demo's people (a real deployment takes them from its identity provider and EHR)
STEWARD = Principal("sam.steward", "steward", "operations")
RESEARCHER = Principal("rita.research", "researcher", "research")
AUDITOR = Principal("aude.audit", "auditor", "audit")


def run_demo(home: str | None, out: Console) -> Ecosystem:
    """Run the demo into ``home`` (default ./sage-demo) and print what it finds."""
    from sagehealth.cli import print_rows

    eco = Ecosystem.open(home or DEMO_HOME, STEWARD)
    root = sample_root()
    # The research zone needs the de-identification key. On synthetic sample data the demo uses
    # a fixed, public demo key unless SAGEHEALTH_DEID_KEY is set; a real deployment sets its own.
    import os

    key = os.environ.get("SAGEHEALTH_DEID_KEY") or DEMO_KEY
    _rule(out, f"SAGE-Health demo — store at {eco.home}")
    out.print(f"[dim]ingest as {STEWARD.user} (data steward)[/dim]")
    for folder, fmt, message in SAMPLES:
        path = root / folder
        if not path.exists():
            continue
        s = eco.ingest([path], format=fmt, message=message, options={"deid_key": key, "index": True})
        if not any(not f.skipped for f in s.files):
            out.print(f"[dim]{folder}: already ingested (same content) — no new version[/dim]")
            continue
        rows = ", ".join(f"{t} {n}" for t, n in s.rows.items())
        out.print(
            f"[bold]v{s.version}[/bold] {folder:<10} {s.records_in:>6} records → "
            f"{s.ingested} ingested, [red]{s.quarantined} quarantined[/red]  ({rows})"
        )
    _rule(out, "What is in the store")
    print_rows([{"table": t, "rows": n} for t, n in eco.tables().items() if n], title="tables")
    # The care team comes from the hospital's EHR; here: every patient of the sample data.
    team = frozenset(eco.lake.read("patients", columns=["patient_id"]).column("patient_id").to_pylist())
    doctor = eco.as_principal(Principal("dr.ana", "clinician", "treatment", patients=team))
    out.print(f"[dim]the questions below run as dr.ana (clinician) with a care team of {len(team)} patients[/dim]")
    for title, query in QUESTIONS:
        _rule(out, title)
        out.print(f"[dim]{' '.join(query.split())}[/dim]")
        print_rows(doctor.sql(query).to_pylist())
    versions = doctor.versions()
    _rule(out, "Time travel")
    if len(versions) >= 3:
        v = versions[1].version
        then = doctor.sql("SELECT count(*) AS n FROM documents", version=v).to_pylist()[0]["n"]
        now = doctor.sql("SELECT count(*) AS n FROM documents").to_pylist()[0]["n"]
        out.print(f"documents at version {v}: {then}; at version {versions[-1].version}: {now}")
    _rule(out, "Provenance of one document row")
    doc = doctor.sql("SELECT row_id FROM documents WHERE patient_id IS NOT NULL LIMIT 1").to_pylist()
    if doc:
        t = doctor.trace(doc[0]["row_id"])
        prov = t["provenance"] or {}
        out.print(f"{doc[0]['row_id']} ← {prov.get('source_uri')} @ {prov.get('locator')} "
                  f"(sha256 {str(prov.get('source_sha256'))[:12]}…, reader {prov.get('reader')} "
                  f"v{prov.get('reader_version')}, {prov.get('run_id')})")
    _search(doctor, eco, out)
    _rule(out, "Quarantine: bad records kept with their reason, the rest ingested (steward)")
    print_rows([{"locator": q["locator"], "file": q["source_uri"].rsplit("/", 1)[-1], "reason": q["reason"]}
                for q in eco.quarantine(limit=10)], width=120)
    _agent(eco, doctor, out)
    _radiology(eco, doctor, out, key)
    _privacy(eco, doctor, out, key)
    out.print(f"\nExplore it: [bold]sagehealth --role researcher sql \"SELECT * FROM patients\" --home {eco.home}[/bold]")
    return eco


def _search(doctor: Ecosystem, eco: Ecosystem, out: Console) -> None:
    """Hybrid search as the clinician (own patients' documents and literature) and as a
    researcher (the research zone), with the score of every stage and the matched words."""
    from rich.markup import escape

    def show(hits: list) -> None:
        for i, h in enumerate(hits, 1):
            text, marked, pos = h.text, [], 0
            for a, b in h.highlights:
                marked += [escape(text[pos:a]), f"[bold yellow]{escape(text[a:b])}[/bold yellow]"]
                pos = b
            marked.append(escape(text[pos:]))
            snippet = "".join(marked).replace("\n", " ")
            stages = ", ".join(f"{k} {v:.2f}" for k, v in h.scores.items())
            out.print(f"[bold]{i}.[/bold] {h.kind} · {h.section or ''} · {h.title or ''} [dim]({stages})[/dim]")
            out.print(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")

    query = "broken ankle"
    _rule(out, f'Hybrid search (BM25 + vectors) as dr.ana: "{query}"')
    show(doctor.search(query, k=4, per_document=True))
    pid = doctor.sql("SELECT patient_id FROM events WHERE kind = 'observation' AND value_num IS NOT NULL "
                     "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").to_pylist()
    if pid:
        _rule(out, "Patient context for a prompt (dr.ana, since 2015): every line cites its row")
        lines = doctor.patient_context(pid[0]["patient_id"], since="2015-01-01").to_prompt().splitlines()
        out.print(escape("\n".join(lines[:22]) + (f"\n… {len(lines) - 22} more lines" if len(lines) > 22 else "")))
    _concepts(doctor, eco, out)
    query = "fetal heart rate on ultrasound"
    _rule(out, f'Search as rita.research, radiology reports only: "{query}"')
    show(eco.as_principal(RESEARCHER).search(query, k=3, kinds=["radiology_report"], per_document=True))


def _concepts(doctor: Ecosystem, eco: Ecosystem, out: Console) -> None:
    """A small Disease Ontology sample: concepts linked in the notes (with negation and
    history), patients with any respiratory disease, search narrowed to a concept."""
    from sagehealth.cli import print_rows

    vocab = sample_root() / "vocab"
    if not vocab.exists():
        return
    loaded = eco.load_vocabulary([vocab])
    _rule(out, "Concepts: a vocabulary, mentions in the notes, a patient-level query")
    out.print(f"v{loaded['version']}: {loaded['concepts']} Disease Ontology concepts loaded; "
              f"{sum(loaded['mentions'].values())} mentions found in the documents of both zones")
    c = doctor.concept("DOID:1579", descendants=True)
    out.print(f"{c['concept_id']} {c['label']} → descendants: " + ", ".join(d["label"] for d in c["descendants"]))
    print_rows([{k: r[k] for k in ("patient_id", "first_date", "mentions", "coded_rows")}
                for r in doctor.patients_with("DOID:1579")], title="patients with any respiratory system disease")
    hits = doctor.search("sore throat treatment", k=2, concepts=["DOID:2275"], per_document=True)
    out.print(f"search 'sore throat treatment' narrowed to documents that mention pharyngitis "
              f"(DOID:2275): {len(hits)} hit{'s' if len(hits) != 1 else ''}")
    for i, h in enumerate(hits, 1):
        out.print(f"  {i}. {h.kind} · {h.section} · {' '.join(h.text.split())[:120]}")


def _agent(eco: Ecosystem, doctor: Ecosystem, out: Console) -> None:
    """Questions answered from the evidence each asker may see: every sentence cites its passage,
    unsupported sentences are removed, unanswerable questions get an abstention; a clinician's
    correction is stored as data linked to the answer's trace."""
    from sagehealth.cli import print_rows
    from sagehealth.cli_agents import print_answer

    research = eco.as_principal(RESEARCHER)
    for who, asker, question, patient in [
        ("rita.research", research, "What was the fetal heart rate on the obstetric ultrasound?", None),
        ("rita.research", research, "What is the recommended dose of warfarin after valve replacement?", None),
    ]:
        _rule(out, f"Ask as {who}: {question}")
        print_answer(asker.ask(question, patient=patient))
    pid = doctor.sql("SELECT patient_id FROM events WHERE kind = 'medication' GROUP BY 1 ORDER BY count(*) DESC "
                     "LIMIT 1").to_pylist()
    if pid:
        question = "What medications has the patient been prescribed?"
        _rule(out, f"Ask as dr.ana about patient {pid[0]['patient_id'][:8]}…: {question}")
        a = doctor.ask(question, patient=pid[0]["patient_id"])
        print_answer(a)
        if not a.abstained:
            fb = doctor.record_feedback(a.trace_id, "edit", edited_text=a.sentences[0].text,
                                        reason="keep the current prescription only")
            out.print(f"dr.ana edits the answer: feedback {fb['feedback_id']} stored, linked to {a.trace_id}")
    print_rows([{k: r[k] for k in ("trace_id", "user", "provider", "abstained", "question")}
                for r in eco.traces(limit=3)], title="agent traces (as the steward sees them)", width=60)


def _radiology(eco: Ecosystem, doctor: Ecosystem, out: Console, key: str) -> None:
    """The reporting loop on synthetic chest radiographs: worklist, a draft whose sentences cite
    their evidence (similar cases from the de-identified research zone only), checks, an edit
    and a signature that becomes data, and the next draft drawing on it at once."""
    import csv
    import os
    import tempfile

    from rich.markup import escape

    from sagehealth.cli import print_rows
    from sagehealth.cli_radiology import print_draft

    os.environ.setdefault("SAGEHEALTH_DEID_KEY", key)  # sign-offs refresh the research zone with it
    root = sample_root() / "radiology"
    _rule(out, "Radiology: 32 signed synthetic chest radiograph reports become similar cases (research zone)")
    s = eco.ingest([root / "reports.csv"], format="notes", message="synthetic signed chest radiograph reports",
                   options={"deid_key": key, "index": True})
    out.print(f"v{s.version}: {s.ingested} reports ingested" if s.ingested else "reports already ingested")
    patients = [r["patient_id"] for r in doctor.sql(
        "SELECT patient_id FROM patients WHERE family_name IS NOT NULL ORDER BY patient_id LIMIT 2").to_pylist()]
    if patients:
        with tempfile.TemporaryDirectory() as tmp, open(root / "preliminary.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
            for n, row in enumerate(rows):
                row["patient_id"] = patients[n % len(patients)]
            path = Path(tmp) / "preliminary.csv"
            with open(path, "w", newline="") as dst:
                w = csv.DictWriter(dst, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            eco.ingest([path], format="notes", message="preliminary chest radiographs (findings dictated)",
                       options={"deid_key": key, "index": True, "patient_column": "patient_id"})
    waiting = [x for x in doctor.worklist() if x.findings]
    _rule(out, "Worklist as dr.ana: studies of her care team without a signed report")
    print_rows([{"study": x.study_id, "patient": (x.patient_id or "")[:8] + "…", "modality": x.modality,
                 "body part": x.body_part, "priority": x.priority, "indication": x.indication}
                for x in waiting], width=50)
    if not waiting:
        return
    study = next((x for x in waiting if "consolidation" in x.findings), waiting[0])
    _rule(out, f"Draft of {study.study_id}: every sentence cites its evidence")
    out.print(f"[dim]FINDINGS (dictated): {escape(study.findings)}[/dim]")
    d = doctor.draft_report(study.study_id)
    print_draft(d)
    edited = "Right lower lobe consolidation, consistent with pneumonia. No pleural effusion."
    signed = doctor.sign_report(d.draft_id, edited, reason="state the pertinent negative")
    out.print(f"dr.ana edits and signs: [green]Signed[/green] {signed.document_id} in store version "
              f"{signed.store_version}; {signed.edit_class} edit ({signed.edit_distance} words); research copy "
              f"{signed.research}; training and preference pairs {', '.join(signed.pairs)}")
    critical = next((x for x in waiting if "pneumothorax" in x.findings.lower() and x is not study), None)
    if critical is not None:
        _rule(out, f"Draft of {critical.study_id}: a critical result is flagged and always stated")
        print_draft(doctor.draft_report(critical.study_id))
    _rule(out, "The next similar study: the report signed a moment ago is already a similar case")
    nxt = doctor.draft_report(indication="Cough and fever.", findings="Airspace consolidation in the right "
                              "lower lobe. No pleural effusion. Heart size is normal.")
    mine = [c for c in nxt.similar_cases if edited in c["impression"]]
    out.print(f"draft: {escape(nxt.impression)}")
    out.print(f"similar cases: {len(nxt.similar_cases)}; the signed report is "
              + (f"case {mine[0]['case_id']} (de-identified)" if mine else "not among them"))
    print_rows(eco.report_statistics(by="all"), title="edit statistics (as the steward sees them)")
    _training(eco, out)


def _training(eco: Ecosystem, out: Console) -> None:
    """A curated instruction dataset (findings -> impression) out of the research zone, in the
    Hugging Face layout, and the first lines of its card."""
    import shutil

    from sagehealth.cli import print_rows

    folder = Path(eco.home) / "exports" / "instruct"
    shutil.rmtree(folder, ignore_errors=True)
    _rule(out, "Training data: a curated instruct dataset from the research zone (rita.research)")
    r = eco.as_principal(RESEARCHER).export_dataset("instruct", folder, test=0.2)
    out.print(f"{sum(r.splits.values())} examples of store version {r.store_version} in {folder} "
              f"(splits by patient: {r.splits}); curation: {r.counts['seen']} looked at, removed {r.counts['removed']}")
    import pyarrow.parquet as pq
    from rich.markup import escape

    card = (folder / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(card) if line.startswith("# "))
    out.print("[dim]README.md (dataset card; YAML front matter above this):[/dim]")
    out.print("[dim]" + escape("\n".join(card[start:start + 22])) + "\n...[/dim]", highlight=False)
    print_rows([{k: (v[:70] + "…" if isinstance(v, str) and len(v) > 70 else v) for k, v in row.items()
                 if k in ("input", "output", "source")}
                for row in pq.read_table(folder / r.files[-1]).to_pylist()[:2]], title="two examples", width=72)


def _privacy(eco: Ecosystem, doctor: Ecosystem, out: Console, key: str) -> None:
    """De-identify a clinical note, query the research zone, withdraw a consent, show access
    checks and the audit trail they leave."""
    from sagehealth.cli import print_rows
    from sagehealth.errors import AccessDenied, RowNotFound
    from sagehealth.privacy.deid import deidentify

    _rule(out, "De-identification of a clinical note (tags; surrogates need a key)")
    rows = doctor.sql("""SELECT patient_id, text FROM documents WHERE source_system = 'fhir'
                         AND text IS NOT NULL ORDER BY date LIMIT 1""").to_pylist()
    if rows:
        note = rows[0]["text"][:600]
        result = deidentify(note)
        out.print("[dim]original (clinical zone):[/dim]")
        out.print(note)
        out.print("[dim]de-identified:[/dim]")
        out.print(result.text)
        out.print(f"[dim]{len(result.spans)} PHI spans: "
                  + ", ".join(sorted({s.type for s in result.spans})) + "[/dim]")
    _rule(out, "Research zone as rita.research (researcher): pseudonyms, shifted dates")
    research = eco.as_principal(RESEARCHER)
    query = """SELECT p.patient_id, p.gender, p.birth_date, p.postal_code,
                      count(e.row_id) AS events, min(e.start)::DATE AS first_event
               FROM patients p LEFT JOIN events e USING (patient_id)
               GROUP BY ALL ORDER BY events DESC LIMIT 5"""
    out.print(f"[dim]{' '.join(query.split())}[/dim]")
    print_rows(research.sql(query).to_pylist())
    c = eco.set_consent("sage-demo-001", research_allowed=False, note="demo withdrawal", key=key)
    left = research.sql("SELECT count(*) AS n FROM patients").to_pylist()[0]["n"]
    out.print(f"v{c.version}: patient sage-demo-001 withdraws research consent (recorded by the steward) -> "
              f"{c.summary['research'].get('removed', 0)} research rows removed, {left} patients left")
    _rule(out, "Access checks below every door, each one in the hash-chained audit log")
    with_docs = [r["patient_id"] for r in doctor.sql(
        "SELECT patient_id FROM documents GROUP BY 1 ORDER BY count(*) DESC LIMIT 2").to_pylist()]
    mine, other = (with_docs + ["someone-else", "someone-else"])[:2]
    outsider = eco.as_principal(Principal("dr.bob", "clinician", "treatment", patients={mine}))
    attempts = [
        ("dr.bob (clinician) reads his patient's documents",
         lambda: outsider.sql("SELECT count(*) AS n FROM documents").to_pylist()[0]["n"]),
        ("dr.bob traces a document of another patient (answered like a missing row; audited as a denial)",
         lambda: outsider.trace(doctor.sql(f"SELECT row_id FROM documents WHERE patient_id = '{other}' "
                                           "LIMIT 1").to_pylist()[0]["row_id"])),
        ("rita (researcher) reads the provenance table", lambda: research.sql("SELECT * FROM provenance")),
        ("rita (researcher) asks for the quarantine", lambda: research.quarantine()),
        ("sam (steward) reads clinical notes", lambda: eco.read("documents")),
    ]
    for what, attempt in attempts:
        try:
            got = attempt()
            out.print(f"[green]allowed[/green] {what}" + (f": {got}" if isinstance(got, int) else ""))
        except (AccessDenied, RowNotFound, IndexError) as exc:
            out.print(f"[red]denied[/red]  {what}: {exc}")
    auditor = eco.as_principal(AUDITOR)
    v = auditor.verify_audit()
    out.print(f"audit log: {v.entries} entries, chain {'verified' if v.ok else 'BROKEN: ' + str(v.problem)}")
    print_rows([{"seq": e.seq, "user": e.user, "action": e.action, "allowed": e.allowed,
                 "patients": len(e.patients), "resource": e.resource}
                for e in auditor.audit_entries(limit=6)], title="the last audit entries (aude.audit, auditor)",
               width=48)
