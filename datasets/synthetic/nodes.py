"""Lymph nodes at Lu 2018's five locations, placed next to the vessel or organ that defines each location.

Benign nodes: short axis 2.5-4.5 mm, smooth oval, homogeneous, ADC ~1.2e-3 mm^2/s. Metastatic nodes (Lu's criteria:
short axis >= 5 mm, irregular border, high DWI signal): short axis 5-15 mm, rounder, lobulated, heterogeneous,
ADC ~0.8e-3 mm^2/s, a necrotic core in 40 % of those >= 10 mm. Every node sits in a thin fat halo, as nodes do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import tissues as T
from .shapes import Blob, Texture, Tube, Vec3, rotation

LOCATIONS = ("superior_rectal", "mesorectal", "internal_iliac", "external_iliac", "inguinal")
BENIGN_SHORT_AXIS_MM = (2.5, 4.5)
METASTATIC_SHORT_AXIS_MM = (5.0, 15.0)
HALO_MM = 2.5
_LOCATION_PROBS = {  # node location frequencies by primary site (our choice)
    "cervix": (0.10, 0.10, 0.30, 0.30, 0.20),
    "rectum": (0.20, 0.40, 0.20, 0.10, 0.10),
}
# The first metastatic node goes to a first-echelon station (never inguinal, which small FOVs may cut off).
_FIRST_ECHELON = {"cervix": ("internal_iliac", "external_iliac"), "rectum": ("mesorectal", "superior_rectal")}


@dataclass(frozen=True)
class NodeSpec:
    """A lymph node: location class, metastatic or not, and its solid."""

    index: int
    location: str
    metastatic: bool
    shape: Blob
    necrosis: Blob | None
    texture: Texture | None
    values: tuple[float, float, float, float, float]  # t2, t2fs, cet1, s0, adc

    @property
    def short_axis_mm(self) -> float:
        """Smallest diameter of the underlying ellipsoid (lobes only add to it)."""
        return 2.0 * min(self.shape.radii)

    @property
    def label(self) -> int:
        return T.node_label(self.index)

    @property
    def halo(self) -> Blob:
        r = tuple(v * self.shape.max_extent + HALO_MM for v in self.shape.radii)
        return Blob(self.shape.center, r, self.shape.rot)  # type: ignore[arg-type]


def _hits_blob(blob: Blob, p: np.ndarray, margin: float) -> bool:
    d = p - np.asarray(blob.center)
    q = (np.asarray(blob.rot).T @ d) / (np.asarray(blob.radii) * blob.max_extent + margin)
    return float(q @ q) < 1.0


def _in_tube(tube: Tube, p: np.ndarray, margin: float) -> bool:
    """Whether p is inside the tube's cross-section grown by margin (negative: shrunk)."""
    if not tube.z_range[0] <= p[2] <= tube.z_range[1]:
        return False
    cx, cy, a, b = tube.at(float(p[2]))
    if a + margin <= 0 or b + margin <= 0:
        return False
    return ((p[0] - cx) / (a + margin)) ** 2 + ((p[1] - cy) / (b + margin)) ** 2 < 1.0


def _node_shape(rng: np.random.Generator, metastatic: bool) -> tuple[Vec3, tuple, tuple, tuple, float]:
    """(radii, rotation, lobe directions, lobe amplitudes, short axis) of a node centred at the origin."""
    if metastatic:
        d = METASTATIC_SHORT_AXIS_MM[0] + 10.0 * rng.beta(1.6, 2.6)
        radii = (d / 2, d / 2 * rng.uniform(1.0, 1.2), d / 2 * rng.uniform(1.0, 1.3))
        dirs = rng.normal(size=(4, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lobe_dirs = tuple(tuple(float(c) for c in row) for row in dirs)
        lobe_amps = tuple(float(a) for a in rng.uniform(0.06, 0.18, size=4))
    else:
        d = rng.uniform(*BENIGN_SHORT_AXIS_MM)
        radii = (d / 2, d / 2 * rng.uniform(1.0, 1.3), d / 2 * rng.uniform(1.1, 1.7))
        lobe_dirs, lobe_amps = (), ()
    rot = rotation(*rng.uniform(0, 360, size=3))
    return tuple(float(r) for r in radii), rot, lobe_dirs, lobe_amps, float(d)  # type: ignore[return-value]


def _propose(
    rng: np.random.Generator, location: str, lm: dict, r_max: float, z_window: tuple[float, float]
) -> np.ndarray | None:
    """A candidate centre for a node of max radius r_max at `location`, or None when the location is not imaged."""
    vessels: dict[str, Tube] = lm["vessels"]
    side = int(rng.choice([-1, 1]))
    tag = "R" if side < 0 else "L"

    def z_in(lo: float, hi: float) -> float | None:
        lo, hi = max(lo, z_window[0] + r_max), min(hi, z_window[1] - r_max)
        return float(rng.uniform(lo, hi)) if hi > lo else None

    if location in ("external_iliac", "internal_iliac"):
        artery = vessels[f"{'ext' if location == 'external_iliac' else 'int'}_a_{tag}"]
        z = z_in(artery.z_range[0] + 5, artery.z_range[1] - 5)
        if z is None:
            return None
        cx, cy, a, _ = artery.at(z)
        # In the left-side frame (0 deg = lateral, 90 = posterior) the veins lie posteromedially: keep clear.
        phi = math.radians(rng.uniform(-150, 60) if location == "external_iliac" else rng.uniform(160, 280))
        d = a + r_max + HALO_MM + 1.0 + rng.uniform(0, 4)
        return np.array([cx + side * d * math.cos(phi), cy + d * math.sin(phi), z])
    if location == "mesorectal":
        rectum: Tube = lm["rectum"]
        z = z_in(*lm["meso_z"])
        if z is None:
            return None
        cx, cy, a, b = rectum.at(z)
        phi = math.radians(rng.uniform(-30, 210))
        d = max(a, b) + r_max + HALO_MM + rng.uniform(0, 8)
        return np.array([cx + d * math.cos(phi), cy + d * math.sin(phi), z])
    if location == "superior_rectal":
        sra = vessels["sra"]
        z = z_in(sra.z_range[0], sra.z_range[1])
        if z is None:
            return None
        cx, cy, a, _ = sra.at(z)
        phi = rng.uniform(0, 2 * math.pi)
        d = a + r_max + HALO_MM + 1.0 + rng.uniform(0, 3)
        return np.array([cx + d * math.cos(phi), cy + d * math.sin(phi), z])
    # Inguinal: in the subcutaneous fat of the groin, anterior to the femoral vessels.
    z = z_in(*lm["groin_z"])
    if z is None:
        return None
    cx, cy, a_body, b_body = lm["body"].at(z)
    x = cx + side * rng.uniform(0.42, 0.62) * a_body
    y_skin = cy - b_body * math.sqrt(max(1.0 - ((x - cx) / a_body) ** 2, 0.0))
    return np.array([x, y_skin + rng.uniform(0.35, 0.65) * lm["fat"], z])


def _near_box(p: np.ndarray, reach: float, box: tuple[np.ndarray, np.ndarray] | None) -> bool:
    """Whether the cube p +- reach meets the axis-aligned box (lo, hi)."""
    return box is not None and bool(np.all(p + reach > box[0]) and np.all(p - reach < box[1]))


def _fits(
    p: np.ndarray,
    r_max: float,
    lm: dict,
    tumour: Blob,
    placed: list[tuple[np.ndarray, float]],
    location: str,
    keep_out_box: tuple[np.ndarray, np.ndarray] | None = None,
) -> bool:
    margin = r_max + HALO_MM + 1.0
    cx, cy = lm["pelvis_center"]
    # Pelvic nodes stay inside the true pelvis, which is inside even the smallest FOV (Wu's 200 x 180 mm).
    if location != "inguinal" and (abs(p[0] - cx) > 85 - r_max or abs(p[1] - cy) > 80 - r_max):
        return False
    if not _in_tube(lm["body"], p, -(r_max + 2.0)):
        return False
    if any(_hits_blob(b, p, margin) for b in lm["keep_out"]) or _hits_blob(tumour, p, margin):
        return False
    if _near_box(p, r_max + HALO_MM, keep_out_box):
        return False
    if _in_tube(lm["rectum"], p, margin):
        return False
    for tube in lm["vessels"].values():
        near = tube.distance_xy(float(p[0]), float(p[1]), float(p[2])) < max(tube.semi_axes) + margin
        if near and tube.z_range[0] <= p[2] <= tube.z_range[1]:
            return False
    return all(np.linalg.norm(p - q) >= r_max + r + 2 * HALO_MM + 1.0 for q, r in placed)


def draw_nodes(
    rng: np.random.Generator,
    site: str,
    lnm: int,
    landmarks: dict,
    tumour: Blob,
    z_window: tuple[float, float],
    clearance_mm: float | None = None,
) -> tuple[NodeSpec, ...]:
    """2-8 nodes; lnm=1 patients have 1-4 metastatic ones (the first at a first-echelon station), lnm=0 none.

    Args:
        rng: the patient's node stream.
        site: primary site, sets the location frequencies.
        lnm: pathological nodal status.
        landmarks: from the anatomy template (vessels, rectum, body, keep-out solids).
        tumour: the primary tumour's solid (nodes keep clear of it).
        z_window: cranio-caudal range imaged by every axial series; nodes are placed inside it.
        clearance_mm: when given (planted mode), every node with its fat halo also keeps this far from the tumour's
            bounding box, so that tumour-centred crops never show a node (nodes are where lnm shows in an image).
    """
    n_total = int(rng.integers(2, T.MAX_NODES + 1))
    n_meta = min(1 + int(rng.binomial(3, 0.3)), n_total) if lnm else 0
    probs = np.asarray(_LOCATION_PROBS[site])
    placed: list[tuple[np.ndarray, float]] = []
    nodes: list[NodeSpec] = []
    keep_out_box = None
    if clearance_mm is not None:
        lo, hi = tumour.aabb()
        keep_out_box = (lo - clearance_mm, hi + clearance_mm)
    for i in range(n_total):
        metastatic = i < n_meta
        radii, rot, lobe_dirs, lobe_amps, _ = _node_shape(rng, metastatic)
        r_max = max(radii) * (1.0 + sum(lobe_amps))
        first = metastatic and i == 0
        center, location = None, ""
        for attempt in range(600):
            # The first metastatic node tries a first-echelon station; around a large primary (a strong `signal`
            # makes lnm=1 tumours bigger) that station may be full, so after 200 tries any station will do (the
            # first 200 tries are as before, so cohorts that could be drawn before are drawn unchanged).
            if first and attempt < 200:
                location = str(rng.choice(_FIRST_ECHELON[site]))
            elif attempt % 25 == 0:  # a location that keeps failing (not imaged, crowded) is replaced
                location = str(rng.choice(LOCATIONS, p=probs))
            p = _propose(rng, location, landmarks, r_max, z_window)
            if p is not None and _fits(p, r_max, landmarks, tumour, placed, location, keep_out_box):
                center = p
                break
        if center is None:
            if metastatic:
                raise RuntimeError("could not place a metastatic node; the imaged z window is too small")
            continue
        c = tuple(float(v) for v in center)
        if metastatic:
            texture = Texture.draw(rng, rng.uniform(0.12, 0.25), (3.0, 6.0))
            base, jitter = T.METASTATIC_NODE, np.clip(rng.normal(0, 0.05, size=2), -0.1, 0.1)
            nec_draw = rng.uniform()
            necrosis = None
            if 2 * min(radii) >= 10.0 and nec_draw < 0.4:
                necrosis = Blob(c, tuple(0.4 * r for r in radii), rot)  # type: ignore[arg-type,misc]
        else:
            texture, necrosis = None, None
            base, jitter = T.BENIGN_NODE, np.clip(rng.normal(0, 0.05, size=2), -0.1, 0.1)
        values = tuple(float(v * (1 + jitter[0])) for v in base[:4]) + (float(base[4] * (1 + jitter[1])),)
        index = len(nodes)
        shape = Blob(c, radii, rot, lobe_dirs, lobe_amps)  # type: ignore[arg-type]
        nodes.append(NodeSpec(index, location, metastatic, shape, necrosis, texture, values))  # type: ignore[arg-type]
        placed.append((center, r_max))
    return tuple(nodes)
