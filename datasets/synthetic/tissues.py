"""Tissue labels of the phantom and their signal in each contrast.

Signals are relative (urine on T2WI = 1.0); a centre's `SeriesProtocol.scale` turns them into stored values. ``adc`` is
in 1e-3 mm^2/s. ``s0`` is the fat-suppressed EPI b=0 signal; the signal at b is ``s0 * exp(-b * adc * 1e-3)``.
Values are chosen to reproduce the usual appearance of pelvic MRI (fat bright on plain T2 FSE, dark on fat-suppressed
sequences; cervical stroma dark on T2; tumour intermediate T2, enhancing, restricted diffusion; urine bright on T2 and
on ADC) rather than measured relaxation times; docs/synthetic.md tabulates them.
"""

from __future__ import annotations

import numpy as np

PROPS = ("t2", "t2fs", "cet1", "s0", "adc")
T2, T2FS, CET1, S0, ADC = range(len(PROPS))

# How the texture field modulates each property (value * (1 + coupling * texture)): heterogeneous enhancement is
# stronger than the T2 heterogeneity, and cellular (bright) parts have lower ADC.
TEXTURE_COUPLING = np.array([1.0, 1.0, 1.3, 0.8, -0.7], dtype=np.float32)

AIR, FAT, MUSCLE, MARROW, CORTEX, URINE, BLADDER_WALL = 0, 1, 2, 3, 4, 5, 6
MYOMETRIUM, ENDOMETRIUM, CERVIX, CERVICAL_CANAL, VAGINA = 7, 8, 9, 10, 11
RECTAL_WALL, RECTAL_LUMEN, BOWEL, ARTERY, VEIN = 12, 13, 14, 15, 16
TUMOUR, TUMOUR_NECROSIS = 17, 18
NODE_BASE = 20  # node i is label NODE_BASE + 2 i, its necrotic core NODE_BASE + 2 i + 1
MAX_NODES = 8
N_LABELS = NODE_BASE + 2 * MAX_NODES

#                         t2    t2fs  cet1  s0    adc
BASE_VALUES: dict[int, tuple[float, float, float, float, float]] = {
    AIR: (0.0, 0.0, 0.0, 0.0, 0.0),
    FAT: (0.80, 0.07, 0.07, 0.05, 0.5),
    MUSCLE: (0.22, 0.28, 0.30, 0.22, 1.45),
    MARROW: (0.60, 0.12, 0.18, 0.10, 0.45),
    CORTEX: (0.02, 0.02, 0.02, 0.02, 1.0),
    URINE: (1.00, 1.00, 0.05, 1.00, 3.0),
    BLADDER_WALL: (0.28, 0.32, 0.50, 0.30, 1.6),
    MYOMETRIUM: (0.50, 0.55, 0.75, 0.45, 1.6),
    ENDOMETRIUM: (0.80, 0.85, 0.45, 0.70, 1.3),
    CERVIX: (0.15, 0.18, 0.45, 0.25, 1.5),
    CERVICAL_CANAL: (0.85, 0.90, 0.10, 0.80, 2.2),
    VAGINA: (0.25, 0.30, 0.50, 0.30, 1.4),
    RECTAL_WALL: (0.30, 0.35, 0.55, 0.40, 1.5),
    RECTAL_LUMEN: (0.02, 0.02, 0.02, 0.02, 1.0),  # gas
    BOWEL: (0.45, 0.50, 0.50, 0.40, 1.6),
    ARTERY: (0.03, 0.03, 0.90, 0.03, 1.0),  # flow void; bright after contrast
    VEIN: (0.10, 0.12, 0.80, 0.06, 1.0),
    TUMOUR: (0.55, 0.60, 0.55, 0.60, 0.85),  # t2, cet1 and adc are redrawn per patient (phantom.draw_tumour)
    TUMOUR_NECROSIS: (0.85, 0.90, 0.08, 0.80, 2.2),
}
BENIGN_NODE = (0.40, 0.55, 0.50, 0.50, 1.20)
METASTATIC_NODE = (0.50, 0.62, 0.50, 0.70, 0.80)
NODE_NECROSIS = (0.80, 0.85, 0.10, 0.75, 2.0)


def base_lut() -> np.ndarray:
    """``(N_LABELS, len(PROPS))`` float32 table of the base values (unused node labels hold the benign values)."""
    lut = np.zeros((N_LABELS, len(PROPS)), dtype=np.float32)
    for label, values in BASE_VALUES.items():
        lut[label] = values
    for i in range(MAX_NODES):
        lut[NODE_BASE + 2 * i] = BENIGN_NODE
        lut[NODE_BASE + 2 * i + 1] = NODE_NECROSIS
    return lut


def node_label(index: int) -> int:
    return NODE_BASE + 2 * index


def node_necrosis_label(index: int) -> int:
    return NODE_BASE + 2 * index + 1
