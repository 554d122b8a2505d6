"""Synthetic multi-centre pelvic MRI cohort (``harness synth``).

`generate_cohort` writes a dataset in the harness's format (docs/data-format.md): real DICOM series (T2WI, CET1WI,
DWI with two b-values, ADC) rendered from a per-patient pelvic phantom under four centres' protocols (Wu 2020, Lu 2018),
with ``manifest.csv`` and ``annotations.csv``. docs/synthetic.md describes the phantom, the protocols and the effect
sizes; planted mode (``signal_by_sequence``, planted.py) gives each sequence its own, known signal.
"""

from .cohort import DEFAULT_SIGNAL, CohortSummary, generate_cohort
from .patient import MR_LN_SENSITIVITY, MR_LN_SPECIFICITY
from .scanners import CentreProtocol, SeriesProtocol, centre_protocol

__all__ = [
    "DEFAULT_SIGNAL",
    "MR_LN_SENSITIVITY",
    "MR_LN_SPECIFICITY",
    "CentreProtocol",
    "CohortSummary",
    "SeriesProtocol",
    "centre_protocol",
    "generate_cohort",
]
