"""Streaming readers, one module per source format.

Each reader turns one input file into an iterator of :class:`Record` (one input record mapped
to rows of the clinical model) and :class:`Bad` (one input record that could not be read, with
the reason). Readers never load a whole file into memory and never raise on a bad record.
"""

from sagehealth.data.sources.base import Bad, Reader, ReadContext, Record

__all__ = ["Bad", "Reader", "ReadContext", "Record"]
