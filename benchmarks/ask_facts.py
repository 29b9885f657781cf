"""Benchmark: does ``ask`` give the fact that is in the data, in any phrasing, or decline?

A question set built from the shared MIMIC-IV demo (../shared/data/ehr/mimic_iv_demo_2.2),
whose gold answers come from the raw source rows, read here straight from the CSV files (not
through the store):

- **lab questions**: for ``--patients`` patients (seeded sample) and each test below, the
  latest result of the test: the latest ``charttime`` among the patient's ``labevents`` rows of
  the test's item ids (blood only; a value or a numeric value present). Several rows at that
  time (e.g. hemoglobin from the blood gas and the blood count) are all correct. Each is asked
  in every phrasing of the test (names, abbreviations, sentence shapes written for this
  benchmark). A patient who never had the test gives an **unanswerable** question: the right
  answer is an abstention.
- **medication lists** ("What medications is the patient on?", "current meds?", ...): gold =
  the drugs of the ``prescriptions`` rows active at the end of the record (the latest encounter
  end or prescription start in the raw admissions, transfers, ICU stays and prescriptions);
  scored as the set of drug names the answer says are active (exact set, recall, precision);
  with no active drug, the answer must claim none (it lists the latest that ended instead).
- **out-of-scope questions** about the patient that the store cannot answer (general medical
  knowledge, other topics): the right answer is an abstention. ``OUT_OF_SCOPE``,
  ``OUT_OF_SCOPE_SEEN`` and ``OUT_OF_SCOPE_SEEN_2`` were seen while the agent's decline rules
  were written (tuned-on).
- **held out** (``tests/data/ask_questions_held_out*.json``, each written by a session that did
  not read the agent's code, after the rules of the time were final; reported apart as
  ``held_out`` (run once, then its failures fixed: tuned-on since) and ``held_out_2`` (written
  after those fixes, run once)): lab
  questions in 25 other phrasings (4 drawn for each patient and test), medication lists (15
  phrasings), problem lists (12; gold = the patient's ``diagnoses_icd`` codes: every cited
  problem row must be one of them, and coverage = distinct gold codes cited / min(gold, 30)),
  allergies (8; the MIMIC-IV demo has no allergy table, so gold = an abstention that says none
  is recorded), "is the patient on X?" (10 templates; X = the first word of a drug active at the
  end of the record, of one prescribed but ended, and of one never prescribed to the patient:
  correct = says active, citing a row of it, for the first; never claims it active for the
  others) and 60 out-of-scope questions.

Each question is asked as a clinician whose care team is the sampled patients, through
``Ecosystem.ask`` (the path of ``sagehealth ask`` and the ``answer_question`` tool), offline
default provider. Scored:

- exact answer: not abstained, the first sentence cites a gold row and states its value;
- citation correctness: of the answers given to lab questions, the share whose first citation
  is a gold row;
- abstention accuracy: of the questions whose right answer is an abstention, the share
  abstained; false abstentions: answerable questions abstained;
- latency per question (p50, p95).

Writes benchmarks/results/ask_facts.json. Run: ``python benchmarks/ask_facts.py [--patients 30]``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import random
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIMIC = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "ehr" / "mimic_iv_demo_2.2"
WORK = ROOT / "benchmarks" / "work" / "ask_facts"
RESULTS = ROOT / "benchmarks" / "results" / "ask_facts.json"

#: test -> (MIMIC-IV item ids of the test in blood, as d_labitems lists them; how questions name it)
GOLD_TESTS = {
    "hemoglobin": ({"51222", "50811", "51640"}, ["hemoglobin", "Hgb", "haemoglobin", "Hb"]),
    "hematocrit": ({"51221", "50810", "51638"}, ["hematocrit", "Hct"]),
    "platelets": ({"51265", "51704"}, ["platelet count", "platelets", "PLT"]),
    "wbc": ({"51301", "51300", "51755"}, ["white blood cell count", "WBC", "white count"]),
    "creatinine": ({"50912", "52546"}, ["creatinine", "Cr", "creat"]),
    "bun": ({"51006", "52647"}, ["BUN", "urea nitrogen"]),
    "potassium": ({"50971", "50822", "52610"}, ["potassium", "K"]),
    "sodium": ({"50983", "50824", "52623"}, ["sodium", "Na"]),
    "glucose": ({"50931", "50809", "52569"}, ["glucose", "blood sugar"]),
    "inr": ({"51237", "51675"}, ["INR"]),
    "hba1c": ({"50852"}, ["HbA1c", "A1c", "hemoglobin A1c"]),
    "troponin": ({"51003", "52642"}, ["troponin", "troponin T"]),
    "lactate": ({"50813", "52442"}, ["lactate", "lactic acid"]),
}
SHAPES = ["What is the latest {n}?", "last {n}?", "most recent {n} value", "{n}?", "What was the patient's {n}?"]
OUT_OF_SCOPE = [
    "What is the first-line treatment for type 2 diabetes?",
    "What is the capital of France?",
    "How should vancomycin be dosed in renal failure?",
    "What are the current sepsis guidelines?",
    "Who won the world cup?",
    "What is the mechanism of action of metformin?",
]
#: written before the agent's decline rule for general questions, but its failures were seen
#: while the rule was written: tuned-on like OUT_OF_SCOPE
OUT_OF_SCOPE_SEEN = [
    "What antibiotics cover MRSA?",
    "Which statin is the most potent?",
    "What is the recommended dose of amoxicillin for adults?",
    "How is community-acquired pneumonia managed?",
    "What are the side effects of lisinopril?",
    "When should aspirin be used for primary prevention?",
    "Explain the pathophysiology of heart failure.",
    "What is the best diet for weight loss?",
    "Who discovered penicillin?",
    "How long does influenza usually last?",
]
#: written after the first decline rule was final and run once (0.892); its failures were then
#: seen while the second rule (``off_record``) was written: tuned-on since
OUT_OF_SCOPE_SEEN_2 = [
    "Is hydrochlorothiazide better than chlorthalidone?",
    "What vaccines do adults over 65 need?",
    "How does insulin glargine differ from insulin lispro?",
    "What is the target blood pressure for people with diabetes?",
    "Can beta blockers be given in asthma?",
    "What are the symptoms of a stroke?",
    "How is atrial fibrillation diagnosed?",
    "What foods are high in potassium?",
    "Which blood thinner is safest in pregnancy?",
    "What is the half-life of warfarin?",
    "Tell me a joke.",
    "What year did the Affordable Care Act pass?",
]
#: held-out sets, each written by a helper session that did not read the agent's code, after the
#: rules of the time were final (phrasings of each question kind, templates). The first was run
#: once (benchmarks/results/ask_facts_held_out_first_run.json); its failures were then fixed, so
#: it is tuned-on since; the second was written after those fixes and run once.
HELD_OUT = {name: json.loads((ROOT / "tests" / "data" / f"ask_questions_{name}.json").read_text())
            for name in ("held_out", "held_out_2")}


def gold_latest(patients: set[str]) -> dict[tuple[str, str], dict]:
    """(subject_id, test) -> {"time": charttime, "ids": {labevent_id: value}} from labevents."""
    item_test = {i: t for t, (ids, _) in GOLD_TESTS.items() for i in ids}
    best: dict[tuple[str, str], dict] = {}
    with gzip.open(MIMIC / "hosp" / "labevents.csv.gz", "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            test = item_test.get(r["itemid"])
            if test is None or r["subject_id"] not in patients:
                continue
            value = r["valuenum"] or r["value"] or r["comments"]
            if not value:
                continue
            key = (r["subject_id"], test)
            cur = best.get(key)
            if cur is None or r["charttime"] > cur["time"]:
                best[key] = {"time": r["charttime"], "ids": {r["labevent_id"]: r["valuenum"] or r["value"]}}
            elif r["charttime"] == cur["time"]:
                cur["ids"][r["labevent_id"]] = r["valuenum"] or r["value"]
    return best


MED_QUESTIONS = ["What medications is the patient on?", "current meds?", "active medications",
                 "What drugs is the patient taking?"]


def _rows(path: Path, subjects: set[str]):
    with gzip.open(path, "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["subject_id"] in subjects:
                yield r


def gold_medications(subjects: set[str]) -> dict[str, set[str]]:
    """subject_id -> drug names (lower case) active at the end of the record, from the raw CSVs:
    the record ends at the latest of the encounter ends (admissions, transfers, ICU stays; an
    encounter without an end counts from its start) and prescription starts; a prescription is
    active then when it started by then and stops at or after it (or has no stop time)."""
    end: dict[str, str] = defaultdict(str)
    for table, a, b in (("hosp/admissions", "admittime", "dischtime"), ("hosp/transfers", "intime", "outtime"),
                        ("icu/icustays", "intime", "outtime")):
        for r in _rows(MIMIC / f"{table}.csv.gz", subjects):
            end[r["subject_id"]] = max(end[r["subject_id"]], r[b] or r[a])
    rx = list(_rows(MIMIC / "hosp" / "prescriptions.csv.gz", subjects))
    for r in rx:
        if r["starttime"]:
            end[r["subject_id"]] = max(end[r["subject_id"]], r["starttime"])
    out: dict[str, set[str]] = defaultdict(set)
    for r in rx:
        at = end[r["subject_id"]]
        if (not r["starttime"] or r["starttime"] <= at) and (not r["stoptime"] or r["stoptime"] >= at):
            out[r["subject_id"]].add(r["drug"].strip().lower())
    return out


def gold_prescriptions(subjects: set[str]) -> dict[str, set[str]]:
    """subject_id -> every drug name (lower case) ever prescribed, from the raw CSV."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in _rows(MIMIC / "hosp" / "prescriptions.csv.gz", subjects):
        out[r["subject_id"]].add(r["drug"].strip().lower())
    return out


def gold_diagnoses(subjects: set[str]) -> dict[str, set[str]]:
    """subject_id -> ICD codes (without dots, upper case) of all the patient's diagnoses_icd rows."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in _rows(MIMIC / "hosp" / "diagnoses_icd.csv.gz", subjects):
        out[r["subject_id"]].add(r["icd_code"].strip().upper())
    return out


def _term(drug: str) -> str | None:
    """How a question names a drug: its first word, when that is a word (not "0.9%", "sw")."""
    w = drug.split()[0] if drug.split() else ""
    return w if w.isalpha() and len(w) >= 4 else None


def held_out_rows(sample: list[str], gold: dict, seed: int, questions: dict) -> list[dict]:
    """The held-out questions for each sampled patient (see the module docstring)."""
    rng = random.Random(seed + 1)
    subjects = {p.removeprefix("mimic-") for p in sample}
    active, ever = gold_medications(subjects), gold_prescriptions(subjects)
    every_term = sorted({t for names in ever.values() for n in names if (t := _term(n))})
    rows = []
    for pid in sample:
        subject = pid.removeprefix("mimic-")
        for test, (_, names) in GOLD_TESTS.items():
            for shape in rng.sample(questions["lab_shapes"], 4):
                rows.append({"kind": "lab", "patient": pid, "test": test, "gold": gold.get((subject, test)),
                             "question": shape.format(test=rng.choice(names))})
        for kind in ("medication_list", "problem_list", "allergies", "out_of_scope"):
            rows += [{"kind": kind, "patient": pid, "question": q} for q in questions[kind]]
        on = sorted({t for n in active.get(subject, ()) if (t := _term(n))})
        had = sorted({t for n in ever.get(subject, ()) if (t := _term(n))})
        ended = [t for t in had if not any(t in n for n in active.get(subject, ()))]
        never = [t for t in every_term if not any(t in n for n in ever.get(subject, ()))]
        for status, terms in (("active", on), ("ended", ended), ("never", never)):
            if terms:
                drug = rng.choice(terms)
                rows += [{"kind": "on_drug", "status": status, "drug": drug, "patient": pid,
                          "question": t.format(drug=drug)} for t in questions["on_drug"]]
    return rows


def score_held_out(doctor, rows: list[dict], lab_of_row: dict, display: dict, med_gold: dict,
                   lat: list[float], questions: dict) -> dict:
    """Ask every held-out question and score it by its kind (see the module docstring)."""
    subjects = {r["patient"].removeprefix("mimic-") for r in rows}
    dx = gold_diagnoses(subjects)
    for row in rows:
        t = time.perf_counter()
        a = doctor.ask(row["question"], patient=row["patient"])
        lat.append(time.perf_counter() - t)
        subject = row["patient"].removeprefix("mimic-")
        row.update(abstained=a.abstained, answer=a.answer[:200])
        kind = row["kind"]
        if kind == "lab":
            first = a.sentences[0] if a.sentences else None
            cited = [lab_of_row.get(c) for c in (first.citations if first else [])]
            g = row["gold"]
            row["citation_ok"] = bool(g and cited and cited[0] in g["ids"])
            row["ok"] = (bool(not a.abstained and row["citation_ok"] and _fmt(g["ids"][cited[0]]) in first.text)
                         if g else a.abstained)
        elif kind == "medication_list":
            got = {(display[c] or {}).get("display", "").strip().lower() for s in a.sentences
                   if s.text.startswith("Medication active") for c in s.citations}
            row["ok"] = got == med_gold.get(subject, set()) and (bool(got) or not a.abstained)
        elif kind == "problem_list":
            codes = [((display.get(c) or {}).get("code") or "").replace(".", "").upper()
                     for s in a.sentences for c in s.citations]
            gold = dx.get(subject, set())
            row["precision"] = sum(c in gold for c in codes) / len(codes) if codes else 0.0
            row["coverage"] = len(set(codes) & gold) / min(len(gold), 30) if gold else None
            row["ok"] = not a.abstained and row["precision"] == 1.0
        elif kind == "allergies":
            row["ok"] = a.abstained and "no allergies are recorded" in (a.reason or "")
        elif kind == "on_drug":
            said = [s for s in a.sentences if s.text.startswith("Medication active") and row["drug"] in s.text.lower()]
            row["ok"] = bool(said) if row["status"] == "active" else not said
        else:
            row["ok"] = a.abstained
    out: dict = {"questions": len(rows)}
    for kind in ("lab", "medication_list", "problem_list", "allergies", "on_drug", "out_of_scope"):
        rs = [r for r in rows if r["kind"] == kind]
        out[kind] = {"questions": len(rs), "correct": round(sum(r["ok"] for r in rs) / max(1, len(rs)), 4)}
        if kind == "lab":
            ans = [r for r in rs if r["gold"]]
            out[kind].update(answerable=len(ans),
                             exact_answer_accuracy=round(sum(r["ok"] for r in ans) / max(1, len(ans)), 4),
                             abstention_accuracy_unanswerable=round(
                                 sum(r["ok"] for r in rs if not r["gold"]) / max(1, len(rs) - len(ans)), 4))
            out[kind]["per_shape"] = {
                shape: round(statistics.mean(r["ok"] for r in ans if _shaped(r["question"], shape)), 4)
                for shape in questions["lab_shapes"] if any(_shaped(r["question"], shape) for r in ans)}
        if kind == "problem_list":
            out[kind]["cited_precision"] = round(statistics.mean(r["precision"] for r in rs), 4)
            out[kind]["coverage"] = round(statistics.mean(r["coverage"] for r in rs if r["coverage"] is not None), 4)
        if kind == "on_drug":
            for status in ("active", "ended", "never"):
                ss = [r for r in rs if r["status"] == status]
                out[kind][status] = round(sum(r["ok"] for r in ss) / max(1, len(ss)), 4)
            out[kind]["per_template"] = {
                t: round(statistics.mean(r["ok"] for r in rs if r["question"] == t.format(drug=r["drug"])), 4)
                for t in questions["on_drug"]}
        out[f"wrong_{kind}"] = [{k: r.get(k) for k in ("question", "answer", "abstained")}
                                for r in rs if not r["ok"]][:12]
    abst = [r for r in rows if r["kind"] in ("out_of_scope", "allergies") or (r["kind"] == "lab" and not r["gold"])]
    out["abstention_accuracy"] = round(sum(r["ok"] for r in abst) / max(1, len(abst)), 4)
    return out


def _shaped(question: str, shape: str) -> bool:
    a, _, b = shape.partition("{test}")
    return question.startswith(a) and question.endswith(b)


def check_items() -> list[str]:
    """The gold item ids, as d_labitems names them (printed for the reader to check)."""
    names = {}
    with gzip.open(MIMIC / "hosp" / "d_labitems.csv.gz", "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            names[r["itemid"]] = f"{r['label']} ({r['fluid']})"
    return [f"{t}: " + ", ".join(f"{i} {names.get(i, '?')}" for i in sorted(ids)) for t, (ids, _) in GOLD_TESTS.items()]


def _fmt(v: str) -> str:
    try:
        return f"{float(v):.4g}"
    except ValueError:
        return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    if not MIMIC.is_dir():
        raise SystemExit(f"needs the MIMIC-IV demo at {MIMIC}")
    os.environ["SAGEHEALTH_INDEX"] = "0"  # the structured data answers these: no chunks needed
    from sagehealth import Ecosystem
    from sagehealth.data.lakehouse import Lakehouse
    from sagehealth.governance import Principal

    home = WORK / "store"
    shutil.rmtree(home, ignore_errors=True)
    steward = Ecosystem.open(home, Principal("bench", "steward", "operations"))
    t0 = time.perf_counter()
    steward.ingest([MIMIC], format="mimic", options={"research": False})
    ingest_s = time.perf_counter() - t0
    lake = Lakehouse(str(home))
    pids = sorted(lake.read("patients", columns=["patient_id"]).column("patient_id").to_pylist())
    sample = random.Random(args.seed).sample(pids, min(args.patients, len(pids)))
    subjects = {p.removeprefix("mimic-") for p in sample}
    gold = gold_latest(subjects)
    ev = lake.read("events", columns=["row_id", "event_id"])
    lab_of_row = {r: e.removeprefix("mimic-lab-") for r, e in zip(ev.column("row_id").to_pylist(),
                                                                   ev.column("event_id").to_pylist())
                  if e and e.startswith("mimic-lab-")}
    doctor = steward.as_principal(Principal("dr.bench", "clinician", "treatment", patients=frozenset(sample)))

    rows = []
    for pid in sample:
        subject = pid.removeprefix("mimic-")
        for test, (_, names) in GOLD_TESTS.items():
            g = gold.get((subject, test))
            for name in names:
                for shape in SHAPES:
                    rows.append({"patient": pid, "test": test, "question": shape.format(n=name), "gold": g})
        for q in OUT_OF_SCOPE + OUT_OF_SCOPE_SEEN + OUT_OF_SCOPE_SEEN_2:
            rows.append({"patient": pid, "test": None, "question": q, "gold": None, "out_of_scope": True})
    held = {name: held_out_rows(sample, gold, args.seed, qs) for name, qs in HELD_OUT.items()}

    med_gold = gold_medications(subjects)
    display = dict(zip(ev.column("row_id").to_pylist(),
                       lake.read("events", columns=["code"]).column("code").to_pylist()))
    med_rows = []
    for pid in sample:
        for q in MED_QUESTIONS:
            med_rows.append({"patient": pid, "question": q, "gold": med_gold.get(pid.removeprefix("mimic-"), set())})

    lat = []
    for row in med_rows:
        t = time.perf_counter()
        a = doctor.ask(row["question"], patient=row["patient"])
        lat.append(time.perf_counter() - t)
        # the drugs the answer says are active (with none active, it lists the latest that ended)
        got = {(display[c] or {}).get("display", "").strip().lower() for s in a.sentences
               if s.text.startswith("Medication active") for c in s.citations}
        row.update(abstained=a.abstained, got=got, exact=got == row["gold"],
                   recall=len(got & row["gold"]) / len(row["gold"]) if row["gold"] else None,
                   precision=len(got & row["gold"]) / len(got) if got else None)
    for row in rows:
        t = time.perf_counter()
        a = doctor.ask(row["question"], patient=row["patient"])
        lat.append(time.perf_counter() - t)
        row["abstained"] = a.abstained
        first = a.sentences[0] if a.sentences else None
        row["cited"] = [lab_of_row.get(c) for c in (first.citations if first else [])]
        row["answer"] = a.answer[:200]
        g = row["gold"]
        row["citation_ok"] = bool(g and row["cited"] and row["cited"][0] in g["ids"])
        row["exact"] = bool(g and not a.abstained and row["citation_ok"]
                            and _fmt(g["ids"][row["cited"][0]]) in first.text)

    lab = [r for r in rows if r["test"] and r["gold"]]
    unanswerable = [r for r in rows if r["test"] and not r["gold"]]
    oos = [r for r in rows if r.get("out_of_scope")]
    answered = [r for r in lab if not r["abstained"]]
    per_test = {}
    for test in GOLD_TESTS:
        rs = [r for r in lab if r["test"] == test]
        if rs:
            per_test[test] = {"questions": len(rs), "exact": round(sum(r["exact"] for r in rs) / len(rs), 4)}
    per_shape = defaultdict(list)
    for r in lab:
        for shape in SHAPES:
            for name in GOLD_TESTS[r["test"]][1]:
                if r["question"] == shape.format(n=name):
                    per_shape[shape].append(r["exact"])
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "patients": len(sample), "seed": args.seed, "ingest_s": round(ingest_s, 1),
        "gold_items": check_items(),
        "lab_questions": len(lab),
        "exact_answer_accuracy": round(sum(r["exact"] for r in lab) / max(1, len(lab)), 4),
        "citation_correctness": round(sum(r["citation_ok"] for r in answered) / max(1, len(answered)), 4),
        "false_abstentions": round(sum(r["abstained"] for r in lab) / max(1, len(lab)), 4),
        "unanswerable_questions": len(unanswerable),
        "abstention_accuracy_unanswerable": round(sum(r["abstained"] for r in unanswerable) / max(1, len(unanswerable)), 4),
        "out_of_scope_questions": len(oos),
        "abstention_accuracy_out_of_scope": round(sum(r["abstained"] for r in oos) / max(1, len(oos)), 4),
        "abstention_accuracy": round(sum(r["abstained"] for r in unanswerable + oos) / max(1, len(unanswerable + oos)), 4),
        "medication_questions": len(med_rows),
        "medication_list_exact": round(sum(r["exact"] for r in med_rows) / max(1, len(med_rows)), 4),
        "medication_recall": round(statistics.mean([r["recall"] for r in med_rows if r["recall"] is not None] or [0]), 4),
        "medication_precision": round(statistics.mean([r["precision"] for r in med_rows if r["precision"] is not None] or [0]), 4),
        "medication_none_active_questions": sum(not r["gold"] for r in med_rows),
        "medication_none_active_correct": round(statistics.mean([not r["got"] for r in med_rows if not r["gold"]] or [0]), 4),
        "latency_p50_s": round(statistics.median(lat), 4),
        "latency_p95_s": round(sorted(lat)[int(0.95 * (len(lat) - 1))], 4),
        "per_test": per_test,
        "per_shape": {s: round(sum(v) / len(v), 4) for s, v in per_shape.items()},
        "wrong_examples": [{k: r[k] for k in ("test", "question", "answer", "abstained")}
                           for r in lab if not r["exact"]][:15],
        "answered_out_of_scope": [{k: r[k] for k in ("question", "answer")} for r in oos if not r["abstained"]][:20],
    }
    for name, rows_ in held.items():
        report[name] = score_held_out(doctor, rows_, lab_of_row, display, med_gold, lat_held := [], HELD_OUT[name])
        report[name]["latency_p50_s"] = round(statistics.median(lat_held), 4)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    for k, v in report.items():
        if k not in ("wrong_examples", "answered_out_of_scope", "gold_items", *HELD_OUT):
            print(f"{k}: {v}")
    for name in HELD_OUT:
        for k, v in report[name].items():
            if not k.startswith("wrong"):
                print(f"{name}.{k}: {v if not isinstance(v, dict) else {a: b for a, b in v.items() if 'per_' not in a}}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
