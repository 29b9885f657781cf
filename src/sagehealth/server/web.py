"""The web app `sagehealth serve` serves at ``/``: worklist, study (timeline, priors, similar
cases, the cited draft with its checks, an editable impression, sign), search, feedback review
(stewards) and audit (auditors).

Server-rendered HTML (Jinja2), readable without JavaScript, keyboard accessible; plots are
inline SVG drawn here, and the citation highlighting is CSS (``:has``), so nothing is loaded
from elsewhere. The same bearer tokens as REST: the sign-in page takes a token and keeps it in
an HttpOnly, SameSite=Strict session cookie. Every page calls the library as the token's
principal, so access checks and the audit log are the same as on every other door.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from sagehealth.data.lakehouse import Lakehouse
from sagehealth.ecosystem import Ecosystem
from sagehealth.errors import AccessDenied, QueryError, RetrievalError, RowNotFound, SageHealthError
from sagehealth.governance.policy import Principal
from sagehealth.governance.tokens import TokenStore
from sagehealth.radiology.findings import split_sentences

COOKIE = "sagehealth_session"
#: the page each role lands on after signing in
HOME = {"clinician": "/worklist", "researcher": "/search", "steward": "/feedback", "auditor": "/audit"}


def anchor(ref: str) -> str:
    """An element id for a citation target (``findings:2`` -> ``ev-findings-2``)."""
    return "ev-" + re.sub(r"[^A-Za-z0-9_-]", "-", ref)


def add_web(app: FastAPI, lake: Lakehouse, tokens: TokenStore) -> None:
    """Register the web pages and their static files on ``app``."""
    base = resources.files("sagehealth.server")
    templates = Jinja2Templates(directory=str(base / "templates"))
    templates.env.globals.update(anchor=anchor, quote=lambda s: quote(s, safe="/"), nav=nav)
    app.mount("/static", StaticFiles(directory=str(base / "static")), name="static")

    def principal(request: Request) -> Principal | None:
        token = request.cookies.get(COOKIE)
        return tokens.principal(token) if token else None

    def render(request: Request, name: str, p: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"me": p, **ctx}, status_code=status)

    async def page(request: Request, name: str, build: Callable[[Ecosystem], dict[str, Any]],
                   roles: tuple[str, ...] | None = None) -> Response:
        """Render ``name`` with what ``build`` reads as the signed-in principal; no session:
        to the sign-in page; a refusal: 403 with the reason (audited by the library)."""
        p = principal(request)
        if p is None:
            return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
        eco = Ecosystem(lake, p)
        if roles is not None and p.role not in roles:
            await run_in_threadpool(eco.reject_call, f"web page {request.url.path}",
                                    f"{p.user} ({p.role}) may not open this page")
            return render(request, "error.html", p, 403, title="Not allowed",
                          detail=f"{p.user} ({p.role}) may not open this page.")
        try:
            ctx = await run_in_threadpool(build, eco)
        except AccessDenied as exc:
            return render(request, "error.html", p, 403, title="Not allowed", detail=str(exc))
        except RowNotFound as exc:
            return render(request, "error.html", p, 404, title="Not found", detail=str(exc))
        except (QueryError, RetrievalError) as exc:
            return render(request, "error.html", p, 422, title="Cannot do that", detail=str(exc))
        except SageHealthError as exc:
            return render(request, "error.html", p, 500, title="Error", detail=str(exc))
        return render(request, name, p, ctx.pop("_status", 200), **ctx)

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> Response:
        p = principal(request)
        return RedirectResponse(HOME[p.role] if p else "/signin", status_code=303)

    @app.get("/signin", include_in_schema=False)
    def signin_form(request: Request, next: str = "") -> HTMLResponse:
        return render(request, "signin.html", None, next=next)

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request, token: str = Form(""), next: str = Form("")) -> Response:
        p = tokens.principal(token.strip()) if token.strip() else None
        if p is None:
            await run_in_threadpool(Ecosystem(lake, None).reject_call, "web sign-in", "unknown or revoked token")
            return render(request, "signin.html", None, 401, next=next, error="That token is unknown or revoked.")
        target = next if next.startswith("/") and not next.startswith("//") else HOME[p.role]
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/")
        return resp

    @app.post("/signout", include_in_schema=False)
    def signout() -> Response:
        resp = RedirectResponse("/signin", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.get("/worklist", include_in_schema=False)
    async def worklist(request: Request, modality: str = "", priority: str = "") -> Response:
        def build(eco: Ecosystem) -> dict[str, Any]:
            rows = eco.worklist(modality=modality or None, priority=priority or None)
            return {"studies": rows, "modality": modality, "priority": priority, "now": datetime.now(UTC)}
        return await page(request, "worklist.html", build, ("clinician",))

    def study_ctx(eco: Ecosystem, study_id: str, **extra: Any) -> dict[str, Any]:
        s = eco.study(study_id)
        timeline = None
        if s.patient_id:
            ctx = eco.patient_context(s.patient_id)
            timeline = timeline_svg(ctx.problems, ctx.labs, ctx.reports)
        draft = extra.get("draft")
        signed_text = None
        if s.signed_document:
            try:
                signed_text = eco.document(s.signed_document)["row"].get("text")
            except RowNotFound:  # a patient-less report the clinician's scope does not cover
                signed_text = None
        return {"study": s, "timeline": timeline, "signed_text": signed_text, "findings_text": extra.pop("findings_text", None) or s.findings,
                "highlight_css": highlight_css(draft) if draft else "", **extra}

    @app.get("/studies/{study_id:path}", include_in_schema=False)
    async def study(request: Request, study_id: str) -> Response:
        return await page(request, "study.html", lambda eco: study_ctx(eco, study_id), ("clinician",))

    @app.post("/studies/{study_id:path}/draft", include_in_schema=False)
    async def draft(request: Request, study_id: str, findings: str = Form(""), indication: str = Form("")) -> Response:
        def build(eco: Ecosystem) -> dict[str, Any]:
            d = eco.draft_report(study_id, findings=findings or None, indication=indication or None)
            return study_ctx(eco, study_id, draft=d, findings_text=d.findings,
                             findings_sentences=split_sentences(d.findings))
        return await page(request, "study.html", build, ("clinician",))

    @app.post("/studies/{study_id:path}/sign", include_in_schema=False)
    async def sign(request: Request, study_id: str, draft_id: str = Form(...), impression: str = Form("")) -> Response:
        def build(eco: Ecosystem) -> dict[str, Any]:
            s = eco.sign_report(draft_id, impression)
            return study_ctx(eco, study_id, signed=s)
        return await page(request, "study.html", build, ("clinician",))

    @app.get("/search", include_in_schema=False)
    async def search(request: Request, q: str = "", kind: str = "", section: str = "", patient: str = "") -> Response:
        def build(eco: Ecosystem) -> dict[str, Any]:
            hits = eco.search(q, k=20, kinds=[kind] if kind else None, sections=[section] if section else None,
                              patient=patient or None, per_document=True) if q.strip() else []
            return {"q": q, "kind": kind, "section": section, "patient": patient, "hits": hits}
        return await page(request, "search.html", build, ("clinician", "researcher"))

    @app.get("/feedback", include_in_schema=False)
    async def feedback(request: Request) -> Response:
        def build(eco: Ecosystem) -> dict[str, Any]:
            rows = eco.report_statistics(by="week")
            return {"rows": rows, "chart": feedback_svg(rows)}
        return await page(request, "feedback.html", build, ("steward", "researcher"))

    @app.get("/audit", include_in_schema=False)
    async def audit(request: Request, limit: int = 200) -> Response:
        def build(eco: Ecosystem) -> dict[str, Any]:
            check = eco.verify_audit()
            return {"entries": list(reversed(eco.audit_entries(limit=max(1, min(limit, 2000))))), "check": check}
        return await page(request, "audit.html", build, ("auditor",))


def nav(p: Principal | None) -> list[tuple[str, str]]:
    if p is None:
        return []
    return {"clinician": [("/worklist", "Worklist"), ("/search", "Search")],
            "researcher": [("/search", "Search"), ("/feedback", "Feedback")],
            "steward": [("/feedback", "Feedback")], "auditor": [("/audit", "Audit")]}[p.role]


def highlight_css(draft: Any) -> str:
    """CSS that highlights a citation's evidence while the citation is hovered or focused."""
    refs = {c["ref"] for s in draft.sentences for c in s["citations"]}
    rules = [f'body:has(a.cite[data-ref="{anchor(r)}"]:is(:hover,:focus)) #{anchor(r)}'
             "{outline:3px solid #b35c00;background:#fff1d6}" for r in sorted(refs)]
    return "\n".join(rules)


def _x(t: datetime, lo: datetime, hi: datetime, left: int, width: int) -> float:
    span = (hi - lo).total_seconds() or 1.0
    return left + width * (t - lo).total_seconds() / span


def timeline_svg(problems: list[Any], labs: list[Any], reports: list[Any]) -> dict[str, Any] | None:
    """An SVG timeline of a patient's problems, labs and prior reports (one lane each); every
    mark has a title, and the same items are listed for readers without SVG."""
    lanes = [("Problems", problems, "#6a3d9a"), ("Labs", labs, "#1f78b4"), ("Prior studies", reports, "#b35c00")]
    dated = [i.date for _n, items, _c in lanes for i in items if i.date is not None]
    if not dated:
        return None
    lo, hi = min(dated), max(dated)
    left, width, lane_h = 110, 640, 34
    marks = []
    for row, (name, items, colour) in enumerate(lanes):
        y = 24 + row * lane_h
        marks.append(f'<text x="4" y="{y + 4}" class="lane">{name}</text>'
                     f'<line x1="{left}" y1="{y}" x2="{left + width}" y2="{y}" class="axis"/>')
        for i in items:
            if i.date is None:
                continue
            x = _x(i.date, lo, hi, left, width)
            label = f"{i.date.date().isoformat()}: {i.text}"
            marks.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="{colour}"><title>{_esc(label)}</title></circle>')
    axis_y = 24 + len(lanes) * lane_h - 10
    marks.append(f'<text x="{left}" y="{axis_y}" class="tick">{lo.date().isoformat()}</text>'
                 f'<text x="{left + width}" y="{axis_y}" class="tick" text-anchor="end">{hi.date().isoformat()}</text>')
    svg = (f'<svg role="img" aria-label="Patient timeline: problems, labs and prior studies from {lo.date()} to '
           f'{hi.date()}" viewBox="0 0 {left + width + 10} {axis_y + 8}" class="plot">{"".join(marks)}</svg>')
    return {"svg": svg, "items": [(n, i) for n, items, _c in lanes for i in items[:12]]}


def feedback_svg(rows: list[dict[str, Any]]) -> str | None:
    """Stacked bars per week: sign-offs by edit class, with the acceptance rate above each."""
    weeks: dict[str, dict[str, int]] = {}
    for r in rows:
        w = weeks.setdefault(r["period"], {"none": 0, "style": 0, "minor": 0, "major": 0})
        for c in w:
            w[c] += r[f"edits_{c}"]
    if not weeks:
        return None
    colours = {"none": "#33a02c", "style": "#a6cee3", "minor": "#fdbf6f", "major": "#e31a1c"}
    top = max(sum(w.values()) for w in weeks.values()) or 1
    bar_w, gap, h, left, pad = 46, 24, 160, 40, 36
    parts = []
    for n, (period, w) in enumerate(sorted(weeks.items())):
        x = left + n * (bar_w + gap)
        y = pad + h
        total = sum(w.values())
        for c in ("none", "style", "minor", "major"):
            bh = h * w[c] / top
            if bh:
                y -= bh
                parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar_w}" height="{bh:.1f}" fill="{colours[c]}">'
                             f'<title>{period}: {w[c]} {c}</title></rect>')
        parts.append(f'<text x="{x + bar_w / 2}" y="{pad + h + 14}" text-anchor="middle" class="tick">{period}</text>'
                     f'<text x="{x + bar_w / 2}" y="{y - 4:.1f}" text-anchor="middle" class="tick">'
                     f'{w["none"] / total:.0%}</text>')
    legend = "".join(f'<rect x="{left + i * 90}" y="4" width="10" height="10" fill="{colours[c]}"/>'
                     f'<text x="{left + i * 90 + 14}" y="13" class="tick">{c}</text>'
                     for i, c in enumerate(colours))
    width = max(left + len(weeks) * (bar_w + gap) + 20, 420)
    return (f'<svg role="img" aria-label="Sign-offs per week by edit class, with the acceptance rate" '
            f'viewBox="0 0 {width} {pad + h + 22}" style="max-width:{width}px" class="plot">'
            f'{legend}{"".join(parts)}</svg>')


def _esc(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))
