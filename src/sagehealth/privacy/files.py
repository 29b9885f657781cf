"""De-identified copies of source files for the research zone: DICOM and VCF.

- DICOM: the DICOM PS3.15 basic application level confidentiality profile (the action table of
  the standard, as shipped by the package ``dicom-anonymizer``, BSD-3) applied to every element
  of every item of every sequence, at any depth, then SAGE-Health's keyed values: every UID
  that is not one of the standard's (SOP classes, transfer syntaxes, ...) becomes the keyed
  ``2.25.`` UID that ``research_imaging_*`` uses, wherever it appears, so references between
  exported files (a ReferencedSOPInstanceUID, a predecessor document) still resolve; person
  names are blanked and dates, times and datetimes get the profile's dummy values at any depth;
  PatientID and PatientName become the patient's research pseudonym, and PatientIdentityRemoved
  / DeidentificationMethod say what was done. Private tags are removed; pixel data is kept
  (burned-in text is not detected yet).
- VCF: an allow-list of header lines (fileformat, INFO, FORMAT, FILTER, ALT, contig with its
  standard keys, the basename of the reference), since command lines, sample and pedigree
  lines, dates and custom keys name people, paths and sites; file paths left inside kept lines
  become their basename. Sample ids in ``#CHROM`` become the keyed ids of ``research_variants``,
  also where they appear in the header, the ID or the INFO column. Streamed line by line after
  the header (gzip in, gzip out).
"""

from __future__ import annotations

import gzip
import io
import re
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Callable

from sagehealth.privacy.structured import RowDeidentifier

UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

#: file meta elements that name the sending site or carry its private data
DICOM_META_DROP = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
#: profile actions on a sequence: X removes it, Z empties it (no items), D replaces every value
#: inside by a dummy; the rest (U*, K, not listed) keep it and apply the profile to its items
_SQ_EMPTY = ("empty", "delete_or_empty")
_SQ_DUMMY = ("replace", "empty_or_replace", "delete_or_replace", "delete_or_empty_or_replace")
#: attributes whose values are blanked wherever else they turn up (a site name copied into a
#: station name or a manufacturer); person names (VR PN) are too
DICOM_SECRET_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName", "InstitutionAddress",
                         "InstitutionalDepartmentName", "DeviceSerialNumber", "StationName")
_DICOM_TEXT_VRS = ("AE", "LO", "LT", "SH", "ST", "UC", "UT")

#: the only VCF header lines kept: they describe the data, not who made it, where or when
VCF_KEEP = ("##fileformat=", "##INFO=", "##FORMAT=", "##FILTER=", "##ALT=", "##contig=", "##reference=")
VCF_CONTIG_KEYS = ("ID", "length", "assembly", "md5", "species", "taxonomy")
_VCF_PAIR = re.compile(r'([^=,<>"]+)=("(?:[^"\\]|\\.)*"|[^,>]*)')
#: an absolute path, home path, Windows path or URL (not "0/1" or "A/B" inside a word)
_PATH = re.compile(r'(?<![\w.~-])(?:[A-Za-z][A-Za-z0-9+.-]*://[^\s",<>;()]*|~?/[^\s",<>;()/]+(?:/[^\s",<>;()]*)*'
                   r'|[A-Za-z]:\\[^\s",<>;()]*)')
#: what separates values inside the ID and INFO columns (and header lines)
_VCF_SEP = re.compile(r'[\s;=,|:&"<>()\[\]{}]')
_VCF_TOKEN = re.compile(r'[^\s;=,|:&"<>()\[\]{}]+')


@lru_cache(maxsize=1)
def _dicom_profile() -> tuple[dict[int, Callable[..., None]], list[tuple[tuple[int, ...], Callable[..., None]]]]:
    """The basic profile's action per tag, and per repeating-group mask (curves, overlays)."""
    from dicomanonymizer.simpledicomanonymizer import initialize_actions_2024b
    from pydicom.tag import Tag

    actions = initialize_actions_2024b()
    return ({Tag(t): a for t, a in actions.items() if len(t) == 2},
            [(t, a) for t, a in actions.items() if len(t) == 4])


def _dicom_action(tag: Any) -> Callable[..., None] | None:
    exact, masked = _dicom_profile()
    if tag in exact:
        return exact[tag]
    for (group, elem, gmask, emask), action in masked:
        if tag.group & gmask == group & gmask and tag.element & emask == elem & emask:
            return action
    return None


def _standard_uid(uid: str) -> bool:
    """A UID of the standard (SOP class, transfer syntax, coding of the standard): names no
    patient, study or site, and readers need it unchanged."""
    from pydicom.uid import UID_dictionary

    return uid in UID_dictionary or uid.startswith("1.2.840.10008.")


def _clean_dicom(ds: Any, deid: RowDeidentifier, dummy: bool = False) -> None:
    """Apply the profile to one dataset and, recursively, to every item of its sequences;
    ``dummy``: inside a sequence the profile replaces (D), where every value becomes a dummy."""
    from dicomanonymizer.simpledicomanonymizer import replace_date_time_element, replace_element

    def keyed(uid: Any) -> str:
        uid = str(uid or "")
        return uid if not uid or _standard_uid(uid) else deid.uid(uid)

    for tag in list(ds.keys()):
        el = ds[tag]
        action = _dicom_action(tag)
        name = getattr(action, "__name__", "")
        if tag.is_private or name == "delete":
            del ds[tag]
        elif el.VR == "SQ":
            if name in _SQ_EMPTY:
                el.value = []
            for item in el.value or []:
                _clean_dicom(item, deid, dummy or name in _SQ_DUMMY)
        elif el.VR == "UI" and tag != 0x00020010:  # the same keyed UID everywhere (not the
            # transfer syntax, which says how the file is encoded), so references between files hold
            el.value = [keyed(u) for u in el.value] if el.VM > 1 else keyed(el.value)
        elif el.VR == "PN":
            el.value = ""
        elif el.VR in ("DA", "DT", "TM"):
            replace_date_time_element(el)
        elif dummy or action is not None:
            try:
                replace_element(el) if dummy else action(ds, tag)  # type: ignore[misc]
            except NotImplementedError:  # a VR the package has no dummy for (OW, AT, ...)
                del ds[tag]


def _dicom_secrets(ds: Any) -> set[str]:
    """The person names and identifying attribute values of a dataset, at any depth."""
    found: set[str] = set()

    def visit(_: Any, el: Any) -> None:
        if el.VR == "PN" or el.keyword in DICOM_SECRET_KEYWORDS:
            values = el.value if el.VM > 1 else [el.value]
            found.update(s for v in values if (s := str(v or "").strip()) and s.strip("^"))

    ds.walk(visit)
    return found


def _blank_copies(ds: Any, secrets: set[str]) -> None:
    """Blank text elements, at any depth, that the profile keeps but that hold an identifying
    value verbatim."""
    def visit(_: Any, el: Any) -> None:
        if el.VR in _DICOM_TEXT_VRS and el.value:
            values = el.value if el.VM > 1 else [el.value]
            if any(str(v).strip() in secrets for v in values):
                el.value = ""

    ds.walk(visit)


def deidentify_dicom(src: Path, dst: Path, deid: RowDeidentifier, *,
                     find_patient: Any = None) -> dict[str, str]:
    """Write a de-identified copy of one DICOM file; returns the keyed ids it was given."""
    import pydicom

    ds = pydicom.dcmread(src, force=True)  # force: also files without the Part 10 preamble
    source_pid = str(ds.get("PatientID") or "")
    patient = (find_patient(source_pid) if find_patient else None) or source_pid
    uids = {tag: str(ds.get(tag)) for tag in UID_TAGS if ds.get(tag)}
    if "SOPInstanceUID" not in uids:
        raise ValueError(f"{src.name}: not a DICOM instance (no SOP Instance UID)")
    secrets = _dicom_secrets(ds)
    _clean_dicom(ds, deid)
    _blank_copies(ds, secrets)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in DICOM_META_DROP:
            if tag in meta:
                del meta[tag]
        _clean_dicom(meta, deid)
    psn = deid.pseudonym(patient) if patient else "psn_unknown"
    ds.PatientID = psn
    ds.PatientName = psn
    for tag, value in uids.items():
        setattr(ds, tag, deid.uid(value))  # the same keyed UID as in the research tables
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"  # every date, time, datetime
    ds.DeidentificationMethod = "PS3.15 basic profile at every depth; SAGE-Health keyed ids"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return {"PatientID": psn, **{tag: str(ds.get(tag)) for tag in uids}}


def _open_in(path: Path) -> IO[str]:
    raw = open(path, "rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", errors="replace")
    raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def _basename(path: str) -> str:
    """The last part of a path or URL: a file name without the folders (user, project, sample)."""
    parts = [p for p in re.split(r"[/\\]", path.strip().strip('"')) if p]
    return parts[-1] if parts else ""


def _vcf_header_line(line: str) -> str | None:
    """An allow-listed header line with only what describes the data, or None to drop it."""
    if not line.startswith(VCF_KEEP):
        return None
    if line.startswith("##reference="):
        value = line.split("=", 1)[1].strip()
        return None if value.startswith("<") or not _basename(value) else f"##reference={_basename(value)}"
    if line.startswith("##contig="):
        inner = line.split("=", 1)[1].strip().removeprefix("<").removesuffix(">")
        pairs = [(k.strip(), v) for k, v in _VCF_PAIR.findall(inner) if k.strip() in VCF_CONTIG_KEYS]
        if not any(k == "ID" for k, _ in pairs):
            return None
        line = "##contig=<" + ",".join(f"{k}={v}" for k, v in pairs) + ">"
    return _PATH.sub(lambda m: _basename(m.group(0)), line.rstrip("\r\n"))


def _sample_scrubber(mapping: dict[str, str]) -> Callable[[str], str] | None:
    """A function replacing sample ids inside text by their keyed ids, as whole tokens or parts
    of tokens cut at non-alphanumerics (``S12`` in ``S12_run`` but not in ``S123``). Set look-ups
    per token, since a regex of thousands of ids costs milliseconds per line. Ids too short to
    tell from values (``S1``, ``42``) are left out."""
    ids = {i: k for i, k in mapping.items() if (len(i) >= 3 and not i.isdigit()) or len(i) >= 6}
    odd = [(i, k) for i, k in ids.items() if _VCF_SEP.search(i)]  # ids with separators in them
    if not ids:
        return None
    shortest = min(map(len, ids))

    def token(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok in ids or len(tok) <= shortest or tok.isalnum():
            return ids.get(tok, tok)
        cuts = [i for i, c in enumerate(tok) if not c.isalnum()]
        starts, ends = [0] + [i + 1 for i in cuts], cuts + [len(tok)]
        out, pos = [], 0
        for a in starts:
            if a < pos:
                continue
            b = next((b for b in reversed(ends) if b > a and tok[a:b] in ids), None)
            if b is not None:
                out += [tok[pos:a], ids[tok[a:b]]]
                pos = b
        return "".join(out) + tok[pos:]

    def scrub(text: str) -> str:
        for i, k in odd:
            text = text.replace(i, k)
        return _VCF_TOKEN.sub(token, text)

    return scrub


def deidentify_vcf(src: Path, dst: Path, deid: RowDeidentifier) -> dict[str, str]:
    """Write a copy of a VCF with keyed sample ids and allow-listed header lines; returns
    original -> keyed sample ids only to the caller (never written anywhere)."""
    mapping: dict[str, str] = {}
    dst.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if dst.name.endswith((".gz", ".bgz")) else open
    header: list[str] = []  # held back until #CHROM names the samples to scrub from it
    scrub: Callable[[str], str] | None = None

    with _open_in(src) as fin, opener(dst, "wt", encoding="utf-8") as fout:
        def flush() -> None:
            fout.writelines((scrub(h) if scrub else h) + "\n" for h in header)
            header.clear()

        for line in fin:
            if line.startswith("##"):
                kept = _vcf_header_line(line)
                if kept is not None:
                    header.append(kept)
                continue
            if line.startswith("#CHROM"):
                cols = line.rstrip("\r\n").split("\t")
                for i in range(9, len(cols)):
                    mapping[cols[i]] = deid.key_of("sample_id", cols[i])
                    cols[i] = mapping[cols[i]]
                scrub = _sample_scrubber(mapping)
                flush()
                fout.write("\t".join(cols) + "\n")
                continue
            if header:
                flush()
            if scrub is not None:  # ID and INFO; the genotype columns hold no ids
                cols = line.split("\t", 8)
                if len(cols) > 7:
                    cols[2], cols[7] = scrub(cols[2]), scrub(cols[7])
                    line = "\t".join(cols)
            fout.write(line)
        flush()
    return mapping


def deidentify_files(paths: list[Path], out: Path, deid: RowDeidentifier,
                     find_patient: Any = None) -> list[dict[str, str]]:
    """De-identified copies of the DICOM and VCF files among ``paths`` (folders walked) in
    ``out``, named by a keyed hash of their source path; one summary line per file."""
    from sagehealth.data.sources import dicom as dicom_src
    from sagehealth.data.sources import vcf as vcf_src

    done: list[dict[str, str]] = []
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()))]
    for f in files:
        name = deid.key_of("file", str(f.resolve()))
        if vcf_src.detect(f):
            suffix = ".vcf.gz" if f.name.endswith((".gz", ".bgz")) else ".vcf"
            deidentify_vcf(f, out / f"{name}{suffix}", deid)
            done.append({"source": f.name, "kind": "vcf", "output": f"{name}{suffix}"})
        elif dicom_src.detect(f):
            try:
                deidentify_dicom(f, out / f"{name}.dcm", deid, find_patient=find_patient)
            except Exception as exc:  # noqa: BLE001 - a file that pydicom cannot read
                done.append({"source": f.name, "kind": "dicom", "error": f"{type(exc).__name__}: {exc}"})
                continue
            done.append({"source": f.name, "kind": "dicom", "output": f"{name}.dcm"})
    return done
