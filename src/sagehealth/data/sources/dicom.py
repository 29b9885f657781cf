"""DICOM files -> imaging_studies, imaging_series, imaging_instances (+ documents for SR).

One file is one record. Metadata is read with ``stop_before_pixels``; the thumbnail decodes only
the first frame (:func:`pydicom.pixels.pixel_array` with ``index=0``), so memory stays bounded
whatever the size of a multi-frame file. Rows get their ids from the DICOM UIDs, so the instances
of one study share the study and series row ids (the pipeline de-duplicates them).

Outcomes of a file:

* a DICOMDIR (media index) -> a record with no rows (accounted, nothing to store);
* not DICOM, truncated, or missing a key UID / with an unparsable value -> :class:`Bad`, the
  locator names the tag (``(0020,000D)``) or ``file``;
* otherwise a record; pixels that do not decode leave ``pixel_status = "undecodable: ..."``;
* an SR (Structured Report) also yields a ``documents`` row of kind ``imaging_report`` whose text
  is the flattened content tree (``concept: value`` lines), sections named after the top-level
  containers.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..model import row_id
from .base import Bad, BadValue, Item, ReadContext, Reader, Record, Row, parse_datetime, to_int

#: Media Storage Directory Storage: the SOP class of a DICOMDIR.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
THUMB_MAX = 128
MAGIC_OFFSET = 128
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}

#: key UIDs: keyword -> tag path used as the locator when missing.
REQUIRED_UIDS = {
    "SOPInstanceUID": "(0008,0018)",
    "StudyInstanceUID": "(0020,000D)",
    "SeriesInstanceUID": "(0020,000E)",
}
#: integer attributes mapped to columns: keyword -> tag path.
INT_TAGS = {
    "SeriesNumber": "(0020,0011)",
    "InstanceNumber": "(0020,0013)",
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
    "NumberOfFrames": "(0028,0008)",
}
#: date/time pairs: (date keyword, time keyword, tag path of the date).
STUDY_DT = ("StudyDate", "StudyTime", "(0008,0020)")
CONTENT_DT = ("ContentDate", "ContentTime", "(0008,0023)")
#: explicit-VR VRs that use a 2-byte reserved field and a 4-byte length.
LONG_VRS = {
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"
}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


# -- file discovery -----------------------------------------------------------------------


def _has_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAGIC_OFFSET + 4)
    except OSError:
        return False
    return head[MAGIC_OFFSET : MAGIC_OFFSET + 4] == b"DICM"


def _is_candidate(path: Path) -> bool:
    return path.suffix.lower() == ".dcm" or _has_magic(path)


def detect(path: Path) -> bool:
    """A ``.dcm`` file, a file with the DICM marker, or a folder holding one (first 200 files)."""
    path = Path(path)
    if path.is_file():
        return _is_candidate(path)
    if path.is_dir():
        for i, p in enumerate(path.rglob("*")):
            if i >= 200:
                break
            if p.is_file() and _is_candidate(p):
                return True
    return False


# -- truncation check ---------------------------------------------------------------------


class _Truncated(Exception):
    """The file ends before an element it declares."""


class _Walker:
    """Walks element headers (seeking over values) to check that every declared length fits."""

    def __init__(self, fh: IO[bytes], size: int, little: bool) -> None:
        self.fh, self.size = fh, size
        self.e = "<" if little else ">"

    def _read(self, n: int, what: str) -> bytes:
        b = self.fh.read(n)
        if len(b) < n:
            raise _Truncated(f"file ends inside {what}")
        return b

    def _skip(self, n: int, tag: int) -> None:
        end = self.fh.tell() + n
        if end > self.size:
            raise _Truncated(
                f"element {_tagstr(tag)} declares {n} bytes but the file ends "
                f"{end - self.size} bytes short"
            )
        self.fh.seek(end)

    def elements(self, implicit: bool, until_item_end: bool = False) -> None:
        """Walk data elements to EOF (top level) or to an item delimiter (nested item)."""
        e = self.e
        while True:
            head = self.fh.read(4)
            if not head and not until_item_end:
                return
            if len(head) < 4:
                raise _Truncated("file ends inside an element tag")
            g, el = struct.unpack(e + "HH", head)
            tag = (g << 16) | el
            what = f"element {_tagstr(tag)}"
            if g == 0xFFFE:
                (length,) = struct.unpack(e + "I", self._read(4, "an item header"))
                if tag == ITEM_END and until_item_end:
                    return
                self._skip(0 if length == UNDEFINED else length, tag)
                continue
            vr = b""
            if implicit:
                (length,) = struct.unpack(e + "I", self._read(4, what))
            else:
                vr = self._read(2, what)
                if vr in LONG_VRS:
                    self._read(2, what)
                    (length,) = struct.unpack(e + "I", self._read(4, what))
                else:
                    (length,) = struct.unpack(e + "H", self._read(2, what))
            if length == UNDEFINED:
                # PS3.5 6.2.2: an undefined-length UN holds implicit VR little endian items
                self.items(tag, implicit or vr == b"UN")
            else:
                self._skip(length, tag)

    def items(self, parent: int, implicit: bool) -> None:
        """Walk the items of an undefined-length element up to its sequence delimiter."""
        e = self.e
        while True:
            head = self.fh.read(8)
            if len(head) < 8:
                raise _Truncated(f"file ends inside {_tagstr(parent)} before its delimiter")
            g, el, length = struct.unpack(e + "HHI", head)
            tag = (g << 16) | el
            if tag == SEQ_END:
                return
            if tag != ITEM:
                return  # not a well-formed item list: no verdict, pydicom has read it
            if length == UNDEFINED:
                self.elements(implicit, until_item_end=True)
            else:
                self._skip(length, parent)


def _tag_of(head: bytes, little: bool) -> int:
    g, el = struct.unpack("<HH" if little else ">HH", head)
    return (g << 16) | el


def _tagstr(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _check_complete(fh: IO[bytes], size: int, little: bool) -> None:
    """Raise :class:`_Truncated` when the data set runs past EOF.

    The VR encoding is sniffed from the first element (as pydicom does), since some files
    declare explicit VR and are written implicit.
    """
    start = _dataset_start(fh)
    fh.seek(start)
    first = fh.read(6)
    implicit = not (len(first) == 6 and first[4:6].isalpha() and first[4:6].isupper())
    fh.seek(start)
    _Walker(fh, size, little).elements(implicit)


def _dataset_start(fh: IO[bytes]) -> int:
    """Offset of the data set: after the preamble and the (explicit little endian) group 2."""
    fh.seek(0)
    pos = MAGIC_OFFSET + 4 if fh.read(MAGIC_OFFSET + 4)[MAGIC_OFFSET:] == b"DICM" else 0
    fh.seek(pos)
    while True:
        head = fh.read(8)
        if len(head) < 8 or struct.unpack("<H", head[:2])[0] != 0x0002:
            return pos
        vr = head[4:6]
        if vr in LONG_VRS:
            ext = fh.read(4)
            if len(ext) < 4:
                return pos
            length = struct.unpack("<I", ext)[0]
            pos += 12 + length
        else:
            pos += 8 + struct.unpack("<H", head[6:8])[0]
        fh.seek(pos)


# -- value helpers ------------------------------------------------------------------------


def _str(ds: Dataset, keyword: str) -> str | None:
    v = ds.get(keyword)
    if v is None:
        return None
    s = str(v).strip().strip("\x00")
    return s or None


def _int(ds: Dataset, keyword: str) -> int | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        v = v[0] if len(v) else None
    return to_int(str(v).strip() if v is not None else None, f"{INT_TAGS[keyword]} {keyword}")


def _datetime(ds: Dataset, keys: tuple[str, str, str]) -> Any:
    """DICOM DA (+TM, +TimezoneOffsetFromUTC) -> UTC datetime; BadValue names the tag."""
    dkey, tkey, tag = keys
    d = (_str(ds, dkey) or "").replace(".", "").replace("-", "")
    if not d:
        return None
    if len(d) != 8 or not d.isdigit():
        raise BadValue(f"{tag} {dkey}: {d!r} is not a DICOM date (YYYYMMDD)")
    iso = f"{d[:4]}-{d[4:6]}-{d[6:8]}"
    t = (_str(ds, tkey) or "").replace(":", "")
    if t:
        hh, mm, ss = t[:2], t[2:4] or "00", t[4:6] or "00"
        frac = t[7:] if len(t) > 7 and t[6] == "." else ""
        iso += f"T{hh}:{mm}:{ss}" + (f".{frac}" if frac else "")
        tz = _str(ds, "TimezoneOffsetFromUTC")
        if tz and len(tz) == 5:
            iso += tz
    return parse_datetime(iso, f"{tag} {dkey}/{tkey}")


def _code(item: Dataset, keyword: str) -> dict[str, str | None] | None:
    seq = item.get(keyword)
    if not seq:
        return None
    c = seq[0]
    return {
        "system": _str(c, "CodingSchemeDesignator"),
        "code": _str(c, "CodeValue") or _str(c, "LongCodeValue") or _str(c, "URNCodeValue"),
        "display": _str(c, "CodeMeaning"),
    }


# -- thumbnails ---------------------------------------------------------------------------


def _to_uint8(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Window (VOI LUT when present) and normalise one frame to 8 bits."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = (_str(ds, "PhotometricInterpretation") or "").upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif arr.ndim == 2:
        if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
            arr = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            try:
                arr = apply_voi_lut(arr, ds, index=0)
            except Exception:  # a malformed window: fall back to min-max
                pass
    a = arr.astype(np.float32, copy=False)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    out = np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) * (255.0 / (hi - lo)))
    out = np.nan_to_num(out).clip(0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _thumbnail(src: Any, ds: Dataset, ts: str | None) -> tuple[str, bytes | None]:
    """Decode the first frame of ``src`` into a PNG of at most 128 px; (pixel_status, png)."""
    from PIL import Image
    from pydicom.pixels import pixel_array

    try:
        kwargs: dict[str, Any] = {"index": 0}
        if ts and not isinstance(src, Dataset):
            kwargs["transfer_syntax_uid"] = UID(ts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pixel_array(src, **kwargs)
            if arr.ndim > 3 or arr.ndim < 2:
                raise ValueError(f"unexpected frame shape {arr.shape}")
            step = max(1, max(arr.shape[:2]) // (THUMB_MAX * 2))
            arr = np.ascontiguousarray(arr[::step, ::step])
            img8 = _to_uint8(arr, ds)
        if img8.ndim == 3 and img8.shape[2] not in (3, 4):
            img8 = img8[:, :, 0]
        img = Image.fromarray(img8)
        img.thumbnail((THUMB_MAX, THUMB_MAX))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return "decoded", buf.getvalue()
    except Exception as exc:  # any decoder failure leaves the metadata usable
        reason = re.sub(r" at 0x[0-9a-f]+", "", " ".join(str(exc).split()))[:300]
        reason = reason or type(exc).__name__
        return f"undecodable: {reason}", None


# -- structured reports -------------------------------------------------------------------


def _sr_value(item: Dataset) -> str:
    vt = _str(item, "ValueType") or ""
    if vt == "TEXT":
        return (_str(item, "TextValue") or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if vt == "CODE":
        c = _code(item, "ConceptCodeSequence")
        return (c or {}).get("display") or (c or {}).get("code") or ""
    if vt == "NUM":
        mv = item.get("MeasuredValueSequence")
        if not mv:
            return ""
        units = _code(mv[0], "MeasurementUnitsCodeSequence") or {}
        num = _str(mv[0], "NumericValue") or ""
        unit = units.get("code") or units.get("display") or ""  # UCUM code, e.g. "cm"
        return f"{num} {unit}".strip() if unit != "1" else num
    if vt in ("DATE", "TIME", "DATETIME", "UIDREF", "PNAME"):
        key = {"DATE": "Date", "TIME": "Time", "DATETIME": "DateTime", "UIDREF": "UID"}
        return _str(item, key.get(vt, "PersonName")) or ""
    if vt in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        ref = item.get("ReferencedSOPSequence")
        uid = _str(ref[0], "ReferencedSOPInstanceUID") if ref else None
        return f"[{vt.lower()} {uid}]" if uid else f"[{vt.lower()}]"
    if vt in ("SCOORD", "SCOORD3D", "TCOORD"):
        kind = _str(item, "GraphicType") or _str(item, "TemporalRangeType")
        return f"[{vt.lower()} {kind}]" if kind else f"[{vt.lower()}]"
    return ""


def _sr_lines(seq: Any, depth: int, out: list[str]) -> None:
    for item in seq or ():
        name = (_code(item, "ConceptNameCodeSequence") or {}).get("display")
        value = _sr_value(item)
        if not name and not value and "ReferencedContentItemIdentifier" in item:
            ids = ".".join(str(int(x)) for x in item.ReferencedContentItemIdentifier)
            value = f"(see item {ids})"
        if name and value:
            line = f"{name}: {value}"
        else:
            line = f"{name}:" if name and item.get("ValueType") == "CONTAINER" else (name or value)
        if line:
            out.append("  " * depth + line.replace("\n", "\n" + "  " * (depth + 1)))
        _sr_lines(item.get("ContentSequence"), depth + 1 if line else depth, out)


def _sr_text(ds: Dataset) -> tuple[str, list[dict[str, Any]]]:
    """Flatten an SR content tree; top-level containers become sections."""
    lines: list[str] = []
    sections: list[dict[str, Any]] = []
    pos = 0

    def emit(new: list[str]) -> None:
        nonlocal pos
        for ln in new:
            lines.append(ln)
            pos += len(ln) + 1

    for n, item in enumerate(ds.get("ContentSequence") or (), 1):
        chunk: list[str] = []
        _sr_lines([item], 0, chunk)
        if item.get("ValueType") == "CONTAINER":
            name = (_code(item, "ConceptNameCodeSequence") or {}).get("display") or f"Container {n}"
            start = pos
            emit(chunk)
            sections.append({"name": name, "start": start, "end": max(start, pos - 1)})
        else:
            emit(chunk)
    return "\n".join(lines), sections


def _sr_author(ds: Dataset) -> str | None:
    ver = ds.get("VerifyingObserverSequence")
    if ver:
        return _str(ver[0], "VerifyingObserverName")
    for item in ds.get("ContentSequence") or ():
        if item.get("ValueType") == "PNAME" and item.get("RelationshipType") == "HAS OBS CONTEXT":
            return _str(item, "PersonName")
    return None


# -- the reader ---------------------------------------------------------------------------


class DicomReader(Reader):
    """DICOM Part 10 files (and preamble-less data sets) -> imaging tables."""

    name = "dicom"
    version = "1"
    source_system = "dicom"

    def files(self, path: Path) -> list[Path]:
        path = Path(path)
        if path.is_file():
            return [path]
        return sorted(p for p in path.rglob("*") if p.is_file() and _is_candidate(p))

    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        path = Path(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                item = self._read_file(path, ctx)
            yield item
        except BadValue as exc:
            msg = str(exc)
            loc = msg.split(" ", 1)[0] if msg.startswith("(") else "file"
            yield Bad(loc, msg, None)
        except _Truncated as exc:
            yield Bad("file", f"truncated DICOM file: {exc}", None)
        except Exception as exc:  # unreadable file: account it, do not stop the run
            yield Bad("file", f"unreadable DICOM file: {type(exc).__name__}: {exc}", None)

    # one file -> one item
    def _read_file(self, path: Path, ctx: ReadContext) -> Item:
        size = path.stat().st_size
        ctx.on_bytes(size)
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
                forced = False
            except InvalidDicomError:
                fh.seek(0)
                ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
                forced = True
            meta = getattr(ds, "file_meta", None) or Dataset()
            sop_class = _str(meta, "MediaStorageSOPClassUID") or _str(ds, "SOPClassUID")
            if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
                return Record("file", [], content=None)
            if forced and not any(dictionary_has_tag(t) for t in ds.keys()):
                return Bad(
                    "file",
                    "not a DICOM file: no DICM marker at byte 128 and no known DICOM element "
                    "at its start",
                    _head_text(path),
                )
            head = fh.read(4)  # stop_before_pixels leaves fh at the pixel data element
            ts = _str(meta, "TransferSyntaxUID")
            implicit, little = ds.original_encoding
            if implicit is None:
                implicit, little = True, True
            if not ts or forced:
                ts = _encoding_ts(bool(implicit), bool(little))
            deflated = ts == pydicom.uid.DeflatedExplicitVRLittleEndian
            has_pixels = len(head) == 4 and _tag_of(head, bool(little)) in PIXEL_TAGS
            if not deflated:
                _check_complete(fh, size, bool(little))
        for key, tag in REQUIRED_UIDS.items():
            if not _str(ds, key):
                raise BadValue(f"{tag} {key}: missing (required to identify the instance)")

        if deflated:  # pydicom inflates into memory anyway; read the whole data set
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full = pydicom.dcmread(path)
            has_pixels = any(t in full for t in PIXEL_TAGS)
            src: Any = full
        else:
            src = str(path)

        return self._record(path, ds, ctx, ts, has_pixels, src, forced)

    def _record(
        self, path: Path, ds: Dataset, ctx: ReadContext, ts: str, has_pixels: bool,
        src: Any, forced: bool,
    ) -> Record:
        study_uid, series_uid, sop_uid = (
            str(_str(ds, k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        )
        source_pid = _str(ds, "PatientID")
        patient_id = ctx.find_patient(source_pid) if source_pid else None
        ints = {k: _int(ds, k) for k in INT_TAGS}
        modality = _str(ds, "Modality")
        study_date = _datetime(ds, STUDY_DT)
        if has_pixels:
            status, thumb = _thumbnail(src, ds, ts if forced else None)
        else:
            status, thumb = "no_pixels", None
        sys_ = self.source_system
        in_study = ds.get("ModalitiesInStudy")
        if isinstance(in_study, str):  # VM 1: pydicom gives a str, not a list
            in_study = [in_study]
        modalities = [str(m) for m in (in_study or ([modality] if modality else [])) if m]
        rows: list[tuple[str, Row]] = [
            ("imaging_studies", {
                "row_id": row_id("imaging_studies", study_uid),
                "study_uid": study_uid,
                "patient_id": patient_id,
                "source_patient_id": source_pid,
                "accession": _str(ds, "AccessionNumber"),
                "date": study_date,
                "description": _str(ds, "StudyDescription"),
                "modalities": [str(m) for m in modalities if str(m).strip()],
                "referring_physician": _str(ds, "ReferringPhysicianName"),
                "institution": _str(ds, "InstitutionName"),
                "source_system": sys_,
            }),
            ("imaging_series", {
                "row_id": row_id("imaging_series", series_uid),
                "series_uid": series_uid,
                "study_uid": study_uid,
                "patient_id": patient_id,
                "modality": modality,
                "body_part": _str(ds, "BodyPartExamined"),
                "description": _str(ds, "SeriesDescription"),
                "series_number": ints["SeriesNumber"],
                "source_system": sys_,
            }),
            ("imaging_instances", {
                "row_id": row_id("imaging_instances", sop_uid),
                "sop_instance_uid": sop_uid,
                "series_uid": series_uid,
                "study_uid": study_uid,
                "patient_id": patient_id,
                "sop_class_uid": _str(ds, "SOPClassUID"),
                "instance_number": ints["InstanceNumber"],
                "rows": ints["Rows"],
                "columns": ints["Columns"],
                "frames": ints["NumberOfFrames"] or (1 if has_pixels else None),
                "photometric": _str(ds, "PhotometricInterpretation"),
                "transfer_syntax": ts,
                "pixel_status": status,
                "thumbnail": thumb,
                "file_uri": ctx.source_uri or path.resolve().as_uri(),
                "source_system": sys_,
            }),
        ]
        if modality == "SR" and "ContentSequence" in ds:
            rows.append(("documents", self._sr_document(ds, sop_uid, patient_id, study_date)))
        return Record("file", rows, content=None)

    def _sr_document(
        self, ds: Dataset, sop_uid: str, patient_id: str | None, study_date: Any
    ) -> Row:
        text, sections = _sr_text(ds)
        title_code = _code(ds, "ConceptNameCodeSequence")
        verified = _str(ds, "VerificationFlag") == "VERIFIED"
        complete = _str(ds, "CompletionFlag") == "COMPLETE"
        return {
            "row_id": row_id("documents", "dicom-sr", sop_uid),
            "document_id": sop_uid,
            "patient_id": patient_id,
            "encounter_id": None,
            "kind": "imaging_report",
            "title": (title_code or {}).get("display") or _str(ds, "SeriesDescription"),
            "code": title_code,
            "date": _datetime(ds, CONTENT_DT) or study_date,
            "author": _sr_author(ds),
            "status": "final" if verified and complete else "preliminary",
            "content_type": "text/plain",
            "text": text,
            "sections": sections,
            "source_system": self.source_system,
        }


def _encoding_ts(implicit: bool, little: bool) -> str:
    if implicit:
        return pydicom.uid.ImplicitVRLittleEndian
    return pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian


def _head_text(path: Path, n: int = 200) -> str:
    with open(path, "rb") as fh:
        return fh.read(n).decode("utf-8", errors="replace")
