"""A female pelvis in patient (LPS) millimetres, drawn per patient: anatomy, primary tumour and lymph nodes.

x points to the patient's left, y posterior, z cranial. The anatomy is a fixed template (``_template``) scaled and
shifted per patient; the primary tumour sits in the cervix (Wu's cervical cancer) or in the rectal wall (Lu's rectal
cancer); 2-8 lymph nodes sit at Lu's five locations next to the vessels or organs that define them.

Independence by construction: the tumour is drawn from its own random stream, in a fixed order, and only then shifted
by ``signal * (lnm - 0.5)`` on a latent "aggressiveness" scale. With ``signal == 0`` the tumour is therefore bit-for-bit
the same whatever lnm is (tested). Planted mode (planted.py) adds per-sequence features on their own stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from . import tissues as T
from .nodes import NodeSpec, draw_nodes
from .planted import NODE_CLEARANCE_MM, Overlay, PlantedTumour, canonical_planting, draw_planted
from .shapes import Blob, Shape, Texture, Tube, Vec3, rotation

LOADING = 0.8  # correlation of each tumour feature with the latent aggressiveness


@dataclass(frozen=True)
class PaintObject:
    """One solid painted with one label; later objects overwrite earlier ones (painter's algorithm)."""

    label: int
    shape: Shape
    texture: Texture | None = None


@dataclass(frozen=True)
class TumourParams:
    """The primary tumour of one patient (everything here is independent of lnm when signal is 0)."""

    site: str
    aggressiveness: float  # latent, in SD units, after the lnm shift
    shape: Blob
    necrosis: Blob | None
    values: tuple[float, float, float, float, float]  # t2, t2fs, cet1, s0, adc (1e-3 mm^2/s)
    texture: Texture
    planted: PlantedTumour | None = None  # planted mode only (then values' adc is the planted one)

    @property
    def mean_radius_mm(self) -> float:
        return float(np.prod(self.shape.radii) ** (1 / 3))

    @property
    def adc(self) -> float:
        return self.values[T.ADC]


@dataclass(frozen=True)
class Phantom:
    """Everything needed to render one patient."""

    objects: tuple[PaintObject, ...]
    lut: np.ndarray  # (N_LABELS, len(PROPS)) float32, this patient's tissue values
    tumour: TumourParams
    nodes: tuple[NodeSpec, ...]
    focus: Vec3  # where the radiographer centres the slabs (the tumour)
    fov_center_xy: tuple[float, float]  # in-plane centre of axial FOVs
    overlays: tuple[Overlay, ...] = ()  # planted, sequence-specific modulations (render.render_overlays)


@dataclass(frozen=True)
class _Frame:
    """Per-patient similarity transform of the template: p' = scale * p + offset."""

    scale: float
    offset: Vec3

    def p(self, x: float, y: float, z: float) -> Vec3:
        s, (ox, oy, oz) = self.scale, self.offset
        return (s * x + ox, s * y + oy, s * z + oz)

    def blob(self, c: Vec3, r: Vec3, rot: tuple = (0, 0, 0)) -> Blob:
        return Blob(self.p(*c), tuple(self.scale * v for v in r), rotation(*rot))  # type: ignore[arg-type]

    def tube(
        self,
        c: tuple[float, float],
        slope: tuple[float, float],
        semi: tuple[float, float],
        growth: tuple[float, float] = (0.0, 0.0),
        z_range: tuple[float, float] = (-math.inf, math.inf),
    ) -> Tube:
        s, (ox, oy, oz) = self.scale, self.offset
        return Tube(
            (s * c[0] + ox - slope[0] * oz, s * c[1] + oy - slope[1] * oz),
            slope,
            (s * semi[0] - growth[0] * oz, s * semi[1] - growth[1] * oz),
            growth,
            (s * z_range[0] + oz, s * z_range[1] + oz),
        )


def _bone(objs: list, frame: _Frame, c: Vec3, r: Vec3, rot: tuple = (0, 0, 0), cortex: float = 2.5) -> None:
    objs.append(PaintObject(T.CORTEX, frame.blob(c, r, rot)))
    inner = tuple(max(v - cortex / frame.scale, 1.0) for v in r)
    objs.append(PaintObject(T.MARROW, frame.blob(c, inner, rot)))  # type: ignore[arg-type]


def _template(rng: np.random.Generator, frame: _Frame) -> tuple[list[PaintObject], dict[str, object]]:
    """The anatomy (without tumour and nodes) and the landmarks that tumour and nodes are placed against."""
    a_body, b_body = rng.uniform(150, 175), rng.uniform(105, 125)
    fat = rng.uniform(12, 38)
    fill = rng.uniform(0.7, 1.2)  # bladder filling
    lumen = rng.uniform(3, 9)  # rectal lumen (gas) radius
    f = frame
    objs: list[PaintObject] = []
    body = f.tube((0, 5), (0, 0), (a_body, b_body), z_range=(-80, math.inf))
    objs.append(PaintObject(T.FAT, body))
    for s in (-1, 1):  # thighs below the perineum
        objs.append(PaintObject(T.FAT, f.tube((s * 88, 5), (0, 0), (72, 80), z_range=(-math.inf, -80))))
        objs.append(PaintObject(T.MUSCLE, f.tube((s * 88, 5), (0, 0), (72 - fat, 80 - fat), z_range=(-math.inf, -80))))
    muscle = f.tube((0, 5), (0, 0), (a_body - fat, b_body - 1.1 * fat), z_range=(-80, math.inf))
    objs.append(PaintObject(T.MUSCLE, muscle))
    cavity = f.tube((0, 2), (0, 0), (60, 70), growth=(0.3, 0.1), z_range=(-70, math.inf))
    objs.append(PaintObject(T.FAT, cavity))
    objs.append(PaintObject(T.BOWEL, f.tube((0, -10), (0, 0), (70, 55), z_range=(55, math.inf))))
    # Small pelvic vessels in the fat (painted before the organs, so they only show in fat): flow voids on T2 and
    # DWI, bright after contrast; on a single slice they look like small nodes (Lu 2018 tells them apart by their
    # continuity across slices).
    for _ in range(14):
        x0, y0 = rng.uniform(-50, 50), rng.uniform(-30, 60)
        slope = tuple(float(v) for v in rng.uniform(-0.3, 0.3, size=2))
        r = float(rng.uniform(1.0, 2.2))
        objs.append(PaintObject(T.VEIN, f.tube((x0, y0), slope, (r, r), z_range=(-70, 70))))
    keep_out: list[Blob] = []
    for s in (-1, 1):
        bones = [
            ((s * 96, 2, -12), (24, 36, 32), (0, 0, 0)),  # acetabulum / iliac body
            ((s * 82, 25, 45), (12, 50, 45), (0, 0, s * 36)),  # iliac wing
            ((s * 113, 4, -36), (22, 12, 12), (0, s * 38.7, 0)),  # femoral neck
            ((s * 132, 8, -46), (15, 20, 20), (0, 0, 0)),  # greater trochanter
            ((s * 42, -55, -28), (34, 9, 10), (0, 0, s * 33.7)),  # superior pubic ramus
            ((s * 9, -74, -36), (8, 11, 17), (0, 0, 0)),  # pubic symphysis
            ((s * 55, 25, -48), (12, 22, 20), (0, 0, 0)),  # ischium
            ((s * 90, 0, -22), (23, 23, 23), (0, 0, 0)),  # femoral head (after the acetabulum: the joint)
        ]
        for c, r, rot in bones:
            _bone(objs, f, c, r, rot)
            keep_out.append(f.blob(c, r, rot))
    for c, r, rot in (((0, 82, 42), (45, 15, 50), (17.5, 0, 0)), ((0, 88, -18), (7, 7, 14), (-30, 0, 0))):
        _bone(objs, f, c, r, rot)  # sacrum, coccyx
        keep_out.append(f.blob(c, r, rot))
    uterus = f.blob((0, -8, 45), (30, 20, 34), (35, 0, 0))
    objs += [
        PaintObject(T.MYOMETRIUM, uterus),
        PaintObject(T.ENDOMETRIUM, f.blob((0, -8, 45), (5, 3.5, 24), (35, 0, 0))),
    ]
    bladder = f.blob((0, -44, 6), (36 * fill, 26 * fill, 28 * fill))
    urine = f.blob((0, -44, 6), (36 * fill - 3, 26 * fill - 3, 28 * fill - 3))
    objs += [PaintObject(T.BLADDER_WALL, bladder), PaintObject(T.URINE, urine)]
    vagina = f.blob((0, 20, -32), (15, 7, 22), (15, 0, 0))
    cervix = f.blob((0, 12, 4), (16, 14, 22), (20, 0, 0))
    objs += [PaintObject(T.VAGINA, vagina), PaintObject(T.CERVIX, cervix)]
    objs.append(PaintObject(T.CERVICAL_CANAL, f.blob((0, 12, 4), (2.5, 2, 15), (20, 0, 0))))
    rectum = f.tube((0, 40), (0, 0.12), (14, 13), z_range=(-75, 70))
    objs += [PaintObject(T.RECTAL_WALL, rectum)]
    objs += [PaintObject(T.RECTAL_LUMEN, f.tube((0, 40), (0, 0.12), (lumen, 0.8 * lumen), z_range=(-75, 70)))]
    keep_out += [uterus, bladder, vagina, cervix]
    vessels: dict[str, Tube] = {}
    for s, side in ((-1, "R"), (1, "L")):
        # External iliac: from the pelvic brim (medial, posterior, cranial) to the groin (lateral, anterior, caudal).
        vessels[f"ext_a_{side}"] = f.tube((s * 60, -35), (-s * 0.33, 0.6), (4, 4), z_range=(-60, 80))
        vessels[f"ext_v_{side}"] = f.tube((s * 54, -29), (-s * 0.33, 0.6), (6, 5), z_range=(-60, 80))
        vessels[f"int_a_{side}"] = f.tube((s * 48, 30), (s * 0.05, -0.15), (3.5, 3.5), z_range=(-25, 80))
        vessels[f"int_v_{side}"] = f.tube((s * 44, 37), (s * 0.05, -0.15), (5, 4.5), z_range=(-25, 80))
    vessels["sra"] = f.tube((0, 58), (0, 0.12), (1.8, 1.8), z_range=(20, 80))
    for name, tube in vessels.items():
        objs.append(PaintObject(T.VEIN if "_v_" in name else T.ARTERY, tube))
    landmarks = {
        "meso_z": (f.p(0, 0, -50)[2], f.p(0, 0, 40)[2]),
        "groin_z": (f.p(0, 0, -55)[2], f.p(0, 0, -25)[2]),
        "pelvis_center": f.p(0, 5, 0)[:2],
        "body": body,
        "muscle": muscle,
        "cavity": cavity,
        "fat": fat,
        "cervix": cervix,
        "rectum": rectum,
        "vessels": vessels,
        "keep_out": keep_out,
    }
    return objs, landmarks


def _unit(rng: np.random.Generator, n: int) -> tuple[Vec3, ...]:
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return tuple(tuple(float(c) for c in row) for row in v)  # type: ignore[return-value]


def draw_tumour(rng: np.random.Generator, site: str, anchor: Vec3, lnm: int, signal: float) -> TumourParams:
    """The primary tumour. All random numbers are drawn first, in a fixed order, then lnm shifts the latent scale.

    Args:
        rng: the patient's tumour stream (used for nothing else).
        site: "cervix" or "rectum" (only moves the centre relative to the anchor).
        anchor: centre of the host organ (cervix) or rectal axis at the tumour's height.
        lnm: pathological nodal status, 0 or 1.
        signal: effect size: the lnm=1 minus lnm=0 difference of the latent aggressiveness, in SD units.
    """
    u_a = rng.normal()
    e = rng.normal(size=5)  # size, adc, heterogeneity, lobulation, necrosis
    e_val = rng.normal(size=3)  # t2, cet1, s0 (no association)
    shape_f = rng.uniform(0.8, 1.25, size=3)
    angles = rng.normal(0, 20, size=3)
    offset = rng.normal(0, 3, size=3)
    lobe_dirs = _unit(rng, 5)
    lobe_w = rng.uniform(0.4, 1.2, size=5)
    nec_f = rng.uniform(0.35, 0.5)
    wall_angle = rng.uniform(0, 2 * math.pi)
    texture = Texture.draw(rng, 1.0, (6.0, 14.0))

    a = u_a + signal * (lnm - 0.5)
    z = LOADING * a + math.sqrt(1 - LOADING**2) * e
    radius = 13.0 * math.exp(0.25 * z[0])
    adc = float(np.clip(0.88 - 0.12 * z[1], 0.5, 1.3))
    het = float(np.clip(0.12 + 0.06 * z[2], 0.02, 0.35))
    lob = float(np.clip(0.10 + 0.06 * z[3], 0.0, 0.3))
    radii = radius * shape_f / np.prod(shape_f) ** (1 / 3)
    center = np.asarray(anchor) + offset
    if site == "rectum":  # straddle the wall on one side of the lumen
        center += 0.6 * 14.0 * np.array([math.cos(wall_angle), math.sin(wall_angle), 0.0])
    c = tuple(float(v) for v in center)
    shape = Blob(
        c,
        tuple(float(v) for v in radii),  # type: ignore[arg-type]
        rotation(*angles),
        lobe_dirs,
        tuple(float(lob * w / 2) for w in lobe_w),
    )
    necrosis = None
    if z[4] > 1.0 and radius > 10.0:
        necrosis = Blob(c, tuple(float(nec_f * r) for r in radii), shape.rot)  # type: ignore[arg-type]
    t2 = 0.55 * (1 + 0.08 * e_val[0])
    values = (t2, t2 + 0.05, 0.55 * (1 + 0.12 * e_val[1]), 0.60 * (1 + 0.08 * e_val[2]), adc)
    texture = Texture(het, texture.wavevectors, texture.phases)
    return TumourParams(site, float(a), shape, necrosis, tuple(float(v) for v in values), texture)  # type: ignore[arg-type]


def draw_phantom(
    rngs: dict[str, np.random.Generator],
    *,
    site: str,
    lnm: int,
    signal: float,
    z_half_window: float,
    planting: Mapping[str, float] | None = None,
) -> Phantom:
    """One patient's phantom.

    Args:
        rngs: independent streams "anatomy", "tumour", "nodes" and, in planted mode, "planted" (see
            patient.patient_streams).
        site: primary tumour site, "cervix" or "rectum".
        lnm: pathological nodal status, 0 or 1.
        signal: tumour-lnm effect size of the shared features (see `draw_tumour`); in planted mode the shared
            strength.
        z_half_window: half the cranio-caudal extent imaged by every axial series; nodes stay inside it.
        planting: planted mode: per-sequence strengths (see planted.canonical_planting). The tumour ADC then
            comes from the planted ADC latent, T2WI and CET1WI get their planted overlays, and nodes keep
            `NODE_CLEARANCE_MM` from the tumour's bounding box.
    """
    ra = rngs["anatomy"]
    frame = _Frame(
        float(ra.uniform(0.92, 1.1)), (float(ra.normal(0, 2)), float(ra.normal(0, 4)), float(ra.uniform(-80, 20)))
    )
    objs, lm = _template(ra, frame)
    rect_z = frame.p(0, 0, float(ra.uniform(-25, 15)))[2]
    focus_jitter = ra.uniform(-3, 3, size=3)
    tissue_jitter = ra.normal(0, 0.04, size=T.N_LABELS).astype(np.float32)
    if site == "cervix":
        anchor = lm["cervix"].center
    else:
        cx, cy, _, _ = lm["rectum"].at(rect_z)
        anchor = (cx, cy, rect_z)
    tumour = draw_tumour(rngs["tumour"], site, anchor, lnm, signal)
    overlays: tuple[Overlay, ...] = ()
    if planting is not None:
        planted = draw_planted(rngs["planted"], lnm, canonical_planting(planting), tumour.shape)
        values = (*tumour.values[: T.ADC], planted.adc)
        tumour = replace(tumour, values=values, planted=planted)
        overlays = planted.overlays
    tc = tumour.shape.center
    focus = (tc[0] + float(focus_jitter[0]), tc[1], tc[2] + float(focus_jitter[2]))
    window = (focus[2] - z_half_window, focus[2] + z_half_window)
    clearance = NODE_CLEARANCE_MM if planting is not None else None
    nodes = draw_nodes(rngs["nodes"], site, lnm, lm, tumour.shape, window, clearance_mm=clearance)

    lut = T.base_lut() * (1.0 + tissue_jitter[:, None])
    lut[T.AIR] = 0.0
    lut[T.TUMOUR] = tumour.values
    objs.append(PaintObject(T.TUMOUR, tumour.shape, tumour.texture))
    if tumour.necrosis is not None:
        objs.append(PaintObject(T.TUMOUR_NECROSIS, tumour.necrosis))
    objs += [PaintObject(T.FAT, node.halo) for node in nodes]
    for node in nodes:
        lut[node.label] = node.values
        objs.append(PaintObject(node.label, node.shape, node.texture))
        if node.necrosis is not None:
            objs.append(PaintObject(T.node_necrosis_label(node.index), node.necrosis))
    body_c = frame.p(0, 5, 0)
    fov_c = (body_c[0] + float(focus_jitter[1]), body_c[1] - 5.0 + 2.0 * float(focus_jitter[1]))
    return Phantom(tuple(objs), lut.astype(np.float32), tumour, nodes, focus, fov_c, overlays)
