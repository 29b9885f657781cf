"""The bearer-token gate in front of the network doors (REST and MCP over HTTP): one ASGI
middleware, so both refuse the same way and audit the same refusals."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from sagehealth.data.lakehouse import Lakehouse
from sagehealth.ecosystem import Ecosystem
from sagehealth.governance.policy import Principal
from sagehealth.governance.tokens import TokenStore, bearer_token

#: largest request body either door accepts (bytes)
MAX_BODY = 1_000_000


class BearerGate:
    """Every HTTP request whose path starts with ``prefix`` needs a known bearer token, checked
    before its body is read (an anonymous caller gets 401 whatever it sends). With ``max_body``,
    the body is limited by the bytes actually received, not by the ones declared: a
    Content-Length over the limit is refused at once, unread; otherwise the gate reads the body
    itself, counting, and refuses it as soon as it passes the limit (chunked, or longer than its
    Content-Length said), without reading the rest; the app gets the body only once it is all
    in and within the limit (both doors read a body whole anyway), so it never sees a refused
    request. Refusals of size are 413 with ``Connection: close`` (the server stops reading
    rather than draining the rest). Every refusal is audited (resource: ``label`` + method and
    path). The principal goes to ``scope["state"]["principal"]`` (``request.state.principal``).
    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) cost a
    task group and a body stream per request."""

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
        scope.setdefault("state", {})["principal"] = p
        if self.max_body is None:
            await self.app(scope, receive, send)
            return
        size = headers.get(b"content-length", b"").decode("latin-1")
        if size.isdigit() and int(size) > self.max_body:  # declared too large: refused unread
            await self._too_large(p, what, scope, send)
            return
        # the body as it streams, counted (a Content-Length may be absent, or lie)
        chunks: list[bytes] = []
        received, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody left to answer
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body:
                await self._too_large(p, what, scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        first: Any = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Any:  # the body once, then the server's own receive (disconnects)
            nonlocal first
            if first is None:
                return await receive()
            message, first = first, None
            return message

        await self.app(scope, replay, send)

    async def _too_large(self, p: Principal, what: str, scope: Any, send: Any) -> None:
        why = f"request body over {self.max_body} bytes"
        await run_in_threadpool(Ecosystem(self.lake, p).reject_call, what, why)

        async def nothing_more() -> Any:  # a plain response reads nothing; the body is not for it
            return {"type": "http.disconnect"}

        await JSONResponse({"error": "PayloadTooLarge", "detail": why}, status_code=413,
                           headers={"Connection": "close"})(scope, nothing_more, send)
