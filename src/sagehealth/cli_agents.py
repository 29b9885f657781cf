"""CLI commands of the agent layer (registered on the main app in ``cli.py``): ``ask``,
``tools``, ``mcp``, ``serve``, ``token`` and ``feedback``. Thin: each calls the library."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from sagehealth.cli import HomeOpt, JsonOpt, _open, app, out, print_json, print_rows
from sagehealth.errors import ToolArgumentError

LlmOpt = Annotated[str | None, typer.Option(
    "--llm", envvar="SAGEHEALTH_LLM", show_default=False,
    help="Model provider: extractive (default, no model), smollm2 (bundled GGUF), llama-cpp:PATH.gguf, "
         "openai:MODEL@URL (any OpenAI-compatible /v1 endpoint).")]


def print_answer(a: Any) -> None:
    """A cited answer: the sentences with their evidence labels, the evidence, what was removed."""
    if a.abstained:
        out.print(f"[yellow]No answer:[/yellow] {escape(a.reason or '')}")
    else:
        out.print(escape(a.answer))
    if a.abstained and a.evidence:
        out.print(f"[dim]{len(a.evidence)} passages retrieved; none answers it[/dim]")
    elif a.evidence:
        cited = {r for s in a.sentences for r in s.refs}
        out.print("[dim]evidence:[/dim]")
        for e in a.evidence:
            if cited and e.ref not in cited:
                continue
            when = e.date.date().isoformat() if e.date else ""
            out.print(f"  [bold]{e.ref}[/bold] {e.id} · {e.kind or ''} · {escape(e.title or '')} {when}")
    for r in a.removed:
        out.print(f"  [red]removed[/red] “{escape(r.text[:120])}”: {escape(r.reason or '')}")
    out.print(f"[dim]{a.provider} · {a.prompt_version} · {a.timings.get('total', 0):.2f} s · trace {a.trace_id}[/dim]")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, in plain words.")],
    patient: Annotated[str | None, typer.Option(help="Answer about this patient only.")] = None,
    since: Annotated[str | None, typer.Option(help="Evidence from this date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Evidence until this date (YYYY-MM-DD).")] = None,
    k: Annotated[int, typer.Option(help="Evidence passages to retrieve.")] = 8,
    llm: LlmOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Answer a question from the evidence you may see; every sentence cites its evidence, and the
    agent abstains (saying why) when the evidence is not enough. The trace is stored."""
    a = _open(home).ask(question, patient=patient, since=since, until=until, k=k, provider=llm)
    if json:
        print_json(a.model_dump(mode="json"))
    else:
        print_answer(a)
    if a.denied:  # a denial is exit 1 on every command (the answer above says why)
        raise typer.Exit(1)


tools_app = typer.Typer(help="The agent tools (the same registry MCP and REST serve).", no_args_is_help=True)
app.add_typer(tools_app, name="tools")


@tools_app.command("list")
def tools_list(json: JsonOpt = False) -> None:
    """Every tool with its description (and, with --json, its input and output schemas)."""
    from sagehealth.agents import REGISTRY

    if json:
        print_json([{"name": t.name, "description": t.description, "input_schema": t.input_schema(),
                     "output_schema": t.output_schema()} for t in REGISTRY])
        return
    print_rows([{"tool": t.name, "description": " ".join(t.description.split()).split(". ")[0]} for t in REGISTRY],
               width=110)


@tools_app.command("call")
def tools_call(
    name: Annotated[str, typer.Argument(help="Tool name (sagehealth tools list).")],
    arguments: Annotated[str, typer.Argument(help="Arguments as a JSON object.")] = "{}",
    home: HomeOpt = None,
) -> None:
    """Call one tool as your principal and print its JSON result."""
    from sagehealth.agents import REGISTRY

    try:
        args = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise ToolArgumentError(f"{name}: arguments are not valid JSON ({exc})") from None
    print_json(REGISTRY.call_json(_open(home), name, args))


@app.command()
def mcp(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP (bearer tokens) instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="HTTP: address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: port.")] = 8766,
    llm: LlmOpt = None,
    home: HomeOpt = None,
) -> None:
    """Serve the tools over MCP: stdio as your principal (--role ...), or streamable HTTP at
    /mcp where each request's bearer token names its principal."""
    from sagehealth.config import resolve_home

    if llm:
        os.environ["SAGEHEALTH_LLM"] = llm
    home_uri = resolve_home(home)
    if http:
        import uvicorn

        from sagehealth.agents.mcp_server import http_app

        uvicorn.run(http_app(home_uri), host=host, port=port, log_level="warning")
        return
    from sagehealth.agents.mcp_server import run_stdio

    run_stdio(home_uri, _open(home).principal)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    llm: LlmOpt = None,
    home: HomeOpt = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs and /openapi.json); callers send a bearer token
    issued by a data steward (sagehealth token issue)."""
    import uvicorn

    from sagehealth.config import resolve_home

    os.environ["SAGEHEALTH_HOME"] = resolve_home(home)
    if llm:
        os.environ["SAGEHEALTH_LLM"] = llm
    out.print(f"[dim]SAGE-Health REST on http://{host}:{port} (store {os.environ['SAGEHEALTH_HOME']})[/dim]",
              highlight=False)
    uvicorn.run("sagehealth.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


token_app = typer.Typer(help="Bearer tokens for REST and MCP over HTTP (data stewards).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("issue")
def token_issue(
    for_role: Annotated[str, typer.Option("--for-role", help="The token's role.")],
    for_user: Annotated[str, typer.Option("--for-user", help="The token's user.")],
    for_purpose: Annotated[str | None, typer.Option("--for-purpose", help="Purpose of use (default: the role's usual one).")] = None,
    for_patients: Annotated[str | None, typer.Option("--for-patients", help="Clinicians: care-team ids, comma-separated or @FILE.")] = None,
    label: Annotated[str, typer.Option(help="A note on what the token is for.")] = "",
    home: HomeOpt = None,
) -> None:
    """Issue a token and print it once (only its hash is stored)."""
    from sagehealth.governance.policy import make_principal

    who = make_principal(for_role, user=for_user, purpose=for_purpose, patients=for_patients)
    sys.stdout.write(_open(home).issue_token(who, label=label) + "\n")


@token_app.command("revoke")
def token_revoke(token: Annotated[str, typer.Argument(help="The token, or the id `token list` shows.")], home: HomeOpt = None) -> None:
    """Revoke a token."""
    found = _open(home).revoke_token(token)
    out.print("revoked" if found else "no such token")
    if not found:
        raise typer.Exit(1)


@token_app.command("list")
def token_list(home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Issued tokens (hash prefix, principal, label): never the tokens themselves."""
    rows = _open(home).tokens()
    print_json(rows) if json else print_rows(rows, title="tokens")


feedback_app = typer.Typer(help="Feedback on answers and drafts: give it, list it, export it.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("add")
def feedback_add(
    trace_id: Annotated[str, typer.Argument(help="The answer's trace id.")],
    verdict: Annotated[str, typer.Argument(help="accept, reject or edit.")],
    edited: Annotated[str | None, typer.Option("--edited", help="The corrected text (edit).")] = None,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Accept, reject or edit an answer; stored as data linked to its trace."""
    row = _open(home).record_feedback(trace_id, verdict, edited_text=edited, reason=reason)
    print_json(row) if json else out.print(f"feedback {row['feedback_id']} on {trace_id}: {verdict}")


@feedback_app.command("list")
def feedback_list(
    trace_id: Annotated[str | None, typer.Option(help="Only feedback on this trace.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N.")] = 50,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Feedback rows (a data steward sees all, anyone else their own)."""
    rows = _open(home).feedback(trace_id=trace_id, limit=limit)
    if json:
        print_json(rows)
        return
    print_rows([{k: r[k] for k in ("feedback_id", "trace_id", "created_at", "user", "verdict", "reason")}
                for r in rows], title="feedback")


@feedback_app.command("export")
def feedback_export(
    out_path: Annotated[str, typer.Argument(help="JSON-lines file to write.")],
    home: HomeOpt = None,
) -> None:
    """Write all feedback, de-identified, as JSON lines (data stewards; needs SAGEHEALTH_DEID_KEY)."""
    result = _open(home).export_feedback(out_path)
    out.print(f"{result['rows']} feedback rows written to {result['path']} "
              f"({result['withdrawn']} withheld: research consent withdrawn)")


@app.command()
def traces(
    trace_id: Annotated[str | None, typer.Option(help="One trace, in full.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N.")] = 20,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Stored agent traces (a data steward sees all, anyone else their own)."""
    rows = _open(home).traces(trace_id=trace_id, limit=limit)
    if json or trace_id:
        print_json(rows)
        return
    print_rows([{k: r[k] for k in ("trace_id", "created_at", "user", "provider", "abstained", "question")}
                for r in rows], title="agent traces", width=80)
