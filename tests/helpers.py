"""Helpers shared by the reader tests (importable: the tests folder is on sys.path)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from sagehealth.data.model import SCHEMAS
from sagehealth.governance import Principal
from sagehealth.data.sources.base import Record, open_text

#: ../shared/data, or $SAGEHEALTH_SHARED_DATA
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA")
              or Path(__file__).resolve().parents[2] / "shared" / "data")


def shared_path(rel: str) -> Path:
    """A path under the shared data, or skip the test when it is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared data not present: {p}")
    return p


def rows_of(items: list, table: str) -> list[dict]:
    """The rows of ``table`` in reader items."""
    return [r for it in items if isinstance(it, Record) for t, r in it.rows if t == table]


def validate_rows(items: list) -> None:
    """Every row uses only its table's columns, leaves provenance to the pipeline and fits
    the table's Arrow schema."""
    by: dict[str, list] = {}
    for it in items:
        if isinstance(it, Record):
            for t, r in it.rows:
                assert set(r) <= set(SCHEMAS[t].names), set(r) - set(SCHEMAS[t].names)
                assert "provenance_id" not in r
                by.setdefault(t, []).append(r)
    for t, rs in by.items():
        pa.Table.from_pylist(rs, schema=SCHEMAS[t])


def data_rows(path: Path) -> int:
    """Non-blank data rows of a (possibly gzipped) CSV, counted independently of the readers."""
    with open_text(path) as fh:
        reader = csv.reader(fh)
        next(reader, None)
        return sum(1 for row in reader if row)

#: the data steward the tests ingest as (reads of clinical rows in tests go through ``eco.lake``,
#: the storage layer; the access rules themselves are tested in test_access.py)
STEWARD = Principal("test-steward", "steward", "operations")


def clinician_of(eco, patients=None):  # noqa: ANN001, ANN201 - test helper
    """The same store opened by a clinician whose care team is ``patients`` (default: everyone)."""
    if patients is None:
        patients = eco.lake.read("patients", columns=["patient_id"]).column("patient_id").to_pylist()
    return eco.as_principal(Principal("test-clinician", "clinician", "treatment", patients=frozenset(patients)))


def free_port() -> int:
    """A loopback port nothing listens on (for a test server, or to test a closed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeChatHandler(BaseHTTPRequestHandler):
    """A stand-in chat endpoint for failure modes a real server will not produce on demand; the
    first path segment picks the behaviour (slow, notjson, err500, nochoices, tool, badtool, echo)."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        FakeChatHandler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": payload})
        mode = self.path.split("/")[1]
        if mode == "slow":
            time.sleep(1.5)
            return self._send(200, b"{}")
        if mode == "notjson":
            return self._send(200, b"not json", "text/plain")
        if mode == "err500":
            return self._send(500, b'{"error": "model exploded"}')
        if mode == "nochoices":
            return self._send(200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
        if mode == "badtool" or mode == "tool":
            args = "{not json" if mode == "badtool" else json.dumps({"city": "Paris"})
            msg = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]}
            return self._send(200, json.dumps({"model": "m", "choices": [
                {"index": 0, "message": msg, "finish_reason": "tool_calls"}]}).encode())
        if mode in ("echo", "v1"):  # "v1": a bare base URL
            text = "Metformin 500 mg twice daily [E1]. Unknown [E9]."
            return self._send(200, json.dumps({"model": "served-name", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode())
        self._send(404, b'{"error": "no such route"}')


@contextlib.contextmanager
def fake_chat_server() -> Iterator[str]:
    """:class:`FakeChatHandler` served on 127.0.0.1 in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChatHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def note_file(folder: Path, doc_id: str, patient: str, text: str, *, date: str = "2020-03-02T10:00:00Z",
              title: str | None = None) -> Path:
    """A FHIR DocumentReference (progress note, text as a base64 attachment) for ``patient``,
    written as one NDJSON file in ``folder``: how the tests inject a note into a store."""
    import base64

    doc: dict[str, Any] = {
        "resourceType": "DocumentReference", "id": doc_id, "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
        "subject": {"reference": f"Patient/{patient}"}, "date": date,
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}}]}
    if title is not None:
        doc["description"] = title
    path = folder / f"DocumentReference.{doc_id}.ndjson"
    path.write_text(json.dumps(doc) + "\n")
    return path


#: the two Synthea patients of the bundled sample data the radiology tests use
ABDUL = "018f428e-34f6-4707-8009-5ad742f901e7"
ALBERTO = "4e8ed886-fd5f-40bb-8feb-f339b04d853a"


def radiology_store(home: Path):  # noqa: ANN201 - test helper
    """A store with two patients, the 32 synthetic signed reports (patient-less) and four
    preliminary studies (findings dictated, no impression): three of Abdul's, one of Alberto's.
    The research zone needs $SAGEHEALTH_DEID_KEY set by the caller."""
    from sagehealth import Ecosystem
    from sagehealth.demo import sample_root

    root = sample_root()
    eco = Ecosystem.open(home, STEWARD)
    fhir = root / "fhir"
    eco.ingest([fhir / "Abdul_Koepp_e925b0f3-8006-43f6-aa31-94bd215e55e7.json",
                fhir / "Alberto_Atencio_fc712d1f-5a2e-4407-9c55-a2a2bad623c2.json"], options={"embed": False})
    eco.ingest([root / "radiology" / "reports.csv"], options={"index": True, "embed": False})
    prelim = Path(home).parent / "preliminary.csv"
    with open(root / "radiology" / "preliminary.csv", newline="") as src, open(prelim, "w", newline="") as dst:
        rows = list(csv.DictReader(src))
        for row, who in zip(rows, [ABDUL, ABDUL, ALBERTO, ABDUL]):
            row["patient_id"] = who
        w = csv.DictWriter(dst, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    s = eco.ingest([prelim], options={"index": True, "embed": False, "patient_column": "patient_id"})
    assert s.quarantined == 0
    return eco
