"""Output folders of exports and trained models: a new (or empty) folder, filled in a hidden
temporary sibling and renamed into place at the end, so a killed run leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from sagehealth.errors import QueryError


def check_new(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path; a clear error when it exists and is not an empty folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QueryError(f"{out} exists and is not empty: give a new folder")
    return out


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; renamed to ``out`` when the block ends
    without an error, removed when it does not."""
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
