"""Free-text de-identification: detect PHI spans, then replace them with tags or surrogates.

    from sagehealth.privacy.deid import deidentify
    result = deidentify("Seen by Dr. Mesite on 7/22.", mode="tags")
    result.text   # "Seen by Dr. [NAME] on [DATE]."
    result.spans  # [Span(start=11, end=17, type='NAME', ...), ...]
"""

from __future__ import annotations

from dataclasses import dataclass

from sagehealth.privacy.deid.detector import Detector, detect
from sagehealth.privacy.deid.spans import PHI_TYPES, Span
from sagehealth.privacy.deid.transform import MODES, Transformer, secret_key


@dataclass(frozen=True)
class DeidResult:
    """De-identified text and the spans found in the original."""

    text: str
    spans: list[Span]

    def as_dict(self) -> dict[str, object]:
        return {"text": self.text, "spans": [s.as_dict() for s in self.spans]}


def clean_text(text: str | bytes) -> str:
    """Text as the detector expects it: bytes decoded as UTF-8 (bad bytes replaced), NUL
    characters dropped; other control characters are kept (offsets stay meaningful)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text.replace("\x00", "")


def deidentify(text: str | bytes, *, mode: str = "tags", key: str | bytes | None = None,
               patient: str = "", detector: Detector | None = None) -> DeidResult:
    """Detect PHI in ``text`` and replace it (``mode`` tags or surrogate; see transform)."""
    text = clean_text(text)
    spans = detector.detect(text) if detector else detect(text)
    transformer = Transformer(mode, secret_key(key) if mode == "surrogate" else None)
    return DeidResult(transformer.apply(text, spans, patient), spans)


__all__ = ["DeidResult", "Detector", "MODES", "PHI_TYPES", "Span", "Transformer", "clean_text",
           "deidentify", "detect", "secret_key"]
