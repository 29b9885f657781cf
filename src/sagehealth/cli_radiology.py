"""CLI commands of the radiology workflow (registered on the main app in ``cli.py``):
``sagehealth radiology worklist|draft|sign|stats|pairs`` and ``sagehealth eval radiology``.
Thin: each calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sagehealth.cli import HomeOpt, JsonOpt, _open, app, err, eval_app, out, print_json, print_rows

LlmOpt = Annotated[str | None, typer.Option(
    "--llm", envvar="SAGEHEALTH_RADIOLOGY_LLM", show_default=False,
    help="Draft with a language model, guarded by the offline drafter: smollm2 (bundled GGUF), "
         "llama-cpp:PATH.gguf, openai:MODEL@URL (any OpenAI-compatible /v1 endpoint), hf:ADAPTER_DIR "
         "(sagehealth adapt generator); default offline.")]

radiology_app = typer.Typer(help="Radiology reporting: worklist, evidence-cited drafts, sign-off, edit statistics.",
                            no_args_is_help=True)
app.add_typer(radiology_app, name="radiology")


def _text(value: str | None) -> str | None:
    """A text option, or the contents of @FILE."""
    if value is not None and value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8")
    return value


def print_draft(d: Any) -> None:
    out.print(f"[bold]Draft {d.draft_id}[/bold]{f' · study {d.study_id}' if d.study_id else ''} · {d.provider} · "
              f"{d.prompt_version} · {d.seconds * 1000:.0f} ms")
    out.print(f"[dim]COMPARISON:[/dim] {escape(d.comparison or 'None.')}")
    if d.findings_template:
        out.print(f"[dim]FINDINGS (template):[/dim] {escape(d.findings_template)}")
    out.print("[bold]IMPRESSION:[/bold]")
    for n, s in enumerate(d.sentences, 1):
        refs = ", ".join(f"{c['kind']}:{c['ref']}" if c["kind"] != "findings" else c["ref"] for c in s["citations"])
        out.print(f"  {n}. {escape(s['text'])} [dim]{escape('[' + refs + ']')}[/dim]")
    for f in d.flags:
        colour = {"critical": "bold red", "error": "red", "warning": "yellow"}.get(f["severity"], "dim")
        out.print(f"  [{colour}]{f['severity']}[/{colour}] ({f['check'].replace('_', ' ')}) {escape(f['message'])}")
    if d.priors:
        out.print(f"[dim]priors: {', '.join(str(p['id']) + ' (' + str(p['date'])[:10] + ')' for p in d.priors[:5])}[/dim]")
    out.print(f"[dim]similar cases (research zone, de-identified): {', '.join(c['case_id'] for c in d.similar_cases)}[/dim]")


@radiology_app.command("worklist")
def worklist(
    modality: Annotated[str | None, typer.Option(help="Only this modality (CR, DX, CT, MR, XR...).")] = None,
    priority: Annotated[str | None, typer.Option(help="Only this priority: stat, urgent or routine.")] = None,
    patient: Annotated[str | None, typer.Option(help="Only this patient's studies.")] = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Studies of your care team waiting for a signed report, most urgent and longest waiting first."""
    rows = _open(home).worklist(modality=modality, priority=priority, patient=patient)
    if json:
        print_json([s.as_dict() for s in rows])
        return
    print_rows([{"study": s.study_id, "patient": s.patient_id, "modality": s.modality, "body part": s.body_part,
                 "priority": s.priority, "waiting h": round(s.waiting_seconds / 3600, 1) if s.waiting_seconds else None,
                 "indication": s.indication} for s in rows], title="worklist")


@radiology_app.command("draft")
def draft(
    study: Annotated[str | None, typer.Argument(help="Study id from the worklist (or give the texts).")] = None,
    findings: Annotated[str | None, typer.Option(help="Findings text (or @FILE).")] = None,
    indication: Annotated[str | None, typer.Option(help="Indication text.")] = None,
    comparison: Annotated[str | None, typer.Option(help="Comparison text.")] = None,
    patient: Annotated[str | None, typer.Option(help="Whose study the texts are (for priors).")] = None,
    llm: LlmOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Draft the IMPRESSION of a study: every sentence cites its evidence; checks with reasons."""
    d = _open(home).draft_report(study, indication=indication, comparison=comparison, findings=_text(findings),
                                 patient=patient, llm=llm)
    if json:
        print_json(d.as_dict())
    else:
        print_draft(d)


@radiology_app.command("sign")
def sign(
    draft_id: Annotated[str, typer.Argument(help="The draft id (from sagehealth radiology draft).")],
    impression: Annotated[str | None, typer.Option(help="The impression as you sign it (or @FILE); default: the draft's.")] = None,
    reason: Annotated[str, typer.Option(help="Why it was changed (kept with the feedback).")] = "",
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Sign a draft (yours) with the impression as edited; a second signature is an addendum."""
    eco = _open(home)
    text = _text(impression)
    if text is None:
        text = next((t["answer"] for t in eco.traces(trace_id=draft_id, limit=1)), None)
        if not text:
            err.print("[bold red]error:[/bold red] the draft has no impression: give --impression")
            raise typer.Exit(1)
    s = eco.sign_report(draft_id, text, reason=reason)
    if json:
        print_json(s.as_dict())
        return
    out.print(f"[green]Signed[/green] {s.document_id} (report version {s.report_version}, store version "
              f"{s.store_version}): {s.edit_class} edit, {s.edit_distance} words changed; research zone: {s.research}")
    for f in s.flags:
        out.print(f"  [yellow]{f['severity']}[/yellow] {f['check']}: {escape(f['message'])}")


@radiology_app.command("stats")
def stats(
    by: Annotated[str, typer.Option(help="Group sign-offs by week, day or all.")] = "week",
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Edit statistics of sign-offs: acceptance rate and edit classes per period, provider and prompt."""
    rows = _open(home).report_statistics(by=by)
    if json:
        print_json(rows)
    else:
        print_rows(rows, title="radiology sign-offs")


@radiology_app.command("pairs")
def pairs(
    kind: Annotated[str | None, typer.Option(help="training or preference.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N pairs.")] = 20,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """De-identified training and preference pairs from sign-offs (researchers, data stewards)."""
    rows = _open(home).report_pairs(kind=kind, limit=limit)
    if json:
        print_json(rows)
    else:
        print_rows([{k: r[k] for k in ("kind", "patient", "year", "prompt", "chosen", "rejected", "edit_class")}
                    for r in rows], title="report pairs")


@eval_app.command("radiology")
def eval_radiology(
    reports: Annotated[str, typer.Option(help="KNOWLEDGE reports CSV (IU X-ray layout), ingested as signed reports.")],
    feedback: Annotated[str, typer.Option(help="FEEDBACK reports CSV: drafted and signed, one slice per round.")],
    test: Annotated[str, typer.Option(help="TEST reports CSV: drafted every round (impressions only scored).")],
    rounds: Annotated[int, typer.Option(help="Feedback rounds.")] = 4,
    out_path: Annotated[str | None, typer.Option("--out", help="Write every draft as JSON lines here.")] = None,
    llm: LlmOpt = None,
    json: JsonOpt = False,
) -> None:
    """Measure the co-evolution: round 0 drafts the TEST impressions, each round signs a slice of
    FEEDBACK through the real sign-off path and drafts TEST again, in a temporary store."""
    from sagehealth.radiology.evaluate import evaluate

    result = evaluate(reports, feedback, test, rounds=rounds, out=out_path, llm=llm,
                      progress=None if json else (lambda m: err.print(f"[dim]{escape(m)}[/dim]")))
    if json:
        print_json(result)
        return
    print_rows(result["rounds"], title=f"{result['test_rows']} test reports, {result['knowledge_reports']} knowledge, "
               f"{result['feedback_rows']} feedback")
