"""The bearer-token gate in front of the network doors (REST and MCP over HTTP): one ASGI
middleware, so both refuse the same way and audit the same refusals."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from sagehealth.data.lakehouse import Lakehouse
from sagehealth.ecosystem import Ecosystem
from sagehealth.governance.tokens import TokenStore, bearer_token


class BearerGate:
    """Every HTTP request whose path starts with ``prefix`` needs a known bearer token, checked
    before its body is read (an anonymous caller gets 401 whatever it sends); with ``max_body``,
    a larger declared body is refused (413). Both refusals are audited (resource: ``label`` +
    method and path). The principal goes to ``scope["state"]["principal"]``
    (``request.state.principal``). A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware``
    (``@app.middleware``) cost a task group and a body stream per request."""

    def __init__(self, app: Any, lake: Lakehouse, tokens: TokenStore, *, prefix: str = "/", label: str = "",
                 max_body: int | None = None) -> None:
        self.app, self.lake, self.tokens = app, lake, tokens
        self.prefix, self.label, self.max_body = prefix, label, max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):  # lifespan, /healthz, docs
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        p = self.tokens.principal(token) if token else None
        what = f"{self.label}{scope['method']} {scope['path']}"
        if p is None:
            why = "unknown or revoked bearer token" if token else "missing bearer token"
            await run_in_threadpool(Ecosystem(self.lake, None).reject_call, what, why)
            detail = why if token else f"{why} (Authorization: Bearer <token>)"
            await JSONResponse({"error": "Unauthorized", "detail": detail}, status_code=401,
                               headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        size = headers.get(b"content-length", b"").decode("latin-1")
        if self.max_body is not None and size.isdigit() and int(size) > self.max_body:
            why = f"request body over {self.max_body} bytes"
            await run_in_threadpool(Ecosystem(self.lake, p).reject_call, what, why)
            await JSONResponse({"error": "PayloadTooLarge", "detail": why}, status_code=413)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = p
        await self.app(scope, receive, send)
