"""Format detection and input planning: which reader ingests which file, in which order."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from sagehealth.data.sources.base import Reader
from sagehealth.errors import UnknownFormat

#: format name -> (module, reader class). Folder formats come first in detection order.
READERS: dict[str, tuple[str, str]] = {
    "omop": ("sagehealth.data.sources.omop", "OmopReader"),
    "mimic": ("sagehealth.data.sources.mimic", "MimicReader"),
    "dicom": ("sagehealth.data.sources.dicom", "DicomReader"),
    "vcf": ("sagehealth.data.sources.vcf", "VcfReader"),
    "fhir": ("sagehealth.data.sources.fhir", "FhirReader"),
    "literature": ("sagehealth.data.sources.literature", "LiteratureReader"),
    "notes": ("sagehealth.data.sources.notes", "NotesReader"),
}
FORMATS = ("auto", *READERS)
#: files that are never records (licences, readmes, checksums, bulk-export logs)
IGNORED_NAMES = {"license", "license.txt", "readme", "readme.md", "readme.txt", "sha256sums.txt",
                 "log.ndjson", ".ds_store"}
IGNORED_PREFIXES = ("license", "readme", "attribution", ".")


def _module(fmt: str):
    return importlib.import_module(READERS[fmt][0])


def reader_for(fmt: str) -> Reader:
    """A fresh reader instance for ``fmt``."""
    if fmt not in READERS:
        raise UnknownFormat(f"unknown format {fmt!r}; formats are: {', '.join(FORMATS)}")
    return getattr(_module(fmt), READERS[fmt][1])()


def _detector(fmt: str) -> Callable[[Path], bool]:
    return _module(fmt).detect


#: formats whose unit is a whole folder (an extract of many tables)
FOLDER_FORMATS = ("omop", "mimic")
#: formats whose records define patients are read first, so that the others can link to them
READ_FIRST = ("fhir", "omop", "mimic")


def detect_format(path: Path) -> str | None:
    """The format of a file (or of an OMOP/MIMIC folder), or None when no reader knows it."""
    for fmt in FOLDER_FORMATS if path.is_dir() else READERS:
        if path.is_file() and fmt in FOLDER_FORMATS:
            continue
        try:
            if _detector(fmt)(path):
                return fmt
        except ModuleNotFoundError:  # an optional reader not installed
            continue
        except (OSError, ValueError, EOFError):
            continue
    return None


def _ignored(path: Path) -> bool:
    name = path.name.lower()
    return name in IGNORED_NAMES or name.startswith(IGNORED_PREFIXES)


def plan_inputs(paths: list[Path], fmt: str = "auto") -> tuple[list[tuple[Reader, Path]], list[str]]:
    """Expand input paths into (reader, file) units in reading order, plus warnings.

    With an explicit ``fmt`` every path is read by that reader (a folder: the files it picks).
    With ``auto`` an OMOP or MIMIC extract folder goes to its reader whole; any other folder is
    walked: each file is detected on its own, the files of one format in one folder go to one
    reader in the order it wants (FHIR: patients first), sub-folders are walked the same way.
    Sources that define patients (FHIR, OMOP, MIMIC) are read before the others. A file given
    by name that no reader recognises is an error; one found inside a folder is a warning.
    """
    units: list[tuple[Reader, Path]] = []
    warnings: list[str] = []

    def add(fmt_: str, files: list[Path]) -> None:
        reader = reader_for(fmt_)  # one reader per folder and format: its state stays local
        units.extend((reader, f) for f in reader.order(files) if not _ignored(f))

    def walk(path: Path, explicit: bool) -> None:
        if fmt != "auto":
            reader = reader_for(fmt)
            files = [f for f in reader.files(path) if not _ignored(f)]
            if not files:
                raise UnknownFormat(f"{path}: the {fmt} reader finds nothing to ingest here")
            units.extend((reader, f) for f in files)
            return
        found = detect_format(path)
        if path.is_dir() and found:
            reader = reader_for(found)
            units.extend((reader, f) for f in reader.files(path) if not _ignored(f))
        elif path.is_dir():
            groups: dict[str, list[Path]] = {}
            children = sorted(path.iterdir())
            for child in children:
                if child.is_file() and not _ignored(child):
                    kind = detect_format(child)
                    if kind:
                        groups.setdefault(kind, []).append(child)
                    else:
                        warnings.append(f"skipped {child}: not a recognised format")
            for kind, files in groups.items():
                add(kind, files)
            for child in children:
                if child.is_dir() and not _ignored(child):
                    walk(child, explicit=False)
        elif found:
            add(found, [path])
        elif explicit:
            raise UnknownFormat(
                f"{path}: no reader recognises this file; pass --format "
                f"({', '.join(READERS)})"
            )
        else:
            warnings.append(f"skipped {path}: not a recognised format")

    for p in paths:
        walk(p, explicit=True)
    first = {f: i for i, f in enumerate(READ_FIRST)}
    units.sort(key=lambda u: first.get(u[0].name, len(first)))  # stable: keeps each reader's order
    return units, warnings
