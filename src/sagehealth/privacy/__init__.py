"""Privacy: de-identification of free text and of the clinical model (layer 1, privacy)."""
