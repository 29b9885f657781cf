# Research prototype (issue 17), not product code: an offline chest X-ray IMPRESSION drafter measured
# on the shared IU X-ray dev split (see docs/radiology.md for the method and its numbers). It has its
# own BM25 and rules; the product ports its ideas into sagehealth.radiology on the real store.
# Run: python docs/prototypes/radiology_drafter.py (needs ../shared/data/radiology).
"""Offline drafter of chest X-ray IMPRESSION from indication + comparison + findings.

No LLM, no network.  Inputs used for drafting: indication, comparison, findings
of the query row, plus a retrieval corpus of *other* reports (knowledge split:
their indication+findings -> impression).  MeSH / Problems are used only as
evaluation labels (sanity check of the rule classifier).

Sections
  1. text utils: tokenisation, sentence / clause splitting
  2. negation-aware abnormal-finding classifier (rule lists are data at top)
  3. BM25 retrieval
  4. composition (variants)
  5. metrics (ROUGE-L, normal/abnormal agreement, abnormal recall, latency)
  6. experiment driver  (python drafter.py: recommended variant on the test
     slice; /tmp/rad/final.py reproduces the full variant table)

Recommended: ComposeDrafter(kb, threshold=0.25, max_sent=2,
                            empty_policy="abnormal_nb").draft(row)
"""
from __future__ import annotations

import csv
import math
import re
import statistics
import sys
import time
from collections import Counter, defaultdict

import os
from pathlib import Path

DATA = str(Path(os.environ.get("SAGEHEALTH_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "radiology" / "iu_xray_reports_dev.csv")

# ---------------------------------------------------------------------------
# 2. rule lists (data)
# ---------------------------------------------------------------------------
# Abnormal concepts: concept -> regex alternatives (matched on lowercase text,
# word-bounded).  Concept order = clinical weight (most acute first); it is
# also used to order sentences in composed impressions.
ABNORMAL_CONCEPTS: list[tuple[str, list[str]]] = [
    ("pneumothorax", [r"pneumothora(?:x|ces)"]),
    ("edema", [r"edema", r"vascular congestion", r"congestive", r"congestion",
               r"cephalization", r"chf", r"heart failure"]),
    ("consolidation", [r"consolidations?", r"infiltrates?", r"infiltrat\w*",
                       r"pneumonias?", r"air ?space (?:disease|opacit\w+)",
                       r"airspace"]),
    ("effusion", [r"effusions?", r"pleural fluid", r"blunt\w*",
                  r"fluid in the \w+ fissure", r"loculated"]),
    ("opacity", [r"opacit(?:y|ies)", r"densit(?:y|ies)", r"hazy", r"haziness",
                 r"patchy", r"interstitial (?:markings|opacit\w+|disease|pattern|prominence|changes?)",
                 r"reticular\w*", r"nodular\w*"]),
    ("mass", [r"masse?s?", r"nodules?", r"lesions?", r"neoplasm", r"malignan\w+",
              r"metasta\w+", r"tumou?r", r"adenopathy", r"lymphadenopathy",
              r"hilar (?:fullness|prominence|enlargement)"]),
    ("cardiomegaly", [r"cardiomegaly", r"enlarged", r"enlargement",
                      r"heart size (?:is )?(?:mildly |moderately )?(?:increased|large)",
                      r"borderline", r"top normal", r"top-normal",
                      r"upper limits? of normal", r"upper normal",
                      r"pericardial effusion"]),
    ("atelectasis", [r"atelectas[ie]s", r"atelectatic", r"subsegmental",
                     r"volume loss", r"collapse"]),
    ("fracture", [r"fractures?", r"fractured", r"deformit(?:y|ies)",
                  r"compression", r"wedg\w+"]),
    ("hyperinflation", [r"hyperinflat\w+", r"hyperexpan\w+", r"hyperaerat\w+",
                        r"hyperlucen\w+", r"emphysema\w*", r"copd",
                        r"chronic obstructive", r"flatten\w+", r"bullae?",
                        r"bullous", r"hyperdistention", r"overinflat\w+"]),
    ("hypoinflation", [r"low lung volumes?", r"hypoinflat\w+", r"hypoexpan\w+",
                       r"poor inspiration", r"shallow inspiration",
                       r"low inspiratory", r"crowding", r"elevat\w+"]),
    ("scarring", [r"scar\w*", r"cicatri\w+", r"fibros\w+", r"fibrotic",
                  r"pleural thickening", r"thickening", r"apical cap",
                  r"bronchiectasis", r"chronic (?:lung|interstitial|changes?)",
                  r"parenchymal changes?", r"bronchitic", r"peribronchial",
                  r"bronchial wall"]),
    ("granuloma", [r"granulomas?", r"granulomatous", r"calcifi\w+",
                   r"calcinosis", r"histoplasm\w+"]),
    ("aorta", [r"tortuous\w*", r"tortuosity", r"ectasia", r"ectatic",
               r"unfold\w+", r"atheroscleros\w+", r"atherosclerotic",
               r"aneurysm\w*", r"dilat\w+"]),
    ("degenerative", [r"degenerative", r"spondylo\w+", r"osteophyt\w+",
                      r"arthritis", r"arthropathy", r"osteopenia",
                      r"scoliosis", r"kyphosis", r"kyphotic", r"dextroscoliosis",
                      r"levoscoliosis", r"curvature", r"dish", r"osteoporo\w+",
                      r"spur\w*"]),
    ("device", [r"sternotomy", r"cabg", r"clips?", r"pacemaker", r"pacer",
                r"defibrillator", r"aicd", r"catheters?", r"tubes?", r"stents?",
                r"port-?a-?cath", r"\bport\b", r"picc", r"lines?", r"wires?",
                r"prosthe\w+", r"hardware", r"fixation", r"fusion",
                r"post ?surgical", r"postoperative", r"surgical", r"implants?",
                r"valve replacement", r"replacement", r"status post",
                r"s/p", r"resection", r"lobectomy", r"mastectomy",
                r"cholecystectomy", r"suture\w*", r"occluder", r"artifact",
                r"foreign body", r"device"]),
    ("other", [r"hernia", r"abnormal\w*", r"prominen\w+", r"increased",
               r"widen\w+", r"cyst\w*", r"cavit\w+", r"pneumoperitoneum",
               r"free air", r"eventration", r"air-fluid", r"hemidiaphragm",
               r"diseases?", r"process"]),
]

# Terms that are abnormal ONLY when not negated and not inside a
# "no acute X" style phrase.  (disease/process/abnormal are listed under
# "other" but are almost always used negatively: "no active disease").
WEAK_TERMS = {r"diseases?", r"process", r"abnormal\w*", r"increased",
              r"prominen\w+", r"lines?", r"elevat\w+", r"compression",
              r"crowding", r"patchy", r"artifact", r"surgical", r"device",
              r"replacement", r"wedg\w+", r"dilat\w+", r"curvature",
              r"blunt\w*", r"collapse", r"thickening", r"enlargement",
              r"enlarged"}

# Negation triggers (pre-concept; scope runs to the end of the clause or to a
# scope terminator).
PRE_NEGATION = [
    r"no", r"not", r"without", r"negative for", r"free of", r"clear of",
    r"absence of", r"absent", r"resolution of", r"resolved", r"removal of",
    r"no evidence of", r"no signs? of", r"rule out", r"r/o",
    r"no definite", r"no suspicious", r"nor", r"neither", r"never",
    r"interval resolution", r"cleared", r"exclude[sd]?", r"ruled out",
    r"negative", r"normal", r"within normal limits", r"unremarkable",
]
# Post-concept negation (the concept precedes the trigger in the clause).
POST_NEGATION = [
    r"(?:is|are|was|were) not (?:seen|identified|present|visuali[sz]ed|noted|evident|demonstrated|appreciated|enlarged)",
    r"not (?:seen|identified|present|visuali[sz]ed|noted|evident|demonstrated|appreciated|enlarged)",
    r"(?:has|have) resolved", r"resolved", r"(?:is|are) absent",
    r"(?:is|are|appears?|remains?) (?:within )?normal(?: limits)?",
    r"within normal limits", r"(?:is|are) unremarkable", r"unremarkable",
    r"(?:is|are) negative", r"ruled out", r"normal in (?:size|caliber)",
]
# Scope terminators for pre-negation.
SCOPE_END = [r"but", r"however", r"although", r"though", r"except",
             r"aside from", r"apart from", r"otherwise", r"which", r"with",
             r"there (?:is|are)", r"and (?:there|a|an|mild|moderate|small|large|minimal)",
             r"while", r"whereas"]
# Sentences matching these are normal no matter what (whole-sentence patterns)
NORMAL_SENTENCE = [
    r"^(?:\d+\.\s*)?(?:no|negative for|without) (?:evidence of )?(?:an? )?(?:acute|active)\b",
    r"^(?:\d+\.\s*)?(?:normal|negative|clear) (?:chest|exam\w*|study|radiograph\w*)",
    r"^(?:\d+\.\s*)?stable (?:chest|exam\w*|appearance)",
    r"^comparison\b",
    r"^(?:two|2|frontal|pa|ap|single|the) .*(?:views?|radiographs?|images?|projections?) .*(?:obtained|submitted|performed|provided|consists?)",
    r"^(?:exam|examination) consists",
]

_C = re.IGNORECASE


def _alt(pats):
    return "(?:" + "|".join(pats) + ")"


_CONCEPT_RES = [(name, [(p, re.compile(r"\b" + p + r"\b", _C)) for p in pats])
                for name, pats in ABNORMAL_CONCEPTS]
_PRE_NEG_RE = re.compile(r"\b" + _alt(PRE_NEGATION) + r"\b", _C)
_POST_NEG_RE = re.compile(r"\b" + _alt(POST_NEGATION) + r"\b", _C)
_SCOPE_END_RE = re.compile(r"\b" + _alt(SCOPE_END) + r"\b", _C)
_NORMAL_SENT_RE = [re.compile(p, _C) for p in NORMAL_SENTENCE]

# ---------------------------------------------------------------------------
# 1. text utils
# ---------------------------------------------------------------------------
_TOK = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOK.findall(text.lower())


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences.  Handles numbered lists ("1. ... 2.")
    and avoids splitting decimals (e.g. "1.5 cm")."""
    text = re.sub(r"\s+", " ", (text or "")).strip()
    if not text:
        return []
    # break before list numbers "2. " that follow a sentence end or space
    text = re.sub(r"(?:(?<=[\.\s])|^)(\d{1,2})\.\s+(?=[A-Za-z])", r"\n", text)
    parts = []
    for chunk in text.split("\n"):
        parts += re.split(r"(?<=[a-zA-Z\)\]%])\.+\s+|(?<=\d)\.\s+(?=[A-Z])|;\s+|\?\s+", chunk)
    out = []
    for p in parts:
        p = p.strip(" .;")
        p = re.sub(r"^\d{1,2}\.\s*", "", p)
        if tokens(p) and not re.fullmatch(r"\d{1,2}", p):
            out.append(p)
    return out


# ---------------------------------------------------------------------------
# 2. classifier
# ---------------------------------------------------------------------------
def _negated_spans(s: str) -> list[tuple[int, int]]:
    """Character spans of s under pre-negation scope."""
    spans = []
    for m in _PRE_NEG_RE.finditer(s):
        start = m.end()
        end = len(s)
        t = _SCOPE_END_RE.search(s, start)
        if t:
            end = t.start()
        spans.append((m.start(), end))
    return spans


def concepts_in_sentence(s: str) -> list[str]:
    """Affirmed (non-negated) abnormal concepts in one sentence, in order of
    ABNORMAL_CONCEPTS.  Empty list => sentence is normal."""
    low = s.lower().strip()
    for r in _NORMAL_SENT_RE:
        if r.search(low):
            return []
    neg = _negated_spans(low)
    # post-negation: whole clause preceding the trigger is negated
    for m in _POST_NEG_RE.finditer(low):
        # clause start = last comma/and before trigger
        cstart = max(low.rfind(",", 0, m.start()), 0)
        neg.append((cstart, m.end()))
    found = []
    for name, pats in _CONCEPT_RES:
        for p, r in pats:
            hit = False
            for m in r.finditer(low):
                if any(a <= m.start() < b for a, b in neg):
                    continue
                if p in WEAK_TERMS and not _weak_ok(low, m):
                    continue
                hit = True
                break
            if hit:
                found.append(name)
                break
    return found


def _weak_ok(low: str, m) -> bool:
    """Weak terms count only in a clearly affirmative context."""
    w = m.group(0)
    if re.match(r"diseases?|process|abnormal", w):
        # "airspace disease", "interstitial lung disease", "degenerative disease"
        pre = low[max(0, m.start() - 30):m.start()]
        return bool(re.search(r"(air ?space|interstitial|lung|granulomatous|degenerative|obstructive|bullous|pleural|disc|joint|reactive airway|inflammatory|infectious|valvular)\s+$", pre))
    if w.startswith("enlarg"):
        return not re.search(r"\bnot\b|\bno\b", low[max(0, m.start() - 40):m.start()])
    if w.startswith("elevat"):
        return bool(re.search(r"hemidiaphragm|diaphragm", low))
    if w in ("line", "lines"):
        return bool(re.search(r"\b(picc|central|venous|catheter|tip|midline|sternotomy|sutures?)\b", low)) and "midline" not in w
    if w.startswith("prominen") or w == "increased":
        return not re.search(r"normal", low)
    return True


def is_abnormal_text(text: str) -> bool:
    """Report-level label: True if any sentence affirms an abnormality."""
    return any(concepts_in_sentence(s) for s in split_sentences(text))


def text_concepts(text: str) -> set[str]:
    out = set()
    for s in split_sentences(text):
        out.update(concepts_in_sentence(s))
    return out


# ---------------------------------------------------------------------------
# 3. BM25 retrieval
# ---------------------------------------------------------------------------
class BM25:
    """Minimal Okapi BM25 over token lists (k1=1.2, b=0.75)."""

    def __init__(self, docs: list[list[str]], k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self.N = len(docs)
        self.dl = [len(d) for d in docs]
        self.avgdl = sum(self.dl) / max(1, self.N)
        self.tf = [Counter(d) for d in docs]
        df = Counter()
        for t in self.tf:
            df.update(t.keys())
        self.idf = {w: math.log(1 + (self.N - n + 0.5) / (n + 0.5)) for w, n in df.items()}
        self.post = defaultdict(list)
        for i, t in enumerate(self.tf):
            for w, c in t.items():
                self.post[w].append((i, c))

    def scores(self, q: list[str]) -> dict[int, float]:
        sc = defaultdict(float)
        for w in set(q):
            idf = self.idf.get(w)
            if idf is None:
                continue
            for i, c in self.post[w]:
                norm = c + self.k1 * (1 - self.b + self.b * self.dl[i] / self.avgdl)
                sc[i] += idf * c * (self.k1 + 1) / norm
        return sc

    def top(self, q: list[str], k: int, filt=None) -> list[tuple[int, float]]:
        sc = self.scores(q)
        items = sorted(sc.items(), key=lambda x: -x[1])
        if filt is not None:
            items = [x for x in items if filt(x[0])]
        return items[:k]


def bigrams(toks):
    return toks + [a + "_" + b for a, b in zip(toks, toks[1:])]


def query_tokens(row) -> list[str]:
    """Retrieval key: findings (with bigrams, capturing the radiologist's
    template) + indication."""
    return bigrams(tokens(row["findings"])) + tokens(row["indication"])


# ---------------------------------------------------------------------------
# 5. metrics
# ---------------------------------------------------------------------------
def lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: str, ref: str) -> float:
    h, r = tokens(hyp), tokens(ref)
    l = lcs(h, r)
    if l == 0:
        return 0.0
    p, rc = l / len(h), l / len(r)
    return 2 * p * rc / (p + rc)


def rouge_l_tok(h, r) -> float:
    l = lcs(h, r)
    if l == 0:
        return 0.0
    p, rc = l / len(h), l / len(r)
    return 2 * p * rc / (p + rc)


# ---------------------------------------------------------------------------
# 4. composition
# ---------------------------------------------------------------------------
_FILLER = [
    (r"^(?:there (?:is|are|has been|have been) (?:again )?)", ""),
    (r"^(?:again (?:seen|noted|demonstrated) (?:is|are) )", ""),
    (r"^(?:the (?:patient|pt) (?:is|has))\s+", ""),
    (r"^(?:redemonstration of|re-demonstration of|again demonstrated is)\s+", ""),
    (r"\s+(?:is|are) (?:again )?(?:seen|noted|present|identified|demonstrated|visualized|evident|redemonstrated)\b", ""),
    (r"\s+(?:again )?(?:seen|noted|present|identified|demonstrated|visualized)\b", ""),
    (r"\bxxxx\s+(?=xxxx)", ""),
    (r"^(?:and|also)\s+", ""),
]
_FILLER_RE = [(re.compile(a, _C), b) for a, b in _FILLER]


def shorten(s: str) -> str:
    """Normalise a findings sentence into impression style."""
    t = s.strip()
    for r, b in _FILLER_RE:
        t = r.sub(b, t).strip()
    t = re.sub(r"\s+", " ", t).strip(" ,.")
    return t[:1].upper() + t[1:] if t else t


def affirmed_clause(s: str) -> str:
    """Drop trailing negated clauses ("..., no effusion")."""
    parts = re.split(r",\s*(?=(?:no|without|negative|not)\b)|\s+without\s+|\s+with no\s+", s, flags=_C)
    keep = parts[0]
    return keep


def mbr_pick(cands: list[str], weights: list[float] | None = None,
             self_bonus: float = 1.0) -> str:
    """Most central candidate (minimum-Bayes-risk selection).
    Candidates are assumed ranked best-first; weight of rank n is 1/(n+1)
    unless `weights` is given.  score_i = sum_{j!=i} w_j ROUGE-L(c_i, c_j)
    + self_bonus * w_i  (the bonus favours the closer cases on ties).
    Tuned by leave-one-out on knowledge+feedback: k=10, bonus=1."""
    if not cands:
        return ""
    if weights is None:
        weights = [1.0 / (n + 1) for n in range(len(cands))]
    toks = [tokens(c) for c in cands]
    best, bs = cands[0], -1.0
    for i, ti in enumerate(toks):
        s = self_bonus * weights[i] + sum(
            w * rouge_l_tok(ti, tj) for j, (tj, w) in enumerate(zip(toks, weights)) if j != i)
        if s > bs:
            best, bs = cands[i], s
    return best


class Drafter:
    """Retrieval + rule drafter.  `knowledge` = list of report dicts."""

    def __init__(self, knowledge: list[dict], k: int = 10, carry_threshold: float = 0.25):
        self.kb = [r for r in knowledge if r["impression"].strip()]
        self.bm = BM25([query_tokens(r) for r in self.kb])
        self.bm_ind = BM25([tokens(r["indication"]) for r in self.kb])
        self.k = k
        self.kb_abn = [is_abnormal_text(r["impression"]) for r in self.kb]
        self.kb_has_f = [bool(r["findings"].strip()) for r in self.kb]
        # normal "closing" sentences per kb row (normal sentences of impression)
        self.kb_close = []
        for r in self.kb:
            ss = [s for s in split_sentences(r["impression"]) if not concepts_in_sentence(s)]
            self.kb_close.append(". ".join(ss) + "." if ss else "")
        # carry-over statistics: P(concept in impression | affirmed in findings)
        num, den = Counter(), Counter()
        for r in self.kb:
            if not r["findings"].strip():
                continue
            fc = text_concepts(r["findings"])
            ic = text_concepts(r["impression"])
            for c in fc:
                den[c] += 1
                if ic:  # impression abnormal at all
                    num[c] += 1
        self.carry = {c: (num[c] + 1) / (den[c] + 2) for c in den}
        self.carry_threshold = carry_threshold

    # -- retrieval -----------------------------------------------------------
    def neighbours(self, row, k=None, filt=None):
        """k nearest knowledge reports (BM25).  The query row itself (same
        uid) is always excluded, which makes leave-one-out tuning possible."""
        k = k or self.k
        uid = row["uid"]
        f0 = filt
        filt = lambda i: self.kb[i]["uid"] != uid and (f0 is None or f0(i))
        if row["findings"].strip():
            return self.bm.top(query_tokens(row), k, filt)
        # empty findings: use indication, restricted to other empty-findings rows
        f2 = (lambda i: not self.kb_has_f[i] and (filt is None or filt(i)))
        res = self.bm_ind.top(tokens(row["indication"]), k, f2)
        if not res:
            res = [(i, 0.0) for i in range(len(self.kb)) if f2(i)][:k]
        return res

    # -- variants ------------------------------------------------------------
    def draft_constant(self, row):
        return "No acute cardiopulmonary abnormality."

    def draft_nn1(self, row):
        nb = self.neighbours(row, 1)
        return self.kb[nb[0][0]]["impression"] if nb else self.draft_constant(row)

    def draft_consensus(self, row):
        nb = self.neighbours(row)
        return mbr_pick([self.kb[i]["impression"] for i, _ in nb]) \
            if nb else self.draft_constant(row)

    def normal_phrase(self, row, k=None):
        """Consensus normal impression among nearest NORMAL neighbours."""
        nb = self.neighbours(row, k or self.k, filt=lambda i: not self.kb_abn[i])
        if not nb:
            return self.draft_constant(row)
        return mbr_pick([self.kb[i]["impression"] for i, _ in nb])

    def closing_phrase(self, row):
        """Normal closing sentence typical of neighbouring abnormal reports
        ("No acute cardiopulmonary abnormality"), falling back to normal
        neighbours' consensus."""
        nb = self.neighbours(row, self.k, filt=lambda i: not self.kb_abn[i])
        cands = [self.kb_close[i] for i, _ in nb if self.kb_close[i]]
        cands = [c for c in cands if len(tokens(c)) <= 8] or cands
        return mbr_pick(cands) if cands else "No acute cardiopulmonary abnormality."

    def affirmed(self, row):
        """[(sentence, concepts)] of affirmed abnormal findings sentences."""
        out = []
        for s in split_sentences(row["findings"]):
            cs = concepts_in_sentence(s)
            if cs:
                out.append((s, cs))
        return out

    def draft_rules(self, row, closing=True, gate="carry", max_sent=3):
        """Main drafter.
        gate: 'any'   -> any affirmed finding makes the study abnormal
              'carry' -> only findings whose concepts usually reach the
                         impression (learned P >= carry_threshold) count
              'nn'    -> abnormal if affirmed AND (carry OR most
                         neighbours' impressions are abnormal)"""
        if not row["findings"].strip():
            return self.draft_consensus(row)
        aff = self.affirmed(row)
        if gate != "any":
            keep = [(s, cs) for s, cs in aff
                    if max(self.carry.get(c, 0.5) for c in cs) >= self.carry_threshold]
            if gate == "nn" and aff and not keep:
                nb = self.neighbours(row)
                if sum(self.kb_abn[i] for i, _ in nb) > len(nb) / 2:
                    keep = aff
            aff = keep
        if not aff:
            return self.normal_phrase(row)
        order = {name: i for i, (name, _) in enumerate(ABNORMAL_CONCEPTS)}
        aff.sort(key=lambda x: min(order[c] for c in x[1]))
        sents = []
        for s, _ in aff[:max_sent]:
            t = shorten(affirmed_clause(s))
            if t and t not in sents:
                sents.append(t)
        text = ". ".join(sents) + "."
        acute = {"pneumothorax", "edema", "consolidation", "effusion", "opacity", "mass"}
        if closing and not any(set(cs) & acute for _, cs in aff):
            text += " " + self.closing_phrase(row)
        return text


# ---------------------------------------------------------------------------
# 6. experiment
# ---------------------------------------------------------------------------
def load(path=DATA):
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    rows.sort(key=lambda r: int(r["uid"]))
    for rank, r in enumerate(rows):
        r["_fold"] = rank % 5
    return rows


def evaluate(draft_fn, test, label_fn=is_abnormal_text):
    rl, agree, rec_n, rec_d, lat = [], 0, 0, 0, []
    n = 0
    for r in test:
        ref = r["impression"].strip()
        if not ref:
            continue
        t0 = time.perf_counter()
        hyp = draft_fn(r)
        lat.append((time.perf_counter() - t0) * 1000)
        rl.append(rouge_l(hyp, ref))
        ra, ha = label_fn(ref), label_fn(hyp)
        agree += ra == ha
        if ra:
            rec_d += 1
            rec_n += ha
        n += 1
    return {"n": n, "rougeL": sum(rl) / n, "agree": agree / n,
            "abn_recall": rec_n / max(1, rec_d), "p50_ms": statistics.median(lat)}


# ---------------------------------------------------------------------------
# 4b. learned carry-over gate (which affirmed findings reach the impression)
# ---------------------------------------------------------------------------
MODIFIERS = {
    "mild": r"mild\w*|minimal\w*|slight\w*|trace|small|tiny|subtle",
    "severe": r"moderate\w*|severe\w*|large|marked\w*|extensive|massive|dense",
    "chronic": r"stable|unchanged|chronic|old|healed|remote|again|prior|previous\w*|redemonstrat\w*|persistent|known",
    "new": r"new|increas\w+|interval|worsen\w*|progress\w*|developing|acute",
    "uncertain": r"possib\w+|probab\w+|may|might|could|question\w*|suspicious|concerning|suggest\w*|likely|versus|vs|differential|cannot be excluded|not excluded",
    "recommend": r"recommend\w*|follow-?up|ct|further evaluation|correlat\w+",
    "spine": r"spine|spinal|vertebra\w*|thoracic spine",
    "bilateral": r"bilateral\w*|bibasilar|both",
    "lung": r"lungs?|lobe|base|basilar|apex|apical|perihilar|midlung",
}
_MOD_RE = {k: re.compile(r"\b(?:" + v + r")\b", _C) for k, v in MODIFIERS.items()}
CONCEPT_NAMES = [n for n, _ in ABNORMAL_CONCEPTS]


def sentence_features(s: str, cs: list[str], nb_carry: dict, nb_abn: float,
                      n_aff: int) -> dict:
    f = {"bias": 1.0, "nb_abn": nb_abn, "n_aff": min(n_aff, 5) / 5}
    for c in cs:
        f["c:" + c] = 1.0
    f["nb_carry"] = max(nb_carry.get(c, 0.0) for c in cs)
    f["only"] = 1.0 if n_aff == 1 else 0.0
    for k, r in _MOD_RE.items():
        if r.search(s):
            f["m:" + k] = 1.0
            for c in cs[:1]:
                f["cm:%s:%s" % (c, k)] = 1.0
    f["len"] = min(len(tokens(s)), 30) / 30
    return f


class LogReg:
    """Tiny L2 logistic regression on dict features (batch gradient descent)."""

    def __init__(self, l2=1e-2, iters=400, lr=0.5):
        self.l2, self.iters, self.lr = l2, iters, lr

    def fit(self, X: list[dict], y: list[int]):
        import numpy as np
        self.vocab = {k: i for i, k in enumerate(sorted({k for x in X for k in x}))}
        A = np.zeros((len(X), len(self.vocab)))
        for i, x in enumerate(X):
            for k, v in x.items():
                A[i, self.vocab[k]] = v
        yv = np.array(y, float)
        w = np.zeros(A.shape[1])
        for _ in range(self.iters):
            p = 1 / (1 + np.exp(-A @ w))
            g = A.T @ (p - yv) / len(yv) + self.l2 * w
            w -= self.lr * g
        self.w = w
        return self

    def prob(self, x: dict) -> float:
        z = sum(self.w[self.vocab[k]] * v for k, v in x.items() if k in self.vocab)
        return 1 / (1 + math.exp(-z))


class GatedDrafter(Drafter):
    """Drafter whose abnormal/normal decision and sentence selection come from
    a sentence-level carry-over model trained on the knowledge reports
    (label: the sentence's concept appears affirmed in that report's
    impression).  Neighbour features are computed leave-one-out."""

    def __init__(self, knowledge, k=10, threshold=0.3, empty_policy="consensus",
                 max_sent=3, sent_threshold=None, **kw):
        super().__init__(knowledge, k=k)
        self.threshold = threshold
        self.sent_threshold = threshold if sent_threshold is None else sent_threshold
        self.empty_policy = empty_policy
        self.max_sent = max_sent
        self.kb_ic = [text_concepts(r["impression"]) for r in self.kb]
        self.kb_fc = [text_concepts(r["findings"]) for r in self.kb]
        X, y = [], []
        for i, r in enumerate(self.kb):
            if not self.kb_has_f[i]:
                continue
            for f, cs in self._sent_feats(r, exclude=i):
                X.append(f)
                y.append(int(bool(set(cs) & self.kb_ic[i])))
        self.model = LogReg().fit(X, y)

    def _nb_stats(self, row, exclude=None):
        nb = self.neighbours(row, self.k + 1)
        nb = [i for i, _ in nb if i != exclude][: self.k]
        num, den = Counter(), Counter()
        for i in nb:
            for c in self.kb_fc[i]:
                den[c] += 1
                num[c] += c in self.kb_ic[i]
        carry = {c: (num[c] + 0.5) / (den[c] + 1) for c in den}
        abn = sum(self.kb_abn[i] for i in nb) / max(1, len(nb))
        return carry, abn

    def _sent_feats(self, row, exclude=None):
        aff = self.affirmed(row)
        if not aff:
            return []
        carry, abn = self._nb_stats(row, exclude)
        return [(sentence_features(s, cs, carry, abn, len(aff)), cs) for s, cs in aff]

    def scored_sentences(self, row):
        aff = self.affirmed(row)
        feats = self._sent_feats(row)
        return [(s, cs, self.model.prob(f)) for (s, cs), (f, _) in zip(aff, feats)]

    def p_abnormal(self, row) -> float:
        sc = self.scored_sentences(row)
        return max((p for _, _, p in sc), default=0.0)

    def draft(self, row, closing="auto"):
        if not row["findings"].strip():
            return self.draft_empty(row)
        sc = self.scored_sentences(row)
        if not sc or max(p for _, _, p in sc) < self.threshold:
            return self.normal_phrase(row)
        keep = [x for x in sc if x[2] >= self.sent_threshold] or [max(sc, key=lambda x: x[2])]
        keep.sort(key=lambda x: -x[2])
        sents = []
        for s, _, _ in keep[: self.max_sent]:
            t = shorten(affirmed_clause(s))
            if t and t not in sents:
                sents.append(t)
        text = ". ".join(sents) + "."
        acute = {"pneumothorax", "edema", "consolidation", "effusion", "opacity", "mass"}
        if closing == "always" or (closing == "auto" and not any(set(cs) & acute for _, cs, _ in keep)):
            text += " " + self.closing_phrase(row)
        return text

    def draft_empty(self, row):
        """No findings: policy 'consensus' = MBR of indication neighbours
        (may assert normal); 'abnormal_nb' = MBR over abnormal empty-findings
        neighbours (prior: most such impressions are descriptive/abnormal);
        'flag' = neutral text that asserts nothing."""
        if self.empty_policy == "consensus":
            return self.draft_consensus(row)
        if self.empty_policy == "flag":
            return "Findings section not provided; impression requires review of images."
        nb = self.neighbours(row, self.k, filt=lambda i: self.kb_abn[i])
        return mbr_pick([self.kb[i]["impression"] for i, _ in nb]) if nb else self.draft_consensus(row)


def numbered(text: str) -> bool:
    return bool(re.match(r"\s*1\.\s", text or ""))


def compose(sents: list[str], closing: str | None, number: bool) -> str:
    """Join impression items, optionally as a numbered list."""
    items = [s.rstrip(". ") for s in sents if s] + ([closing.rstrip(". ")] if closing else [])
    if number and len(items) > 0:
        return " ".join("%d. %s." % (n + 1, s) for n, s in enumerate(items))
    return ". ".join(items) + "."


def cut_clause(s: str) -> str:
    """Heavier shortening: keep the first comma-clause, drop measurements."""
    s = re.split(r",\s+(?!and\b|or\b)", s)[0]
    s = re.sub(r"\s*,?\s*measuring .*$", "", s, flags=_C)
    return s


class ComposeDrafter(GatedDrafter):
    """GatedDrafter with configurable composition of abnormal impressions:
    numbering ('auto' follows the neighbours' style), closing sentence policy,
    sentence cap and shortening strength."""

    def __init__(self, knowledge, number="auto", closing="auto", cut=False, **kw):
        super().__init__(knowledge, **kw)
        self.number, self.closing, self.cut = number, closing, cut

    def style_numbered(self, row) -> bool:
        nb = self.neighbours(row, self.k)
        return sum(numbered(self.kb[i]["impression"]) for i, _ in nb) > len(nb) / 2

    def closing_for(self, row) -> str:
        c = self.closing_phrase(row)
        return " ".join(s for s in split_sentences(c)[:1])

    def draft_abnormal(self, row, sc):
        keep = [x for x in sc if x[2] >= self.sent_threshold] or [max(sc, key=lambda x: x[2])]
        keep.sort(key=lambda x: -x[2])
        sents = []
        for s, _, _ in keep[: self.max_sent]:
            t = affirmed_clause(s)
            if self.cut:
                t = cut_clause(t)
            t = shorten(t)
            if t and t not in sents:
                sents.append(t)
        acute = {"pneumothorax", "edema", "consolidation", "effusion", "opacity", "mass"}
        add = (self.closing == "always" or
               (self.closing == "auto" and not any(set(cs) & acute for _, cs, _ in keep)))
        number = self.number == "always" or (self.number == "auto" and self.style_numbered(row))
        return compose(sents, self.closing_for(row) if add else None, number)

    def draft(self, row):
        if not row["findings"].strip():
            return self.draft_empty(row)
        sc = self.scored_sentences(row)
        if not sc or max(p for _, _, p in sc) < self.threshold:
            return self.normal_phrase(row)
        return self.draft_abnormal(row, sc)


class RewriteDrafter(ComposeDrafter):
    """Adds a sentence-level translation memory: every affirmed findings
    sentence in the knowledge base is aligned to the impression sentence that
    shares a concept and has the highest ROUGE-L with it.  At draft time a
    selected findings sentence is replaced by the aligned impression sentence
    of its nearest memory entry when they are similar enough (ROUGE-L >=
    `min_sim`), otherwise it is shortened as before."""

    def __init__(self, knowledge, min_sim=0.6, **kw):
        super().__init__(knowledge, **kw)
        self.min_sim = min_sim
        self.mem_src, self.mem_tgt, self.mem_uid = [], [], []
        for r in self.kb:
            if not r["findings"].strip():
                continue
            imp = [(s, set(concepts_in_sentence(s))) for s in split_sentences(r["impression"])]
            for s, cs in self.affirmed(r):
                best, bs = None, 0.0
                for t, tc in imp:
                    if tc & set(cs):
                        v = rouge_l(s, t)
                        if v > bs:
                            best, bs = t, v
                if best is not None and bs >= 0.2:
                    self.mem_src.append(s)
                    self.mem_tgt.append(best)
                    self.mem_uid.append(r["uid"])
        self.mem_bm = BM25([bigrams(tokens(s)) for s in self.mem_src])

    def rewrite(self, s: str, uid: str) -> str:
        top = self.mem_bm.top(bigrams(tokens(s)), 3, filt=lambda i: self.mem_uid[i] != uid)
        for i, _ in top:
            if rouge_l(s, self.mem_src[i]) >= self.min_sim:
                return self.mem_tgt[i]
        return None

    def draft_abnormal(self, row, sc):
        keep = [x for x in sc if x[2] >= self.sent_threshold] or [max(sc, key=lambda x: x[2])]
        keep.sort(key=lambda x: -x[2])
        sents = []
        for s, _, _ in keep[: self.max_sent]:
            t = self.rewrite(s, row["uid"]) or shorten(affirmed_clause(s))
            t = t.strip(" .")
            if t and t not in sents:
                sents.append(t)
        acute = {"pneumothorax", "edema", "consolidation", "effusion", "opacity", "mass"}
        add = (self.closing == "always" or
               (self.closing == "auto" and not any(set(cs) & acute for _, cs, _ in keep)))
        # a rewritten sentence may already carry the closing ("... without acute disease")
        if add and any(re.search(r"\bacute\b", t, _C) for t in sents):
            add = False
        number = self.number == "always" or (self.number == "auto" and self.style_numbered(row))
        return compose(sents, self.closing_for(row) if add else None, number)


if __name__ == "__main__":
    rows = load()
    know = [r for r in rows if r["_fold"] in (0, 1, 2)]
    feed = [r for r in rows if r["_fold"] == 3]
    test = [r for r in rows if r["_fold"] == 4]
    print("split sizes knowledge/feedback/test:", len(know), len(feed), len(test))
    # recommended configuration (variant F in REPORT.md)
    for name, kb in [("knowledge", know), ("knowledge+feedback", know + feed)]:
        d = ComposeDrafter(kb, threshold=0.25, max_sent=2, empty_policy="abnormal_nb")
        print(name, evaluate(d.draft, test))
