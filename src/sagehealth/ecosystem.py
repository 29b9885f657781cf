"""The library API: ``Ecosystem`` is the one object every door (CLI, REST, MCP) calls."""

from __future__ import annotations

import contextlib
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa

from sagehealth.config import audit_folder, resolve_home
from sagehealth.data.lakehouse import Commit, Lakehouse, MaterializedViews
from sagehealth.data.model import ALL_SCHEMAS, TABLE_OF_PREFIX
from sagehealth.data.pipeline import IngestRun, IngestSummary, Progress, indexing_on
from sagehealth.data.sqltext import lit as _lit
from sagehealth.errors import (
    AccessDenied,
    AuditError,
    QueryError,
    ReadOnlyViolation,
    RetrievalError,
    RowNotFound,
    StoreError,
)
from sagehealth.governance.audit import Anchor, AuditEntry, AuditLog, StoreAnchors, Verification
from sagehealth.governance.policy import Principal, authorize, principal_from_env
from sagehealth.governance.scope import (
    READ_ACTION,
    Views,
    hidden_tables,
    mask_message,
    mask_rows,
    mask_summary,
    masks_for,
    views_for,
)
from sagehealth.retrieval.context import PatientContext
from sagehealth.retrieval.search import Hit

#: most words a query expansion adds (synonyms first, then children)
EXPANSION_TERMS = 20
#: columns left out of ``trace`` output (large or binary)
BULKY = {"thumbnail", "resource_json"}


class Ecosystem:
    """A SAGE-Health store, opened by one principal: every read and write below is checked
    against the principal's role, purpose and care team, and written to the audit log
    (allowed or denied) before anything is returned.

    >>> me = Principal("dr.ana", "clinician", "treatment", patients={"p1"})  # doctest: +SKIP
    >>> eco = Ecosystem.open("./sage-data", me)          # doctest: +SKIP
    >>> eco.sql("SELECT count(*) FROM events")           # doctest: +SKIP

    ``lake`` is the storage engine underneath, without access checks: whoever can read the store
    folder is inside the clinical zone, so protect it with file-system permissions.
    """

    def __init__(self, lake: Lakehouse, principal: Principal | None = None) -> None:
        self.lake = lake
        self._principal = principal
        self._audit = AuditLog(audit_folder(lake.uri), anchors=self._store_anchors)
        lake.anchor = self._anchor

    def _anchor(self) -> dict[str, Any]:
        """The audit head a commit records (an empty log first gets an entry, so that every
        version after the first is accounted for by the log)."""
        head = self._audit.head()
        if head is None:
            self._audit.record(self._principal, "commit", "the store's first audited version", allowed=True)
            head = self._audit.head()
        assert head is not None
        return {"seq": head.seq, "hash": head.hash}

    def _store_anchors(self, since: int) -> StoreAnchors:
        """The audit heads recorded by the commits after version ``since``."""
        commits = [c for c in self.lake.commits() if c.version > since]
        anchors = [Anchor(int(a["seq"]), str(a["hash"]), f"store version {c.version}")
                   for c in commits if isinstance(a := c.summary.get("audit"), dict) and "seq" in a]
        return StoreAnchors(anchors, any(c.version > 1 for c in commits))

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None, principal: Principal | None = None) -> Ecosystem:
        """Open (creating when new) the store at ``home``, ``$SAGEHEALTH_HOME`` or ./sage-data,
        acting as ``principal`` (else the one described by ``$SAGEHEALTH_ROLE`` and friends;
        an invalid one is refused and audited)."""
        if principal is None:
            try:
                principal = principal_from_env()
            except AccessDenied as exc:
                cls.refuse(home, str(exc))
        return cls(Lakehouse(resolve_home(home)), principal)

    @classmethod
    def refuse(cls, home: str | os.PathLike[str] | None, reason: str) -> NoReturn:
        """Audit a principal that could not be made (an invalid role, purpose or user) as a
        denial by nobody identified, and raise AccessDenied."""
        cls(Lakehouse(resolve_home(home))).reject_call("open the store", f"invalid principal: {reason}")
        raise AccessDenied(reason)

    def as_principal(self, principal: Principal) -> Ecosystem:
        """The same store opened by another principal."""
        return Ecosystem(self.lake, principal)

    @property
    def principal(self) -> Principal | None:
        return self._principal

    @property
    def home(self) -> str:
        return self.lake.uri

    # -- access checks ----------------------------------------------------------------
    def _allow(self, action: str, resource: str, patients: Iterable[str] | None = None) -> Principal:
        """Check ``action`` for the principal; a denial is audited and raised."""
        p = self._principal
        if p is None:
            reason = ("no principal: open the store with one (Ecosystem.open(home, Principal(...))) or set "
                      "SAGEHEALTH_ROLE (and SAGEHEALTH_USER, SAGEHEALTH_PURPOSE, SAGEHEALTH_PATIENTS)")
            self._audit.record(None, action, resource, allowed=False, reason=reason)
            raise AccessDenied(reason)
        try:
            authorize(p, action, patients)
        except AccessDenied as exc:
            self._deny(p, action, resource, str(exc), patients)
        return p

    def _deny(self, p: Principal, action: str, resource: str, reason: str,
              patients: Iterable[str] | None = None) -> NoReturn:
        self._audit.record(p, action, resource, allowed=False, patients=patients or (), reason=reason)
        raise AccessDenied(reason)

    def _log(self, p: Principal, action: str, resource: str, patients: Iterable[str] = (), reason: str = "") -> None:
        self._audit.record(p, action, resource, allowed=True, patients=patients, reason=reason)

    @contextlib.contextmanager
    def _failures(self, p: Principal, action: str, resource: str) -> Iterator[None]:
        """Audit an allowed access that then failed (bad query, bad version...), and re-raise."""
        try:
            yield
        except AccessDenied:
            raise
        except Exception as exc:
            self._audit.record(p, action, resource, allowed=True,
                               reason=f"failed: {type(exc).__name__}: {exc}"[:500])
            raise

    def _read_scope(self, resource: str) -> tuple[Principal, str, Views]:
        """Check a data read; returns the principal, the action and the tables it sees."""
        who = self._principal
        action = READ_ACTION[who.role] if who else "read_clinical"
        p = self._allow(action, resource, who.patients if who and who.role == "clinician" else None)
        withdrawn = frozenset()
        if p.role == "researcher":  # the latest list, whatever version is read
            try:
                wd = self.lake.dataset("research_withdrawn")
                withdrawn = self.lake.memo(("withdrawn", wd.version), lambda: frozenset(
                    wd.to_table(columns=["patient_id"]).column("patient_id").to_pylist()))
            except StoreError:  # a store from before the table existed: nobody withdrew since
                withdrawn = frozenset()
        return p, action, views_for(p, withdrawn)

    @staticmethod
    def _patients_in(p: Principal, table: pa.Table) -> list[str]:
        """The patients a clinician's read touched (what the audit entry names): those in the
        result, or the whole care team when the result does not say whose rows it read."""
        if p.role != "clinician":
            return []
        if "patient_id" not in table.column_names:
            return sorted(p.patients)
        return sorted({v for v in table.column("patient_id").to_pylist() if v})

    # -- writing ----------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        format: str = "auto",
        message: str | None = None,
        options: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> IngestSummary:
        """Ingest files or folders as one new version (data stewards); returns the run summary.
        The version holds the data, the research zone and the new chunks, searchable by BM25;
        their vectors follow in committed rounds unless ``options["embed"]`` is false (then
        :meth:`index` embeds them later). An interruption while embedding keeps the data."""
        paths = [Path(p) for p in paths]
        p = self._allow("ingest", "ingest: " + ", ".join(map(str, paths))[:500])
        run = IngestRun(self.lake, message=message, options=options, progress=progress)
        with self._failures(p, "ingest", "ingest: " + ", ".join(map(str, paths))[:500]):
            summary = run.ingest(paths, format)
        self._log(p, "ingest", f"version {summary.version}: {summary.records_in} records, "
                  f"{summary.quarantined} quarantined", reason="done")
        if indexing_on(options) and (options or {}).get("embed", True):
            # the data and its BM25 index are committed: vectors follow in committed rounds —
            # for the new chunks and any an interrupted run left (also when nothing was new)
            from sagehealth.retrieval.embedders import chosen
            from sagehealth.retrieval.index import stored_embedder

            emb = chosen((options or {}).get("embedder"), stored_embedder(self.lake))
            embedding = self._embed(p, emb, getattr(progress, "stage", None), engine=(options or {}).get("engine"))
            if summary.index or embedding:
                summary.index["embedding"] = embedding
        return summary

    def set_consent(self, patient_id: str, *, research_allowed: bool, note: str = "",
                    key: str | bytes | None = None) -> Commit:
        """Record a research-consent decision; a withdrawal removes the patient from the
        research zone in the same new version (the refresh needs the de-identification key)."""
        from datetime import UTC, datetime

        from sagehealth.privacy.research import refresh

        p = self._allow("configure", f"consent: research {'granted' if research_allowed else 'withdrawn'}",
                        [patient_id])
        with self.lake.write_lock():
            self.lake.rollback_uncommitted()
            self.lake.table("consent").add(pa.Table.from_pylist(
                [{"patient_id": patient_id, "research_allowed": research_allowed,
                  "updated_at": datetime.now(UTC), "note": note}], schema=ALL_SCHEMAS["consent"]))
            result = refresh(self.lake, key)
            from sagehealth.retrieval.index import remove_orphans

            if result.get("removed"):
                result["chunks_removed"] = remove_orphans(self.lake)
            elif any(n for t, n in result.items() if t.startswith("research_")) and self.lake.table(
                    "research_chunks").count_rows():
                result["index"] = self._reindex_research()
            verb = "grants" if research_allowed else "withdraws"
            commit = self.lake.commit(f"consent: a patient {verb} research use", run_id=None,
                                      summary={"research": result})
        self._log(p, "configure", f"consent recorded in version {commit.version}", [patient_id])
        return commit

    def _reindex_research(self) -> dict[str, Any]:
        """Chunk and embed research rows that came back (a consent granted again) with the
        embedder the index was built with; untouched when that is not the default one."""
        from sagehealth.retrieval.embedders import chosen
        from sagehealth.retrieval.index import refresh_chunks

        built = self.lake.table("research_chunks").to_lance().to_table(columns=["embedder"], limit=1)
        emb = chosen(None, built.column("embedder")[0].as_py() if built.num_rows else None)
        if built.num_rows and built.column("embedder")[0].as_py() != emb.name:
            return {"skipped": f"index built with {built.column('embedder')[0].as_py()}: run sagehealth index"}
        return refresh_chunks(self.lake, emb)

    def refresh_research(self, *, key: str | bytes | None = None) -> dict[str, int]:
        """Bring the research zone up to date (e.g. after setting the key) as a new version."""
        from sagehealth.privacy.research import refresh

        p = self._allow("configure", "refresh the research zone")
        with self.lake.write_lock():
            self.lake.rollback_uncommitted()
            result = refresh(self.lake, key)
            if result:
                self.lake.commit("refresh the research zone", run_id=None, summary={"research": result})
        self._log(p, "configure", f"research zone refreshed: {result}")
        return result

    def export_deidentified_files(self, paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str],
                                  *, key: str | bytes | None = None) -> list[dict[str, str]]:
        """De-identified copies of DICOM and VCF files (PS3.15 basic profile; keyed sample ids),
        with the same pseudonyms and UIDs as the research tables (data stewards)."""
        from sagehealth.privacy.files import deidentify_files
        from sagehealth.privacy.structured import RowDeidentifier

        paths = [Path(p) for p in paths]
        p = self._allow("export", f"export de-identified copies to {out}")
        index: dict[str, str] = {}
        for row in self.lake.read("patients", columns=["patient_id", "identifiers"]).to_pylist():
            index[row["patient_id"]] = row["patient_id"]
            for ident in row["identifiers"] or []:
                if ident.get("value"):
                    index.setdefault(ident["value"], row["patient_id"])
        done = deidentify_files(paths, Path(out), RowDeidentifier(key), find_patient=index.get)
        self._log(p, "export", f"{len(done)} de-identified files written to {out}")
        return done

    def index(self, *, embedder: str | None = None, embed: bool = True, wait: bool = False,
              progress: Callable[[str, int, int], None] | None = None, engine: Any = None) -> dict[str, Any]:
        """Chunk every document and article not indexed yet (both zones) and commit them,
        searchable by BM25 at once; then (``embed``) fill in their vectors in committed rounds
        (:meth:`_embed`), so an interrupted run resumes where it stopped. When another process
        is embedding, returns after the BM25 step with ``embedding: {"elsewhere": ...}`` unless
        ``wait``, which waits for it and then embeds what is left (data stewards). ``engine``
        (an :class:`sagehealth.engine.Engine` or its name) embeds on Ray instead of in this
        process."""
        from sagehealth.retrieval.embedders import chosen
        from sagehealth.retrieval.index import refresh_chunks, stored_embedder

        p = self._allow("ingest", "index documents for search")
        emb = chosen(embedder, stored_embedder(self.lake))
        with self.lake.write_lock(wait=60.0 if wait else 0.0):
            self.lake.rollback_uncommitted()
            result: dict[str, Any] = refresh_chunks(self.lake, emb, embed=False)
            from sagehealth.knowledge.linking import refresh_mentions

            result["mentions"] = refresh_mentions(self.lake)
            if any(r["added"] or r["removed_sources"] for k, r in result.items() if k != "mentions") \
                    or any(result["mentions"].values()):
                self.lake.commit(f"index documents for search ({emb.name})", run_id=None, summary={"index": result})
        self._log(p, "ingest", f"search index refreshed: {result}")
        if embed:
            result["embedding"] = self._embed(p, emb, progress, wait=wait, engine=engine)
        return result

    def index_status(self) -> dict[str, dict[str, Any]]:
        """Per chunk table the principal may search (a steward: both): chunks, how many have
        their vector (the rest are found by BM25 only until embedded), the embedder, and
        whether a process is embedding now, and how many documents or articles are stored but
        not chunked for search at all (``unindexed``: an ingest without indexing). Counts only,
        no content."""
        from sagehealth.data.model import CHUNK_TABLES
        from sagehealth.retrieval.index import coverage, unindexed

        p = self._principal
        tables = {"clinician": ["chunks"], "researcher": ["research_chunks"]}.get(p.role if p else "", [])
        if not tables:
            self._allow("ingest", "index status")
            tables = ["chunks", "research_chunks"]
        else:  # counts of the zone one may search (a clinician: with the care team as scope)
            self._allow(READ_ACTION[p.role], "index status", p.patients if p.role == "clinician" else None)
        busy = self.lake.embedding_elsewhere()
        out: dict[str, dict[str, Any]] = {}
        for table in tables:
            ds = self.lake.dataset(table)
            rows, pending = self.lake.memo(("coverage", table, ds.version), lambda ds=ds: coverage(ds))
            by = ds.to_table(columns=["embedder"], limit=1).column("embedder").to_pylist() if rows else []
            sources = {name: self.lake.dataset(name) for name in CHUNK_TABLES[table]}
            missing = self.lake.memo(("unindexed", table, ds.version, *(d.version for d in sources.values())),
                                     lambda ds=ds, sources=sources: unindexed(ds, sources))
            out[table] = {"chunks": rows, "embedded": rows - pending, "pending": pending,
                          "embedder": by[0] if by else None, "embedding_now": busy and pending > 0,
                          "unindexed": missing}
        return out

    #: seconds of embedding between two committed rounds (an interruption loses at most this)
    EMBED_ROUND_SECONDS = 30.0

    def _embed(self, p: Principal, emb: Any, progress: Callable[[str, int, int], None] | None, *,
               wait: bool = False, engine: Any = None) -> dict[str, Any]:
        """The embedding stage: the pending chunks of each chunk table (clinical zone first)
        are embedded outside the write lock — in this process, or by Ray actors with the ray
        engine (:mod:`sagehealth.retrieval.ray_embed`); every :attr:`EMBED_ROUND_SECONDS` their
        vectors are written and committed as a new version (under the write lock, waiting for
        another writer), and the last round merges the indexes. A Ctrl-C loses at most one round."""
        import time
        from contextlib import ExitStack

        from sagehealth.data.model import CHUNK_TABLES
        from sagehealth.engine import Engine, choose
        from sagehealth.errors import StoreLocked
        from sagehealth.retrieval.index import (
            coverage, embed_rows, ensure_indexes, pending_rows, remember, write_vectors,
        )

        engine = engine if isinstance(engine, Engine) else choose(engine)
        out: dict[str, Any] = {}
        seen: dict[str, Any] = {}  # text hash -> vector, shared by the tables (see embed_rows)
        try:
            lock = self.lake.embed_lock(wait=24 * 3600.0 if wait else 0.0)
            lock.__enter__()
        except StoreLocked:
            return {"elsewhere": "another process is embedding this store: sagehealth index --wait follows it"}
        ray_run = ExitStack()
        ray: Any = None
        try:
            for table in CHUNK_TABLES:
                start = time.perf_counter()
                tbl = self.lake.table(table)
                tbl.checkout_latest()
                ds = tbl.to_lance()
                _, todo = coverage(ds)
                if not todo:
                    continue
                stored = ds.to_table(columns=["embedder"], filter="vector IS NULL", limit=1).column("embedder")[0].as_py()
                if stored != emb.name:
                    raise RetrievalError(f"the pending chunks of {table} are for {stored}, not {emb.name}: "
                                         f"run sagehealth index --embedder with that model, or rebuild with this one")
                done = written = rounds = 0
                parts: list[Any] = []
                last = time.monotonic()
                if progress:
                    progress(table, 0, todo)

                def write(final: bool) -> None:
                    nonlocal parts, written, rounds, last
                    with self.lake.write_lock(wait=600.0):
                        self.lake.rollback_uncommitted()
                        t = self.lake.table(table)
                        n = write_vectors(t, parts, emb.dim)
                        if final:
                            ensure_indexes(t)
                        rows, left = coverage(t.to_lance())
                        if n or final:
                            what = f"embed {n} chunks of {table}" if n else f"merge the vectors of {table} into its indexes"
                            self.lake.commit(f"{what} ({emb.name}): {rows - left} of {rows} have vectors",
                                             run_id=None, summary={"embed": {"table": table, "written": n, "pending": left}})
                    written, rounds, parts, last = written + n, rounds + 1, [], time.monotonic()

                if engine.distributed:
                    from functools import partial

                    from sagehealth.engine import ray_session, worker_count
                    from sagehealth.retrieval.embedders import get_embedder
                    from sagehealth.retrieval.ray_embed import embed_stream

                    if ray is None:
                        ray = ray_run.enter_context(ray_session(engine))
                    if not getattr(emb, "spec", None):
                        raise RetrievalError(f"embedder {emb.name} cannot be loaded by a Ray worker (no spec)")
                    stream = remember(embed_stream(
                        self.lake.table_uri(table), ds.version, partial(get_embedder, emb.spec),
                        workers=worker_count(ray, engine), cpus_per_worker=engine.cpus_per_worker,
                        gpus_per_worker=engine.gpus_per_worker, known=dict(seen)), seen)
                else:
                    stream = ((part, embed_rows(part, emb, seen)) for part in pending_rows(ds))
                for part, vectors in stream:
                    parts.append((part, vectors))
                    done += part.num_rows
                    if progress:
                        progress(table, done, todo)
                    if time.monotonic() - last >= self.EMBED_ROUND_SECONDS:
                        write(final=False)
                write(final=True)
                seconds = time.perf_counter() - start
                out[table] = {"embedded": written, "rounds": rounds, "seconds": round(seconds, 3),
                              "chunks_per_s": round(written / seconds, 1) if seconds else None,
                              "engine": engine.name}
        finally:
            ray_run.close()
            lock.__exit__(None, None, None)
            if out:
                self._log(p, "ingest", f"chunks embedded ({emb.name}): "
                          + ", ".join(f"{t} {r['embedded']}" for t, r in out.items()))
        return out

    def optimize(self) -> dict[str, int]:
        """Compact every table whose files have become many small fragments (each ingest batch
        writes some) as a new version with the same data; indexes are remapped, earlier
        versions stay readable. Returns the fragments removed per table (data stewards)."""
        from sagehealth.data.lakehouse import COMMITS, compact_fragments
        from sagehealth.data.model import ALL_SCHEMAS

        p = self._allow("configure", "optimize table files")
        with self.lake.write_lock():
            self.lake.rollback_uncommitted()
            removed = {name: n for name in ALL_SCHEMAS if name != COMMITS
                       if (n := compact_fragments(self.lake.table(name)))}
            if removed:
                self.lake.commit("optimize: compact table files", run_id=None, summary={"optimize": removed})
        self._log(p, "configure", f"table files optimized: {removed}")
        return removed

    def search(self, query: str, *, k: int = 10, mode: str = "hybrid", patient: str | Iterable[str] | None = None,
               kinds: Iterable[str] | None = None, sections: Iterable[str] | None = None,
               since: Any = None, until: Any = None, documents: Iterable[str] | None = None,
               concepts: str | Iterable[str] | None = None, zone: str | None = None, per_document: bool = False, version: int | None = None,
               embedder: str | None = None, fusion: dict[str, Any] | None = None, expand: bool = False,
               rerank: str | None = None) -> list[Hit]:
        """Search the chunks of documents and literature the principal may see: a clinician the
        clinical zone (own patients' documents and literature), a researcher the research zone.
        ``mode`` is hybrid (default), vector or bm25; filters narrow before ranking; ``concepts``
        keeps documents that affirm a mention of a concept, an equivalent (crosswalk) or a
        descendant. ``expand`` adds the synonyms and children of the concepts named in the
        query to its BM25 side (see :meth:`expand_query`). ``rerank`` names a reranker for the
        best fused candidates (``cross-encoder:NAME``, ``llm[:PROVIDER]``, ``none``; default
        ``$SAGEHEALTH_RERANK``, else none: see :mod:`sagehealth.retrieval.rerank`)."""
        from sagehealth.retrieval.embedders import chosen
        from sagehealth.retrieval.rerank import get_reranker
        from sagehealth.retrieval.search import (
            best_per_document,
            build_filter,
            search_chunks,
        )

        resource = f"search: {' '.join(str(query).split())[:300]}"
        p, action, views = self._read_scope(resource)
        wanted = {"clinician": "clinical", "researcher": "research"}.get(p.role)
        if zone is not None and zone not in ("clinical", "research"):
            raise RetrievalError(f"zone must be clinical or research (got {zone!r})")
        if "chunks" not in views or (zone is not None and zone != wanted):
            self._deny(p, action, resource, f"{p.user} ({p.role}) may not search the {zone or 'clinical'} zone")
        patients = [patient] if isinstance(patient, str) else list(patient) if patient is not None else None
        if p.role == "clinician" and patients and set(patients) - p.patients:
            self._deny(p, action, resource, f"{p.user} (clinician) is not on the care team of the patient "
                       "searched for", patients)
        stored, scope = views["chunks"]
        docs = list(documents) if documents is not None else None
        if concepts:
            from sagehealth.knowledge import graph

            def run(q: str) -> pa.Table:
                return self.lake.sql(q, version, views)

            found = graph.documents_mentioning(run, graph.expand(run, [concepts] if isinstance(concepts, str)
                                                                 else list(concepts)))
            docs = found if docs is None else [d for d in docs if d in set(found)]
        where = build_filter(scope=scope, patients=patients, kinds=list(kinds) if kinds is not None else None,
                             sections=list(sections) if sections is not None else None, since=since, until=until,
                             documents=docs)
        with self._failures(p, action, resource):
            ds = self.lake.dataset(stored, version)
        emb = None
        if mode != "bm25" and self.lake.memo(("rows", stored, ds.version), ds.count_rows):
            stored_by = self.lake.memo(("embedder", stored, ds.version), lambda: ds.to_table(
                columns=["embedder"], limit=1).column("embedder")[0].as_py())
            emb = chosen(embedder, stored_by)
            if stored_by and stored_by != emb.name:
                raise RetrievalError(f"the index was built with {stored_by}, not {emb.name}: search with the same "
                                     "embedder or rebuild the index (sagehealth index --embedder ...)")
        extra = self._expansion(query, version, views)["terms"] if expand and mode != "vector" else []
        lexical = " ".join([query, *extra]) if extra else None
        # the same search on the same version gives the same hits: remember them (keyed on
        # everything that decides the result; checks and the audit entry still run every time)
        reranker = get_reranker(rerank)
        key = ("search", stored, ds.version, where, query, lexical, mode, k, per_document, repr(fusion),
               emb.name if emb else None, reranker.name if reranker else None)

        def run() -> list[Hit]:
            found = search_chunks(ds, query, embedder=emb, k=min(k * 4, 1000) if per_document and k <= 1000 else k,
                                  mode=mode, where=where, fusion=fusion, bm25_query=lexical, reranker=reranker)
            return best_per_document(found)[:k] if per_document else found

        with self._failures(p, action, resource):
            hits = [replace(h, scores=dict(h.scores), ranks=dict(h.ranks), highlights=list(h.highlights))
                    for h in self.lake.memo(key, run)]
        self._log(p, action, resource, sorted({h.patient_id for h in hits if h.patient_id})
                  if p.role == "clinician" else [])
        return hits

    def expand_query(self, query: str, *, version: int | None = None) -> dict[str, Any]:
        """The concepts the query names (dictionary linking over the loaded vocabularies,
        affirmed mentions only) and the words a search adds for them: their synonyms and the
        labels of their direct children (at most ``EXPANSION_TERMS``)."""
        resource = f"expand query: {' '.join(str(query).split())[:300]}"
        p, action, views = self._read_scope(resource)
        if "concepts" not in views:
            self._deny(p, action, resource, f"{p.user} ({p.role}) may not read vocabularies")
        with self._failures(p, action, resource):
            out = self._expansion(query, version, views)
        self._log(p, action, resource)
        return out

    def _expansion(self, query: str, version: int | None, views: Views) -> dict[str, Any]:
        from sagehealth.knowledge.linking import linker_from_lake

        if "concepts" not in views:
            return {"concepts": [], "terms": []}
        linker = self.lake.memo(("linker", self.lake.table("concepts").version), lambda: linker_from_lake(self.lake))
        found = [m for m in linker.find(query) if m.affirmed] if linker else []
        ids = sorted({m.concept_id for m in found})
        if not ids:
            return {"concepts": [], "terms": []}
        ids_sql = ", ".join(_lit(i) for i in ids)
        rows = self.lake.sql(f"""SELECT label, synonyms, 0 AS depth FROM concepts WHERE concept_id IN ({ids_sql})
                                UNION ALL
                                SELECT c.label, [], 1 FROM concepts c WHERE list_has_any(c.parents, [{ids_sql}])
                                ORDER BY depth, label""", version, views).to_pylist()
        said = {m.text.lower() for m in found}
        terms: list[str] = []
        for r in rows:
            for name in [r["label"], *(r["synonyms"] or [])]:
                if name and name.lower() not in said and name not in terms and len(terms) < EXPANSION_TERMS:
                    terms.append(name)
        return {"concepts": ids, "terms": terms}

    def load_vocabulary(self, paths: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
        """Load vocabulary files or folders (OBO, ICD-10-CM XML, Disease Ontology TSV, MeSH, LOINC, SNOMED CT RF2) into
        the concept tables as one new version (data stewards)."""
        from sagehealth.knowledge.graph import load

        paths = [Path(p) for p in paths]
        p = self._allow("configure", "load vocabularies: " + ", ".join(map(str, paths))[:400])
        with self.lake.write_lock():
            self.lake.rollback_uncommitted()
            result = load(self.lake, paths)
            from sagehealth.knowledge.linking import refresh_mentions

            result["mentions"] = refresh_mentions(self.lake)  # documents read again with the new dictionary
            commit = self.lake.commit("load vocabularies " + ", ".join(sorted({x.name for x in paths})),
                                      run_id=None, summary={"vocabulary": result})
        result["version"] = commit.version
        self._log(p, "configure", f"vocabularies loaded: {result['concepts']} concepts, version {commit.version}")
        return result

    def _sql_reader(self, resource: str, table: str, what: str,
                    version: int | None) -> tuple[Principal, str, Callable[[str], pa.Table]]:
        """Check a read that needs ``table``; returns the principal, the action and a SQL runner
        over the principal's views at ``version``."""
        p, action, views = self._read_scope(resource)
        if table not in views:
            self._deny(p, action, resource, f"{p.user} ({p.role}) may not read {what}")

        def run(q: str) -> pa.Table:
            return self.lake.sql(q, version, views)

        return p, action, run

    def concept(self, concept_id: str, *, ancestors: bool = False, descendants: bool = False,
                limit: int | None = None, version: int | None = None) -> dict[str, Any]:
        """A concept (label, synonyms, parents, crosswalks), with its ancestors and/or
        descendants when asked (nearest first, with depth)."""
        from sagehealth.knowledge import graph

        resource = f"concept: {concept_id}"
        p, action, run = self._sql_reader(resource, "concepts", "vocabularies", version)
        with self._failures(p, action, resource):
            out = graph.concept(run, concept_id)
            if ancestors:
                out["ancestors"] = graph.ancestors(run, concept_id)
            if descendants:
                out["descendants"] = graph.descendants(run, concept_id, limit=limit)
        self._log(p, action, resource)
        return out

    def patients_with(self, concept: str, *, descendants: bool = True,
                      version: int | None = None) -> list[dict[str, Any]]:
        """Patients (of the principal's zone and care team) with a concept — affirmed in their
        documents or coded in their rows — counting equivalents and, by default, descendants."""
        from sagehealth.knowledge import graph

        resource = f"patients with {concept}"
        p, action, run = self._sql_reader(resource, "mentions", "patient data", version)
        with self._failures(p, action, resource):
            rows = graph.patients_with(run, graph.expand(run, [concept], with_descendants=descendants))
        self._log(p, action, resource, [r["patient_id"] for r in rows] if p.role == "clinician" else [])
        return rows

    def cooccurring(self, concept: str, *, limit: int = 20, version: int | None = None) -> list[dict[str, Any]]:
        """Concepts most often affirmed in the documents of the patients who have ``concept``."""
        from sagehealth.knowledge import graph

        resource = f"concepts co-occurring with {concept}"
        p, action, run = self._sql_reader(resource, "mentions", "patient data", version)
        with self._failures(p, action, resource):
            rows = graph.cooccurring(run, graph.expand(run, [concept]), limit=limit)
        self._log(p, action, resource)
        return rows

    def _patient_scope(self, patient_id: str, resource: str) -> tuple[Principal, str, Views]:
        """Check a read of one patient's data; returns the principal, the action and the
        tables it sees, narrowed to that patient before DuckDB sees them."""
        p, action, views = self._read_scope(resource)
        if "patients" not in views:
            self._deny(p, action, resource, f"{p.user} ({p.role}) may not read patient data")
        if p.role == "clinician" and patient_id not in p.patients:
            self._deny(p, action, resource, f"{p.user} (clinician) is not on the care team of this patient",
                       [patient_id])
        one = f"patient_id = {_lit(patient_id)}"
        return p, action, {name: (stored, (f"({flt}) AND {one}" if flt else one)
                                  if "patient_id" in ALL_SCHEMAS[stored].names else flt)
                           for name, (stored, flt) in views.items()}

    def _must_exist(self, p: Principal, patient_id: str, version: int | None, views: Views) -> None:
        """An empty answer about a patient the principal's tables do not hold is a
        :class:`RowNotFound` (the same for another's patient and a missing one)."""
        if not self.lake.sql(f"SELECT 1 FROM patients WHERE patient_id = {_lit(patient_id)} LIMIT 1",
                             version, views).num_rows:
            raise RowNotFound(f"no patient {patient_id!r}" + (" in the research zone" if p.role == "researcher" else ""))

    def lab_results(self, patient_id: str, test: str, *, since: Any = None, until: Any = None,
                    limit: int = 20, version: int | None = None) -> tuple[Any, list[Any]]:
        """One patient's results of one lab test or vital sign, latest first: ``test`` is any
        name a question may use ("Hgb", "haemoglobin", "A1c", "K", "blood sugar"; see
        :data:`sagehealth.retrieval.facts.TESTS`). Returns (the test, its results), each result
        citing its row. Clinicians: own patients; researchers: pseudonyms. Unknown test names
        are a :class:`~sagehealth.errors.RetrievalError` naming the known ones."""
        from sagehealth.retrieval.facts import TESTS, results, named_tests
        from sagehealth.retrieval.search import check_date

        found = named_tests(test) or [t for t in TESTS if t.key == test.strip().lower()]
        if not found:
            raise RetrievalError(f"no lab test or vital sign is named {test!r}; known: "
                                 + ", ".join(t.key for t in TESTS))
        since, until = check_date(since, "since"), check_date(until, "until")
        resource = f"lab results: {patient_id}: {found[0].key}"
        p, action, views = self._patient_scope(patient_id, resource)
        commit = self.lake.resolve(version)
        with self._failures(p, action, resource):
            rows = results(lambda q: self.lake.sql(q, commit.version, views), patient_id, found[0],
                           since=since, until=until, limit=limit)
            if not rows:
                self._must_exist(p, patient_id, commit.version, views)
        self._log(p, action, resource, [patient_id] if p.role == "clinician" else [])
        return found[0], rows

    def current_medications(self, patient_id: str, *, until: Any = None, limit: int = 30,
                            inactive: bool = False, name: str | None = None,
                            version: int | None = None) -> tuple[Any, list[Any]]:
        """The medications active at the end of one patient's record (the end of the latest
        encounter, else the latest order) or at ``until``: started by then and not ended before
        it, by date or by status. Returns (that date, the medications, latest first), each
        citing its row (``inactive``: the others, ended by date or status; ``name``: only those
        whose name contains it). Clinicians: own patients; researchers: pseudonyms."""
        from sagehealth.retrieval.facts import current_medications
        from sagehealth.retrieval.search import check_date

        until = check_date(until, "until")
        resource = f"current medications: {patient_id}"
        p, action, views = self._patient_scope(patient_id, resource)
        commit = self.lake.resolve(version)
        with self._failures(p, action, resource):
            as_of, meds = current_medications(lambda q: self.lake.sql(q, commit.version, views), patient_id,
                                              until=until, limit=limit, inactive=inactive, name=name)
            if as_of is None:
                self._must_exist(p, patient_id, commit.version, views)
        self._log(p, action, resource, [patient_id] if p.role == "clinician" else [])
        return as_of, meds

    def patient_context(self, patient_id: str, *, since: Any = None, until: Any = None,
                        version: int | None = None) -> PatientContext:
        """One patient's timeline in a window (problems, medications, labs with trends,
        allergies, procedures, encounters, prior reports), each item citing its row; render it
        for a prompt with ``.to_prompt()``. Clinicians: own patients; researchers: pseudonyms."""
        from sagehealth.retrieval.context import build_context
        from sagehealth.retrieval.search import check_date

        since, until = check_date(since, "since"), check_date(until, "until")
        resource = f"patient context: {patient_id}"
        p, action, views = self._patient_scope(patient_id, resource)
        commit = self.lake.resolve(version)
        key = ("context", commit.version, patient_id, since, until, repr(sorted(views.items())))

        def build() -> PatientContext:
            once = MaterializedViews(self.lake, commit.version, views)
            return build_context(lambda q: self.lake.sql(q, commit.version, once), patient_id, since=since, until=until)

        with self._failures(p, action, resource):
            ctx = self.lake.memo(key, build).copy()
            if not ctx.demographics and not ctx.citations():
                self._must_exist(p, patient_id, version, views)
        self._log(p, action, resource, [patient_id] if p.role == "clinician" else [])
        return ctx

    # -- reading ----------------------------------------------------------------------
    def sql(self, query: str, *, version: int | None = None, max_rows: int | None = None,
            timeout_s: float | None = None) -> pa.Table:
        """Read-only DuckDB SQL (SELECT statements) as of ``version`` (latest when None) over the
        tables the principal sees: a clinician the clinical tables limited to the care team, a
        researcher the research zone under the plain names, a steward the operational tables.
        ``max_rows`` returns at most that many rows plus one (a caller can tell it cut);
        ``timeout_s`` stops a query that runs longer (QueryError; default ``$SAGEHEALTH_SQL_TIMEOUT``,
        else 120 s, for every door). A query that tries to reach files, the network or the
        sandbox's settings is a denial."""
        from sagehealth.config import sql_timeout

        query = query.encode("utf-8", "replace").decode("utf-8")  # lone surrogates (undecodable argv bytes)
        resource = "sql: " + " ".join(query.split())[:500]
        p, action, views = self._read_scope(resource)
        timeout_s = min(timeout_s, sql_timeout()) if timeout_s else sql_timeout()
        try:
            result = self.lake.sql(query, version, views, read_only=True, max_rows=max_rows, timeout_s=timeout_s,
                                   masks=masks_for(p))
        except ReadOnlyViolation as exc:  # a write attempt is a refusal, not a failed read
            self._audit.record(p, action, resource, allowed=False, reason=str(exc)[:500])
            raise
        except QueryError as exc:
            hidden = re.search(r'Table with name "?(\w+)"? does not exist', str(exc))
            if hidden and hidden.group(1).lower() in hidden_tables(p):
                self._deny(p, action, resource, f"{p.user} ({p.role}) may not read table {hidden.group(1)}")
            if _SANDBOX_ESCAPE.search(str(exc)):  # files, network, settings: an attempt, refused
                self._audit.record(p, action, resource, allowed=False,
                                   reason=f"sandbox: {' '.join(str(exc).split())}"[:500])
                raise AccessDenied(f"{p.user} ({p.role}) may not reach files, the network or the SQL sandbox's "
                                   f"settings: {' '.join(str(exc).split())[:300]}") from exc
            self._audit.record(p, action, resource, allowed=True, reason=f"failed: {exc}"[:500])
            raise
        except Exception as exc:
            self._audit.record(p, action, resource, allowed=True, reason=f"failed: {type(exc).__name__}: {exc}"[:500])
            raise
        self._log(p, action, resource, self._patients_in(p, result))
        return result

    def read(self, table: str, *, version: int | None = None, **scan: Any) -> pa.Table:
        """One table as of ``version``, as the principal sees it; ``columns=`` and ``filter=``
        are passed to Lance."""
        resource = f"read: {table}" + (f" where {scan['filter']}" if scan.get("filter") else "")
        p, action, views = self._read_scope(resource)
        if table not in views:
            self._deny(p, action, resource, f"{p.user} ({p.role}) may not read table {table}")
        stored, row_filter = views[table]
        mask = masks_for(p).get(table)
        with self._failures(p, action, resource):
            if row_filter or mask is not None:
                # the access filter alone goes to Lance; the caller's condition is applied to what
                # it returned (masked where the role sees columns masked), in a sandbox that sees
                # only those rows (never spliced into ours)
                wanted, where = scan.pop("columns", None), scan.pop("filter", None)
                result = self.lake.read(stored, version, filter=row_filter, **scan)
                if mask is not None:
                    result = mask(result)
                if where:
                    result = self.lake.filter_table(result, where)
                touched = self._patients_in(p, result)
                if wanted is not None:
                    result = result.select(list(wanted))
            else:
                result = self.lake.read(stored, version, **scan)
                touched = self._patients_in(p, result)
        self._log(p, action, resource, touched)
        return result

    def tables(self, *, version: int | None = None) -> dict[str, int]:
        """Row count of every table the principal sees (a steward: of every table) as of ``version``."""
        p, action, views = self._read_scope("table counts")
        commit = self.lake.resolve(version)
        if p.role == "steward":
            views = {n: (n, None) for n in ALL_SCHEMAS if n != "commits"}
        counts = {name: self.lake.dataset(stored, commit).count_rows(flt)
                  for name, (stored, flt) in views.items()
                  if name != "commits" and stored in commit.table_versions
                  and not (p.role == "researcher" and name.startswith("research_"))}
        self._log(p, action, "table counts")
        return counts

    def versions(self) -> list[Commit]:
        """Every version of the store, oldest first. Messages and run summaries (which name
        source files) are for data stewards; others see numbers, times and run ids."""
        p, action, _ = self._read_scope("versions")
        commits = self.lake.commits()
        if p.role != "steward":
            commits = [replace(c, message="", summary={}) for c in commits]
        else:  # operations, not identities: file names and paths masked
            commits = [replace(c, message=mask_message(c.message), summary=mask_summary(c.summary)) for c in commits]
        self._log(p, action, "versions")
        return commits

    def trace(self, row_id: str, *, version: int | None = None) -> dict[str, Any]:
        """Where a row came from: its table, the row itself and its provenance record.

        Clinicians trace rows of their patients (and reference rows), researchers research-zone
        rows (whose provenance stays in the clinical zone), stewards quarantine records."""
        resource = f"trace: {row_id}"
        p, action, views = self._read_scope(resource)
        table = TABLE_OF_PREFIX.get(row_id.split("_", 1)[0])
        if table is None:
            self._audit.record(p, action, resource, allowed=True, reason="failed: not a row id")
            raise RowNotFound(
                f"{row_id!r} is not a row id (row ids start with a table prefix such as pat_, doc_)"
            )
        if table not in views:
            self._deny(p, action, resource, f"{p.user} ({p.role}) may not read table {table}")
        stored, scope = views[table]
        cols = [c for c in ALL_SCHEMAS[stored].names if c not in BULKY]
        wanted = f"row_id = '{_q(row_id)}'"
        other: list[dict[str, Any]] = []
        with self._failures(p, action, resource):
            rows = self.lake.read(stored, version, columns=cols,
                                  filter=f"({scope}) AND {wanted}" if scope else wanted).to_pylist()
            if not rows and scope:  # there, but outside the principal's rows?
                other = self.lake.read(stored, version, columns=["patient_id"], filter=wanted).to_pylist()
        if other:
            self._deny_as_missing(p, action, resource, f"{p.user} ({p.role}) is not on the care team of the "
                                  f"patient of {row_id}", other, self._missing_row(row_id, table, stored))
        if not rows:
            self._audit.record(p, action, resource, allowed=True, reason="failed: no such row")
            raise RowNotFound(self._missing_row(row_id, table, stored))
        row = mask_rows(p, table, rows)[0]
        patients = [row["patient_id"]] if row.get("patient_id") else []
        out: dict[str, Any] = {"row_id": row_id, "table": table, "row": row}
        if table == "quarantine":
            out["provenance"] = {k: row[k] for k in ("source_uri", "source_sha256", "locator", "reader", "run_id")}
        elif stored != table:
            out["provenance"] = None  # research rows: the source lineage stays in the clinical zone
        else:
            prov = self.lake.read("provenance", version,
                                  filter=f"provenance_id = '{_q(row['provenance_id'])}'").to_pylist()
            out["provenance"] = mask_rows(p, "provenance", prov)[0] if prov else None
        self._log(p, action, resource, patients if p.role == "clinician" else [])
        return out

    def _deny_as_missing(self, p: Principal, action: str, resource: str, reason: str,
                         rows: list[dict[str, Any]], missing: str) -> NoReturn:
        """A read of another patient's row: a denial in the audit log, but the caller learns no
        more than of a row that does not exist (no row-existence oracle)."""
        self._audit.record(p, action, resource, allowed=False, reason=reason,
                           patients=[r["patient_id"] for r in rows if r.get("patient_id")])
        raise RowNotFound(missing)

    @staticmethod
    def _missing_row(row_id: str, table: str, stored: str) -> str:
        return f"no row {row_id!r} in table {table}" + (" of the research zone" if stored != table else "")

    #: identifier types and systems a patient directory never shows (national and personal ids)
    _PERSONAL_IDS = re.compile(r"^(?:SS|SB|DL|PPN|TAX|NI|NH|PEN)$|ssn|social|driver|passport|licen[cs]e|"
                               r"national|tax", re.IGNORECASE)

    def patient_directory(self, *, identifier: str | None = None, source: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        """Patient ids with their source system and record identifiers (e.g. an MRN) — what a
        data steward needs to set up a clinician's care team; no names, dates or clinical data,
        and no national or personal ids (SSN, driver's licence, passport). ``identifier``: only
        the patient holding this identifier value (or patient id); ``source``: only this source
        system (``fhir``, ``mimic-iv``, ``omop``...). Stewards; every lookup is audited with the
        patients it returned."""
        resource = "patient directory" + (" by identifier" if identifier else "") + (
            f" of source {source}" if source else "")
        p = self._allow("read_system", resource)
        flt = []
        if source:
            flt.append(f"source_system = {_lit(source)}")
        table = self.lake.read("patients", columns=["patient_id", "source_system", "identifiers"],
                               filter=" AND ".join(flt) or None)
        out = []
        for r in table.to_pylist():
            ids = [{"system": i.get("system"), "type": i.get("type"), "value": i.get("value")}
                   for i in r["identifiers"] or []
                   if not self._PERSONAL_IDS.search(i.get("type") or "") and not self._PERSONAL_IDS.search(i.get("system") or "")]
            if identifier is not None and identifier != r["patient_id"] and identifier not in {i["value"] for i in ids}:
                continue
            out.append({"patient_id": r["patient_id"], "source_system": r["source_system"], "identifiers": ids})
        out.sort(key=lambda r: r["patient_id"])
        out = out[:max(0, int(limit))]
        self._log(p, "read_system", resource, [r["patient_id"] for r in out])
        return out

    def quarantine(self, *, run_id: str | None = None, version: int | None = None,
                   limit: int | None = None, superseded: bool = False,
                   break_glass: str | None = None) -> list[dict[str, Any]]:
        """Quarantined records (reason, locator, source, raw), newest first (data stewards).

        By default only those of each file's latest ingested content: when a corrected file is
        ingested again (same URI, new sha256), the quarantine of its earlier content is
        superseded; it stays in the table and ``superseded=True`` shows it too. Source URIs are
        masked and raw content withheld (they can name patients); ``break_glass`` (the reason,
        e.g. an incident number) shows the raw content, audited as a break-glass read.
        """
        if break_glass is not None and not break_glass.strip():
            raise QueryError("a break-glass read needs a reason")
        resource = f"quarantine{f' of run {run_id}' if run_id else ''}" + (
            f" (break-glass: {break_glass.strip()[:200]})" if break_glass else "")
        p = self._allow("read_quarantine", resource)
        flt = f"run_id = '{_q(run_id)}'" if run_id else None
        rows = self.lake.read("quarantine", version, filter=flt).to_pylist()
        if not superseded:
            src = self.lake.read("sources", version, columns=["source_uri", "sha256", "ingested_at"])
            latest: dict[str, str] = {}
            for s in sorted(src.to_pylist(), key=lambda r: r["ingested_at"]):
                latest[s["source_uri"]] = s["sha256"]
            rows = [r for r in rows if latest.get(r["source_uri"], r["source_sha256"]) == r["source_sha256"]]
        rows.sort(key=lambda r: (r["quarantined_at"], r["source_uri"], r["locator"]), reverse=True)
        rows = mask_rows(p, "quarantine", rows[:limit] if limit else rows, break_glass=bool(break_glass))
        self._log(p, "read_quarantine", f"{resource}: {len(rows)} records",
                  reason=f"break-glass: {break_glass.strip()[:300]}" if break_glass else "")
        return rows

    def document(self, document_id: str, *, version: int | None = None) -> dict[str, Any]:
        """One note, report or article by its document id or row id, with its provenance
        record (clinicians: documents of their patients and articles; researchers: the research
        zone, whose provenance stays in the clinical zone)."""
        resource = f"document: {document_id}"
        p, action, views = self._read_scope(resource)
        if "documents" not in views:
            self._deny(p, action, resource, f"{p.user} ({p.role}) may not read documents")
        ident = _lit(document_id)
        with self._failures(p, action, resource):
            rows = self.lake.sql(f"SELECT * FROM documents WHERE document_id = {ident} OR row_id = {ident} LIMIT 1",
                                 version, views).to_pylist()
            if not rows and "literature" in views:
                rows = self.lake.sql(f"SELECT * FROM literature WHERE doc_id = {ident} OR row_id = {ident} LIMIT 1",
                                     version, views).to_pylist()
            other: list[dict[str, Any]] = []
            if not rows and p.role == "clinician":  # there, but not one of this clinician's patients?
                other = self.lake.sql(f"SELECT patient_id FROM documents WHERE document_id = {ident} OR row_id = "
                                      f"{ident} LIMIT 1", version).to_pylist()
        if other:
            self._deny_as_missing(p, action, resource, f"{p.user} (clinician) is not on the care team of the "
                                  f"patient of document {document_id}", other, f"no document {document_id!r}")
        if not rows:
            self._audit.record(p, action, resource, allowed=True, reason="failed: no such document")
            raise RowNotFound(f"no document {document_id!r}" + (" in the research zone" if p.role == "researcher" else ""))
        row = rows[0]
        prov = None
        if p.role == "clinician" and row.get("provenance_id"):
            found = self.lake.read("provenance", version, filter=f"provenance_id = {_lit(row['provenance_id'])}")
            prov = found.to_pylist()[0] if found.num_rows else None
        self._log(p, action, resource, [row["patient_id"]] if p.role == "clinician" and row.get("patient_id") else [])
        return {"table": "literature" if "doc_id" in row else "documents", "row": row, "provenance": prov}

    # -- the agent layer: questions, traces and feedback ---------------------------------
    def ask(self, question: str, *, patient: str | None = None, since: Any = None, until: Any = None,
            k: int = 8, provider: Any = None) -> Any:
        """Answer ``question`` from the evidence the principal may see, every sentence citing the
        rows or chunks it rests on (see ``sagehealth.agents.agent``); the trace is stored."""
        from sagehealth.agents.agent import answer

        return answer(self, question, patient=patient, since=since, until=until, k=k, provider=provider)

    @property
    def ledger(self) -> Any:
        """The traces and feedback tables (storage; the methods below check access)."""
        from sagehealth.agents.ledger import Ledger

        return Ledger(self.lake.uri)

    def _asker(self, resource: str) -> Principal:
        """A principal who may ask questions and give feedback: one who reads patient data."""
        who = self._principal
        if who is not None and who.role not in ("clinician", "researcher"):
            self._deny(who, READ_ACTION.get(who.role, "read_clinical"), resource,
                       f"{who.user} ({who.role}) may not ask questions of patient data or give feedback on answers")
        return self._allow(READ_ACTION[who.role] if who else "read_clinical", resource,
                           who.patients if who and who.role == "clinician" else None)

    def record_trace(self, trace: dict[str, Any]) -> None:
        """Store an agent trace (the agent calls this for the principal who asked)."""
        p = self._asker(f"store agent trace {trace.get('trace_id')}")
        self.ledger.append("traces", {**trace, "user": p.user, "role": p.role, "purpose": p.purpose})

    def _ledger_rows(self, name: str, resource: str, trace_id: str | None, limit: int | None) -> list[dict[str, Any]]:
        """Rows of a ledger table: a data steward's all of them, anyone else's their own."""
        where = {"trace_id": trace_id} if trace_id else {}
        if self._principal is not None and self._principal.role == "steward":
            p = self._allow("read_system", resource)
        else:  # one's own, in the role one asked in (a clinician's traces hold identified data)
            p = self._asker(resource)
            where.update(user=p.user, role=p.role)
        rows = self.ledger.read(name, where=where, limit=limit)
        if p.role == "steward":  # operations, not contents: a clinician's question and answer name patients
            rows = self._redacted_ledger_rows(rows)
        self._log(p, "read_system" if p.role == "steward" else READ_ACTION[p.role], resource,
                  sorted({r["patient_id"] for r in rows if r["patient_id"]}) if p.role == "clinician" else [])
        return rows

    def _redacted_ledger_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Trace or feedback rows as a data steward reads them: every text through the
        de-identifier plus the own names and ids of the row's patients (tags); the rest (who,
        when, provider, evidence ids, timings, status) as it is."""
        from sagehealth.privacy.structured import known_identifiers

        ids = sorted({pid for r in rows for pid in [r.get("patient_id"), *(r.get("patients") or [])] if pid})
        known: dict[str, list[tuple[str, str]]] = {}
        if ids:
            known = known_identifiers(self.lake.read("patients", columns=[
                "patient_id", "given_names", "family_name", "identifiers", "telecom"],
                filter=f"patient_id IN ({', '.join(_lit(i) for i in ids)})").to_pylist())
        out = []
        for r in rows:
            mine = [v for pid in {r.get("patient_id"), *(r.get("patients") or [])} if pid for v in known.get(pid, [])]
            out.append({k: _redact_ledger(v, mine) if k in _LEDGER_TEXT and isinstance(v, str) and v else v
                        for k, v in r.items()})
        return out

    def traces(self, *, trace_id: str | None = None, limit: int | None = 50) -> list[dict[str, Any]]:
        """Agent traces, newest first: a data steward's all of them, anyone else's their own."""
        return self._ledger_rows("traces", f"agent traces{f': {trace_id}' if trace_id else ''}", trace_id, limit)

    def record_feedback(self, trace_id: str, verdict: str, *, edited_text: str | None = None, reason: str = "",
                        target: str = "answer") -> dict[str, Any]:
        """Accept, reject or edit an answer (or draft) of a stored trace, with the edited text and
        a reason; stored as data linked to the trace. The asker, or a clinician on the care team
        of the trace's patient, may give it."""
        import uuid

        resource = f"feedback on {trace_id}"
        p = self._asker(resource)
        if verdict not in ("accept", "reject", "edit"):
            raise QueryError(f"verdict must be accept, reject or edit (got {verdict!r})")
        if verdict == "edit" and not (edited_text or "").strip():
            raise QueryError("an edit needs the edited text")
        trace = self.ledger.get("traces", "trace_id", trace_id)
        if trace is None:
            raise RowNotFound(f"no agent trace {trace_id!r}")
        own = trace["user"] == p.user and trace["role"] == p.role
        if not own and not (p.role == "clinician" == trace["role"] and trace["patient_id"]
                            and trace["patient_id"] in p.patients):
            self._deny(p, READ_ACTION[p.role], resource, f"{p.user} ({p.role}) may not give feedback on another "
                       "user's answer" + (" outside their care team" if p.role == "clinician" else ""))
        row = {"feedback_id": f"fbk_{uuid.uuid4().hex[:20]}", "trace_id": trace_id, "user": p.user, "role": p.role,
               "purpose": p.purpose, "verdict": verdict, "target": target, "original_text": trace["answer"],
               "edited_text": edited_text if verdict == "edit" else None, "reason": reason,
               "patient_id": trace["patient_id"], "provider": trace["provider"],
               "prompt_version": trace["prompt_version"], "evidence_ids": trace["evidence_ids"],
               "store_version": trace["store_version"],
               "patients": sorted(set(trace.get("patients") or []) | ({trace["patient_id"]} if trace["patient_id"] else set()))}
        self.ledger.append("feedback", row)
        self._log(p, READ_ACTION[p.role], f"{resource}: {verdict}",
                  [trace["patient_id"]] if p.role == "clinician" and trace["patient_id"] else [])
        return row

    def feedback(self, *, trace_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Feedback rows, newest first: a data steward's all of them, anyone else's their own."""
        return self._ledger_rows("feedback", f"feedback{f' on {trace_id}' if trace_id else ''}", trace_id, limit)

    def export_feedback(self, out: str | os.PathLike[str], *, key: str | bytes | None = None) -> dict[str, Any]:
        """Write every feedback row, joined to its question and answer, as de-identified JSON
        lines (data stewards): texts through the de-identifier, patient ids as research
        pseudonyms, row ids keyed, only the year of each date; patients who withdrew research
        consent are left out. For the radiology workflow and model adaptation."""
        from sagehealth.agents.export import export_feedback

        p = self._allow("export", f"export feedback to {out}")
        with self._failures(p, "export", f"export feedback to {out}"):
            result = export_feedback(self.lake, self.ledger, Path(out), key=key)
        self._log(p, "export", f"feedback exported to {out}: {result['rows']} rows ({result['withdrawn']} withheld)")
        return result

    # -- radiology reporting (sagehealth.radiology.workflow) ------------------------------
    def _radiologist(self, resource: str, patients: Iterable[str] = ()) -> Principal:
        """A clinician acting for ``patients`` (all on the care team); anyone else is refused."""
        who = self._principal
        if who is not None and who.role != "clinician":
            self._deny(who, READ_ACTION.get(who.role, "read_clinical"), resource,
                       f"{who.user} ({who.role}) may not draft or sign radiology reports: clinicians do")
        return self._allow("read_clinical", resource, [p for p in patients if p] if who else None)

    def worklist(self, *, modality: str | None = None, priority: str | None = None, patient: str | None = None,
                 body_part: str | None = None, include_signed: bool = False, limit: int = 200) -> list[Any]:
        """Studies waiting for a signed report (imaging studies and preliminary reports) of the
        clinician's care team: patient, modality, body part, indication, priority (stat, urgent,
        routine), time waiting; most urgent and longest waiting first."""
        from sagehealth.radiology.workflow import studies

        p = self._radiologist("radiology worklist")
        team = set(p.patients) if patient is None else ({patient} & set(p.patients))
        if patient is not None and patient not in p.patients:
            self._deny(p, "read_clinical", f"radiology worklist of {patient}", f"{p.user} (clinician) is not on "
                       "the care team of the patient asked for", [patient])
        with self._failures(p, "read_clinical", "radiology worklist"):
            rows = studies(self.lake, self.ledger, patients=team, include_signed=include_signed)
        rows = [s for s in rows if (modality is None or (s.modality or "").upper() == modality.upper())
                and (priority is None or s.priority == priority)
                and (body_part is None or (s.body_part or "").upper() == body_part.upper())][:limit]
        self._log(p, "read_clinical", f"radiology worklist: {len(rows)} studies", sorted({s.patient_id for s in rows
                                                                                       if s.patient_id}))
        return rows

    def study(self, study_id: str) -> Any:
        """One study of the care team (signed or not). A study that does not exist and one of
        another care team get the same refusal (no probing of study ids); the audit log
        records which it was."""
        from sagehealth.radiology.workflow import studies

        resource = f"radiology study {study_id}"
        p = self._radiologist(resource)
        found = studies(self.lake, self.ledger, include_signed=True, study_id=study_id)
        same = f"{study_id!r} is not a study of {p.user}'s care team (or there is no such study)"
        if not found or (found[0].patient_id and found[0].patient_id not in p.patients):
            patients = [found[0].patient_id] if found and found[0].patient_id else []
            self._audit.record(p, "read_clinical", resource, allowed=False, patients=patients,
                               reason="no such study" if not found else
                               f"{p.user} (clinician) is not on the care team of the study's patient")
            raise AccessDenied(same)
        s = found[0]
        self._log(p, "read_clinical", resource, [s.patient_id] if s.patient_id else [])
        return s

    def draft_report(self, study_id: str | None = None, *, indication: str | None = None,
                     comparison: str | None = None, findings: str | None = None, patient: str | None = None,
                     llm: str | None = None) -> Any:
        """Draft a report's IMPRESSION for a study of the care team, or from the given texts
        (``patient``: whose study it is, for priors): every sentence cites the findings sentence,
        similar case (de-identified research zone only) or prior it rests on; checks with their
        reasons (critical results, normal vs abnormal, laterality, missing prior, omitted
        finding). The draft is stored as a trace; sign it with :meth:`sign_report`. ``llm``: a
        language model to draft with (``smollm2``, ``llama-cpp:PATH``, ``openai:MODEL@URL``; default
        ``$SAGEHEALTH_RADIOLOGY_LLM``, else the offline drafter), guarded by the offline one."""
        from sagehealth.radiology.workflow import draft, drafter_for

        resource = f"draft radiology report{f' for {study_id}' if study_id else ''}"
        s = self.study(study_id) if study_id else None
        patient_id = s.patient_id if s is not None else patient
        p = self._radiologist(resource, [patient_id] if patient_id else [])
        with self._failures(p, "read_clinical", resource):
            out = draft(self, p, study=s, indication=indication if indication is not None else (s.indication if s else ""),
                        comparison=comparison if comparison is not None else (s.comparison if s else ""),
                        findings=findings if findings is not None else (s.findings if s else ""), patient_id=patient_id,
                        drafter=drafter_for(self, p, llm))
        self._log(p, "read_clinical", f"{resource}: {out.draft_id}", [patient_id] if patient_id else [])
        return out

    def sign_report(self, draft_id: str, impression: str, *, findings: str | None = None, reason: str = "") -> Any:
        """Sign a draft (one's own, of a patient on the care team) with the impression as edited:
        the signed report becomes a new version of the store (a document of the clinical zone
        with provenance to the draft; its de-identified copy in the research zone, a similar
        case for the next draft at once); the edit becomes feedback (edit class, word diff,
        edit distance, time to sign) and training/preference pairs. Signing a study again
        makes an addendum."""
        from sagehealth.radiology.workflow import load_draft, sign

        resource = f"sign radiology report {draft_id}"
        p = self._radiologist(resource)
        trace = load_draft(self.ledger, draft_id) if draft_id.startswith("drf_") else None
        if trace is None:
            self._audit.record(p, "read_clinical", resource, allowed=True, reason="failed: no such draft")
            raise RowNotFound(f"no radiology draft {draft_id!r}")
        patient = trace.get("patient_id")
        p = self._radiologist(resource, [patient] if patient else [])
        if trace["user"] != p.user:
            self._deny(p, "read_clinical", resource, f"{p.user} may not sign a draft made by another user: "
                       "draft the study again and sign your own draft", [patient] if patient else [])
        with self._failures(p, "read_clinical", resource):
            out = sign(self, p, trace, impression=impression, findings=findings, reason=reason)
        self._log(p, "read_clinical", f"{resource}: {out.document_id} ({out.edit_class} edit), version "
                  f"{out.store_version}", [patient] if patient else [])
        return out

    def report_statistics(self, *, by: str = "week") -> list[dict[str, Any]]:
        """Edit statistics of radiology sign-offs (acceptance rate, edit classes, edit distance,
        time to sign) per period, provider and prompt version: counts only, no text. Data
        stewards and researchers see all sign-offs, a clinician their own."""
        from sagehealth.radiology.workflow import statistics

        who = self._principal
        resource = "radiology edit statistics"
        if who is not None and who.role == "steward":
            p = self._allow("read_system", resource)
        elif who is not None and who.role == "researcher":
            p = self._allow("read_research", resource)
        else:
            p = self._radiologist(resource)
        if by not in ("week", "day", "all"):
            raise QueryError(f"by must be week, day or all (got {by!r})")
        rows = self.ledger.read("signoffs")
        if p.role == "clinician":
            rows = [r for r in rows if r["user"] == p.user]
        out = statistics(rows, by=by)
        self._log(p, {"steward": "read_system", "researcher": "read_research"}.get(p.role, "read_clinical"), resource)
        return out

    def report_pairs(self, *, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """De-identified training (findings -> signed impression) and preference (draft
        rejected, signed chosen) pairs from sign-offs, for researchers and data stewards;
        patients who withdrew research consent are left out."""
        who = self._principal
        resource = f"radiology report pairs{f' ({kind})' if kind else ''}"
        p = self._allow("read_system" if who is not None and who.role == "steward" else "read_research", resource)
        if kind not in (None, "training", "preference"):
            raise QueryError(f"kind must be training or preference (got {kind!r})")
        from sagehealth.privacy.research import withdrawn_pseudonyms

        gone = withdrawn_pseudonyms(self.lake)  # recorded by the refresh that removed them
        rows = [r for r in self.ledger.read("report_pairs", where={"kind": kind} if kind else None)
                if not (r["patient"] and r["patient"] in gone)]
        rows = rows[:limit] if limit is not None else rows
        self._log(p, p.role == "steward" and "read_system" or "read_research", f"{resource}: {len(rows)} rows")
        return rows

    # -- training data (sagehealth.training) ----------------------------------------------
    def export_dataset(self, kind: str, out: str | os.PathLike[str], *, version: int | None = None,
                       decontaminate: Iterable[str | os.PathLike[str]] = (), validation: float = 0.0,
                       test: float = 0.0) -> Any:
        """Write a curated training dataset of the research zone (``pretrain``, ``instruct``,
        ``preference``) in the Hugging Face datasets layout (Parquet shards, dataset card,
        provenance); researchers and data stewards, audited as an export."""
        from sagehealth.training.export import export_dataset

        resource = f"export {kind} dataset to {out}"
        who = self._principal
        action = "export" if who is not None and who.role == "steward" else "read_research"
        if who is not None and who.role not in ("steward", "researcher"):
            self._deny(who, "export", resource, f"{who.user} ({who.role}) may not export training data: "
                       "researchers and data stewards do")
        p = self._allow(action, resource)
        with self._failures(p, action, resource):
            result = export_dataset(self.lake, self.ledger, kind, out, version=version,
                                    decontaminate=list(decontaminate), validation=validation, test=test)
        self._log(p, action, f"{resource}: {sum(result.splits.values())} examples of version {result.store_version}")
        return result

    def adapt_embedder(self, pairs: str | os.PathLike[str], out: str | os.PathLike[str], *, base: str = "minilm",
                       epochs: int = 1, batch_size: int = 32) -> dict[str, Any]:
        """Fine-tune a retrieval embedder on exported ``retrieval`` pairs (contrastive, in-batch
        and mined hard negatives) and register it in the model registry; researchers and data
        stewards. Use it with ``index`` / ``search`` as ``st:<out>``."""
        from sagehealth.training.adapt import adapt_embedder

        return self._train_model(
            f"adapt an embedder from {pairs} to {out}",
            lambda user: adapt_embedder(pairs, out, base=base, epochs=epochs, batch_size=batch_size, user=user),
            kind="embedder", adapter=False, count="pairs",
            settings=("epochs", "batch_size", "learning_rate", "max_seq_length", "seed"), metrics=("train_loss",))

    def adapt_generator(self, pairs: str | os.PathLike[str], out: str | os.PathLike[str], *, base: str = "smollm2",
                        task: str = "findings_to_impression", epochs: int = 1, rank: int = 16,
                        learning_rate: float = 2e-4, batch_size: int = 8, max_examples: int | None = None,
                        evaluate: int = 50, balance: bool = False,
                        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train a LoRA adapter for a small causal LM on an ``instruct`` export's ``task`` pairs,
        score base and adapter on its validation split, and register it; researchers and data
        stewards. Draft with it as ``--llm hf:<out>``."""
        from sagehealth.training.generator import adapt_generator

        return self._train_model(
            f"adapt a generator from {pairs} to {out}",
            lambda user: adapt_generator(pairs, out, base=base, task=task, epochs=epochs, rank=rank,
                                         learning_rate=learning_rate, batch_size=batch_size,
                                         max_examples=max_examples, evaluate=evaluate, balance=balance, user=user,
                                         progress=progress),
            kind="generator", adapter=True, count="examples",
            settings=("task", "epochs", "rank", "alpha", "learning_rate", "batch_size", "max_tokens", "seed",
                      "prompt_version", "balanced"),
            metrics=("train_loss", "validation", "train_seconds"))

    def _train_model(self, resource: str, train: Callable[[str], dict[str, Any]], *, kind: str, adapter: bool,
                     count: str, settings: tuple[str, ...], metrics: tuple[str, ...]) -> dict[str, Any]:
        """Train a model (researchers and stewards), register it in the model registry, audit it."""
        import uuid

        who = self._principal
        if who is not None and who.role not in ("steward", "researcher"):
            self._deny(who, "export", resource, f"{who.user} ({who.role}) may not train models: researchers and "
                       "data stewards do")
        action = "configure" if who is not None and who.role == "steward" else "read_research"
        p = self._allow(action, resource)
        with self._failures(p, action, resource):
            info = train(p.user)
        self.ledger.append("models", {
            "model_id": f"mdl_{uuid.uuid4().hex[:16]}", "kind": kind, "path": info["path"], "base": info.get("base"),
            "adapter": info["path"] if adapter else None, "dataset": info.get("dataset"),
            "store_version": info.get("store_version"), "examples": info.get(count),
            "settings": {k: info.get(k) for k in settings}, "metrics": {k: info.get(k) for k in metrics},
            "created_by": p.user})
        self._log(p, action, f"{resource}: {info.get(count)} {count}, loss {info.get('train_loss')}")
        return info

    def models(self) -> list[dict[str, Any]]:
        """The model registry: models adapted from this store's datasets, newest first."""
        who = self._principal
        p = self._allow("read_system" if who is not None and who.role == "steward" else "read_research",
                        "model registry")
        rows = self.ledger.read("models")
        self._log(p, "read_system" if p.role == "steward" else "read_research", f"model registry: {len(rows)} models")
        return rows

    # -- tokens for the network doors -----------------------------------------------------
    def issue_token(self, principal: Principal, *, label: str = "") -> str:
        """A bearer token for ``principal`` (REST and MCP over HTTP), shown once; only its hash is
        stored (data stewards)."""
        from sagehealth.governance.tokens import TokenStore

        p = self._allow("configure", f"issue a token for {principal.user} ({principal.role})")
        token = TokenStore(self.lake.uri).issue(principal, label=label)
        self._log(p, "configure", f"token issued for {principal.user} ({principal.role}, {principal.purpose}, "
                  f"{len(principal.patients)} patients){f': {label}' if label else ''}")
        return token

    def revoke_token(self, token_or_id: str) -> bool:
        """Revoke a token, given itself or its full hash (data stewards)."""
        from sagehealth.governance.tokens import TokenStore

        p = self._allow("configure", "revoke a token")
        found = TokenStore(self.lake.uri).revoke(token_or_id)
        self._log(p, "configure", "token revoked" if found else "token revoke: not found")
        return found

    def tokens(self) -> list[dict[str, Any]]:
        """Issued tokens without their secrets (data stewards)."""
        from sagehealth.governance.tokens import TokenStore

        p = self._allow("configure", "list tokens")
        rows = TokenStore(self.lake.uri).list()
        self._log(p, "configure", f"tokens listed: {len(rows)}")
        return rows

    def reject_call(self, what: str, reason: str) -> None:
        """Audit a request refused before it reached a method (unknown tool, bad arguments, bad
        token): every door records its refusals here."""
        self._audit.record(self._principal, "call", what[:500], allowed=False, reason=reason[:500])

    # -- the audit log ------------------------------------------------------------------
    def audit_entries(self, *, limit: int | None = None) -> list[AuditEntry]:
        """The audit log's entries, oldest first (the last ``limit``); auditors only."""
        p = self._allow("read_audit", "audit log")
        entries = list(deque(self._audit.entries(), maxlen=limit)) if limit else list(self._audit.entries())
        self._log(p, "read_audit", f"audit log: {len(entries)} entries")
        return entries

    def verify_audit(self, anchors: Iterable[Anchor] = ()) -> Verification:
        """Recompute the audit log's keyed chain and check it against its head, the heads the
        store's versions recorded and ``anchors`` (e.g. from a write-once copy); says where it
        breaks (auditors). Checks before it writes; a broken log cannot take the entry that
        records the check (the library fails closed on it), the result still says what broke."""
        p = self._allow("read_audit", "audit log: verify")
        result = self._audit.verify(anchors)
        with contextlib.suppress(AuditError):
            self._log(p, "read_audit", "audit log: verify",
                      reason="intact" if result.ok else f"tampered: {result.problem} (line {result.line})")
        return result

    def audit_anchor(self) -> dict[str, Any]:
        """The audit log's head (entry number, keyed hash, key id, time) to copy to a
        write-once location; ``verify_audit`` checks such anchors later (auditors)."""
        from datetime import UTC, datetime

        p = self._allow("read_audit", "audit log: anchor")
        self._log(p, "read_audit", "audit log: anchor exported")
        head = self._audit.head()
        assert head is not None
        return {"store": self.lake.uri, "seq": head.seq, "hash": head.hash, "alg": self._audit.alg,
                "store_version": self.lake.head().version, "at": datetime.now(UTC).isoformat(timespec="seconds")}

    def restart_audit(self, reason: str) -> AuditEntry:
        """Start a new audit chain after the log was found broken (auditors): the broken log is
        kept beside it as evidence and the new chain's first entry says who, when, at which
        store version and why. Refused while the log verifies."""
        p = self._allow("read_audit", "audit log: restart")
        result = self._audit.verify()
        if result.ok:
            self._deny(p, "read_audit", "audit log: restart", "the audit log verifies: there is nothing to restart")
        if not reason.strip():
            raise QueryError("say why the audit log is restarted (--reason)")
        return self._audit.restart(p, f"{reason.strip()} [found: {result.problem} (line {result.line})]",
                                   self.lake.head().version)


#: what DuckDB says when a query reaches outside its sandbox (files, network, extensions, settings)
_SANDBOX_ESCAPE = re.compile(r"Permission Error|file system operations are disabled|external access is disabled|"
                             r"configuration has been locked|Cannot change configuration|extension", re.I)


#: ledger columns that hold what was asked, answered or edited (free text or JSON holding it)
_LEDGER_TEXT = ("question", "answer", "sentences", "reason", "plan", "tool_calls", "checks", "original_text",
                "edited_text")


#: keys inside the JSON ledger columns that hold ids, names of tools or stages (kept as they are)
_LEDGER_IDS = frozenset({"tool", "patient_id", "patient", "patients", "document_id", "documents", "id", "ids",
                         "result_ids", "evidence", "citations", "name", "kind", "kinds", "ok", "seconds", "trace_id"})


def _redact_ledger(value: str, known: list[tuple[str, str]]) -> str:
    """A ledger text (free text, or JSON holding texts) with its free text de-identified; ids
    and tool names inside JSON kept (operations need them)."""
    import json as _json

    from sagehealth.privacy.structured import redact

    if value[:1] not in "[{":
        return redact(value, known)
    try:
        parsed = _json.loads(value)
    except ValueError:
        return redact(value, known)

    def walk(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, key) for x in v]
        if isinstance(v, str) and key not in _LEDGER_IDS:
            return redact(v, known)
        return v

    return _json.dumps(walk(parsed), ensure_ascii=False)


def _q(value: str) -> str:
    """Escape a string literal for a Lance filter."""
    return value.replace("'", "''")
