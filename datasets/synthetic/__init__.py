"""Synthetic multi-centre pelvic MRI cohort (``harness synth``)."""
