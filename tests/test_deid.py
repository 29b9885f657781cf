"""Free-text de-identification: detection on clinical text, transforms, keys, bad input, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date

import pytest

from sagehealth.errors import ConfigError
from sagehealth.privacy.deid import deidentify, detect
from sagehealth.privacy.deid.transform import Transformer

KEY = "test-key-0123456789abcdef"


def found(text: str) -> set[str]:
    return {s.text for s in detect(text)}


@pytest.mark.parametrize(
    ("text", "phi"),
    [
        ("TO MAINTAIN SBP < 120 PER DR KENNEY. CONT BLEED VIA CT.", {"KENNEY"}),
        ("ETT pulled back 2cm per Dr. Martyn. Lungs are very coarse.", {"Martyn"}),
        ("social: pt's son bill called twice during the night.", {"bill"}),
        ("Nephew, Neil Meitz of Towson visited today.", {"Neil", "Meitz"}),
        ("QUIET NIGHT FOR PT.     DAN A. FORMAN-LYONS, RRT  \n", {"DAN", "A", "FORMAN", "LYONS"}),
        ("all is well at this time. q. lander rrt  \n", {"q", "lander"}),
        ("Mr. Nicholson has been accepted at Holy Cross, awaiting consent.", {"Nicholson", "Holy Cross"}),
        ("PT TRANSFERRED FROM CALVERT HOSPITAL ON 7/22.", {"CALVERT HOSPITAL", "7/22"}),
        ("son: Vladimir Erickson - 989-290-8303", {"Vladimir", "Erickson", "989-290-8303"}),
        ("PMH: CAD, MI '92, CABG 1977. Lithium toxicity 9/2/92.", {"92", "1977", "9/2/92"}),
        ("98 yo gentleman s/p fall", {"98"}),
        ("Pager 54321 if any questions", {"54321"}),
        ("call 516 466 638 or +44 20 7946 0958 tomorrow", {"516 466 638", "+44 20 7946 0958"}),
        ("email jdoe@example.org or see www.example.org/x", {"jdoe@example.org", "www.example.org/x"}),
        ("Devin82\n is a 1 year-old male. Seen by Dr. Liane379 Kunze215.", {"Devin82", "Liane379", "Kunze215"}),
        # facility names whose first words are lower case; an acronym before "Hospital"; a campus
        ("Plan: discharge to rehab (st agnes Memorial) once a bed opens.", {"st agnes Memorial"}),
        ("Pt came from GBC Hospital overnight, then to radiology.", {"GBC Hospital"}),
        ("Follow-up in clinic on West Campus next week.", {"West Campus"}),
        ("She said: 'we are at the general hospital'.", {"general hospital"}),
        # a title with an initial only
        ("FAMILY WANTS TO DISCUSS MRS K. PLAN OF CARE.", {"K"}),
        ("mr J tolerated the procedure well.", {"J"}),
        # dates: two day/month pairs, a dotted year, a day range before a month, "on 3-4",
        # an ordinal day as an answer
        ("Chemo given 11/02/11/03 without incident.", {"11/02/11/03"}),
        ("09/14.88\nresp: clear", {"09/14.88"}),
        ("seen 3->4 dec, 97 overnight", {"3", "4 dec, 97"}),
        ("He went back to the OR on 6-9 for revision.", {"6-9"}),
        ('asked the date: "it is the 23rd." oriented x2', {"23rd"}),
        ("Hx: CVA in 91 with residual weakness.", {"91"}),
        # the town after a street address; a place found once is found again in the note
        ("Lives alone at 4 Maple Ave. in Smallwood with her cat.", {"Smallwood"}),
        ("TRANSFERRED TO BMH FOR CATH. PLAN: RETURN FROM BMH TOMORROW.", {"BMH"}),
        # general identifiers: licence numbers, IPv6, a ZIP after its cue, a cued 7-digit phone
        ("My driver's license number is Q7731204", {"Q7731204"}),
        ("blocked address fe80:0:0:0:202:b3ff:fe1e:8329 again", {"fe80:0:0:0:202:b3ff:fe1e:8329"}),
        ("ZIP: 4401", {"4401"}),
        ("please call me on 555 0199 after 5", {"555 0199"}),
    ],
)
def test_finds_phi_in_clinical_text(text, phi):
    got = found(text)
    for p in phi:
        assert any(p in g for g in got), (p, got)


@pytest.mark.parametrize(
    "text",
    [
        "PT ON PSV 10/5 PEEP. FOLEY DRAINING CLEAR YELLOW URINE. LASIX 40 MG IV GIVEN.",
        "Neuro: alert, MAE, PERRLA. CV: NSR 80-90's, no VEA. Resp: LS coarse, sx q2-3 hrs.",
        "family in to visit, updated by team. plan to wean levo to keep map > 60.",
        "RR 12-16, TV 500, FIO2 40%, PEEP 5. ABG 7.38/40/95. K 3.9, MG 1.8 REPLETED.",
        "Sao2 95-97%. Pao2 76 on 40%. Transfer back to Ward3 when stable.",
        "Weaned to 2L NC on 2-4 L, then on 5-10 mcg of levophed; pain on 6-7 out of 10.",
        "Lesion on the 5th rib; second dose given on the 3rd day; ICD on the 2nd try.",
        "co/ci 5.1/3.27/928, PAD 6/3.27; surgery in 10 days, CABG in 24 hours if needed.",
        "Pt came from the TSICU at 1500 and returned to the TSICU later; MS changes noted.",
        "Serial 12-lead ECGs; obtain serial 2-view CXR. ORIF with plate 3-hole construct.",
        "Strength 5/5/5/5 bilaterally. Reflexes 2/2/2/2.",
        "Mild MR. A repeat echo is planned. QTc 450 ms. A repeat ECG. Severe MS I think.",
        "s/p MI in 48h; seen on 2-3 occasions; before the 1st of 3 cycles.",
    ],
)
def test_plain_clinical_text_has_no_phi(text):
    assert detect(text) == []


def test_tags_mode_replaces_every_span():
    r = deidentify("Seen by Dr. Mesite on 7/22. Call 410-322-1419.")
    assert r.text == "Seen by Dr. [NAME] on [DATE]. Call [PHONE]."
    assert [s.type for s in r.spans] == ["NAME", "DATE", "PHONE"]


def test_surrogates_are_consistent_per_patient_and_dates_keep_intervals():
    t = Transformer("surrogate", KEY.encode())
    text = "Dr. Mesite saw pt on 7/22/2020; Dr. Mesite again on 7/25/2020."
    spans = detect(text)
    a = t.apply(text, spans, patient="p1")
    b = t.apply(text, spans, patient="p1")
    assert a == b and "Mesite" not in a
    names = re.findall(r"Dr\. (\w+)", a)
    assert len(names) == 2 and names[0] == names[1]  # same name, same surrogate
    d1, d2 = (date(int(y), int(m), int(d)) for m, d, y in re.findall(r"(\d+)/(\d+)/(\d{4})", a))
    assert (d2 - d1).days == 3  # interval kept
    assert -365 <= (d1 - date(2020, 7, 22)).days <= -1
    other = t.apply(text, spans, patient="p2")
    assert t.date_offset("p1") != t.date_offset("p2") or other != a


def test_surrogate_mode_needs_a_good_key(monkeypatch):
    monkeypatch.delenv("SAGEHEALTH_DEID_KEY", raising=False)
    with pytest.raises(ConfigError, match="SAGEHEALTH_DEID_KEY"):
        deidentify("Dr. Smith", mode="surrogate")
    with pytest.raises(ConfigError, match="too short"):
        deidentify("Dr. Smith", mode="surrogate", key="short")
    with pytest.raises(ConfigError, match="unknown de-identification mode"):
        deidentify("Dr. Smith", mode="blur")
    # tags mode needs no key
    assert deidentify("Dr. Smith").text == "Dr. [NAME]"


def test_bad_input_gives_a_result_not_a_crash():
    assert deidentify("").text == ""
    r = deidentify(b"\xff\xfe caf\xe9 \x00Dr. Smith\x07 seen 7/22")
    assert "Smith" not in r.text and "[NAME]" in r.text and "\x00" not in r.text
    all_phi = "John Smith 410-555-1234 7/22/92 jsmith@example.org"
    out = deidentify(all_phi).text
    assert not re.search(r"John|Smith|410|7/22|jsmith", out)


def test_large_note_is_processed_whole():
    note = ("PT SEEN BY DR. KENNEY ON 7/22. VSS. FOLEY DRAINING. " * 20_000)  # ~1 MB
    r = deidentify(note)
    assert "KENNEY" not in r.text and r.text.count("[NAME]") == 20_000


def test_cli_deid_text_json_and_file(tmp_path):
    cmd = [sys.executable, "-m", "sagehealth.cli", "deid"]
    r = subprocess.run([*cmd, "Seen by Dr. Mesite on 7/22.", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["text"] == "Seen by Dr. [NAME] on [DATE]." and len(d["spans"]) == 2
    f = tmp_path / "note.txt"
    f.write_bytes(b"son Bill called 410-322-1419\n")
    r = subprocess.run([*cmd, "--file", str(f)], capture_output=True, text=True)
    assert r.stdout == "son [NAME] called [PHONE]\n"
    r = subprocess.run([*cmd, "--file", str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = subprocess.run([*cmd, "x", "--mode", "surrogate"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and "SAGEHEALTH_DEID_KEY" in r.stderr


@pytest.mark.integration
def test_cli_deid_eval_on_physionet_dev(shared):
    d = shared / "deid" / "physionet_deid_dev"
    r = subprocess.run([sys.executable, "-m", "sagehealth.cli", "deid", "eval",
                        "--physionet-text", str(d / "id.text"), "--physionet-gold", str(d / "id-phi.phrase"),
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"recall", "precision", "f1", "per_type", "notes_per_s"} <= set(out)
    assert out["notes"] == 1450 and out["gold_spans"] == 999
    frozen = json.loads((__import__("pathlib").Path(__file__).parents[1] / "src" / "sagehealth"
                         / "privacy" / "deid" / "regression.json").read_text())
    # the tuned-on line: the default detector on the whole split it was written and trained on
    floor = frozen["physionet_dev"]
    assert out["recall"] >= floor["recall"] - 0.002 and out["precision"] >= floor["precision"] - 0.002
    # the held-out lines: patient-disjoint cross-validation, the model trained per fold on the
    # other fold only (docs/deid.md says which numbers are tuned-on and which held-out)
    from sagehealth.privacy.deid.evaluate import cross_validate

    cv = frozen["physionet_dev_cv"]
    systems = ("rules", "model", "combined")
    r = cross_validate(d / "id.text", d / "id-phi.phrase", folds=cv["folds"], seed=cv["seed"],
                       systems=systems, redraw=True)
    assert [row["notes"] for row in r["per_fold"]] == cv["notes_per_fold"]
    for name in systems:
        for k, row in enumerate(r["per_fold"]):
            for got, want in ((row[name], cv[name][k]), (row["redrawn"][name], cv[name + "_redrawn"][k])):
                assert got["recall"] >= want["recall"] - 0.002, (name, k, got["recall"], want)
                assert got["precision"] >= want["precision"] - 0.002, (name, k, got["precision"], want)


def test_combined_scanner_equals_one_scan_per_rule():
    """The combined scanner finds exactly what ``finditer`` per rule finds (anchored rules at
    digit runs and punctuation, gated rules, rules tried only at their head words)."""
    import re as _re
    from itertools import accumulate

    from sagehealth.privacy.deid.detector import TOKEN_SPLIT, default_rules, lowered
    from sagehealth.privacy.deid.scanner import first_chars

    rules = default_rules()
    scanner = rules.scanner
    assert len(scanner.anchored) >= 15  # most rules start at a digit: no full scan for them
    assert first_chars(r"(?<![\d/.])(?:0?[1-9]|1[0-2])/\d") is not None
    assert first_chars(r"\bjan\s+\d") is None
    texts = [
        "Seen 7/22/2019 and 12/05/10; call (617) 555-1234 or 555-1234, pager 12345. MRN: ab12345.",
        "born in '45, CABG 1998, MI 03, 2000s; age 92 yo; #A12345 acct 987654321; 4111 1111 1111 1111",
        "on Jan 5, 2020 and March of 2019; in early June; seen on the 21st; SSN 123-45-6789 x 10.2.3.4",
        "TRANSFERRED TO GBMC ON 3/4. PT SENT FROM VA. 19 Main Street, Boston, MA 02115. apt 4 +1 617 555 0199",
        "e-mail j.doe@example.org www.example.com/x  St. Mary's; University of Maryland DE89 3704 0044 0532 0130 00",
        "12345678 1/2 3/4 5/10 pain 4/10 peep 5/5 bp 120/80 40's 90's 1940s 11/21.93 10-12-2019 1-2-3",
    ]
    for text in texts:
        low = text.lower()
        parts = TOKEN_SPLIT.split(text)  # gap, token, gap, ..., token, gap
        offsets = list(accumulate(map(len, parts)))
        toks = list(zip(offsets[0::2], offsets[1::2], parts[1::2]))
        def kept(k, m):  # a gate holds for the matches a rule keeps (with their needs_before)
            nb = rules.patterns[k].needs_before
            return not nb or nb.search(low[max(0, m.start() - 40):m.start()])

        got = sorted((k, m.span(), tuple(m.span(g) for g in range(1, rules.patterns[k].regex.groups + 1)))
                     for k, m in scanner.scan(text, low, [t[0] for t in toks], lowered(toks)) if kept(k, m))
        want = sorted((k, m.span(), tuple(m.span(g) for g in range(1, m.re.groups + 1)))
                      for k, p in enumerate(rules.patterns)
                      for m in _re.compile(p.regex.pattern, p.regex.flags).finditer(low if p.on_lower else text)
                      if kept(k, m))
        assert got == want, text


def test_initials_wards_and_city_state():
    def found(text):
        return [s.text for s in detect(text)]

    assert "RUUSKA" in found("PRONOUNCED BY DR. L. RUUSKA. FAMILY AT BEDSIDE")
    assert {"J", "Yi"} <= set(found("EKG done. Seen by J. Yi, MD. Pain improved."))
    assert "ANNAPOLIS" in found("OLD RECORDS FROM ANNAPOLIS, MD. CONTINUE")
    assert "QUARTERMAIN7" in found("PT ADMITTED TO QUARTERMAIN7 W/ CHF")
    # bacteria and dictionary words after an initial are no names
    assert found("sputum grew S. aureus and E. coli") == []


def test_places_names_and_acronyms_from_context():
    """Geographic names, facility acronyms and names joined to found names (general rules,
    written with made-up names and places)."""
    def found(text):
        return {s.text for s in detect(text)}

    # a geographic word after a Title-case word, or in caseless text after a place cue
    assert "Cape Shore" in found("Was on vacation on the Cape Shore, felt unwell at lunch.")
    assert "WESTERN VALLEY" in found("FAMILY ARRIVED FROM THE WESTERN VALLEY AT 2 AM.")
    assert not found("CRACKLES AT THE LEFT BASE. AT ONE POINT SBP 80S.")
    assert "DC" in found("Health care proxy is her niece who lives in DC.")
    # states are no PHI
    assert "Ohio" not in found("Her niece lives in Ohio and calls daily.")
    # an acronym of a medical center
    assert "RTMC" in found("PT MAY BE SEEN BY RTMC FOR POSSIBLE TRANSPLANT.")
    # a frequent word after a movement verb is no hospital ("had to sit", "seen at all")
    assert found("walked 20 feet and had to sit down; had to use the commode") == set()
    assert found("NO PVC'S SEEN AT ALL TODAY.") == set()
    # names joined to a found name, apposition after a relation, names before "and Dr(s)"
    assert found("Both Suzanne and Hank are his health care proxies.") == {"Suzanne", "Hank"}
    assert "Ted" in found("Family: Son, Ted, was updated by the team today.")
    assert {"Mary", "Isabel", "Teresa"} <= found("Visitors: Teresa, Mary, Isabel and Jodi.")
    assert found("Meds: Lasix, Coumadin, Lopressor, Heparin, Flagyl.") == set()
    assert {"NELL", "KRAWITZ"} <= found("KCL GIVEN. NELL KRAWITZ AND DRS MORAN AND RUBIN AWARE.")
    # a Title-case name after a relation in an all-lower-case note
    assert {"Marta", "Quigley"} <= found("social-> pt's sister-in-law Marta Quigley was in to visit last "
                                         "noc. pt resting comfortably, no distress noted overnight.")
    # a letter without a dot between a title and a surname ("O Rourke", "L Ruuska")
    assert {"o", "brannigan"} <= found("SBP 80s-90s. Dr. o brannigan in room, aware.")
    assert found("Dr. A fib noted on tele") == set()
    # "Ms." with a dot: a title; in caseless text only before a name-like word
    assert "Jones" in found("Ms. Jones was seen in clinic on Saturday morning.")
    assert "KOWALSKI" in found("PT IS A 70 YO WOMAN. MS. KOWALSKI WAS ADMITTED FOR CHF.")
    assert found("GIVEN 2MG MS. PT RESTING. MS. ALERT AND ORIENTED.") == set()
    # a ten-digit phone number with one dash
    assert any("301555-0199" in t for t in found("pt's son ,joe, (301555-0199) was in ew"))


def test_speed_paths_give_the_same_spans():
    """The ASCII tokenizer equals the Unicode one on ASCII text; a facility word before an
    apostrophe is still found; the token-class cache gives the same spans twice."""
    from sagehealth.privacy.deid.detector import TOKEN_SPLIT, TOKEN_SPLIT_ASCII

    text = "Pt's dtr o'neil came from Mercy Hospital's ED at 7pm; x2 'quoted' don''t ok"
    assert TOKEN_SPLIT_ASCII.split(text) == TOKEN_SPLIT.split(text)
    assert any("Mercy Hospital" in s.text for s in detect("Transferred from Mercy Hospital's ICU today."))
    note = "Seen by Dr. Quenby. Wife Marisol at bedside. Admitted from Kessler Adventist on 3/4."
    assert detect(note) == detect(note)
    # the token classes computed in bulk equal those computed one by one
    from sagehealth.privacy.deid.detector import default_detector

    lex = default_detector().lex
    tokens = {"helen", "nicholson", "bill", "brown", "aware", "powders", "quartermain", "pt", "lasix",
              "settles", "reddish", "gbmc", "ed", "hank", "straße", "i̇stanbul"}
    assert lex.kinds(tokens) == {t: lex.kind(t) for t in tokens}
