"""Chunks that respect clinical structure: one document becomes section-aware, sentence-aligned
windows with overlap, each with exact character offsets into the document text.

A note or report is split along its sections (``documents.sections``: HISTORY, FINDINGS,
IMPRESSION, ...); a section longer than ``max_words`` is cut into windows of whole sentences
(up to ``max_words`` words) that overlap by ``overlap`` sentences; short neighbouring sections are
not merged, so a chunk never straddles two sections. A literature record is its title and its
abstract (the abstract windowed the same way). Every chunk carries a *header* (title, section)
that is indexed and embedded with it (contextual chunk headers) while ``text`` stays the exact
span of the source, so a hit can be cited and highlighted in the original.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

#: sentence ends: . ! ? (not after a one-letter initial or a common abbreviation) or a line break
#: followed by a new line that looks like the start of an item
_SENT_END = re.compile(
    r"(?<!\b[A-Za-z])(?<!\b\d)(?<!\b\d\d)(?<!\bDr)(?<!\bMr)(?<!\bMs)(?<!\bMrs)(?<!\bvs)(?<!\be\.g)(?<!\bi\.e)(?<!\bSt)(?<!\bNo)"
    r"[.!?]+[\"')\]]*\s+(?=[A-Z0-9\[(\"'])"
    r"|\n\s*\n+"
    r"|\n(?=\s*(?:[-*•]|\d+[.)]\s|[A-Z][A-Z ]{2,}:))"
)
_WORD = re.compile(r"\S+")

MAX_WORDS = 120
#: an abstract is embedded whole up to this many words (e5 reads 512 tokens): most are one chunk
LITERATURE_MAX_WORDS = 256
OVERLAP = 1  # sentences shared by consecutive windows


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document: ``text`` is ``document_text[start:end]``; ``header`` is context
    (title, section) indexed and embedded with it."""

    index: int
    start: int
    end: int
    text: str
    section: str | None
    header: str

    @property
    def indexed_text(self) -> str:
        """What the full-text index and the embedder see."""
        return "\n".join(x for x in (self.header, self.text) if x)


def sentences(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text`` (shifted by ``offset``), whitespace trimmed."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _SENT_END.finditer(text):
        _add(text, pos, m.start() + len(m.group().rstrip()), spans, offset)
        pos = m.end()
    _add(text, pos, len(text), spans, offset)
    return spans


def _add(text: str, start: int, end: int, spans: list[tuple[int, int]], offset: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    lead = len(piece) - len(piece.lstrip())
    spans.append((offset + start + lead, offset + start + lead + len(stripped)))


def windows(text: str, start: int, end: int, *, max_words: int = MAX_WORDS,
            overlap: int = OVERLAP) -> Iterator[tuple[int, int]]:
    """Sentence-aligned windows ``(start, end)`` over ``text[start:end]``: whole sentences up to
    ``max_words`` words, consecutive windows sharing ``overlap`` sentences; a single sentence
    longer than ``max_words`` is cut at word boundaries."""
    units: list[tuple[int, int, int]] = []  # (start, end, words)
    for s, e in sentences(text[start:end], start):
        words = [(m.start() + s, m.end() + s) for m in _WORD.finditer(text, s, e)]
        if len(words) <= max_words:
            units.append((s, e, len(words)))
            continue
        for i in range(0, len(words), max_words):  # an over-long "sentence" (a table, a list)
            part = words[i:i + max_words]
            units.append((part[0][0], part[-1][1], len(part)))
    i = 0
    while i < len(units):
        j, words = i, 0
        while j < len(units) and (j == i or words + units[j][2] <= max_words):
            words += units[j][2]
            j += 1
        yield units[i][0], units[j - 1][1]
        if j >= len(units):
            return
        i = max(j - overlap, i + 1)


def chunk_document(text: str | None, sections: Sequence[dict] | None = None, *, title: str | None = None,
                   max_words: int = MAX_WORDS, overlap: int = OVERLAP) -> list[Chunk]:
    """Chunks of a note or report: windows inside each section (or over the whole text when it
    has no sections)."""
    if not text or not text.strip():
        return []
    parts = [(s["name"], s["start"], s["end"]) for s in sections or [] if s["end"] > s["start"]]
    if not parts:
        parts = [(None, 0, len(text))]
    elif parts[0][1] > 0 and text[: parts[0][1]].strip():
        parts.insert(0, (None, 0, parts[0][1]))
    out: list[Chunk] = []
    for name, s, e in parts:
        header = " — ".join(x for x in (title, name.title() if name and name != "PREAMBLE" else None) if x)
        for ws, we in windows(text, s, e, max_words=max_words, overlap=overlap):
            out.append(Chunk(len(out), ws, we, text[ws:we], name, header))
    return out


def chunk_literature(title: str | None, text: str | None, *, max_words: int = LITERATURE_MAX_WORDS,
                     overlap: int = OVERLAP) -> list[Chunk]:
    """Chunks of an article: the abstract in windows, each headed by the title (the title alone
    when there is no abstract). Offsets are into ``text`` (the abstract)."""
    if not text or not text.strip():
        return [Chunk(0, 0, 0, "", "TITLE", title)] if title and title.strip() else []
    return [Chunk(i, s, e, text[s:e], "ABSTRACT", title or "")
            for i, (s, e) in enumerate(windows(text, 0, len(text), max_words=max_words, overlap=overlap))]
