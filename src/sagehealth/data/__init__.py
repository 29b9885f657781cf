"""Layer 1, the data ecosystem: clinical model, lakehouse, sources and the ingest pipeline."""
