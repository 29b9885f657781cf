"""The same tool tests through every door: the Python registry, REST (a real `sagehealth serve`
on loopback, called with httpx), MCP over streamable HTTP (a real `sagehealth mcp --http`) and
MCP over stdio (`sagehealth mcp` subprocesses), the last two through the MCP SDK's own client.
The role matrix must hold, and refusals must be clear and audited, whichever door is used."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from sagehealth import Ecosystem
from sagehealth.agents import REGISTRY
from sagehealth.errors import SageHealthError
from sagehealth.governance import Principal

from helpers import STEWARD, fake_chat_server, free_port

BIN = str(Path(sys.executable).parent / "sagehealth")



class DoorError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class PythonDoor:
    name = "python"

    def __init__(self, world) -> None:
        self.world = world

    def tools(self) -> list[str]:
        return REGISTRY.names()

    def call(self, role: str, tool: str, args: dict) -> dict:
        eco = self.world["eco"].as_principal(self.world["who"][role])
        try:
            return REGISTRY.call_json(eco, tool, args)
        except SageHealthError as exc:
            raise DoorError(type(exc).__name__, str(exc)) from None

    def close(self) -> None:
        pass


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


class RestDoor:
    name = "rest"

    def __init__(self, world) -> None:
        self.world = world
        self.port = free_port()
        self.proc = subprocess.Popen([BIN, "serve", "--home", world["home"], "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.base = f"http://127.0.0.1:{self.port}"
        _wait_http(self.base + "/healthz", self.proc)
        self.client = httpx.Client(base_url=self.base, timeout=120)

    def tools(self) -> list[str]:
        r = self.client.get("/v1/tools", headers=self._auth("researcher"))
        r.raise_for_status()
        return [t["name"] for t in r.json()]

    def _auth(self, role: str) -> dict:
        return {"Authorization": f"Bearer {self.world['tokens'][role]}"}

    def call(self, role: str, tool: str, args: dict) -> dict:
        r = self.client.post(f"/v1/tools/{tool}", json=args, headers=self._auth(role))
        if r.status_code >= 400:
            body = r.json()
            assert set(body) == {"error", "detail"} and body["detail"], body
            raise DoorError(body["error"], body["detail"])
        return r.json()

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


class _Loop:
    """An event loop in a thread, so sync tests can drive long-lived MCP client sessions."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 180):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class McpDoor:
    """MCP through the SDK's Client: one session per role, each living in one task of a
    background event loop (anyio scopes must close in the task that opened them)."""

    def __init__(self, world, transport: str) -> None:
        self.world, self.transport = world, transport
        self.name = f"mcp_{transport}"
        self.loop = _Loop()
        self.queues: dict[str, asyncio.Queue] = {}
        self.tasks: list = []
        self.proc = None
        if transport == "http":
            self.port = free_port()
            self.proc = subprocess.Popen([BIN, "mcp", "--http", "--home", world["home"], "--port", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _wait_http(f"http://127.0.0.1:{self.port}/mcp", self.proc)

    def _client(self, role: str, stack: AsyncExitStack):
        from mcp import Client

        if self.transport == "http":
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            token = self.world["tokens"][role]
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {},
                                      timeout=httpx2.Timeout(120))
            stack.push_async_callback(http.aclose)
            return Client(streamable_http_client(f"http://127.0.0.1:{self.port}/mcp", http_client=http))
        from mcp import StdioServerParameters

        p = self.world["who"][role]
        env = {**os.environ, "SAGEHEALTH_ROLE": p.role, "SAGEHEALTH_USER": p.user,
               "SAGEHEALTH_PURPOSE": p.purpose, "SAGEHEALTH_PATIENTS": ",".join(sorted(p.patients))}
        return Client(StdioServerParameters(command=BIN, args=["mcp", "--home", self.world["home"]], env=env))

    async def _session(self, role: str, queue: asyncio.Queue, ready: asyncio.Future) -> None:
        try:
            async with AsyncExitStack() as stack:
                client = await stack.enter_async_context(self._client(role, stack))
                ready.set_result(True)
                while (item := await queue.get()) is not None:
                    fn, fut = item
                    try:
                        fut.set_result(await fn(client))
                    except Exception as exc:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(exc)
        except Exception as exc:  # noqa: BLE001
            if not ready.done():
                ready.set_exception(exc)

    async def _request(self, role: str, fn):
        if role not in self.queues:
            self.queues[role] = asyncio.Queue()
            ready = asyncio.get_running_loop().create_future()
            self.tasks.append(asyncio.create_task(self._session(role, self.queues[role], ready)))
            await ready
        fut = asyncio.get_running_loop().create_future()
        await self.queues[role].put((fn, fut))
        return await fut

    def tools(self) -> list[str]:
        result = self.loop.run(self._request("researcher", lambda c: c.list_tools()))
        return [t.name for t in result.tools]

    def call(self, role: str, tool: str, args: dict) -> dict:
        r = self.loop.run(self._request(role, lambda c: c.call_tool(tool, args)))
        if r.is_error:
            text = r.content[0].text
            kind, _, message = text.partition(": ")
            raise DoorError(kind, message)
        assert r.structured_content is not None
        assert json.loads(r.content[0].text) == r.structured_content
        return r.structured_content

    async def _shutdown(self) -> None:
        for q in self.queues.values():
            await q.put(None)
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def close(self) -> None:
        try:
            self.loop.run(self._shutdown(), timeout=30)
        finally:
            self.loop.stop()
            if self.proc:
                self.proc.terminate()
                self.proc.wait(10)


@pytest.fixture(scope="module", params=["python", "rest", "mcp_http", "mcp_stdio"])
def door(request, world):
    d = {"python": lambda: PythonDoor(world), "rest": lambda: RestDoor(world),
         "mcp_http": lambda: McpDoor(world, "http"), "mcp_stdio": lambda: McpDoor(world, "stdio")}[request.param]()
    yield d
    d.close()


def _denials(world, since_seq: int) -> list:
    auditor = world["eco"].as_principal(world["who"]["auditor"])
    return [e for e in auditor.audit_entries() if e.seq > since_seq and not e.allowed]


def _last_seq(world) -> int:
    entries = world["eco"].as_principal(world["who"]["auditor"]).audit_entries(limit=1)
    return entries[-1].seq if entries else 0


# -- the same tests through every door ------------------------------------------------------
def test_every_tool_is_served(door):
    assert door.tools() == REGISTRY.names()


def test_researcher_searches_the_research_zone_only(door, world):
    r = door.call("researcher", "search_evidence", {"query": "fetal heart rate ultrasound", "k": 5})
    assert r["hits"]
    assert all(h["patient_id"] is None or h["patient_id"].startswith("psn_") for h in r["hits"])
    assert all(h["id"].startswith("chk_") and h["provenance_id"] for h in r["hits"])
    assert any("heart" in h["text"].lower() for h in r["hits"])


def test_clinician_reads_own_patient_only(door, world):
    mine, other = world["mine"], world["other"]
    ctx = door.call("clinician", "patient_context", {"patient_id": mine})
    assert ctx["patient_id"] == mine and ctx["items"]
    assert all(i["row_id"] in ctx["prompt"] for i in ctx["items"])
    hits = door.call("clinician", "search_evidence", {"query": "cough", "k": 20})["hits"]
    assert hits and {h["patient_id"] for h in hits} <= {mine, None}
    seq = _last_seq(world)
    for tool, args in [("patient_context", {"patient_id": other}),
                       ("search_evidence", {"query": "cough", "patient": other})]:
        with pytest.raises(DoorError) as exc:
            door.call("clinician", tool, args)
        assert exc.value.kind == "AccessDenied" and "care team" in exc.value.message
    assert len([d for d in _denials(world, seq) if d.user == "dr.door"]) == 2
    n = door.call("clinician", "query_sql", {"query": "SELECT count(DISTINCT patient_id) AS n FROM patients"})
    assert n["rows"] == [{"n": 1}]


@pytest.mark.parametrize("role", ["steward", "auditor"])
def test_roles_without_patient_data_are_refused(door, world, role):
    doc = world["eco"].lake.sql(f"SELECT document_id FROM documents WHERE patient_id = '{world['mine']}' "
                                "LIMIT 1").column("document_id")[0].as_py()
    seq = _last_seq(world)
    calls = [("search_evidence", {"query": "cough"}), ("answer_question", {"question": "any cough?"}),
             ("patient_context", {"patient_id": world["mine"]}), ("get_document", {"document_id": doc}),
             ("find_patients", {"concept": "DOID:2275"}), ("similar_cases", {"text": "cough for three weeks"}),
             ("query_sql", {"query": "SELECT * FROM patients"})]
    for tool, args in calls:
        with pytest.raises(DoorError) as exc:
            door.call(role, tool, args)
        assert exc.value.kind == "AccessDenied", (tool, exc.value)
    user = world["who"][role].user
    assert len([d for d in _denials(world, seq) if d.user == user]) >= len(calls)  # each one audited


def test_sql_is_read_only_limited_and_stays_in_the_zone(door, world):
    seq = _last_seq(world)
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "query_sql", {"query": "DELETE FROM patients"})
    assert exc.value.kind == "ReadOnlyViolation" and "only SELECT" in exc.value.message
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "query_sql", {"query": "SELECT * FROM provenance"})
    assert exc.value.kind == "AccessDenied"
    refused = [d for d in _denials(world, seq) if d.user == "rita.door"]  # both audited as denials
    assert [d.resource for d in refused] == ["sql: DELETE FROM patients", "sql: SELECT * FROM provenance"]
    r = door.call("researcher", "query_sql", {"query": "SELECT range AS i FROM range(50)", "max_rows": 10})
    assert len(r["rows"]) == 10 and r["truncated"] and r["columns"] == ["i"]
    t0 = time.perf_counter()
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "query_sql", {"query": "SELECT sum(a.range * b.range) FROM range(200000) a, "
                                                       "range(200000) b", "timeout_s": 0.5})
    assert exc.value.kind == "QueryError" and "longer than" in exc.value.message
    assert time.perf_counter() - t0 < 20
    pats = door.call("researcher", "query_sql", {"query": "SELECT patient_id FROM patients"})["rows"]
    assert pats and all(p["patient_id"].startswith("psn_") for p in pats)


def test_every_search_filter_holds_through_the_door(door, world):
    base = {"query": "sore throat cough fever treatment", "k": 30}
    hits = door.call("researcher", "search_evidence", base)["hits"]
    assert len(hits) >= 10
    section = next(h["section"] for h in hits if h["section"])
    got = door.call("researcher", "search_evidence", {**base, "sections": [section.lower()]})["hits"]
    assert got and all(h["section"].upper() == section.upper() for h in got)
    days = sorted(h["date"][:10] for h in hits if h["date"])
    since, until = days[len(days) // 4], days[3 * len(days) // 4]
    got = door.call("researcher", "search_evidence", {**base, "since": since, "until": until})["hits"]
    assert got and all(since <= h["date"][:10] <= until for h in got)
    docs = sorted({h["source_row_id"] for h in hits})[:2]
    got = door.call("researcher", "search_evidence", {**base, "documents": docs})["hits"]
    assert got and {h["source_row_id"] for h in got} <= set(docs)
    got = door.call("researcher", "search_evidence", {**base, "concepts": ["DOID:2275"]})["hits"]
    tree = door.call("researcher", "lookup_concept", {"concept": "DOID:2275", "descendants": True})
    ids = ", ".join(f"'{c}'" for c in ["DOID:2275", *(d["concept_id"] for d in tree["descendants"])])
    affirm = door.call("researcher", "query_sql", {"query": "SELECT DISTINCT source_row_id FROM mentions WHERE "
                                                            f"concept_id IN ({ids}) AND NOT negated AND NOT family "
                                                            "AND NOT hypothetical"})["rows"]
    assert got and {h["source_row_id"] for h in got} <= {r["source_row_id"] for r in affirm}
    assert {h["source_row_id"] for h in hits} - {r["source_row_id"] for r in affirm}  # it did narrow
    first = door.call("researcher", "search_evidence", {**base, "version": 1})["hits"]
    assert first == []  # version 1 is the store before its first ingest committed anything searchable
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "search_evidence", {**base, "version": 10_000})
    assert exc.value.kind == "VersionNotFound"


def test_bad_calls_are_clear_and_audited(door, world):
    seq = _last_seq(world)
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "no_such_tool", {})
    assert exc.value.kind == "UnknownTool" and "search_evidence" in exc.value.message
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "search_evidence", {"query": "x", "k": 1000, "colour": "red"})
    assert exc.value.kind == "ToolArgumentError"
    assert "k" in exc.value.message and "colour" in exc.value.message
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "similar_cases", {"k": 3})
    assert exc.value.kind == "ToolArgumentError" and "document_id or text" in exc.value.message
    refused = [d for d in _denials(world, seq) if d.user == "rita.door"]
    assert len(refused) == 3 and all(d.action == "call" for d in refused)
    # and the door still serves
    assert door.call("researcher", "search_evidence", {"query": "pregnancy", "k": 1})["hits"]


def test_documents_concepts_and_similar_cases(door, world):
    hit = door.call("researcher", "search_evidence", {"query": "ultrasound", "k": 1, "kinds": ["radiology_report"]})["hits"][0]
    doc = door.call("researcher", "get_document", {"document_id": hit["document_id"]})
    assert doc["table"] == "documents" and hit["text"] in doc["row"]["text"] and doc["provenance"] is None
    sim = door.call("researcher", "similar_cases", {"document_id": hit["document_id"], "k": 3})["hits"]
    assert sim and all(h["document_id"] != hit["document_id"] for h in sim)
    mine_doc = world["eco"].lake.sql(f"SELECT document_id FROM documents WHERE patient_id = '{world['other']}' "
                                     "LIMIT 1").column("document_id")[0].as_py()
    with pytest.raises(DoorError) as exc:
        door.call("clinician", "get_document", {"document_id": mine_doc})
    with pytest.raises(DoorError) as missing:
        door.call("clinician", "get_document", {"document_id": "doc_no_such_document_anywhere"})
    # another patient's document and a missing one answer alike (no row-existence oracle)
    assert exc.value.kind == missing.value.kind == "RowNotFound"
    assert str(exc.value).replace(mine_doc, "X") == str(missing.value).replace("doc_no_such_document_anywhere", "X")
    c = door.call("clinician", "lookup_concept", {"concept": "respiratory system disease", "descendants": True})
    assert c["concept"]["concept_id"].startswith("DOID:") and c["concept"]["label"] == "respiratory system disease" and c["descendants"]
    with pytest.raises(DoorError) as exc:
        door.call("clinician", "lookup_concept", {"concept": "no such disease at all"})
    assert exc.value.kind == "VocabularyError"
    found = door.call("researcher", "find_patients", {"concept": c["concept"]["concept_id"]})
    assert found["concept_id"] == c["concept"]["concept_id"]
    assert all(p["patient_id"].startswith("psn_") for p in found["patients"])


def test_answer_cites_evidence_and_feedback_is_scoped(door, world):
    a = door.call("researcher", "answer_question", {"question": "What was the fetal heart rate on the ultrasound?"})
    assert not a["abstained"] and a["sentences"] and a["trace_id"].startswith("trc_")
    ids = {e["id"] for e in a["evidence"]}
    assert all(s["citations"] and set(s["citations"]) <= ids and s["supported"] for s in a["sentences"])
    assert "BPM" in a["answer"] or "heart rate" in a["answer"]
    fb = door.call("researcher", "record_feedback", {"trace_id": a["trace_id"], "verdict": "edit",
                                                     "edited_text": "Fetal heart rate 135 BPM.", "reason": "concise"})
    assert fb["verdict"] == "edit" and fb["feedback_id"].startswith("fbk_")
    with pytest.raises(DoorError) as exc:
        door.call("clinician", "record_feedback", {"trace_id": a["trace_id"], "verdict": "accept"})
    assert exc.value.kind == "AccessDenied"
    with pytest.raises(DoorError) as exc:
        door.call("researcher", "record_feedback", {"trace_id": a["trace_id"], "verdict": "edit"})
    assert exc.value.kind == "ToolArgumentError"
    steward = world["eco"].as_principal(world["who"]["steward"])
    assert any(f["feedback_id"] == fb["feedback_id"] for f in steward.feedback(trace_id=a["trace_id"]))
    assert steward.traces(trace_id=a["trace_id"])[0]["evidence_ids"] == [e["id"] for e in a["evidence"]]
    none = door.call("researcher", "answer_question", {"question": "What is the capital of France?"})
    assert none["abstained"] and none["reason"] and not none["sentences"]


# -- door-specific: authentication -------------------------------------------------------
def test_rest_needs_a_valid_token_and_documents_every_tool(world):
    d = RestDoor(world)
    try:
        seq = _last_seq(world)
        assert d.client.post("/v1/tools/search_evidence", json={"query": "x"}).status_code == 401
        r = d.client.post("/v1/tools/search_evidence", json={"query": "x"}, headers={"Authorization": "Bearer sht_x"})
        assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked bearer token"
        assert len([e for e in _denials(world, seq) if e.user == "(none)"]) == 2
        # no token: 401 before the body is read, whatever it is; huge bodies: 413
        r = d.client.post("/v1/tools/search_evidence", content=b"\xff not json", headers={"content-type": "application/json"})
        assert r.status_code == 401
        r = d.client.post("/v1/tools/search_evidence", content=b"x" * 1_100_000,
                          headers={"Authorization": f"Bearer {world['tokens']['researcher']}"})
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
        big = [e for e in _denials(world, seq) if e.user == "rita.door"]
        assert [(e.resource, e.reason) for e in big] == [("POST /v1/tools/search_evidence",
                                                          "request body over 1000000 bytes")]
        spec = d.client.get("/openapi.json").json()
        for name in REGISTRY.names():
            op = spec["paths"][f"/v1/tools/{name}"]["post"]
            assert op["requestBody"]["content"]["application/json"]["schema"]
        # a revoked token stops working at once
        st = world["eco"].as_principal(world["who"]["steward"])
        tok = st.issue_token(world["who"]["researcher"])
        h = {"Authorization": f"Bearer {tok}"}
        assert d.client.post("/v1/tools/search_evidence", json={"query": "fetal"}, headers=h).status_code == 200
        assert st.revoke_token(tok)
        assert d.client.post("/v1/tools/search_evidence", json={"query": "fetal"}, headers=h).status_code == 401
        stored = (Path(world["home"]) / "tokens.json").read_text()
        assert tok not in stored and world["tokens"]["researcher"] not in stored
    finally:
        d.close()


def test_mcp_http_refuses_a_missing_or_wrong_token(world):
    """Without a known token the MCP endpoint answers 401 before the MCP layer: the SDK's client
    cannot even initialise or list the tools, and every refusal is audited."""
    d = McpDoor(world, "http")
    try:
        seq = _last_seq(world)
        for token in ("sht_wrong", None):
            d.world = {**world, "tokens": {**world["tokens"], "researcher": token}}
            d.queues.clear()
            with pytest.raises(Exception) as exc:  # noqa: PT011 - the SDK wraps the 401 in task groups
                d.tools()
            assert "Server returned an error response" in repr(exc.value), repr(exc.value)
        anonymous = [e for e in _denials(world, seq) if e.user == "(none)"]
        assert {e.reason for e in anonymous} == {"unknown or revoked bearer token", "missing bearer token"}
        assert all(e.resource.startswith("mcp POST /mcp") for e in anonymous)
        with httpx.Client(timeout=30) as c:  # a plain request gets the reason too
            r = c.post(f"http://127.0.0.1:{d.port}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.json() == {"error": "Unauthorized", "detail": "missing bearer token (Authorization: Bearer <token>)"}
    finally:
        d.close()


@contextlib.contextmanager
def _serving(home: str, *args: str, env: dict | None = None):
    """A running ``sagehealth serve`` on a free loopback port; yields an httpx client for it."""
    port = free_port()
    proc = subprocess.Popen([BIN, "serve", "--home", home, "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            yield c
    finally:
        proc.terminate()
        proc.wait(10)


def test_rest_model_endpoint_down_slow_or_garbage_is_a_clear_5xx_and_the_server_keeps_serving(world):
    h = {"Authorization": f"Bearer {world['tokens']['researcher']}"}
    question = {"question": "What was the fetal heart rate?"}
    with fake_chat_server() as fake:
        for base, status, kind, says in [
            (f"http://127.0.0.1:{free_port()}/v1", 502, "ProviderUnavailable", "unreachable"),
            (f"{fake}/slow/v1", 504, "ProviderTimeout", "0.5"),
            (f"{fake}/notjson/v1", 502, "ProviderResponseError", "not JSON"),
        ]:
            with _serving(world["home"], "--llm", f"openai:m@{base}", env={"SAGEHEALTH_LLM_TIMEOUT": "0.5"}) as c:
                r = c.post("/v1/tools/answer_question", json=question, headers=h)
                assert r.status_code == status and r.json()["error"] == kind, r.text
                assert says in r.json()["detail"], r.json()
                assert c.post("/v1/tools/search_evidence", json={"query": "fetal heart"}, headers=h).status_code == 200
    failed = world["eco"].as_principal(world["who"]["steward"]).traces(limit=3)
    assert [t["status"] for t in failed] == ["error"] * 3


def test_rest_over_an_empty_store_answers_empty_not_errors(tmp_path):
    home = str(tmp_path / "empty")
    eco = Ecosystem.open(home, STEWARD)
    token = eco.issue_token(Principal("rita.empty", "researcher", "research"), label="tests")
    h = {"Authorization": f"Bearer {token}"}
    with _serving(home) as c:
        r = c.post("/v1/tools/search_evidence", json={"query": "fetal heart rate"}, headers=h)
        assert r.status_code == 200 and r.json()["hits"] == []
        r = c.post("/v1/tools/answer_question", json={"question": "What was the fetal heart rate?"}, headers=h)
        assert r.status_code == 200 and r.json()["abstained"] and "no evidence" in r.json()["reason"]
        r = c.post("/v1/tools/query_sql", json={"query": "SELECT count(*) AS n FROM patients"}, headers=h)
        assert r.status_code == 200 and r.json()["rows"] == [{"n": 0}]
        r = c.post("/v1/tools/get_document", json={"document_id": "doc_nope"}, headers=h)
        assert r.status_code == 404 and r.json()["error"] == "RowNotFound", r.text
