"""Biomedical literature -> ``literature`` rows.

Two formats are read, streaming:

* a BEIR corpus (``corpus.jsonl`` or ``corpus*.jsonl.gz``), one ``{"_id", "title", "text",
  "metadata"}`` object a line; ``collection`` is the name of the corpus's folder (``scifact``)
  and ``doc_id`` is ``_id``. In a BEIR folder only the corpus files are literature: queries
  and qrels are evaluation files and are not ingested.
* PubMedQA (``ori_pqal.json`` and its siblings): one JSON object ``{pmid: {QUESTION, CONTEXTS,
  LABELS, MESHES, YEAR, final_decision, LONG_ANSWER, ...}}``, streamed with ``ijson.kvitems``;
  one row per pmid, collection ``pubmedqa``. PubMedQA has no titles: the question is used as
  the title (``extra.title_is_question``) and the text is the labelled contexts, one
  ``"LABEL: context"`` paragraph each. ``test_ground_truth.json`` (pmid -> answer) is not
  literature and is skipped.

``row_id`` is keyed by (collection, doc_id). Options: ``collection`` overrides the collection,
``source_system`` the source system.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson
import orjson

from sagehealth.data.model import row_id
from sagehealth.data.sources.base import (
    Bad,
    BadValue,
    Item,
    ReadContext,
    Reader,
    Record,
    clip,
    open_binary,
    to_int,
)

BEIR_SUFFIXES = (".jsonl", ".jsonl.gz")
JSON_SUFFIXES = (".json", ".json.gz")
#: BEIR files that are evaluation data, never literature
BEIR_EVAL_PREFIXES = ("queries", "qrels")
#: PubMedQA files that are answers, not articles
PUBMEDQA_SKIP = frozenset({"test_ground_truth.json", "test_ground_truth.json.gz"})
PUBMEDQA_COLLECTION = "pubmedqa"
#: the start of a PubMedQA file: an object whose first value is an object with a QUESTION
_PUBMEDQA_HEAD = re.compile(rb'^\s*\{\s*"[^"]+"\s*:\s*\{\s*"(?:QUESTION|CONTEXTS)"')
#: PubMedQA fields copied into ``extra`` (source key -> extra key)
PUBMEDQA_EXTRA = {
    "QUESTION": "question",
    "final_decision": "final_decision",
    "LONG_ANSWER": "long_answer",
    "reasoning_required_pred": "reasoning_required_pred",
    "reasoning_free_pred": "reasoning_free_pred",
    "LABELS": "context_labels",
}
_PEEK = 4096


def _kind(path: Path) -> str | None:
    """``"beir"``, ``"pubmedqa"`` or None, from the name and the first bytes."""
    name = path.name.lower()
    if name.endswith(BEIR_SUFFIXES):
        if name.startswith(BEIR_EVAL_PREFIXES):
            return None
        if name.startswith("corpus"):
            return "beir"
        return "beir" if _beir_head(path) else None
    if name.endswith(JSON_SUFFIXES) and name not in PUBMEDQA_SKIP:
        return "pubmedqa" if _PUBMEDQA_HEAD.match(_peek(path)) else None
    return None


def _peek(path: Path) -> bytes:
    try:
        with open_binary(path) as fh:
            return fh.read(_PEEK)
    except (OSError, EOFError):
        return b""


def _beir_head(path: Path) -> bool:
    """A JSON-lines file whose first line is a BEIR corpus entry (``_id``, ``title``,
    ``text``); BEIR queries have no ``title``."""
    line = _peek(path).split(b"\n", 1)[0]
    try:
        first = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(first, dict) and {"_id", "title", "text"} <= first.keys()


class LiteratureReader(Reader):
    """BEIR corpora and PubMedQA files."""

    name = "literature"
    version = "1"
    source_system = "literature"

    def files(self, path: Path) -> list[Path]:
        """A file as is; in a folder its BEIR corpus and PubMedQA files, sorted by path."""
        if path.is_file():
            return [path]
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not p.name.startswith(".") and _kind(p) is not None
        )

    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        """Stream the articles of one file."""
        if _kind(path) == "pubmedqa":
            yield from self._read_pubmedqa(path, ctx)
        else:
            yield from self._read_beir(path, ctx)

    def _read_beir(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        collection = ctx.options.get("collection") or path.parent.name
        source = ctx.options.get("source_system") or self.source_system
        with open_binary(path) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                loc = f"line:{n}"
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield Bad(loc, f"malformed JSON: {exc}", clip(line))
                    continue
                if not isinstance(obj, dict):
                    yield Bad(loc, f"expected a JSON object, got {type(obj).__name__}", clip(line))
                    continue
                doc_id = obj.get("_id")
                if doc_id is None or str(doc_id).strip() == "":
                    yield Bad(loc, "missing _id", clip(line))
                    continue
                text = obj.get("text")
                if not isinstance(text, str) or not text.strip():
                    yield Bad(loc, f"empty text for _id {doc_id}", clip(line))
                    continue
                title = obj.get("title")
                if title is not None and not isinstance(title, str):
                    yield Bad(loc, f"title: expected a string, got {type(title).__name__}", clip(line))
                    continue
                meta = obj.get("metadata")
                try:
                    year = to_int(meta.get("year"), "metadata.year") if meta else None
                except (BadValue, AttributeError) as exc:
                    yield Bad(loc, str(exc), clip(line))
                    continue
                row = {
                    "row_id": row_id("literature", collection, str(doc_id)),
                    "doc_id": str(doc_id),
                    "collection": collection,
                    "title": title or None,
                    "text": text,
                    "year": year,
                    "extra": orjson.dumps(meta).decode() if meta else None,
                    "source_system": source,
                }
                yield Record(loc, [("literature", row)], content=line)

    def _read_pubmedqa(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        collection = ctx.options.get("collection") or PUBMEDQA_COLLECTION
        source = ctx.options.get("source_system") or self.source_system
        last = ""
        with open_binary(path) as fh:
            try:
                for pmid, obj in ijson.kvitems(fh, "", use_float=True):
                    last = pmid
                    yield _pubmedqa_item(pmid, obj, collection, source)
            except ijson.JSONError as exc:
                where = f"/{last}" if last else "/"
                yield Bad(f"after:{where}", f"malformed JSON after {where}: {exc}")


def _pubmedqa_item(pmid: str, obj: Any, collection: str, source: str) -> Item:
    loc = f"/{pmid}"
    raw = orjson.dumps(obj)
    if not isinstance(obj, dict):
        return Bad(loc, f"expected a JSON object, got {type(obj).__name__}", clip(raw))
    contexts = obj.get("CONTEXTS")
    labels = obj.get("LABELS")
    contexts = contexts if isinstance(contexts, list) else []
    labels = labels if isinstance(labels, list) else []
    paras = [
        f"{labels[i]}: {c}" if i < len(labels) and labels[i] else c
        for i, c in enumerate(contexts)
        if isinstance(c, str) and c.strip()
    ]
    if not paras:
        return Bad(loc, "empty text: no CONTEXTS", clip(raw))
    try:
        year = to_int(obj.get("YEAR"), "YEAR")
    except BadValue as exc:
        return Bad(loc, str(exc), clip(raw))
    question = obj.get("QUESTION")
    if question is not None and not isinstance(question, str):
        return Bad(loc, f"QUESTION: expected a string, got {type(question).__name__}", clip(raw))
    mesh = obj.get("MESHES")
    extra = {v: obj.get(k) for k, v in PUBMEDQA_EXTRA.items() if obj.get(k) is not None}
    extra["title_is_question"] = True
    row = {
        "row_id": row_id("literature", collection, pmid),
        "doc_id": pmid,
        "collection": collection,
        "title": question or None,
        "text": "\n\n".join(paras),
        "year": year,
        "mesh": [str(m) for m in mesh] if isinstance(mesh, list) else None,
        "extra": orjson.dumps(extra).decode(),
        "source_system": source,
    }
    return Record(loc, [("literature", row)], content=raw)


def detect(path: Path) -> bool:
    """A BEIR corpus file or PubMedQA file, or a folder holding one (searched recursively)."""
    if path.is_file():
        return _kind(path) is not None
    if path.is_dir():
        return any(
            p.is_file() and _kind(p) is not None
            for p in path.rglob("*")
            if p.name.lower().endswith(BEIR_SUFFIXES + JSON_SUFFIXES)
        )
    return False
