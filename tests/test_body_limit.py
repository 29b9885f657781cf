"""The request-body limit of the network doors counts the bytes a client actually streams, not
the ones it declares: a chunked body (no Content-Length) or one under a lying Content-Length is
refused with 413 as soon as it passes the limit, before the server has read it all, and the
refusal is audited; a body at the limit still goes through. Tested against a real ``sagehealth
serve`` and a real ``sagehealth mcp --http`` on loopback, with raw sockets where the framing
matters and with httpx where an ordinary client would stream."""

from __future__ import annotations

import json
import socket
import subprocess

import httpx
import pytest

from sagehealth import Ecosystem
from sagehealth.governance import Principal

from helpers import STEWARD, free_port
from test_doors import BIN, _wait_http

LIMIT = 1_000_000
WHY = f"request body over {LIMIT} bytes"
RESEARCHER = Principal("rita.limit", "researcher", "research")
#: a request each door answers with 200 (padded with leading JSON whitespace to any size)
REQUESTS = {
    "rest": ("/v1/tools/search_evidence", b'{"query": "fetal heart rate"}'),
    "mcp": ("/mcp", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "limit-test", "version": "0"}}}).encode()),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("limit") / "store")
    eco = Ecosystem.open(home, STEWARD)
    token = eco.issue_token(RESEARCHER, label="tests")
    return {"home": home, "token": token, "auditor": eco.as_principal(Principal("aude.limit", "auditor", "audit"))}


@pytest.fixture(scope="module", params=["rest", "mcp"])
def door(request, store, tmp_path_factory):
    port = free_port()
    cmd = ["serve"] if request.param == "rest" else ["mcp", "--http"]
    log = (tmp_path_factory.mktemp("log") / "server.log").open("wb")
    proc = subprocess.Popen([BIN, *cmd, "--home", store["home"], "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_http(f"http://127.0.0.1:{port}" + ("/healthz" if request.param == "rest" else "/mcp"), proc)
        path, payload = REQUESTS[request.param]
        yield {"kind": request.param, "port": port, "path": path, "payload": payload,
               "label": "" if request.param == "rest" else "mcp ", "proc": proc}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _padded(payload: bytes, size: int) -> bytes:
    """``payload`` after leading whitespace, ``size`` bytes in all (still the same JSON)."""
    return b" " * (size - len(payload)) + payload


def _post_raw(door, token: str, body: bytes, *, chunked: bool = True, content_length: int | None = None,
              finish: bool = True, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` over a raw socket, chunked in 64 KiB pieces (and, with ``content_length``,
    a Content-Length header besides); with ``finish=False`` the request never ends (no last
    chunk), so only a server that answers before the end can answer. Sending stops when the
    server closes; returns the status, headers and body of the server's answer."""
    sock = socket.create_connection(("127.0.0.1", door["port"]), timeout=timeout)
    head = [f"POST {door['path']} HTTP/1.1", f"Host: 127.0.0.1:{door['port']}", f"Authorization: Bearer {token}",
            "Content-Type: application/json", "Accept: application/json, text/event-stream"]
    if chunked:
        head.append("Transfer-Encoding: chunked")
    if content_length is not None:
        head.append(f"Content-Length: {content_length}")
    try:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for i in range(0, len(body), 65536):
                piece = body[i:i + 65536]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked and finish:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed while we were still sending: read its answer
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)  # socket.timeout (a failure) if the server never answers
            assert more, f"connection closed without an answer: {data!r}"
            data += more
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        size = int(headers.get("content-length", "0"))
        while len(rest) < size:
            more = sock.recv(65536)
            assert more, "connection closed in the middle of the answer"
            rest += more
        return int(lines[0].split()[1]), headers, rest[:size]
    finally:
        sock.close()


def _refusals(store, since: int) -> list[tuple[str, str]]:
    entries = store["auditor"].audit_entries()
    return [(e.resource, e.reason) for e in entries
            if e.seq > since and not e.allowed and e.user == RESEARCHER.user]


def _last_seq(store) -> int:
    entries = store["auditor"].audit_entries(limit=1)
    return entries[-1].seq if entries else 0


def _assert_refused(status: int, body: bytes) -> None:
    assert status == 413, (status, body[:300])
    assert json.loads(body) == {"error": "PayloadTooLarge", "detail": WHY}


def test_a_chunked_body_over_the_limit_is_refused_before_the_client_has_sent_it_all(door, store):
    """The red-team case: no Content-Length, a chunked body several MB over the limit. The
    request never ends here, so the 413 can only come from a server that counted the streamed
    bytes and stopped reading; it is audited like a declared oversize body."""
    seq = _last_seq(store)
    status, headers, body = _post_raw(door, store["token"], _padded(door["payload"], LIMIT + 3_000_000),
                                      finish=False)
    _assert_refused(status, body)
    assert headers["connection"] == "close"  # the server drops the rest rather than draining it
    assert _refusals(store, seq) == [(f"{door['label']}POST {door['path']}", WHY)]
    assert door["proc"].poll() is None


def test_a_whole_chunked_body_over_the_limit_is_413_not_parsed(door, store):
    """What an ordinary client does: httpx streams a generator (chunked, no Content-Length), a
    well-formed JSON body 4 MB over the limit; the answer is 413, not whatever parsing it gave."""
    def gen():
        data = _padded(door["payload"], LIMIT + 4_000_000)
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    seq = _last_seq(store)
    with httpx.Client(base_url=f"http://127.0.0.1:{door['port']}", timeout=60) as c:
        r = c.post(door["path"], content=gen(), headers={"Authorization": f"Bearer {store['token']}",
                                                         "Content-Type": "application/json",
                                                         "Accept": "application/json, text/event-stream"})
        assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
        _assert_refused(r.status_code, r.content)
    assert _refusals(store, seq) == [(f"{door['label']}POST {door['path']}", WHY)]


def test_a_lying_content_length_is_caught(door, store):
    """Content-Length says 100 bytes, Transfer-Encoding: chunked (which wins, RFC 9112) carries
    2 MB more than the limit: the streamed bytes count, not the declared ones."""
    seq = _last_seq(store)
    status, _, body = _post_raw(door, store["token"], _padded(door["payload"], LIMIT + 2_000_000),
                                content_length=100)
    _assert_refused(status, body)
    assert _refusals(store, seq) == [(f"{door['label']}POST {door['path']}", WHY)]


def test_a_declared_content_length_over_the_limit_is_refused_at_once(door, store):
    """Content-Length over the limit: 413 from the headers alone (the body is never sent here)."""
    seq = _last_seq(store)
    status, _, body = _post_raw(door, store["token"], b"", chunked=False, content_length=LIMIT + 1)
    _assert_refused(status, body)
    assert _refusals(store, seq) == [(f"{door['label']}POST {door['path']}", WHY)]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_at_the_limit_still_works(door, store, chunked):
    """A body of exactly the limit goes through, streamed or declared; one byte more does not."""
    seq = _last_seq(store)
    data = _padded(door["payload"], LIMIT)
    status, _, body = _post_raw(door, store["token"], data, chunked=chunked,
                                content_length=None if chunked else len(data))
    assert status == 200, (status, body[:300])
    answer = json.loads(body)
    if door["kind"] == "rest":
        assert answer == {"hits": []}  # an empty store
    else:
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "sagehealth"
    assert _refusals(store, seq) == []
    over = _padded(door["payload"], LIMIT + 1)
    status, _, body = _post_raw(door, store["token"], over, chunked=chunked,
                                content_length=None if chunked else len(over))
    _assert_refused(status, body)


@pytest.mark.parametrize("door", ["rest"], indirect=True)
@pytest.mark.parametrize("path", ["/v1/tools/query_sql", "/v1/tools/no_such_tool", "/v1/tools"])
def test_every_rest_route_counts_the_streamed_body(door, store, path):
    """The limit is the gate's, not one route's: any tool, the unknown-tool catch-all, even a
    route that takes no body."""
    seq = _last_seq(store)
    status, _, body = _post_raw({**door, "path": path}, store["token"], b" " * (LIMIT + 500_000), finish=False)
    _assert_refused(status, body)
    assert _refusals(store, seq) == [(f"POST {path}", WHY)]
