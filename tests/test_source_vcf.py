"""VcfReader: VCF lines -> variants (one row per sample carrying an alt allele)."""

from __future__ import annotations

import gzip
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from sagehealth.data.model import SCHEMAS, row_id
from sagehealth.data.sources.base import Bad, ReadContext, Record
from sagehealth.data.sources.vcf import VcfReader, detect

FIX = Path(__file__).parent / "fixtures" / "vcf"
SAMPLE = Path(__file__).resolve().parents[1] / "src" / "sagehealth" / "sample_data" / "vcf"
SHARED = Path(
    os.environ.get(
        "SAGEHEALTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


def read(path: Path, patients: dict[str, str] | None = None) -> list[Record | Bad]:
    ctx = ReadContext(path.as_uri(), find_patient=(patients or {}).get)
    return list(VcfReader().read(path, ctx))


def variants(items: list[Record | Bad]) -> list[dict]:
    rows = [r for it in items if isinstance(it, Record) for t, r in it.rows]
    assert all(t == "variants" for it in items if isinstance(it, Record) for t, _ in it.rows)
    pa.Table.from_pylist(rows, schema=SCHEMAS["variants"])  # raises on a wrong column/type
    for r in rows:
        assert set(r) <= set(SCHEMAS["variants"].names)
    return rows


def data_lines(path: Path) -> int:
    opener = gzip.open if path.name.endswith((".gz", ".bgz")) else open
    with opener(path, "rt") as fh:
        return sum(1 for line in fh if line.strip() and not line.startswith("#"))


def test_detect(tmp_path: Path) -> None:
    assert detect(FIX / "annotated.vcf") and detect(SAMPLE) and detect(SAMPLE / "test-hemi.vcf")
    renamed = tmp_path / "calls.txt"
    renamed.write_text((FIX / "annotated.vcf").read_text())
    assert detect(renamed)
    (tmp_path / "notes.txt").write_text("hello")
    assert not detect(tmp_path / "notes.txt")
    assert VcfReader().files(FIX) == [FIX / "annotated.vcf", FIX / "bad.vcf"]


def test_genotypes_zygosity_depth_and_annotations() -> None:
    items = read(FIX / "annotated.vcf", {"S1": "pat-1"})
    assert [it.locator for it in items] == ["line:11", "line:12", "line:13"]
    rows = variants(items)
    key = {(r["sample_id"], r["pos"], r["alt"]): r for r in rows}
    assert sorted(key) == [("S1", 100, "G"), ("S1", 200, "C"), ("S1", 300, "A"),
                           ("S2", 100, "G"), ("S2", 100, "T")]
    s1 = key[("S1", 100, "G")]
    assert s1["row_id"] == row_id("variants", "S1", "1", 100, "A", "G")
    assert s1["patient_id"] == "pat-1" and key[("S2", 100, "G")]["patient_id"] is None
    assert (s1["genotype"], s1["zygosity"], s1["depth"]) == ("0/1", "het", 10)  # FORMAT DP
    assert (s1["variant_id"], s1["qual"], s1["filter"], s1["chrom"]) == ("rs1", 50.0, "PASS", "1")
    # ANN: the most severe annotation of allele G (missense over synonymous)
    assert (s1["gene"], s1["consequence"], s1["impact"]) == ("GENE1", "missense_variant", "MODERATE")
    assert (s1["hgvs_c"], s1["hgvs_p"]) == ("c.10A>G", "p.Lys4Glu")
    # multi-allelic 1/2: one row per alt allele carried, each with its own annotation
    t = key[("S2", 100, "T")]
    assert (t["genotype"], t["zygosity"], t["consequence"], t["hgvs_p"]) == (
        "1/2", "het", "stop_gained", "p.Lys4*")
    # VEP CSQ: deletion CA>C is written as allele '-'
    d = key[("S1", 200, "C")]
    assert (d["zygosity"], d["depth"], d["filter"]) == ("hom_alt", 7, "q10")
    assert (d["gene"], d["consequence"], d["impact"]) == ("GENE2", "frameshift_variant", "HIGH")
    assert (d["hgvs_c"], d["hgvs_p"]) == ("ENST2:c.20del", "ENSP2:p.Gln7fs")
    # haploid call on X: hemizygous, depth from INFO DP, QUAL '.'
    x = key[("S1", 300, "A")]
    assert (x["genotype"], x["zygosity"], x["depth"], x["qual"]) == ("1", "hemi", 9, None)


def test_bad_lines_are_bad_and_the_rest_goes_on() -> None:
    items = read(FIX / "bad.vcf")
    assert len(items) == data_lines(FIX / "bad.vcf") == 6
    bad = {it.locator: it for it in items if isinstance(it, Bad)}
    assert set(bad) == {"line:10", "line:11", "line:12", "line:13"}
    assert "POS" in bad["line:10"].reason and "NOTNUM" in bad["line:10"].reason
    assert "expected 12 columns" in bad["line:11"].reason
    assert "QUAL" in bad["line:12"].reason and "REF" in bad["line:13"].reason
    assert bad["line:10"].raw and bad["line:10"].raw.startswith("1\tNOTNUM")
    rows = variants(items)
    assert [(r["pos"], r["sample_id"], r["zygosity"]) for r in rows] == [
        (100, "S1", "het"), (600, "S1", "hom_alt"), (600, "S2", "het")]


def test_sites_only_and_gzip(tmp_path: Path) -> None:
    text = (
        "##fileformat=VCFv4.1\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "7\t117559590\trs113993960\tATCT\tA\t.\t.\tDP=40\n"
        "7\t55191822\t.\tT\tG,C\t30\tPASS\t.\n"
        "7\t100\t.\tA\t.\t.\t.\t.\n"
    )
    path = tmp_path / "sites.vcf.bgz"
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    items = read(path)
    assert [len(it.rows) for it in items] == [1, 2, 0]  # ALT '.' : a site without alt allele
    rows = variants(items)
    assert all(r["sample_id"] is None and r["genotype"] is None for r in rows)
    assert rows[0]["depth"] == 40 and rows[0]["variant_id"] == "rs113993960"
    assert [r["alt"] for r in rows[1:]] == ["G", "C"]


def test_missing_header_is_one_bad(tmp_path: Path) -> None:
    path = tmp_path / "nohead.vcf"
    path.write_text("1\t100\t.\tA\tG\t.\t.\t.\n")
    (bad,) = read(path)
    assert isinstance(bad, Bad) and bad.locator == "header" and "#CHROM" in bad.reason


def test_bundled_sample() -> None:
    rows = variants(read(SAMPLE / "test-hemi.vcf"))
    assert len(rows) == 3 and {r["gene"] for r in rows} == {"LDLR"}
    missense = [r for r in rows if r["alt"] == "G"]
    assert [r["consequence"] for r in missense] == ["missense_variant"]


# -- integration: ../shared/data/genomics ---------------------------------------------------


def _genomics() -> Path:
    p = SHARED / "genomics"
    if not p.is_dir():
        pytest.skip(f"shared data not present: {p}")
    return p


EXPECTED_ROWS = {
    "cyvcf2_tests/o.vcf.gz": 4923,
    "cyvcf2_tests/test-hemi.vcf": 3,
    "cyvcf2_tests/test.comp_het.3.vcf": 39,
    "cyvcf2_tests/test.mnp.vcf": 0,  # haploid reference calls only
    "cyvcf2_tests/test.snpeff.vcf": 8,
    "cyvcf2_tests/test.vcf.gz": 4590,
    "ensembl_vep_examples/homo_sapiens_GRCh37.vcf": 173,
    "ensembl_vep_examples/homo_sapiens_GRCh38.vcf": 173,
}


@pytest.mark.integration
def test_shared_genomics_every_line_accounted() -> None:
    root = _genomics()
    reader = VcfReader()
    files = reader.files(root)
    assert {f.relative_to(root).as_posix() for f in files} == set(EXPECTED_ROWS)
    by_file: dict[str, list[dict]] = {}
    for f in files:
        items = read(f)
        assert len(items) == data_lines(f)  # every data line is one item
        assert not [it for it in items if isinstance(it, Bad)]
        by_file[f.relative_to(root).as_posix()] = variants(items)
    assert {k: len(v) for k, v in by_file.items()} == EXPECTED_ROWS

    zyg = Counter(r["zygosity"] for r in by_file["cyvcf2_tests/o.vcf.gz"])
    assert zyg == {"hemi": 2339, "hom_alt": 1495, "het": 1089}
    assert all(r["sample_id"] is None for r in by_file["ensembl_vep_examples/homo_sapiens_GRCh37.vcf"])

    # snpEff ANN (test.vcf.gz line 231): 1:13656 CAG>C, splice donor of DDX11L1
    ann = [r for r in by_file["cyvcf2_tests/test.vcf.gz"] if r["pos"] == 13656]
    assert ann and {(r["gene"], r["impact"], r["hgvs_c"]) for r in ann} == {
        ("DDX11L1", "HIGH", "n.734+2_734+3delAG")}
    assert ann[0]["consequence"].startswith("splice_donor_variant")
    # VEP CSQ (test-hemi.vcf): chr19:11210912 C>G missense in LDLR for sample 15G18300
    (ldlr,) = [r for r in by_file["cyvcf2_tests/test-hemi.vcf"]
               if r["alt"] == "G" and r["sample_id"] == "15G18300"]
    assert (ldlr["gene"], ldlr["consequence"], ldlr["impact"]) == ("LDLR", "missense_variant", "MODERATE")
    assert (ldlr["genotype"], ldlr["depth"]) == ("0/1", 1036)  # FORMAT DP
    # old snpEff EFF (test.snpeff.vcf): chr1:69511 A>G OR4F5 T141A
    (eff,) = [r for r in by_file["cyvcf2_tests/test.snpeff.vcf"]
              if r["pos"] == 69511 and r["sample_id"] == "1094PC0012"]
    assert (eff["gene"], eff["consequence"], eff["impact"], eff["hgvs_p"]) == (
        "OR4F5", "NON_SYNONYMOUS_CODING", "MODERATE", "T141A")
