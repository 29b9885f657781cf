"""The chunk tables and their indexes, kept in step with the documents.

``refresh_chunks(lake, embedder)`` brings ``chunks`` (clinical zone: documents + literature) and
``research_chunks`` (research zone: their de-identified copies) up to date with the *live* tables
of the running write: a source row whose ``provenance_id`` the chunk table has not seen is
(re-)chunked, rows that disappeared lose their chunks, and only chunks whose text is new are
embedded (vectors are reused by ``content_sha``, the hash of embedder and text). Then it makes
sure the indexes exist: a BM25 inverted index on ``search_text`` (stemmed, stop words removed)
and, from :data:`ANN_MIN_ROWS` rows on, an IVF vector index of RaBitQ codes; rows added after an index was
built are searched exactly until the next optimise. The caller commits, so chunks and indexes
are versioned with the data they come from.

With ``embed=False`` new chunk texts are written with a null vector ("pending"): BM25 finds
them at once, vector search skips them. The embedding stage then fills the vectors in rounds
(:func:`pending_rows` streams what is pending, :func:`write_vectors` stores a round's vectors,
matched on row id *and* text hash so a chunk changed meanwhile is left pending); the caller
commits each round, so an interrupted embedding resumes where its last round ended.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sagehealth.data.lakehouse import compact_fragments
from sagehealth.data.model import CHUNK_TABLES, chunk_schema, stable_id
from sagehealth.data.sqltext import in_list
from sagehealth.retrieval.chunking import Chunk, chunk_document, chunk_literature
from sagehealth.retrieval.embedders import Embedder
from sagehealth.retrieval.search import vector_index

#: vector index from this many chunks on (below it exact search is fast and exact)
ANN_MIN_ROWS = 20_000
#: rows fetched from a source table at a time
FETCH = 500
#: texts per embedding call
EMBED_BATCH = 64
#: FTS settings shared by the index and the queries
FTS = {"base_tokenizer": "simple", "language": "English", "lower_case": True, "stem": True,
       "remove_stop_words": True, "ascii_folding": True, "with_position": False}

Progress = Callable[[str, int, int], None]


def _sha(embedder: str, text: str) -> str:
    return hashlib.sha256(f"{embedder}\x1f{text}".encode("utf-8", "surrogatepass")).hexdigest()


def fetch_rows(source: Any, ids: list[str], columns: list[str]) -> Iterator[dict[str, Any]]:
    """Rows of Lance dataset ``source`` with these row ids, :data:`FETCH` ids per read."""
    for i in range(0, len(ids), FETCH):
        yield from source.to_table(columns=columns, filter=f"row_id IN ({in_list(ids[i:i + FETCH])})").to_pylist()


def _chunk_rows(source_table: str, row: dict[str, Any]) -> Iterator[tuple[Chunk, dict[str, Any]]]:
    """Chunks of one source row, with the columns every chunk of it shares."""
    if source_table.endswith("literature"):
        chunks = chunk_literature(row.get("title"), row.get("text"))
        base = {"document_id": row.get("doc_id"), "patient_id": None, "encounter_id": None,
                "date": None, "kind": "literature", "title": row.get("title")}
    else:
        chunks = chunk_document(row.get("text"), row.get("sections"), title=row.get("title"))
        base = {"document_id": row.get("document_id"), "patient_id": row.get("patient_id"),
                "encounter_id": row.get("encounter_id"), "date": row.get("date"),
                "kind": row.get("kind"), "title": row.get("title")}
    for c in chunks:
        yield c, base


def refresh_chunks(lake: Any, embedder: Embedder, *, embed: bool = True,
                   progress: Progress | None = None, chunking: Progress | None = None) -> dict[str, Any]:
    """Update both chunk tables and their indexes (uncommitted); returns counts per table.
    ``embed=False`` leaves new chunk texts pending (null vector) for the embedding stage.
    ``progress(table, chunks embedded, chunks to embed)``; ``chunking("chunking <table>",
    documents chunked, documents to chunk)``."""
    out: dict[str, Any] = {}
    for table, sources in CHUNK_TABLES.items():
        out[table] = _refresh_table(lake, table, sources, embedder, progress, embed, chunking)
    return out


def _refresh_table(lake: Any, table: str, sources: tuple[str, ...], embedder: Embedder,
                   progress: Progress | None, embed: bool = True,
                   chunking: Progress | None = None) -> dict[str, int]:
    start = time.perf_counter()
    tbl = lake.table(table)
    ds = tbl.to_lance()
    have = ds.to_table(columns=["source_row_id", "source_provenance_id", "embedder"])
    rebuild = have.num_rows > 0 and (
        set(have.column("embedder").to_pylist()) != {embedder.name}
        or ds.schema.field("vector").type.list_size != embedder.dim
    )
    if rebuild:  # another model: every vector must be recomputed, in a table of its width
        tbl = lake.db.create_table(table, schema=chunk_schema(embedder.dim), mode="overwrite")
        lake._tables[table] = tbl
        have = have.slice(0, 0)
    known = set(zip(have.column("source_row_id").to_pylist(), have.column("source_provenance_id").to_pylist()))
    chunked = set(have.column("source_row_id").to_pylist())
    added = embedded = changed = pending = 0
    gone: list[str] = []
    work = []
    for source in sources:
        src = lake.table(source).to_lance()
        ids = src.to_table(columns=["row_id", "provenance_id"])
        todo = [r for r, p in zip(ids.column("row_id").to_pylist(), ids.column("provenance_id").to_pylist())
                if (r, p) not in known]
        work.append((source, src, set(ids.column("row_id").to_pylist()), todo))
    total, done = sum(len(w[3]) for w in work), 0
    if chunking and total:
        chunking(f"chunking {table}", 0, total)
    for source, src, present, todo in work:
        gone += [r for r in chunked if r not in present and _source_of(r, source)]
        cols = ["row_id", "provenance_id", "title", "text"] + (
            ["doc_id"] if source.endswith("literature")
            else ["document_id", "patient_id", "encounter_id", "date", "kind", "sections"])
        # stream: a batch of source rows is chunked, embedded (vectors of unchanged chunk texts
        # reused) and written before the next, so memory stays bounded on large corpora
        for i in range(0, len(todo), FETCH):
            batch_ids = todo[i:i + FETCH]
            rows = [_chunk_row(table, source, row, c, base, embedder)
                    for row in fetch_rows(src, batch_ids, cols) for c, base in _chunk_rows(source, row)]
            vectors, missing, n = _vectors(tbl, rows, embedder, table, progress, embed)
            old = [r for r in batch_ids if r in chunked]
            delete_sources(tbl, old)  # the earlier chunks of changed documents
            changed += len(old)
            _add(tbl, rows, vectors, embedder.dim, missing)
            added, embedded, pending = added + len(rows), embedded + n, pending + int(missing.sum())
            done += len(batch_ids)
            if chunking:
                chunking(f"chunking {table}", done, total)
    delete_sources(tbl, gone)
    ensure_indexes(tbl)
    return {"added": added, "embedded": embedded, "pending": pending, "removed_sources": changed + len(gone),
            "seconds": round(time.perf_counter() - start, 3)}


def _chunk_row(table: str, source: str, row: dict[str, Any], c: Chunk, base: dict[str, Any],
               embedder: Embedder) -> dict[str, Any]:
    search_text = c.indexed_text
    return {
        "row_id": f"chk_{stable_id(table, row['row_id'], c.index)}",
        "source_table": "literature" if source.endswith("literature") else "documents",
        "source_row_id": row["row_id"], "source_provenance_id": row["provenance_id"],
        **base, "section": c.section, "chunk_index": c.index, "start": c.start, "end": c.end,
        "text": c.text, "search_text": search_text,
        "content_sha": _sha(embedder.name, search_text), "embedder": embedder.name,
        "provenance_id": row["provenance_id"],
    }


def delete_sources(tbl: Any, source_ids: list[str]) -> None:
    """Delete the rows of ``tbl`` derived from these source rows."""
    for i in range(0, len(source_ids), FETCH):
        tbl.delete(f"source_row_id IN ({in_list(source_ids[i:i + FETCH])})")


def _add(tbl: Any, rows: list[dict[str, Any]], vectors: np.ndarray, dim: int,
         missing: np.ndarray | None = None) -> None:
    """Append chunk rows; a row whose ``missing`` flag is set gets a null vector (pending)."""
    if not rows:
        return
    schema = chunk_schema(dim)
    mask = pa.array(missing) if missing is not None and missing.any() else None
    arrays = [pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim, mask=mask)
              if f.name == "vector" else pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema]
    tbl.add(pa.Table.from_arrays(arrays, schema=schema))


def _source_of(source_row_id: str, source: str) -> bool:
    """Whether a chunk's source row id belongs to ``source`` (by its table prefix)."""
    return source_row_id.startswith("lit_") == source.endswith("literature")


def _vectors(tbl: Any, rows: list[dict[str, Any]], embedder: Embedder, table: str,
             progress: Progress | None, embed: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Vectors for ``rows`` (reused by content hash from the table, the rest embedded in
    batches, or left pending when not ``embed``), which are still missing, and how many were
    embedded."""
    out = np.zeros((len(rows), embedder.dim), np.float32)
    missing = np.zeros(len(rows), bool)
    if not rows:
        return out, missing, 0
    shas = list({r["content_sha"] for r in rows})
    cached: dict[str, np.ndarray] = {}
    ds = tbl.to_lance()
    if ds.count_rows():
        for i in range(0, len(shas), FETCH):
            part = ", ".join(f"'{s}'" for s in shas[i:i + FETCH])
            got = ds.to_table(columns=["content_sha", "vector"],
                              filter=f"content_sha IN ({part}) AND vector IS NOT NULL")
            if got.num_rows:
                vecs = got.column("vector").combine_chunks().flatten().to_numpy().reshape(got.num_rows, -1)
                cached.update(zip(got.column("content_sha").to_pylist(), vecs))
    todo = [i for i, r in enumerate(rows) if r["content_sha"] not in cached]
    for i, r in enumerate(rows):
        if r["content_sha"] in cached:
            out[i] = cached[r["content_sha"]]
    if not embed:
        missing[todo] = True
        return out, missing, 0
    for b in range(0, len(todo), EMBED_BATCH):
        idx = todo[b:b + EMBED_BATCH]
        out[idx] = embedder.embed_documents([rows[i]["search_text"] for i in idx])
        if progress:
            progress(table, min(b + EMBED_BATCH, len(todo)), len(todo))
    return out, missing, len(todo)


# -- the embedding stage -------------------------------------------------------------------

#: columns the embedding stage reads of a pending chunk
PENDING_COLUMNS = ["row_id", "content_sha", "search_text"]


def stored_embedder(lake: Any) -> str | None:
    """The name of the embedder the store's chunks were made with (None before any)."""
    for table in CHUNK_TABLES:
        got = lake.table(table).to_lance().to_table(columns=["embedder"], limit=1).column("embedder").to_pylist()
        if got:
            return got[0]
    return None


def coverage(ds: Any) -> tuple[int, int]:
    """(chunks, of which pending) of chunk table dataset ``ds``."""
    rows = ds.count_rows()
    return rows, ds.count_rows(filter="vector IS NULL") if rows else 0


def unindexed(chunks: Any, sources: dict[str, Any]) -> int:
    """How many rows of the ``sources`` (name -> Lance dataset of documents or literature) have
    text to search but no chunks of their current version in ``chunks`` (stored by an ingest
    that did not index, or changed since): found by no search until ``sagehealth index``."""
    have = chunks.to_table(columns=["source_row_id", "source_provenance_id"])
    known = set(zip(have.column("source_row_id").to_pylist(), have.column("source_provenance_id").to_pylist()))
    n = 0
    for name, src in sources.items():
        text = "(text IS NOT NULL AND text != '')"
        # an article is chunked by its title alone when it has no abstract; a document needs text
        where = f"{text} OR (title IS NOT NULL AND title != '')" if name.endswith("literature") else text
        ids = src.to_table(columns=["row_id", "provenance_id"], filter=where)
        n += sum((r, v) not in known for r, v in zip(ids.column("row_id").to_pylist(),
                                                      ids.column("provenance_id").to_pylist()))
    return n


def pending_rows(ds: Any, batch: int = EMBED_BATCH) -> Iterator[pa.Table]:
    """The pending chunks of ``ds`` (one snapshot), ``batch`` rows at a time, texts sorted by
    length within each read so that a batch holds texts of similar length."""
    for rb in ds.to_batches(columns=PENDING_COLUMNS, filter="vector IS NULL", batch_size=batch * 16):
        part = pa.Table.from_batches([rb])
        order = np.argsort(pc.utf8_length(part.column("search_text")).to_numpy(zero_copy_only=False),
                           kind="stable")
        part = part.take(order)
        for i in range(0, part.num_rows, batch):
            yield part.slice(i, batch)


#: vectors one embedding stage keeps by text hash (384 floats: ~150 MB at the cap)
SEEN_CAP = 100_000


def embed_rows(part: pa.Table, embedder: Embedder, seen: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Vectors of a :func:`pending_rows` batch: each distinct text embedded once — in the
    batch, and across the stage with ``seen`` (text hash -> vector, first :data:`SEEN_CAP`
    kept), which the stage shares between its chunk tables: a research chunk whose
    de-identified text equals a clinical chunk's reuses that vector."""
    texts = part.column("search_text").to_pylist()
    shas = part.column("content_sha").to_pylist()
    seen = {} if seen is None else seen
    first: dict[str, int] = {}  # text hash not seen yet -> its first row here
    for i, s in enumerate(shas):
        if s not in seen:
            first.setdefault(s, i)
    got = dict(zip(first, embedder.embed_documents([texts[i] for i in first.values()]))) if first else {}
    _keep(seen, got.items())
    return np.stack([got[s] if s in got else seen[s] for s in shas]) if shas \
        else np.zeros((0, embedder.dim), np.float32)


def remember(stream: Iterator[tuple[pa.Table, np.ndarray]], seen: dict[str, np.ndarray]
             ) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Pass ``stream`` through, keeping each text hash's vector in ``seen`` (the first
    :data:`SEEN_CAP`), as :func:`embed_rows` does for the batches it embeds itself."""
    for part, vectors in stream:
        _keep(seen, zip(part.column("content_sha").to_pylist(), vectors))
        yield part, vectors


def _keep(seen: dict[str, np.ndarray], pairs: Iterable[tuple[str, np.ndarray]]) -> None:
    """Remember (text hash, vector) pairs not seen yet, up to :data:`SEEN_CAP` in all."""
    for sha, v in pairs:
        if len(seen) >= SEEN_CAP:
            break
        seen.setdefault(sha, v)


def write_vectors(tbl: Any, parts: list[tuple[pa.Table, np.ndarray]], dim: int) -> int:
    """Store the vectors of embedded :func:`pending_rows` batches (matched on row id and text
    hash: a chunk re-chunked or removed since it was read is not touched); uncommitted.
    Returns the rows updated."""
    if not parts:
        return 0
    ids = pa.concat_arrays([p.column("row_id").combine_chunks() for p, _ in parts])
    shas = pa.concat_arrays([p.column("content_sha").combine_chunks() for p, _ in parts])
    vecs = np.concatenate([v for _, v in parts]).astype(np.float32, copy=False)
    data = pa.table({"row_id": ids, "content_sha": shas,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)})
    tbl.checkout_latest()
    result = tbl.to_lance().merge_insert(["row_id", "content_sha"]).when_matched_update_all().execute(data)
    tbl.checkout_latest()  # written through the Lance dataset: the table handle must see it
    return int(result.get("num_updated_rows", 0))


def create_bm25_index(tbl: Any) -> None:
    """The BM25 inverted index on ``search_text`` (English stemming, stop words removed)."""
    from lancedb.index import FTS as FtsConfig

    tbl.create_index("search_text", config=FtsConfig(**FTS), replace=True)


#: the vector index type: IVF lists of RaBitQ-coded vectors, scanned flat. At 1M chunks:
#: recall@10 0.99 unfiltered in ~15 ms with re-scoring (IVF-HNSW-SQ: 0.97 in 22 ms), a wide
#: candidate list for post-filtering cheap (4,000 in 18 ms), built in 32 s (HNSW: 294 s); README
VECTOR_INDEX = "IVF_RQ"
#: bits per dimension of the RaBitQ codes (1M chunks, 96 of 256 lists probed, refine x2:
#: recall@10 0.99 with 4 bits, 0.95 with 1 bit at about the same cost)
RQ_BITS = 4
#: rows per IVF list of the vector index
ROWS_PER_LIST = 4_000


def vector_index_params(rows: int) -> dict[str, Any]:
    """The vector index built for a table of ``rows`` chunks (see :func:`create_vector_index`):
    one list per :data:`ROWS_PER_LIST` rows. Measured at 1M chunks, 2 cores
    (benchmarks/search.py): 256 lists, 96 probed, refine x2: recall@10 0.99 unfiltered, 0.98
    under kind/date filters; 512 lists needed 192 probes for the same recall at no gain."""
    return {"index": VECTOR_INDEX, "ivf_partitions": max(1, round(rows / ROWS_PER_LIST)), "num_bits": RQ_BITS}


def create_vector_index(tbl: Any, rows: int) -> None:
    """An IVF index of RaBitQ-coded vectors, cosine distance (lists as above)."""
    from lancedb.index import IvfRq

    params = vector_index_params(rows)
    tbl.create_index("vector", config=IvfRq(distance_type="cosine", num_partitions=params["ivf_partitions"],
                                            num_bits=params["num_bits"]), replace=True)


#: filter columns with a scalar index (large tables): prefilters read the index, not the column
SCALAR_INDEXES = {"patient_id": "BTree", "date": "BTree", "source_row_id": "BTree", "kind": "Bitmap",
                  "section": "Bitmap", "source_table": "Bitmap"}


def create_scalar_indexes(tbl: Any, have: set[str] = frozenset()) -> None:
    """BTree/bitmap indexes on the columns searches filter by."""
    import lancedb.index as li

    for col, kind in SCALAR_INDEXES.items():
        if col not in have:
            tbl.create_index(col, config=getattr(li, kind)(), replace=True)


def ensure_indexes(tbl: Any) -> None:
    """The BM25 index and, for large tables (counting embedded rows), the vector index and the
    filter-column indexes; rows added since an index was built are merged into it (a vector
    index the table has outgrown is built again)."""
    ds = tbl.to_lance()
    rows, pending = coverage(ds)
    if not rows:
        return
    names = {i["fields"][0] if isinstance(i, dict) else i.fields[0] for i in _indices(ds)}
    if "search_text" not in names:
        create_bm25_index(tbl)
    if rows - pending >= ANN_MIN_ROWS:  # trained on embedded rows only: wait for enough of them
        index = vector_index(ds)
        if index is None or index[0] != VECTOR_INDEX or _outgrown(index[1], rows - pending):
            create_vector_index(tbl, rows - pending)  # none yet, an older release's kind, or outgrown
        create_scalar_indexes(tbl, names)
    if names:
        # new rows go into the existing indexes (their IVF lists kept); Lance 14's default
        # (num_indices_to_merge=None) rewrote the vector index as a single list
        tbl.to_lance().optimize.optimize_indices(num_indices_to_merge=1)
    # also checks out what Lance wrote directly (the index merge): the caller's commit pins it
    compact_fragments(tbl, small=SMALL_FRAGMENTS)


#: a chunk table is compacted once more than this many of its fragments are small (every
#: refresh batch writes one; see :func:`~sagehealth.data.lakehouse.compact_fragments`)
SMALL_FRAGMENTS = 16


def _outgrown(lists: int, rows: int) -> bool:
    """Whether a vector index of ``lists`` IVF lists has too few for the ``rows`` it now
    covers: new rows are merged into the lists an index was built with, so a store that crossed
    :data:`ANN_MIN_ROWS` with one list would keep one ever-growing list. Rebuilt when the
    table wants at least twice the lists (amortised: each rebuild follows a doubling)."""
    return vector_index_params(rows)["ivf_partitions"] >= 2 * lists


def _indices(ds: Any) -> list[Any]:
    try:
        return list(ds.list_indices())
    except Exception:  # noqa: BLE001 - older pylance: describe_indices
        return list(ds.describe_indices())


def remove_orphans(lake: Any) -> int:
    """Delete chunks whose source row is gone (e.g. a consent withdrawal emptied the research
    zone of a patient); no embedder needed. Returns the chunks removed."""
    from sagehealth.data.model import MENTION_TABLES

    removed = 0
    for table, sources in [*CHUNK_TABLES.items(), *((t, (s,)) for t, s in MENTION_TABLES.items())]:
        tbl = lake.table(table)
        if not tbl.count_rows():
            continue
        present: set[str] = set()
        for source in sources:
            present |= set(lake.table(source).to_lance().to_table(columns=["row_id"]).column("row_id").to_pylist())
        have = set(tbl.to_lance().to_table(columns=["source_row_id"]).column("source_row_id").to_pylist())
        before = tbl.count_rows()
        delete_sources(tbl, list(have - present))
        removed += before - tbl.count_rows()
    return removed
