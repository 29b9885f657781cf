"""Training data out of the research zone: curated, de-identified, versioned dataset exports in
the Hugging Face datasets layout (``export.py``), and their curation (``curation.py``)."""
