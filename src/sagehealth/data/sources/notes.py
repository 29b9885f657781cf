"""Clinical notes and reports -> ``documents`` rows, split into sections.

Three layouts are read:

* a CSV (or ``.csv.gz``) with one note per row in a text column (MTSamples ``transcription``,
  ``text``, ``note_text``, ``report``; or ``options["text_column"]``);
* a radiology report CSV with the report in separate columns (``indication``, ``comparison``,
  ``technique``, ``findings``, ``impression``, as in the IU X-ray export): the parts are joined
  as ``"INDICATION: ...\\nFINDINGS: ...\\nIMPRESSION: ..."`` and each part is one section;
* a folder of ``.txt`` files, one document per file.

``document_id`` is ``"<dataset>/<local id>"``: the dataset is the CSV's name without
``.csv``/``.gz`` (or the ``.txt`` folder's name, or ``options["dataset"]``), the local id is the
id column's value, else the 1-based row number, or the ``.txt`` file's path relative to the
folder without its suffix. Notes carry no patient unless ``options["patient_column"]`` names
one (its value, prefixed by ``options.get("patient_prefix", "")``, must then exist).

Options (``ctx.options``): ``text_column``, ``id_column``, ``patient_column``,
``patient_prefix``, ``dataset``, ``kind``, ``source_system``, ``root`` (the ``.txt`` folder).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagehealth.data.model import row_id
from sagehealth.data.sections import Section, split_sections
from sagehealth.data.sources.base import (
    Bad,
    BadValue,
    Item,
    ReadContext,
    Reader,
    Record,
    clip,
    open_binary,
    open_text,
    parse_datetime,
    reject_rows,
)

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long notes exceed the 128 KiB default

Col = tuple[str, int]  # a CSV column: its (lower-cased, stripped) name and index

#: candidate columns, first present wins (header names compared lower-cased, stripped)
TEXT_COLUMNS = ("text", "transcription", "note_text", "report")
ID_COLUMNS = ("note_id", "id", "uid", "row_id")
TITLE_COLUMNS = ("sample_name", "title", "description")
CATEGORY_COLUMNS = ("medical_specialty", "specialty", "category", "note_type", "note_category")
DATE_COLUMNS = ("date", "chartdate", "charttime", "note_date", "report_date")
AUTHOR_COLUMNS = ("author",)
#: report-part columns of a radiology CSV and their headings, in report order
REPORT_PARTS: tuple[tuple[str, str], ...] = (
    ("indication", "INDICATION"),
    ("comparison", "COMPARISON"),
    ("technique", "TECHNIQUE"),
    ("findings", "FINDINGS"),
    ("impression", "IMPRESSION"),
)
#: label columns of a report-part CSV (IU X-ray: MeSH terms, then problems), kept in ``code``
LABEL_COLUMNS = ("mesh", "problems")
#: a CSV without a text column is a report-part CSV when it has one of these
PART_TRIGGERS = frozenset({"findings", "impression"})
#: documents.kind by category/specialty value (lower-cased, stripped); anything else: "note"
KIND_BY_CATEGORY = {
    "radiology": "radiology_report",
    "discharge summary": "discharge_summary",
    "discharge_summary": "discharge_summary",
}
DEFAULT_KIND = "note"
CONTENT_TYPE = "text/plain"
CSV_SUFFIXES = (".csv", ".csv.gz")
TXT_SUFFIX = ".txt"
#: .txt files that are package furniture, not notes
NOT_NOTES = frozenset({"readme", "license", "licence", "copying", "notice", "sha256sums"})


def _is_csv(p: Path) -> bool:
    return p.name.lower().endswith(CSV_SUFFIXES)


def _is_txt_note(p: Path) -> bool:
    return (
        p.suffix.lower() == TXT_SUFFIX
        and not p.name.startswith(".")
        and p.stem.lower() not in NOT_NOTES
    )


def _dataset(p: Path) -> str:
    name = p.name
    for suffix in (".gz", ".csv", ".tsv", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _pick(cols: dict[str, int], names: tuple[str, ...]) -> Col | None:
    for n in names:
        if n in cols:
            return n, cols[n]
    return None


class NotesReader(Reader):
    """Clinical notes and radiology reports from CSV files or folders of ``.txt`` files."""

    name = "notes"
    version = "1"
    source_system = "notes"

    def __init__(self) -> None:
        self._roots: dict[Path, Path] = {}  # .txt file -> the folder files() found it in

    def files(self, path: Path) -> list[Path]:
        """A file as is; in a folder the CSVs then the ``.txt`` notes, each sorted by path."""
        if path.is_file():
            return [path]
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        txts = [p for p in found if _is_txt_note(p)]
        for p in txts:
            self._roots[p] = path
        return [p for p in found if _is_csv(p)] + txts

    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        """Stream the documents of one CSV (a row each) or one ``.txt`` file."""
        if _is_csv(path):
            yield from self._read_csv(path, ctx)
        else:
            yield self._read_txt(path, ctx)

    # -- .txt --------------------------------------------------------------------------------

    def _read_txt(self, path: Path, ctx: ReadContext) -> Item:
        opts = ctx.options
        root = Path(opts["root"]) if opts.get("root") else self._roots.get(path, path.parent)
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = Path(path.name)
        with open_binary(path) as fh:
            raw = fh.read()
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            return Bad("file", f"empty text in file {path.name}", None)
        doc_id = f"{opts.get('dataset') or root.name}/{rel.with_suffix('').as_posix()}"
        row = _document(doc_id, text, opts.get("kind") or DEFAULT_KIND, path.name, ctx)
        return Record("file", [("documents", row)], content=raw)

    # -- CSV ---------------------------------------------------------------------------------

    def _read_csv(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        opts = ctx.options
        with open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                yield Bad("header", "empty file: no CSV header")
                return
            cols = {h.strip().lower(): i for i, h in enumerate(header)}
            text_col = _text_column(cols, opts)
            parts = [(c, i, head) for c, head in REPORT_PARTS if (i := cols.get(c)) is not None]
            if text_col is None and (opts.get("text_column") or not PART_TRIGGERS & cols.keys()):
                wanted = opts.get("text_column") or " or ".join(TEXT_COLUMNS)
                yield from reject_rows(reader, f"missing text column: no column {wanted}", header)
                return
            plan = _Plan(
                dataset=opts.get("dataset") or _dataset(path),
                text=text_col,
                parts=parts if text_col is None else [],
                id=_pick(cols, (opts["id_column"],) if opts.get("id_column") else ID_COLUMNS),
                title=_pick(cols, TITLE_COLUMNS),
                category=_pick(cols, CATEGORY_COLUMNS),
                date=_pick(cols, DATE_COLUMNS),
                author=_pick(cols, AUTHOR_COLUMNS),
                patient=_patient_column(cols, opts),
                labels=[c for name in LABEL_COLUMNS if (c := _pick(cols, (name,))) is not None],
            )
            if opts.get("patient_column") and plan.patient is None:
                yield from reject_rows(reader, f"missing patient column {opts['patient_column']}", header)
                return
            n = 0
            for values in reader:
                if not values:  # a blank line is no record
                    continue
                n += 1
                yield plan.record(n, values, ctx)


def _text_column(cols: dict[str, int], opts: dict[str, Any]) -> Col | None:
    if opts.get("text_column"):
        name = str(opts["text_column"]).strip().lower()
        return (name, cols[name]) if name in cols else None
    return _pick(cols, TEXT_COLUMNS)


def _patient_column(cols: dict[str, int], opts: dict[str, Any]) -> Col | None:
    name = str(opts.get("patient_column") or "").strip().lower()
    return (name, cols[name]) if name in cols else None


@dataclass(slots=True)
class _Plan:
    """Which column feeds which field of a CSV's documents rows."""

    dataset: str
    text: Col | None
    parts: list[tuple[str, int, str]]  # (column, index, heading)
    id: Col | None
    title: Col | None
    category: Col | None
    date: Col | None
    author: Col | None
    patient: Col | None
    labels: list[Col] = field(default_factory=list)  # MeSH / Problems of a report-part CSV

    def record(self, n: int, values: list[str], ctx: ReadContext) -> Item:
        loc = f"row:{n}"
        raw = "\x1f".join(values)

        def get(col: Col | None) -> str:
            return values[col[1]].strip() if col is not None and col[1] < len(values) else ""

        if self.text is not None:
            text = values[self.text[1]] if self.text[1] < len(values) else ""
            if not text.strip():
                return Bad(loc, f"empty text in column {self.text[0]}", clip(raw))
            sections: list[Section] | None = None
            kind = None
        else:
            text, sections = _join_parts(values, self.parts)
            if not text:
                names = ", ".join(name for name, _i, _h in self.parts)
                return Bad(loc, f"empty text in columns {names}", clip(raw))
            kind = "radiology_report"
        try:
            date = parse_datetime(get(self.date), self.date[0]) if self.date else None
        except BadValue as exc:
            return Bad(loc, str(exc), clip(raw))
        category = get(self.category)
        if kind is None:
            kind = ctx.options.get("kind") or KIND_BY_CATEGORY.get(category.lower(), DEFAULT_KIND)
        local = get(self.id) or str(n)
        doc_id = f"{self.dataset}/{local}"
        row = _document(doc_id, text, kind, get(self.title) or None, ctx, sections)
        if category:
            system = f"{self.dataset}:{self.category[0]}"  # type: ignore[index]
            row["code"] = {"system": system, "code": category, "display": category}
        if self.parts:
            # a report whose impression is not written yet is preliminary (on the worklist);
            # its labels (IU X-ray MeSH / Problems) are kept as data, never used to draft
            has_impression = any(name == "impression" and i < len(values) and values[i].strip()
                                 for name, i, _h in self.parts)
            row["status"] = "final" if has_impression else "preliminary"
            labels = [get(c) for c in self.labels]
            if any(labels):
                row["code"] = {"system": f"{self.dataset}:labels", "code": labels[0] or None,
                               "display": labels[1] if len(labels) > 1 and labels[1] else None}
        row["date"] = date
        row["author"] = get(self.author) or None
        requires: tuple[str, ...] = ()
        if (pid := get(self.patient)):
            row["patient_id"] = f"{ctx.options.get('patient_prefix', '')}{pid}"
            requires = (row["patient_id"],)
        return Record(loc, [("documents", row)], requires, raw.encode("utf-8", "surrogatepass"))


def _join_parts(
    values: list[str], parts: list[tuple[str, int, str]]
) -> tuple[str, list[Section]]:
    """A report text from its part columns, each part ``HEADING: value`` on its own line."""
    chunks: list[str] = []
    sections: list[Section] = []
    pos = 0
    for _name, i, heading in parts:
        value = values[i].strip() if i < len(values) else ""
        if not value:
            continue
        if chunks:
            chunks.append("\n")
            pos += 1
            sections[-1]["end"] = pos
        chunk = f"{heading}: {value}"
        chunks.append(chunk)
        sections.append({"name": heading, "start": pos, "end": pos + len(chunk)})
        pos += len(chunk)
    return "".join(chunks), sections


def _document(
    doc_id: str,
    text: str,
    kind: str,
    title: str | None,
    ctx: ReadContext,
    sections: list[Section] | None = None,
) -> dict[str, Any]:
    return {
        "row_id": row_id("documents", doc_id),
        "document_id": doc_id,
        "kind": kind,
        "title": title,
        "content_type": CONTENT_TYPE,
        "text": text,
        "sections": split_sections(text) if sections is None else sections,
        "source_system": ctx.options.get("source_system") or NotesReader.source_system,
    }


def detect(path: Path) -> bool:
    """A CSV whose header has a text-like (or findings/impression) column, a ``.txt`` note, or
    a folder holding such files whose CSVs are all such CSVs (other files are ignored)."""
    if path.is_dir():
        seen = False
        for i, p in enumerate(path.rglob("*")):
            if i > 1000:
                break
            if _is_csv(p) or _is_txt_note(p):
                if not _detect_file(p):
                    return False
                seen = True
        return seen
    return _detect_file(path)


def _detect_file(path: Path) -> bool:
    if _is_txt_note(path):
        return path.is_file()
    if not _is_csv(path):
        return False
    try:
        with open_text(path) as fh:
            header = next(csv.reader(fh), None)
    except (OSError, csv.Error, EOFError, UnicodeError):
        return False
    cols = {h.strip().lower() for h in header or ()}
    return bool(cols & set(TEXT_COLUMNS) or cols & PART_TRIGGERS)
