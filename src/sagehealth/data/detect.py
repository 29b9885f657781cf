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


def _module(fmt: str):  # noqa: ANN202
    return importlib.import_module(READERS[fmt][0])


def reader_for(fmt: str) -> Reader:
    """A fresh reader instance for ``fmt``."""
    if fmt not in READERS:
        raise UnknownFormat(f"unknown format {fmt!r}; formats are: {', '.join(FORMATS)}")
    return getattr(_module(fmt), READERS[fmt][1])()


def _detector(fmt: str) -> Callable[[Path], bool]:
    return getattr(_module(fmt), "detect")


def detect_format(path: Path) -> str | None:
    """The format of a file or folder, or None when no reader recognises it."""
    for fmt in READERS:
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

    With an explicit ``fmt`` every path is read by that reader. With ``auto`` a folder that a
    reader recognises as a whole (an OMOP or MIMIC extract, a DICOM or FHIR folder) goes to that
    reader; any other folder is searched one level at a time. A file given by name that no
    reader recognises is an error; one found inside a folder is skipped with a warning.
    """
    units: list[tuple[Reader, Path]] = []
    warnings: list[str] = []
    readers: dict[str, Reader] = {}

    def add(fmt_: str, path: Path) -> None:
        reader = reader_for(fmt_)  # one reader per input: folder-level state stays per folder
        readers[fmt_] = reader
        units.extend((reader, f) for f in reader.files(path) if not _ignored(f))

    def walk(path: Path, explicit: bool) -> None:
        if fmt != "auto":
            add(fmt, path)
            return
        found = detect_format(path)
        if found:
            add(found, path)
        elif path.is_dir():
            for child in sorted(path.iterdir()):
                if not _ignored(child):
                    walk(child, explicit=False)
        elif explicit:
            raise UnknownFormat(
                f"{path}: no reader recognises this file; pass --format "
                f"({', '.join(READERS)})"
            )
        else:
            warnings.append(f"skipped {path}: not a recognised format")

    for p in paths:
        walk(p, explicit=True)
    return units, warnings
