"""The MCP door: the tool registry served with the official MCP SDK, over stdio (``sagehealth
mcp``) or streamable HTTP (``sagehealth mcp --http``).

It uses the SDK's low-level ``Server`` rather than the high-level ``MCPServer``: the registry
already holds each tool's pydantic input and output schemas, and ``MCPServer`` would derive
them again from Python signatures (a second source of truth for the same contract); the
low-level server lists the registry's schemas as they are and hands every call to it.

Tools are listed with their pydantic input and output schemas and called through
``REGISTRY.call``, so access checks and the audit log are the library's. Over stdio the
principal is the one the process was started as (``--role`` or ``$SAGEHEALTH_ROLE``); over HTTP
each request carries a bearer token issued by a data steward (``sagehealth token issue``).
A refused or failed call comes back as a tool result with ``isError`` and the reason; the
server keeps serving.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

from sagehealth import __version__
from sagehealth.agents.registry import REGISTRY
from sagehealth.data.lakehouse import Lakehouse
from sagehealth.ecosystem import Ecosystem
from sagehealth.errors import SageHealthError
from sagehealth.governance.policy import Principal
from sagehealth.governance.tokens import TokenStore, bearer_token

log = logging.getLogger("sagehealth.mcp")
INSTRUCTIONS = ("SAGE-Health: governed medical evidence. Every tool checks the caller's role, purpose of use "
                "and care team and writes the audit log. Cite the ids (chunk ids, row ids) that results return.")


def _tools() -> list[types.Tool]:
    return [types.Tool(name=t.name, description=t.description, input_schema=t.input_schema(),
                       output_schema=t.output_schema()) for t in REGISTRY]


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def build_server(home: str, *, principal: Principal | None = None, tokens: bool = False) -> Server[Any]:
    """An MCP server over the store at ``home``: as ``principal`` (stdio), or per request from
    the bearer token (``tokens=True``, HTTP)."""
    lake = Lakehouse(home)
    store = TokenStore(home)

    def ecosystem(ctx: Any) -> Ecosystem:
        if not tokens:
            return Ecosystem(lake, principal)
        request = getattr(ctx, "request", None)
        header = request.headers.get("authorization", "") if request is not None else ""
        token = bearer_token(header)
        p = store.principal(token) if token else None
        if p is None:
            eco = Ecosystem(lake, None)
            eco.reject_call("mcp request", "missing bearer token" if not token else "unknown or revoked token")
            raise PermissionError("a valid bearer token is required (Authorization: Bearer <token>)"
                                  if not token else "unknown or revoked bearer token")
        return Ecosystem(lake, p)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=_tools())

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            eco = ecosystem(ctx)
        except PermissionError as exc:
            return _error(f"AccessDenied: {exc}")

        def run() -> dict[str, Any]:
            return REGISTRY.call_json(eco, params.name, params.arguments or {})

        try:
            result = await anyio.to_thread.run_sync(run)
        except SageHealthError as exc:
            return _error(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not take the server down, nor show its internals
            ref = uuid.uuid4().hex[:12]
            log.error("unexpected error %s in tool %s", ref, params.name, exc_info=exc)
            return _error(f"InternalError: internal error {ref} (details in the server log)")
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False))],
                                    structured_content=result)

    return Server("sagehealth", version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def run_stdio(home: str, principal: Principal | None) -> None:
    """Serve over stdin/stdout until the client closes."""
    from mcp.server.stdio import stdio_server

    server = build_server(home, principal=principal)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)


def http_app(home: str) -> Any:
    """The streamable-HTTP ASGI app (path ``/mcp``); principals come from bearer tokens, and a
    request without a known one is refused before the MCP layer, as is a body over the REST
    door's limit, counted as it streams (413, audited; the SDK's own limit, set to the same
    size, answers plain text and audits nothing)."""
    from sagehealth.server.gate import MAX_BODY, BearerGate

    server = build_server(home, tokens=True)
    app = server.streamable_http_app(streamable_http_path="/mcp", json_response=True, max_request_body_size=MAX_BODY)

    return BearerGate(app, Lakehouse(home), TokenStore(home), label="mcp ", max_body=MAX_BODY)
