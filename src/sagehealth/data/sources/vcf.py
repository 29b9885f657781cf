"""VCF (plain, gzip or bgzip) -> variants.

Each data line is one record. Its rows: one ``variants`` row per (sample, alt allele) where the
sample's genotype carries that alt allele (genotype, zygosity het/hom_alt/hemi, depth from the
sample's ``DP`` or ``INFO/DP``); a sites-only file (no samples, or no ``GT``) gives one row per
alt allele with ``sample_id`` None. Gene, consequence, impact and HGVS come from snpEff ``ANN``
(or the older ``EFF``) or VEP ``CSQ`` (fields named by the header's ``Format:``), taking the
most severe annotation of the row's allele.

Robustness: htslib (cyvcf2) stops a whole file at the first malformed line, so the reader reads
the text itself, checks the fixed columns (column count, POS, REF, ALT, QUAL) and hands only
good lines to cyvcf2 (``Writer.variant_from_string``) for the genotypes; a bad line becomes a
:class:`Bad` at ``line:N`` (1-based, header lines counted) and the rest of the file goes on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..model import row_id
from .base import Bad, BadValue, Item, ReadContext, Reader, Record, Row, clip, open_text, to_float

SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz")
IMPACT_RANK = {"HIGH": 0, "MODERATE": 1, "LOW": 2, "MODIFIER": 3}

#: Sequence Ontology consequence terms, most severe first (Ensembl VEP order), with impact.
SO_TERMS: list[tuple[str, str]] = [
    ("transcript_ablation", "HIGH"), ("splice_acceptor_variant", "HIGH"),
    ("splice_donor_variant", "HIGH"), ("stop_gained", "HIGH"), ("frameshift_variant", "HIGH"),
    ("stop_lost", "HIGH"), ("start_lost", "HIGH"), ("transcript_amplification", "HIGH"),
    ("feature_elongation", "HIGH"), ("feature_truncation", "HIGH"),
    ("inframe_insertion", "MODERATE"), ("inframe_deletion", "MODERATE"),
    ("missense_variant", "MODERATE"), ("protein_altering_variant", "MODERATE"),
    ("splice_donor_5th_base_variant", "LOW"), ("splice_region_variant", "LOW"),
    ("splice_donor_region_variant", "LOW"), ("splice_polypyrimidine_tract_variant", "LOW"),
    ("incomplete_terminal_codon_variant", "LOW"), ("start_retained_variant", "LOW"),
    ("stop_retained_variant", "LOW"), ("synonymous_variant", "LOW"),
    ("coding_sequence_variant", "MODIFIER"), ("mature_miRNA_variant", "MODIFIER"),
    ("5_prime_UTR_variant", "MODIFIER"), ("3_prime_UTR_variant", "MODIFIER"),
    ("non_coding_transcript_exon_variant", "MODIFIER"), ("intron_variant", "MODIFIER"),
    ("NMD_transcript_variant", "MODIFIER"), ("non_coding_transcript_variant", "MODIFIER"),
    ("coding_transcript_variant", "MODIFIER"), ("upstream_gene_variant", "MODIFIER"),
    ("downstream_gene_variant", "MODIFIER"), ("TFBS_ablation", "MODIFIER"),
    ("TFBS_amplification", "MODIFIER"), ("TF_binding_site_variant", "MODIFIER"),
    ("regulatory_region_ablation", "MODERATE"), ("regulatory_region_amplification", "MODIFIER"),
    ("regulatory_region_variant", "MODIFIER"), ("intergenic_variant", "MODIFIER"),
    ("sequence_variant", "MODIFIER"),
]
SO_RANK = {t: i for i, (t, _) in enumerate(SO_TERMS)}
SO_IMPACT = dict(SO_TERMS)

#: default field lists when the header does not describe them.
DEFAULT_FIELDS = {
    "ANN": ["Allele", "Annotation", "Annotation_Impact", "Gene_Name", "Gene_ID", "Feature_Type",
            "Feature_ID", "Transcript_BioType", "Rank", "HGVS.c", "HGVS.p"],
    "EFF": ["Effect", "Effect_Impact", "Functional_Class", "Codon_Change", "Amino_Acid_Change",
            "Amino_Acid_Length", "Gene_Name", "Transcript_BioType", "Gene_Coding",
            "Transcript_ID", "Exon_Rank", "Genotype_Number"],
    "CSQ": ["Allele", "Consequence", "IMPACT", "SYMBOL", "Gene", "Feature_type", "Feature",
            "BIOTYPE", "EXON", "INTRON", "HGVSc", "HGVSp"],
}
#: which (lower-cased) field feeds which column, per annotation key; first present wins.
FIELD_MAP = {
    "ANN": {"allele": ["allele"], "consequence": ["annotation"], "impact": ["annotation_impact"],
            "gene": ["gene_name", "gene_id"], "hgvs_c": ["hgvs.c"], "hgvs_p": ["hgvs.p"]},
    "CSQ": {"allele": ["allele"], "allele_num": ["allele_num"], "consequence": ["consequence"],
            "impact": ["impact"], "gene": ["symbol", "gene"], "hgvs_c": ["hgvsc"],
            "hgvs_p": ["hgvsp"]},
    "EFF": {"consequence": ["effect"], "impact": ["effect_impact"], "gene": ["gene_name"],
            "aa_change": ["amino_acid_change"], "allele_num": ["genotypenum", "genotype_number"]},
}
ANN_KEYS = ("ANN", "CSQ", "EFF")
_REF = re.compile(r"^[ACGTNacgtn]+$")
_ALT = re.compile(r"^([ACGTNacgtn*]+|<[^>]+>|\.|[^\s,]*[\[\]][^\s,]*|\.[ACGTNacgtn]+|[ACGTNacgtn]+\.)$")
_FORMAT = re.compile(r'Format:\s*(.*?)"?\s*>?\s*$')


def detect(path: Path) -> bool:
    """A ``.vcf``/``.vcf.gz``/``.vcf.bgz`` file, a file starting ``##fileformat=VCF``, or a
    folder holding one (first 200 entries)."""
    path = Path(path)
    if path.is_dir():
        for i, p in enumerate(path.rglob("*")):
            if i >= 200:
                break
            if p.is_file() and p.name.lower().endswith(SUFFIXES):
                return True
        return False
    if path.name.lower().endswith(SUFFIXES):
        return True
    try:
        with open_text(path) as fh:
            return fh.read(32).startswith("##fileformat=VCF")
    except (OSError, EOFError):
        return False


@dataclass(slots=True)
class _Ann:
    allele: str | None
    allele_num: int | None
    consequence: str | None
    impact: str | None
    gene: str | None
    hgvs_c: str | None
    hgvs_p: str | None
    order: int

    def key(self) -> tuple[int, int, int]:
        terms = (self.consequence or "").split("&")
        rank = min((SO_RANK.get(t, len(SO_RANK)) for t in terms), default=len(SO_RANK))
        return (IMPACT_RANK.get(self.impact or "", 4), rank, self.order)


def _header_fields(line: str) -> list[str] | None:
    """The field names of an ANN/CSQ/EFF ``##INFO`` line's Description."""
    m = _FORMAT.search(line) or re.search(r"annotations:\s*(.*?)\"?\s*>?\s*$", line)
    if not m:
        return None
    spec = m.group(1).strip().strip("'\"").strip()
    spec = spec.replace("[", "").replace("]", "")
    if "(" in spec:  # EFF: Effect ( Impact | ... )
        head, _, rest = spec.partition("(")
        parts = [head] + rest.rstrip(") ").split("|")
    else:
        parts = spec.split("|")
    return [p.strip() for p in parts if p.strip()]


def _nil(v: str | None) -> str | None:
    return v if v not in (None, "", ".") else None


class _Annotator:
    """Parses the ANN/CSQ/EFF INFO values of a file, using the field names of its header."""

    def __init__(self, header_lines: list[str]) -> None:
        self.fields: dict[str, dict[str, int]] = {}
        for line in header_lines:
            for key in ANN_KEYS:
                if line.startswith(f"##INFO=<ID={key},"):
                    names = _header_fields(line) or DEFAULT_FIELDS[key]
                    self.fields[key] = {n.lower(): i for i, n in enumerate(names)}

    def parse(self, key: str, value: str) -> list[_Ann]:
        idx = self.fields.get(key) or {
            n.lower(): i for i, n in enumerate(DEFAULT_FIELDS[key])
        }
        cols = {c: next((idx[n] for n in names if n in idx), None)
                for c, names in FIELD_MAP[key].items()}
        out: list[_Ann] = []
        for order, entry in enumerate(value.split(",")):
            if key == "EFF":
                head, _, rest = entry.partition("(")
                parts = [head] + rest.rstrip(")").split("|")
            else:
                parts = entry.split("|")

            def get(col: str) -> str | None:
                i = cols.get(col)
                return _nil(parts[i].strip()) if i is not None and i < len(parts) else None

            num = get("allele_num")
            a = _Ann(get("allele"), int(num) if num and num.isdigit() else None,
                     get("consequence"), get("impact"), get("gene"), get("hgvs_c"),
                     get("hgvs_p"), order)
            if key == "EFF":
                for piece in (get("aa_change") or "").split("/"):
                    if piece.startswith("c."):
                        a.hgvs_c = piece
                    elif piece:
                        a.hgvs_p = a.hgvs_p or piece
            if a.impact is None and a.consequence:
                terms = [t for t in a.consequence.split("&") if t in SO_IMPACT]
                if terms:
                    a.impact = SO_IMPACT[min(terms, key=SO_RANK.__getitem__)]
            out.append(a)
        return out


def _sample_int(call: str, at: int, sample: str) -> int | None:
    """The integer FORMAT field number ``at`` of one sample's call (``DP``), None when missing."""
    parts = call.split(":")
    value = parts[at] if at < len(parts) else "."
    if value in (".", ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise BadValue(f"FORMAT DP of sample {sample}: {value!r} is not an integer") from None


def _vep_alleles(ref: str, alts: list[str]) -> list[str]:
    """The allele strings VEP writes: a shared first base is trimmed, empty becomes '-'."""
    if all(a and a[0] == ref[0] for a in alts) and all(len(a) > 0 for a in alts) and not any(
        a.startswith("<") for a in alts
    ):
        return [a[1:] or "-" for a in alts]
    return list(alts)


def _best(anns: list[_Ann], idx: int, alt: str, vep_alt: str) -> _Ann | None:
    """The most severe annotation for alt allele ``idx`` (1-based); all when none says which."""
    if not anns:
        return None
    mine = [a for a in anns if a.allele_num == idx] or [
        a for a in anns if a.allele is not None and a.allele in (alt, vep_alt)
    ]
    pool = mine or [a for a in anns if a.allele_num is None and a.allele is None] or anns
    return min(pool, key=_Ann.key)


class VcfReader(Reader):
    """VCF 4.x -> variants (one row per sample carrying an alt allele)."""

    name = "vcf"
    version = "1"
    source_system = "vcf"

    def files(self, path: Path) -> list[Path]:
        path = Path(path)
        if path.is_file():
            return [path]
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))

    def read(self, path: Path, ctx: ReadContext) -> Iterator[Item]:
        import cyvcf2

        path = Path(path)
        with open_text(path) as fh:
            header: list[str] = []
            lineno = 0
            chrom_line = None
            for line in fh:
                lineno += 1
                if line.startswith("##"):
                    header.append(line)
                    continue
                if line.startswith("#CHROM"):
                    chrom_line = line
                    header.append(line)
                break
            if chrom_line is None:
                yield Bad("header", "not a VCF: no '#CHROM' header line before the data", None)
                return
            samples = chrom_line.rstrip("\r\n").split("\t")[9:]
            ncols = 9 + len(samples) if samples else None
            try:
                writer = cyvcf2.Writer.from_string(os.devnull, "".join(header))
            except Exception as exc:
                yield Bad("header", f"unreadable VCF header: {exc}", clip("".join(header)))
                return
            state = _State(self, ctx, samples, ncols, _Annotator(header))
            pending = 0
            try:
                for line in fh:
                    lineno += 1
                    pending += len(line)
                    if pending > 1 << 20:
                        ctx.on_bytes(pending)
                        pending = 0
                    text = line.rstrip("\r\n")
                    if not text or text.startswith("#"):
                        continue
                    yield state.line(writer, text, lineno)
            finally:
                ctx.on_bytes(pending)
                writer.close()


class _State:
    """Per-file state: samples, annotation fields, the patient lookup cache."""

    def __init__(self, reader: VcfReader, ctx: ReadContext, samples: list[str],
                 ncols: int | None, annotator: _Annotator) -> None:
        self.ctx, self.samples, self.ncols, self.ann = ctx, samples, ncols, annotator
        self.system = reader.source_system
        self.patients: dict[str | None, str | None] = {None: None}

    def patient(self, sample: str | None) -> str | None:
        if sample not in self.patients:
            self.patients[sample] = self.ctx.find_patient(sample)  # type: ignore[arg-type]
        return self.patients[sample]

    def line(self, writer: Any, text: str, lineno: int) -> Item:
        loc = f"line:{lineno}"
        cols = text.split("\t", 9)
        try:
            return self._record(writer, text, cols, loc)
        except BadValue as exc:
            return Bad(loc, str(exc), clip(text))

    def _record(self, writer: Any, text: str, cols: list[str], loc: str) -> Record:
        n = len(cols) if len(cols) < 10 else 9 + cols[9].count("\t") + 1
        if self.ncols is None:
            if n not in (8, 9):
                raise BadValue(f"expected 8 columns (sites-only VCF), found {n}")
        elif n != self.ncols:
            raise BadValue(f"expected {self.ncols} columns (9 + {len(self.samples)} samples), found {n}")
        chrom, pos_s, vid, ref, alt_s, qual_s, filt, info = cols[:8]
        if not chrom or any(c.isspace() for c in chrom):
            raise BadValue(f"CHROM: {chrom!r} is not a contig name")
        if not pos_s.isdigit() or int(pos_s) < 0:
            raise BadValue(f"POS: {pos_s!r} is not a non-negative integer")
        if not _REF.match(ref):
            raise BadValue(f"REF: {ref!r} is not a sequence of A/C/G/T/N")
        alts = alt_s.split(",")
        bad_alt = next((a for a in alts if not _ALT.match(a)), None)
        if bad_alt is not None:
            raise BadValue(f"ALT: {bad_alt!r} is not a valid allele")
        qual = None if qual_s == "." else to_float(qual_s, "QUAL")
        pos = int(pos_s)
        anns = self._annotations(info)
        info_dp = self._info_dp(info)
        has_gt = n > 9 and cols[8].split(":", 1)[0] == "GT"
        try:
            v = writer.variant_from_string(text) if has_gt else None
        except Exception as exc:  # htslib rejected what our checks let through
            raise BadValue(f"unparsable VCF line: {exc}") from exc
        base: Row = {
            "chrom": chrom, "pos": pos, "ref": ref, "variant_id": _nil(vid), "qual": qual,
            "filter": _nil(filt), "source_system": self.system,
        }
        vep_alts = _vep_alleles(ref, alts)
        best = [None] + [_best(anns, i, a, vep_alts[i - 1]) for i, a in enumerate(alts, 1)]
        rows: list[tuple[str, Row]] = []

        def add(sample: str | None, idx: int, gt: str | None, zyg: str | None, dp: int | None) -> None:
            alt = alts[idx - 1]
            a = best[idx]
            rows.append(("variants", {
                **base,
                "row_id": row_id("variants", sample or "", chrom, pos, ref, alt),
                "patient_id": self.patient(sample), "sample_id": sample, "alt": alt,
                "genotype": gt, "zygosity": zyg, "depth": dp,
                "gene": a.gene if a else None, "consequence": a.consequence if a else None,
                "impact": a.impact if a else None, "hgvs_c": a.hgvs_c if a else None,
                "hgvs_p": a.hgvs_p if a else None,
            }))

        if v is None:  # sites-only (or no GT): one row per alt allele
            for idx, alt in enumerate(alts, 1):
                if alt != ".":
                    add(None, idx, None, None, info_dp)
            return Record(loc, rows, content=text.encode())

        arr = v.genotype.array()
        carriers = np.flatnonzero((arr[:, :-1] > 0).any(axis=1))
        if not len(carriers):
            return Record(loc, rows, content=text.encode())
        fmt = cols[8].split(":")
        dp_at = fmt.index("DP") if "DP" in fmt else -1
        calls = cols[9].split("\t") if dp_at > 0 else None
        for i, gts in zip(carriers.tolist(), arr[carriers].tolist()):
            called = [a for a in gts[:-1] if a != -2]  # -2: vector end (lower ploidy)
            gt = ("|" if gts[-1] else "/").join("." if a < 0 else str(a) for a in called)
            dp = info_dp if calls is None else _sample_int(calls[i], dp_at, self.samples[i])
            for idx in sorted({a for a in called if a > 0}):
                if idx > len(alts):
                    raise BadValue(
                        f"GT of sample {self.samples[i]}: allele {idx} but ALT has {len(alts)}"
                    )
                if len(called) == 1:
                    zyg = "hemi"
                else:
                    zyg = "hom_alt" if all(a == idx for a in called) else "het"
                add(self.samples[i], idx, gt, zyg, dp)
        return Record(loc, rows, content=text.encode())

    def _annotations(self, info: str) -> list[_Ann]:
        for key in ANN_KEYS:
            tag = key + "="
            at = 0 if info.startswith(tag) else info.find(";" + tag) + 1
            if at > 0 or info.startswith(tag):  # found (find() gave -1 + 1 = 0 when absent)
                end = info.find(";", at)
                value = info[at + len(tag): end if end >= 0 else None]
                if value:
                    return self.ann.parse(key, value)
        return []

    @staticmethod
    def _info_dp(info: str) -> int | None:
        at = 0 if info.startswith("DP=") else info.find(";DP=") + 1
        if at <= 0 and not info.startswith("DP="):
            return None
        end = info.find(";", at)
        value = info[at + 3: end if end >= 0 else None]
        if value in ("", "."):
            return None
        try:
            return int(float(value))
        except ValueError:
            raise BadValue(f"INFO DP: {value!r} is not a number") from None
