"""The REST door (FastAPI): one ``POST /v1/tools/{name}`` route per registry tool, typed with the
tool's own argument and result models (so the OpenAPI schema at ``/openapi.json`` documents
them), behind bearer-token auth mapped to principals (tokens stored hashed; see
``governance/tokens.py``).

Errors are clear 4xx/5xx JSON bodies ``{"error": <kind>, "detail": <what and where>}``:
401 missing/unknown token (checked before the body is read), 403 access denied, 404 unknown
tool or id, 413 body over 1 MB (the bytes received, chunked or not, counted as they stream;
see ``server/gate.py``), 422 malformed arguments or SQL, 409 store busy, 502/504 model
endpoint failing or slow, 500 otherwise (a reference to the server log, no internals). Every
refusal is audited, and one failing request never stops the server.
"""

import logging
import os
import time
import uuid
from typing import Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sagehealth import __version__
from sagehealth.agents.registry import REGISTRY, Tool
from sagehealth.config import resolve_home
from sagehealth.data.lakehouse import Lakehouse
from sagehealth.ecosystem import Ecosystem
from sagehealth.errors import (
    AccessDenied,
    ProviderError,
    ProviderTimeout,
    QueryError,
    RetrievalError,
    RowNotFound,
    SageHealthError,
    StoreLocked,
    ToolArgumentError,
    UnknownTool,
    VersionNotFound,
    VocabularyError,
)
from sagehealth.governance.tokens import TokenStore
from sagehealth.server.gate import MAX_BODY, BearerGate

log = logging.getLogger("sagehealth.server")

#: exception class -> HTTP status (first match wins, so subclasses come first)
STATUS: list[tuple[type[Exception], int]] = [
    (AccessDenied, 403), (UnknownTool, 404), (RowNotFound, 404), (VersionNotFound, 404), (VocabularyError, 404),
    (ToolArgumentError, 422), (QueryError, 422), (RetrievalError, 422), (StoreLocked, 409),
    (ProviderTimeout, 504), (ProviderError, 502), (SageHealthError, 500),
]


def status_of(exc: Exception) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def create_app(home: str | None = None) -> FastAPI:
    """The REST app over the store at ``home`` (else ``$SAGEHEALTH_HOME``)."""
    home = resolve_home(home)
    lake = Lakehouse(home)
    tokens = TokenStore(home)
    bearer = HTTPBearer(auto_error=False, description="a token from `sagehealth token issue`")
    app = FastAPI(title="SAGE-Health", version=__version__,
                  description="Governed medical evidence for agents and applications: every call is checked "
                              "against the caller's role, purpose of use and care team, and audited.")

    app.add_middleware(BearerGate, lake=lake, tokens=tokens, prefix="/v1/", max_body=MAX_BODY)

    def caller(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Ecosystem:
        # (creds: documents the scheme in OpenAPI; the middleware above has checked the token)
        return Ecosystem(lake, request.state.principal)

    @app.exception_handler(SageHealthError)
    async def _known(request: Request, exc: SageHealthError) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                             for e in exc.errors())
        name = request.url.path.rsplit("/", 1)[-1]
        detail = f"{name}: {problems}"
        Ecosystem(lake, getattr(request.state, "principal", None)).reject_call(f"tool {name}",
                                                                             f"invalid arguments: {detail}")
        return JSONResponse({"error": "ToolArgumentError", "detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.error("unexpected error %s on %s", ref, request.url.path, exc_info=exc)
        return JSONResponse({"error": "InternalError", "detail": f"internal error {ref} (details in the server log)"},
                            status_code=500)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        """Liveness: the store opens and has a version."""
        return {"status": "ok", "version": __version__, "store_version": lake.head().version}

    @app.get("/v1/tools", tags=["meta"])
    def list_tools(eco: Ecosystem = Depends(caller)) -> list[dict[str, Any]]:
        """Every tool with its description and JSON schemas (as MCP lists them)."""
        return [{"name": t.name, "description": t.description, "input_schema": t.input_schema(),
                 "output_schema": t.output_schema(), "writes": t.writes} for t in REGISTRY]

    @app.post("/v1/tools/{name}", tags=["tools"], include_in_schema=False)
    def unknown_tool(name: str, eco: Ecosystem = Depends(caller)) -> None:
        REGISTRY.call(eco, name, {})  # raises UnknownTool (audited) -> 404

    for tool in REGISTRY:
        _route(app, tool, caller)
    from sagehealth.server.web import add_web

    add_web(app, lake, tokens)
    # the catch-all above must come after the typed routes
    app.router.routes.append(app.router.routes.pop(next(i for i, r in enumerate(app.router.routes)
                                                        if getattr(r, "name", "") == "unknown_tool")))
    return app


def _route(app: FastAPI, tool: Tool, caller: Any) -> None:
    def endpoint(args: Any = Body(...), eco: Ecosystem = Depends(caller)) -> Any:
        started = time.perf_counter()
        result = REGISTRY.call(eco, tool.name, args)
        log.debug("%s in %.1f ms", tool.name, 1000 * (time.perf_counter() - started))
        return result

    endpoint.__annotations__ = {"args": tool.args, "eco": Ecosystem, "return": tool.result}
    endpoint.__doc__ = tool.description
    app.post(f"/v1/tools/{tool.name}", response_model=tool.result, name=tool.name, tags=["tools"],
             summary=" ".join(tool.description.split()).split(". ")[0])(endpoint)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` with several workers (reads ``$SAGEHEALTH_HOME``)."""
    return create_app(os.environ.get("SAGEHEALTH_HOME"))
