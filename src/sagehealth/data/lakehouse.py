"""The versioned lakehouse: LanceDB tables in one folder, one global version per commit.

Each table is a Lance dataset with versions of its own. A *commit* is one row appended to the
``commits`` table that pins, for every table, the Lance version that belongs to that global
version, with a message and the ingest summary. Readers only ever see committed versions, so a
writer killed mid-run leaves the last commit intact; the next writer rolls every table back to
its committed version before it writes (``begin_write``). Appending one row to a Lance table is
atomic, which makes the commit itself atomic.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import lance
import pyarrow as pa

from sagehealth.config import is_local, sql_memory_limit
from sagehealth.data.model import ALL_SCHEMAS
from sagehealth.errors import QueryError, ReadOnlyViolation, StoreError, StoreLocked, VersionNotFound

COMMITS = "commits"


#: what Lance says when DuckDB pushes a filter on a struct field down to it
NESTED_PUSHDOWN = "nested references in pushdown filters"


@dataclass(frozen=True, slots=True)
class Commit:
    """One global version of the store."""

    version: int
    run_id: str | None
    message: str
    committed_at: datetime
    table_versions: dict[str, int]
    summary: dict[str, Any]


class Lakehouse:
    """LanceDB tables under ``uri`` with global, atomic, time-travelling versions."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lake_uri = f"{uri.rstrip('/')}/lake"
        if is_local(uri):
            _private(Path(uri))
            Path(self._lake_uri).mkdir(parents=True, exist_ok=True)
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._commits: tuple[tuple[int, int], list[Commit]] | None = None  # (stamp, commits)
        self._datasets: dict[tuple[str, int], lance.LanceDataset] = {}
        self._memo: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._memo_lock = threading.Lock()
        #: what every commit records beside its tables (the governance layer sets it: the audit
        #: log's head, so a log cut or deleted after a commit is caught)
        self.anchor: Callable[[], dict[str, Any]] | None = None
        self._ensure_tables()

    # -- tables ---------------------------------------------------------------------------
    @property
    def db(self) -> Any:
        """The LanceDB connection (for writes and indexes; connected on first use: importing
        LanceDB takes about a second, which reads through Lance and DuckDB do not need)."""
        if self._db is None:
            import lancedb

            try:
                self._db = lancedb.connect(self._lake_uri)
            except Exception as exc:
                raise StoreError(f"cannot open the store at {self.uri}: {exc}") from exc
        return self._db

    def _has_tables(self) -> bool:
        if is_local(self.uri):  # a directory per table: no connection needed to see them
            return all(Path(self.table_uri(name)).is_dir() for name in ALL_SCHEMAS)
        return set(ALL_SCHEMAS) <= set(self.db.list_tables().tables)

    def _ensure_tables(self) -> None:
        """Create the tables a new (or older) store lacks, under the write lock: a second
        process opening a store while the first creates it waits instead of colliding."""
        if self._has_tables() and self.commits():
            return
        with self.write_lock(wait=120.0):
            existing = set(self.db.list_tables().tables)
            for name, schema in ALL_SCHEMAS.items():
                if name not in existing:
                    self.db.create_table(name, schema=schema)
            if not self.commits():
                self.commit("initialize store", run_id=None, summary={})

    def table(self, name: str) -> Any:
        """The live (writable) LanceDB table ``name``."""
        if name not in ALL_SCHEMAS:
            raise StoreError(f"unknown table {name!r}; tables are: {', '.join(ALL_SCHEMAS)}")
        tbl = self._tables.get(name)
        if tbl is None:
            tbl = self._tables[name] = self.db.open_table(name)
        return tbl

    def table_uri(self, name: str) -> str:
        return f"{self._lake_uri}/{name}.lance"

    # -- versions -------------------------------------------------------------------------
    def commits(self) -> list[Commit]:
        """Every commit, oldest first (parsed once per version of the commit log)."""
        stamp = self._commit_stamp()
        if stamp is not None and self._commits is not None and self._commits[0] == stamp:
            return list(self._commits[1])
        ds = lance.dataset(self.table_uri(COMMITS))
        rows = ds.to_table().to_pylist()
        out = [
            Commit(
                version=r["version"],
                run_id=r["run_id"],
                message=r["message"],
                committed_at=r["committed_at"],
                table_versions=json.loads(r["table_versions"]),
                summary=json.loads(r["summary"] or "{}"),
            )
            for r in rows
        ]
        out.sort(key=lambda c: c.version)
        self._commits = (stamp, out) if stamp is not None else None
        return list(out)

    def _commit_stamp(self) -> tuple[int, int] | None:
        """A cheap fingerprint of the commit log: every commit adds a manifest file to
        _versions/ (a listing, not a modification time, which moves in coarse steps); local
        stores only; None means "read it again"."""
        if not is_local(self.uri):
            return None
        try:
            names = os.listdir(Path(self.table_uri(COMMITS)) / "_versions")
        except OSError:
            return None
        return (len(names), hash(max(names)) if names else 0)

    def head(self) -> Commit:
        """The latest commit."""
        commits = self.commits()
        if not commits:
            raise StoreError(f"the store at {self.uri} has no commit")
        return commits[-1]

    def resolve(self, version: int | None) -> Commit:
        """The commit of ``version`` (latest when None)."""
        commits = self.commits()
        if version is None:
            return commits[-1]
        for c in commits:
            if c.version == version:
                return c
        raise VersionNotFound(
            f"version {version} does not exist; versions are 1..{commits[-1].version}"
        )

    def commit(self, message: str, *, run_id: str | None, summary: dict[str, Any]) -> Commit:
        """Pin the current version of every table as the next global version (atomic)."""
        versions = {name: self.table(name).version for name in ALL_SCHEMAS if name != COMMITS}
        self._commits = None  # a writer always reads the log itself
        prev = self.commits()
        number = prev[-1].version + 1 if prev else 1
        now = datetime.now(UTC)
        if self.anchor is not None:
            summary = {**summary, "audit": self.anchor()}
        row = {
            "version": number,
            "run_id": run_id,
            "message": message,
            "committed_at": now,
            "table_versions": json.dumps(versions, sort_keys=True),
            "summary": json.dumps(summary, sort_keys=True, default=str),
        }
        self.table(COMMITS).add(pa.Table.from_pylist([row], schema=ALL_SCHEMAS[COMMITS]))
        self._commits = None
        return Commit(number, run_id, message, now, versions, summary)

    def rollback_uncommitted(self) -> list[str]:
        """Bring every table back to its committed version; returns the tables that moved."""
        head = self.head()
        moved = []
        for name in ALL_SCHEMAS:
            if name == COMMITS:
                continue
            committed = head.table_versions.get(name, 1)  # 1: created empty, never committed
            tbl = self.table(name)
            tbl.checkout_latest()
            if tbl.version != committed:
                tbl.restore(committed)
                moved.append(name)
        return moved

    # -- reading --------------------------------------------------------------------------
    def dataset(self, name: str, version: int | Commit | None = None) -> lance.LanceDataset:
        """The Lance dataset of ``name`` as of global ``version`` (latest commit when None)."""
        commit = version if isinstance(version, Commit) else self.resolve(version)
        if name == COMMITS:
            return lance.dataset(self.table_uri(name))
        if name not in commit.table_versions:
            raise StoreError(f"table {name!r} did not exist at version {commit.version}")
        key = (name, commit.table_versions[name])
        ds = self._datasets.get(key)
        if ds is None:  # a dataset at a version never changes: keep it, with its index caches
            ds = lance.dataset(self.table_uri(name), version=key[1])
            with self._memo_lock:  # servers call this from many threads
                while len(self._datasets) >= 64:
                    self._datasets.pop(next(iter(self._datasets)))
                ds = self._datasets.setdefault(key, ds)
        return ds

    def memo(self, key: tuple[Any, ...], compute: Callable[[], Any], *, size: int = 512) -> Any:
        """``compute()``, remembered under ``key`` (LRU, ``size`` entries). Keys must name the
        version they read (a committed version never changes), so nothing goes stale."""
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute()
        with self._memo_lock:
            self._memo[key] = value
            while len(self._memo) > size:
                self._memo.popitem(last=False)
        return value

    def read(self, name: str, version: int | None = None, **scan: Any) -> pa.Table:
        """Read table ``name`` (optionally ``columns=``/``filter=``) at a committed version."""
        return self.dataset(name, version).to_table(**scan)

    def count(self, name: str, version: int | None = None) -> int:
        return self.dataset(name, version).count_rows()

    def sql(self, query: str, version: int | None = None,
            views: Mapping[str, tuple[str, str | None]] | None = None, *, read_only: bool = False,
            max_rows: int | None = None, timeout_s: float | None = None,
            masks: Mapping[str, Callable[[pa.Table], pa.Table]] | None = None) -> pa.Table:
        """Run DuckDB SQL as of ``version``; returns an Arrow table.

        ``views`` maps each name a query may use to (stored table, Lance row filter or None);
        without it every table is visible under its own name (the storage layer itself; the
        governed API always passes the principal's views). The query runs sandboxed: no file or
        network access, no extensions, no Python variables, settings locked. ``read_only``
        accepts SELECT statements only (DuckDB's own parser says what a statement is);
        ``max_rows`` returns at most that many rows plus one (so a caller can tell it cut);
        ``timeout_s`` interrupts a query that runs longer. ``masks`` maps a view name to a
        function applied to its rows before the query sees them (columns a role sees masked).
        """
        commit = self.resolve(version)
        masks = masks or {}
        if views is None:
            views = {n: (n, None) for n in ALL_SCHEMAS}
        pooled = _pooled()
        try:
            selects = all(st.type == duckdb.StatementType.SELECT for st in pooled.extract_statements(query))
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip()) from exc
        if read_only and not selects:
            check_read_only(query)  # says which statement is not a SELECT
        # SELECTs leave nothing behind: they share this thread's sandboxed connection (opening one
        # costs ~15 ms); anything else gets a connection of its own, closed after
        con = pooled if selects else _sandbox()
        registered: list[str] = []
        try:
            # open only the tables the query names (each opened dataset costs ~1.5 ms)
            named = [n for n in views if re.search(rf"\b{n}\b", query, re.IGNORECASE)]
            if not named or re.search(r"\b(?:information_schema|show|describe|duckdb_tables)\b", query, re.I):
                named = list(views)

            def register(read_whole: bool) -> None:
                for name in named:
                    entry = views[name]
                    if isinstance(entry, pa.Table):  # already read (see MaterializedViews)
                        con.register(name, entry)
                        registered.append(name)
                        continue
                    table, row_filter = entry
                    if table != COMMITS and table not in commit.table_versions:
                        continue
                    ds = self.dataset(table, commit)
                    if name in masks:
                        con.register(name, masks[name](ds.to_table(filter=row_filter)))
                    else:
                        con.register(name, ds.to_table(filter=row_filter) if row_filter or read_whole else ds)
                    registered.append(name)

            register(False)
            for attempt in (1, 2):
                timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
                try:
                    if timer:
                        timer.start()
                    rel = con.sql(query)
                    if rel is None:
                        return pa.table({})
                    if max_rows is not None:
                        rel = rel.limit(max_rows + 1)
                    return rel.to_arrow_table()
                except duckdb.InterruptException as exc:
                    raise QueryError(f"the query ran longer than {timeout_s:g} s and was stopped") from exc
                except duckdb.Error as exc:
                    if timer is not None and not timer.is_alive() and "interrupt" in str(exc).lower():
                        raise QueryError(f"the query ran longer than {timeout_s:g} s and was stopped") from exc
                    if attempt == 1 and selects and NESTED_PUSHDOWN in str(exc):
                        # Lance cannot take a filter on a struct field ("code.code = ..."): read
                        # the named tables whole and let DuckDB filter them (SELECTs only, so
                        # nothing runs twice; the read is in memory and not under the timeout)
                        for name in registered:
                            with contextlib.suppress(duckdb.Error):
                                con.unregister(name)
                        registered.clear()
                        register(True)
                        continue
                    raise QueryError(str(exc).strip()) from exc
                finally:
                    if timer:
                        timer.cancel()
            raise AssertionError("unreachable")
        finally:
            if con is pooled:  # the next query (maybe another principal's) sees only its own views
                for name in registered:
                    with contextlib.suppress(duckdb.Error):
                        con.unregister(name)
            else:
                con.close()

    @staticmethod
    def filter_table(table: pa.Table, where: str) -> pa.Table:
        """Rows of an in-memory ``table`` that satisfy the SQL condition ``where``, evaluated in a
        sandboxed DuckDB connection that sees nothing but that table (so a condition cannot
        reach around a row filter applied before)."""
        con = duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        try:
            con.execute("SET python_enable_replacements = false")
            con.execute("SET lock_configuration = true")
            con.register("t", table)
            try:
                return con.sql(f"SELECT * FROM t WHERE {where}").to_arrow_table()
            except duckdb.Error as exc:
                raise QueryError(f"bad filter {where!r}: {str(exc).strip()}") from exc
        finally:
            con.close()

    # -- writing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the store's single-writer lock (local stores), waiting up to ``wait`` seconds
        for another writer to finish before :class:`StoreLocked` is raised."""
        with self._flock(".write.lock", wait, "writing to"):
            self._commits = None  # what other writers committed before we got the lock
            yield

    @contextlib.contextmanager
    def embed_lock(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the lock of the embedding stage (one embedding process per store at a time; it
        takes the write lock only for each round's write)."""
        with self._flock(".embed.lock", wait, "embedding the chunks of"):
            yield

    def embedding_elsewhere(self) -> bool:
        """Whether another process holds :meth:`embed_lock` now."""
        try:
            with self._flock(".embed.lock", 0.0, ""):
                return False
        except StoreLocked:
            return True

    @contextlib.contextmanager
    def _flock(self, name: str, wait: float, doing: str) -> Iterator[None]:
        if not is_local(self.uri):
            yield
            return
        fd = os.open(Path(self.uri) / name, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        raise StoreLocked(
                            f"another process is {doing} {self.uri}; wait for it to finish") from exc
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            yield
        finally:
            os.close(fd)


class MaterializedViews(Mapping[str, Any]):
    """Views read once: each table is scanned (with its row filter) the first time a query
    names it and reused by the next queries of the same job (e.g. a patient context's eight
    queries over one patient's rows)."""

    def __init__(self, lake: Lakehouse, version: int | None, views: Mapping[str, tuple[str, str | None]]) -> None:
        self._lake, self._commit, self._views = lake, lake.resolve(version), views
        self._read: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Any:
        stored, flt = self._views[name]
        if stored == COMMITS or stored not in self._commit.table_versions:
            return self._views[name]
        with self._lock:
            if name not in self._read:
                self._read[name] = self._lake.dataset(stored, self._commit).to_table(filter=flt)
            return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)


_LOCAL = threading.local()


def _private(root: Path) -> None:
    """A new store folder is made 0700 and this process's files 0600 (umask 077: the store holds
    identified data, the audit log and the ledger); an existing store that other users can
    read gets a warning, not a silent change."""
    os.umask(os.umask(0o077) | 0o077)
    if not root.exists():
        root.mkdir(parents=True, mode=0o700)
        os.chmod(root, 0o700)  # mkdir's mode is filtered by the umask it found
        return
    wide = root.stat().st_mode & 0o077
    if wide:
        warnings.warn(f"the store {root} is open to other users (mode {oct(root.stat().st_mode & 0o777)}): it holds "
                      f"identified data; restrict it with `chmod -R go-rwx {root}`", StoreWarning, stacklevel=3)


class StoreWarning(UserWarning):
    """A store set up less safely than it should be (e.g. readable by other users)."""


def _sandbox() -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection with no file or network access, no extensions, no
    Python variables, and its settings locked."""
    con = duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET python_enable_replacements = false")
    con.execute(f"SET memory_limit = '{sql_memory_limit()}'")
    con.execute("SET lock_configuration = true")
    return con


def _pooled() -> duckdb.DuckDBPyConnection:
    """This thread's sandboxed connection for SELECT statements."""
    con = getattr(_LOCAL, "con", None)
    if con is None:
        con = _LOCAL.con = _sandbox()
    return con


def check_read_only(query: str) -> None:
    """Refuse anything but SELECT statements (DuckDB parses the query to say what each is)."""
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        try:
            statements = con.extract_statements(query)
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip()) from exc
    finally:
        con.close()
    if not statements:
        raise QueryError("the query is empty")
    for st in statements:
        if st.type != duckdb.StatementType.SELECT:
            kind = str(st.type).rsplit(".", 1)[-1]
            raise ReadOnlyViolation(f"read-only SQL: only SELECT statements are allowed (got {kind})")


#: rows per fragment that compaction aims at (Lance's default)
COMPACT_ROWS = 1 << 20


def compact_fragments(tbl: Any, *, small: int = 1) -> int:
    """Merge the small fragments of LanceDB table ``tbl`` into fragments of up to
    :data:`COMPACT_ROWS` rows once more than ``small`` of them are under that size (Lance's
    ``compact_files``: deleted rows dropped, every index remapped to the new row addresses, a
    new table version for the caller to commit; earlier versions stay readable). Each ingest
    or refresh batch writes a fragment, and reading one row costs a file open and a page decode
    per fragment it touches (1M chunks as 1,000 fragments: hybrid search p50 31.8 ms, one
    fragment 21.9 ms; README). Returns the number of fragments removed."""
    tbl.checkout_latest()  # writes made through the Lance dataset are not seen by the table handle
    ds = tbl.to_lance()
    if sum(1 for f in ds.get_fragments() if f.metadata.physical_rows < COMPACT_ROWS) <= small:
        return 0
    metrics = ds.optimize.compact_files(target_rows_per_fragment=COMPACT_ROWS)
    tbl.checkout_latest()
    return metrics.fragments_removed - metrics.fragments_added
