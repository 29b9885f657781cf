"""Identifier kinds a spot check found missing (issue 14): synthetic cases, every value made up.

Each case names the text and the PHI strings that must be found *whole*: one detected span must
cover all of the string (a span split in two, or one that stops inside the value, fails). These
are separate from the PhysioNet scores (tests/test_deid.py, docs/deid.md).
"""

from __future__ import annotations

import pytest

from sagehealth.privacy.deid import deidentify, detect


def covered(text: str, phi: str) -> bool:
    """One span covers every letter and digit of the first occurrence of ``phi``."""
    i = text.index(phi)
    must = [k for k in range(i, i + len(phi)) if text[k].isalnum()]
    return any(s.start <= must[0] and must[-1] < s.end for s in detect(text))


CASES = [
    # device and implant serial numbers, lot numbers
    ("Pacemaker implanted, device serial number PZX884512K, interrogated today.", ["PZX884512K"]),
    ("Implant serial # AB-44719-Q was recorded in the OR log.", ["AB-44719-Q"]),
    ("ICD S/N: 7731-XK-0042 checked by the rep.", ["7731-XK-0042"]),
    ("Vaccine given, Lot # 4J882A, exp 2026, left deltoid.", ["4J882A"]),
    ("Heparin lot number: HX20931 per pharmacy.", ["HX20931"]),
    ("Knee implant UDI (01)00844588003288 scanned.", ["00844588003288"]),
    # licence plates
    ("Family car, license plate 7ABC123, parked in the ED lot.", ["7ABC123"]),
    ("Security noted plate number XKR-4471 on the vehicle.", ["XKR-4471"]),
    # accession and pathology numbers
    ("CT chest, Accession # RAD-2024-118833, read by radiology.", ["RAD-2024-118833"]),
    ("Biopsy reviewed, surgical pathology S24-10233, margins clear.", ["S24-10233"]),
    ("Specimen no. SP-22-00871 sent to the lab.", ["SP-22-00871"]),
    # health-plan, member, account, certificate numbers
    ("Insurance: health plan ID HPN-778124-02, member # W88213457.", ["HPN-778124-02", "W88213457"]),
    ("Member ID: QZX-118-2294 on the card.", ["QZX-118-2294"]),
    ("Billing account no. 00234-9981-7 was updated.", ["00234-9981-7"]),
    ("Death certificate #C-99812 filed.", ["C-99812"]),
    ("Medicare number 1EG4-TE5-MK73 verified.", ["1EG4-TE5-MK73"]),
    # apartment / suite / unit parts of addresses, street types
    ("Lives at 12 Birchwood Crescent, Apt 4B, with her daughter.", ["12 Birchwood Crescent", "Apt 4B"]),
    ("Clinic at 400 Harbor Plaza, Suite 210.", ["400 Harbor Plaza", "Suite 210"]),
    ("Address 77 Larkspur Close, Unit 12.", ["77 Larkspur Close", "Unit 12"]),
    ("Moved to 9 Quarry Terrace last year.", ["9 Quarry Terrace"]),
    ("Home: 1180 Windmill Parkway.", ["1180 Windmill Parkway"]),
    ("Sister lives at 5 Aster Way.", ["5 Aster Way"]),
    ("Mail to 31 Cobble Circle.", ["31 Cobble Circle"]),
    ("Address 2020 Pine Ridge Trail.", ["2020 Pine Ridge Trail"]),
    ("ADDRESS: 44 OSPREY CRESCENT, APT 7C.", ["44 OSPREY CRESCENT", "APT 7C"]),
    # names followed by credentials, mid-line
    ("Dressing changed by Jaroslava Mbeki, RN at 0400.", ["Jaroslava", "Mbeki"]),
    ("Plan reviewed with Tomasz Ng MD this morning.", ["Tomasz", "Ng"]),
    ("Seen by Oyelaran Quist, NP and cleared for discharge.", ["Oyelaran", "Quist"]),
    ("Dictated by Ignatius Wrexham, PA-C.", ["Ignatius", "Wrexham"]),
    # a rare capitalised word right after a relation, even when a dictionary lists it
    ("Lives with his daughter Brunhilde Kasprzak in town.", ["Brunhilde", "Kasprzak"]),
    # a lower-case address after an address cue
    ("home address 77 larkspur close, unit 12; mail goes to 9 quarry terrace.",
     ["77 larkspur close", "unit 12", "9 quarry terrace"]),
    # ages over 89 in any phrasing
    ("Elderly woman (age 94) admitted with a fall.", ["94"]),
    ("92 y/o male with CHF.", ["92"]),
    ("92yo F, DNR.", ["92"]),
    ("A ninety-three year old man with sepsis.", ["ninety-three"]),
    ("Patient aged 91 lives alone.", ["91"]),
    ("Mother is 97 years of age and lives nearby.", ["97"]),
    ("A one hundred and two year old woman.", ["one hundred and two"]),
    # SSNs with and without a cue
    ("Patient Zvi Varnadoe, SSN 999-94-5397, phone 617-555-0143", ["Zvi", "Varnadoe", "999-94-5397", "617-555-0143"]),
    ("SSN: 999945397 on the form.", ["999945397"]),
    ("social security number 078 05 1120 given by the son.", ["078 05 1120"]),
    ("number on file 912-67-4411 per registration", ["912-67-4411"]),
    # e-mails, URLs (whole, with the domain), UUIDs, identifiers after cues
    ("Send records to q.varnadoe+deid@mail.example-health.org today.", ["q.varnadoe+deid@mail.example-health.org"]),
    ("Portal: https://portal.example-health.org/patients/88123?view=full.", ["https://portal.example-health.org/patients/88123?view=full"]),
    ("See mychart.example-clinic.com/records/4471 for results.", ["mychart.example-clinic.com/records/4471"]),
    ("Order 3f2b9c1e-7d4a-4b8e-9f10-2a6c5d8e7b41 was placed.", ["3f2b9c1e-7d4a-4b8e-9f10-2a6c5d8e7b41"]),
    ("MRN: AB-7741-229 confirmed at admission.", ["AB-7741-229"]),
    ("ID XQ7731204Z on the wristband.", ["XQ7731204Z"]),
    ("Medical record # 00-88-1234-X sent.", ["00-88-1234-X"]),
]


@pytest.mark.parametrize(("text", "phi"), CASES, ids=[c[0][:40] for c in CASES])
def test_identifier_found_whole(text, phi):
    for p in phi:
        assert covered(text, p), (p, [(s.text, s.rule) for s in detect(text)])


@pytest.mark.parametrize(
    "text",
    [
        "Serial 12-lead ECGs; obtain serial 2-view CXR. ORIF with plate 3-hole construct.",
        "Large amount of secretions, a lot of 4-5 cc plugs suctioned.",
        "Case discussed with team; group 2 of the study; ID consult called.",
        "Transferred to bed A at 1400; room 4 cleaned.",
        "She is 89 years old. Aged care placement discussed; age 45 at first MI.",
        "Labs 135-10-4.2 stable; K 3.9; INR 1.2.",
        "HR80-100, SBP90-110 overnight; at 4 pm close observation; 2 units given on 3 way stopcock.",
    ],
)
def test_no_identifier_in_plain_clinical_text(text):
    """Cues used in clinical senses stay clear ("serial ECGs", "a lot of", "ID consult"); an
    age of 89 or less is no PHI."""
    got = [(s.text, s.rule) for s in detect(text)]
    assert got == [], got


def test_drug_after_a_name_list_is_no_name():
    """A comma after a name found with a title does not make the next capitalised word a name."""
    got = {s.text for s in detect("Reported to Dr. Quenby, Esmolol gtt d/c'd at 0500.")}
    assert got == {"Quenby"}, got


def test_ssn_is_replaced_in_tags_mode():
    out = deidentify("Patient Zvi Varnadoe, SSN 999-94-5397, phone 617-555-0143").text
    assert "999" not in out and "5397" not in out and "Varnadoe" not in out and "0143" not in out
