"""``sagehealth eval radiology``: the co-evolution of drafts and sign-offs, measured.

A fresh temporary store; the KNOWLEDGE reports are ingested as signed reports (their
de-identified copies are the first similar cases). Round 0 drafts every TEST row's impression
from its indication, comparison and findings only. Round r = 1..N: the r-th of N equal slices
of the FEEDBACK rows is drafted and then signed through the real sign-off path by a simulated
radiologist whose edited text is the row's reference impression; then every TEST row is drafted
again. No TEST impression ever enters the store, and MeSH/Problems are never read.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from sagehealth.errors import ProviderError, ReportError
from sagehealth.radiology.findings import is_abnormal
from sagehealth.radiology.text import rouge_l

REQUIRED = ("uid", "indication", "findings", "impression")


def read_reports(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a report CSV in the IU X-ray layout (uid, indication, comparison, findings,
    impression; other columns ignored)."""
    p = Path(path)
    if not p.is_file():
        raise ReportError(f"{p}: no such file")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ReportError(f"{p}: missing column(s) {', '.join(missing)} (the IU X-ray layout: "
                              "uid, indication, comparison, findings, impression)")
        return [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]


@contextlib.contextmanager
def _research_key() -> Iterator[None]:
    """A throw-away de-identification key for the temporary store, unless one is set."""
    if os.environ.get("SAGEHEALTH_DEID_KEY"):
        yield
        return
    os.environ["SAGEHEALTH_DEID_KEY"] = secrets.token_hex(16)
    try:
        yield
    finally:
        os.environ.pop("SAGEHEALTH_DEID_KEY", None)


def score(drafts: list[tuple[str, str]]) -> dict[str, float]:
    """ROUGE-L, normal/abnormal agreement and abnormal recall of (draft, reference) pairs; an
    impression is abnormal when it affirms (or raises as possible) a finding."""
    rl, agree, hit, abnormal = [], 0, 0, 0
    for hyp, ref in drafts:
        rl.append(rouge_l(hyp, ref))
        ra, ha = is_abnormal(ref), is_abnormal(hyp)
        agree += ra == ha
        if ra:
            abnormal += 1
            hit += ha
    n = max(1, len(drafts))
    return {"rouge_l": round(sum(rl) / n, 4), "normal_abnormal_agreement": round(agree / n, 4),
            "abnormal_recall": round(hit / max(1, abnormal), 4)}


def evaluate(knowledge: str | os.PathLike[str], feedback: str | os.PathLike[str], test: str | os.PathLike[str], *,
             rounds: int = 4, out: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None,
             progress: Callable[[str], None] | None = None,
             on_round: Callable[[Any, int, list[dict[str, str]]], dict[str, Any]] | None = None,
             llm: str | None = None) -> dict[str, Any]:
    """Run the evaluation; returns ``{"rounds": [...], "test_rows": n, ...}`` and writes one
    JSON line per TEST row per round to ``out``. ``on_round(lakehouse, round, test_rows)`` may
    score something else on each round's store (a benchmark's baselines); what it returns is
    kept in the round's result under ``extra``. ``llm``: draft the TEST rows with this model
    (as ``draft_report`` takes it; the FEEDBACK drafts too); a draft the model fails is scored
    empty and counted in ``refused``."""
    from sagehealth.data.lakehouse import Lakehouse
    from sagehealth.ecosystem import Ecosystem
    from sagehealth.governance.policy import Principal

    if rounds < 0:
        raise ReportError(f"rounds must be 0 or more (got {rounds})")
    fb_rows = read_reports(feedback)
    test_rows = [r for r in read_reports(test) if r["impression"]]
    if not test_rows:
        raise ReportError(f"{test}: no row has an impression to compare with")
    read_reports(knowledge)  # checks the layout before a store is made
    say = progress or (lambda _m: None)
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(_research_key())
        folder = Path(home) if home else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sage-rad-eval-")))
        lake = Lakehouse(str(folder / "store"))
        steward = Ecosystem(lake, Principal("eval-steward", "steward", "operations"))
        started = time.perf_counter()
        summary = steward.ingest([knowledge], options={"embed": False}, message="radiology eval: knowledge reports")
        say(f"knowledge: {summary.records_in} reports ingested in {time.perf_counter() - started:.1f} s")
        doctor = Ecosystem(lake, Principal("eval-radiologist", "clinician", "treatment"))
        sink = open(out, "wb") if out else None  # noqa: SIM115 - closed below
        try:
            signed = 0
            slices = [fb_rows[i * len(fb_rows) // rounds:(i + 1) * len(fb_rows) // rounds] for i in range(rounds)] \
                if rounds else []
            for r in range(rounds + 1):
                sign_s = 0.0
                if r:
                    t0 = time.perf_counter()
                    for row in slices[r - 1]:
                        if not row["impression"] or not row["findings"]:
                            continue  # nothing a radiologist could sign
                        try:
                            d = doctor.draft_report(indication=row["indication"], comparison=row.get("comparison", ""),
                                                    findings=row["findings"], llm=llm)
                        except ProviderError:  # the model failed this one: the radiologist drafts offline
                            d = doctor.draft_report(indication=row["indication"], comparison=row.get("comparison", ""),
                                                    findings=row["findings"])
                        doctor.sign_report(d.draft_id, row["impression"])
                        signed += 1
                    sign_s = time.perf_counter() - t0
                pairs, lat = [], []
                refused = 0
                for row in test_rows:
                    t0 = time.perf_counter()
                    try:
                        d = doctor.draft_report(indication=row["indication"], comparison=row.get("comparison", ""),
                                                findings=row["findings"], llm=llm)
                        line = {"impression": d.impression, "flags": d.flags,
                                "citations": [s["citations"] for s in d.sentences]}
                    except (ReportError, ProviderError) as exc:  # nothing to draft from, or the model failed
                        refused += 1
                        line = {"impression": "", "flags": [{"check": "refused", "severity": "error",
                                                             "message": str(exc)}], "citations": []}
                    lat.append((time.perf_counter() - t0) * 1000)
                    pairs.append((line["impression"], row["impression"]))
                    if sink is not None:
                        sink.write(orjson.dumps({"uid": row["uid"], "round": r, **line}) + b"\n")
                result = {"round": r, **score(pairs), "feedback_reports": signed, "refused": refused,
                          "draft_p50_ms": round(statistics.median(lat), 1),
                          "draft_p95_ms": round(sorted(lat)[int(0.95 * (len(lat) - 1))], 1),
                          "sign_seconds": round(sign_s, 1)}
                if on_round is not None:
                    result["extra"] = on_round(lake, r, test_rows)
                results.append(result)
                say(f"round {r}: ROUGE-L {result['rouge_l']:.3f}, agreement {result['normal_abnormal_agreement']:.3f}, "
                    f"abnormal recall {result['abnormal_recall']:.3f}, {signed} feedback reports, "
                    f"draft p50 {result['draft_p50_ms']} ms")
        finally:
            if sink is not None:
                sink.close()
    return {"rounds": results, "test_rows": len(test_rows), "feedback_rows": len(fb_rows),
            "knowledge_reports": summary.records_in}
