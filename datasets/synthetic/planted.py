"""Planted mode: each MRI sequence carries its own, known amount of information about nodal status.

In the default mode one latent tumour "aggressiveness" drives features that every sequence sees (phantom.py). In
planted mode each of three sequence-specific tumour features is driven by its own latent variable

    a_seq = u_seq + strength_seq * (lnm - 0.5),   u_seq ~ N(0, 1) independent,

through a strictly monotone map, so a sequence's information about lnm comes from its own strength only and the best
possible single-feature AUC is Phi(strength / sqrt(2)):

- ``T2WI``: heterogeneity of the tumour on T2WI (and FS T2WI): a T2-only random texture whose amplitude grows with
  ``a_T2WI``;
- ``CET1WI``: the enhancement pattern: homogeneous enhancement at low ``a_CET1WI``, rim enhancement (a non-enhancing
  core) at high ``a_CET1WI``, on CET1WI only;
- ``ADC``: diffusion restriction: the tumour's ADC falls with ``a_ADC``; it shows on the DWI series (brighter at high
  b) and on the ADC map computed from it. ``DWI`` is accepted as an alias of ``ADC``.

The T2 texture and the enhancement pattern are `Overlay` objects: multiplicative factors applied at render time to
some tissue properties only, inside the tumour only (render.render_overlays), so they never change another
sequence's pixels or the tumour's shape. The latents and the T2 texture come from the patient's own "planted" random
stream, drawn in a fixed order whatever the strengths, so with a strength of 0 a sequence's tumour is bit-for-bit the
same whatever lnm is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import tissues as T
from .shapes import Blob, Texture

PLANTED_SEQUENCES = ("T2WI", "CET1WI", "ADC")  # canonical order: latents are drawn in this order
ALIASES = {"DWI": "ADC"}
PLANTING_VERSION = "1"  # part of a planted cohort's UIDs: bump when planted output changes for the same arguments
# Nodes keep this far (mm) from the tumour's bounding box in planted mode, so that the classifier's tumour crops
# (box + margin_mm, three adjacent slices) never contain a node: nodes are the other way lnm shows in an image.
NODE_CLEARANCE_MM = 15.0

# Feature maps: lo + (hi - lo) * sigmoid(slope * a). Strictly monotone (AUC is preserved exactly) and bounded (the
# images stay plausible at any strength). Chosen so that a strength of ~2.5 is learnable by the Wu classifier on a
# few dozen patients (docs/synthetic.md, "Planted mode").
T2_TEXTURE_AMPLITUDE = (0.0, 0.38, 1.5)  # lo, hi, slope: T2 modulation inside the tumour (<= 0.38 keeps T2 > 0)
T2_TEXTURE_WAVELENGTH_MM = (5.0, 12.0)
CET1_CORE_DEPTH = (0.0, 0.9, 2.0)  # fraction of the enhancement lost in the tumour's core
CORE_RADII = (0.45, 0.85)  # normalised radius: full core loss inside the first, none beyond the second
ADC_VALUE = (0.45, 1.60, -1.5)  # tumour ADC, 1e-3 mm^2/s; falls as a_ADC rises (1.6: as the cervical stroma)


def _sigmoid_map(a: float, params: tuple[float, float, float]) -> float:
    lo, hi, slope = params
    return lo + (hi - lo) / (1.0 + math.exp(-slope * a))


def canonical_planting(signal_by_sequence: Mapping[str, float]) -> dict[str, float]:
    """Validated per-sequence strengths in canonical form: every planted key in `PLANTED_SEQUENCES` order, missing
    keys 0.0, the alias ``DWI`` folded into ``ADC``.

    Raises:
        ValueError: an unknown key, a value that is not a finite number >= 0, or ``DWI`` and ``ADC`` both given with
            different values.
    """
    if not isinstance(signal_by_sequence, Mapping):
        raise _error(f"expected a mapping of sequence to strength, got {signal_by_sequence!r}")
    out = dict.fromkeys(PLANTED_SEQUENCES, 0.0)
    seen: dict[str, tuple[str, float]] = {}
    for key, value in signal_by_sequence.items():
        name = ALIASES.get(key, key) if isinstance(key, str) else key
        if name not in out:
            raise _error(f"unknown sequence {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise _error(f"{key}: the strength must be a finite number >= 0, got {value!r}")
        if name in seen and seen[name][1] != float(value):
            raise _error(f"{seen[name][0]}={seen[name][1]:g} and {key}={value:g} disagree (DWI is an alias of ADC)")
        seen[name] = (key, float(value))
        out[name] = float(value) + 0.0  # -0.0 -> 0.0: one planting, one cohort key and folder name
    return out


def allowed_keys() -> str:
    """The keys a planting accepts, for error messages."""
    return ", ".join(PLANTED_SEQUENCES) + " (DWI = ADC)"


def _error(problem: str) -> ValueError:
    """Every planting error names the allowed keys, so that one line says what to write instead."""
    return ValueError(f"{problem}; allowed keys: {allowed_keys()}; values: finite numbers >= 0")


def parse_planting(text: str) -> dict[str, float]:
    """``"T2WI=2.5,ADC=1,CET1WI=0"`` as canonical strengths (see `canonical_planting`).

    Raises:
        ValueError: an entry that is not KEY=NUMBER, a key given twice, or what `canonical_planting` refuses.
    """
    raw: dict[str, float] = {}
    entries = [e.strip() for e in text.split(",")]
    if not any(entries):
        raise _error(f"expected KEY=VALUE[,KEY=VALUE...], got {text!r}")
    for entry in entries:
        key, sep, value = entry.partition("=")
        key = key.strip()
        try:
            number = float(value) if sep else None
        except ValueError:
            number = None
        if number is None or not key:
            raise _error(f"bad entry {entry!r}: expected KEY=NUMBER")
        if key in raw:
            raise _error(f"{key} given twice")
        raw[key] = number
    return canonical_planting(raw)


def planting_label(strengths: Mapping[str, float], shared: float) -> str:
    """A short, unique text of a canonical planting for folder names: ``planted-T2WI2.5-CET1WI0-ADC1`` (plus
    ``-shared0.5`` when the shared strength is not 0)."""
    parts = [f"{key}{format_strength(strengths[key])}" for key in PLANTED_SEQUENCES]
    if shared:
        parts.append(f"shared{format_strength(shared)}")
    return "-".join(["planted", *parts])


def format_strength(value: float) -> str:
    """``:g`` when that reads back as the same float (2.5, 1, 0), else the exact repr: names never collide."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


@dataclass(frozen=True)
class Overlay:
    """A planted modulation of some tissue properties inside one solid: ``value *= factor`` where one of `labels`
    is painted. The factor is ``(1 + texture) * (1 - core_depth * core(rho))``, rho the normalised radius in the
    solid's ellipsoid and core() 1 inside ``CORE_RADII[0]``, 0 beyond ``CORE_RADII[1]``, smooth in between."""

    props: tuple[int, ...]
    labels: tuple[int, ...]
    shape: Blob
    texture: Texture | None = None
    core_depth: float = 0.0

    def factor(self, gx: np.ndarray, gy: np.ndarray, gz: np.ndarray) -> np.ndarray:
        """The factor at broadcastable coordinates (as `Blob.inside`), as float32."""
        dx, dy, dz = self.shape.offsets(gx, gy, gz)
        out = np.ones(np.broadcast_shapes(dx.shape, dy.shape, dz.shape), dtype=np.float32)
        if self.texture is not None:
            out = out * (1.0 + self.texture.field(dx, dy, dz)).astype(np.float32)
        if self.core_depth:
            rot, radii = self.shape.rot, self.shape.radii
            q = [(dx * rot[0][i] + dy * rot[1][i] + dz * rot[2][i]) / radii[i] for i in range(3)]
            rho = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
            lo, hi = CORE_RADII
            t = np.clip((rho - lo) / (hi - lo), 0.0, 1.0)
            core = 1.0 - t * t * (3.0 - 2.0 * t)  # smoothstep down from 1 (core) to 0 (rim)
            out = out * (1.0 - self.core_depth * core).astype(np.float32)
        return out


@dataclass(frozen=True)
class PlantedTumour:
    """The planted latents of one patient's tumour and what they change."""

    latents: tuple[float, float, float]  # a_T2WI, a_CET1WI, a_ADC
    adc: float  # the tumour's ADC (replaces the shared path's), 1e-3 mm^2/s
    overlays: tuple[Overlay, ...]


def draw_planted(rng: np.random.Generator, lnm: int, strengths: Mapping[str, float], shape: Blob) -> PlantedTumour:
    """The planted features of one tumour. Every random number is drawn first, in a fixed order, whatever the
    strengths; only then does lnm shift each latent by ``strength * (lnm - 0.5)``.

    Args:
        rng: the patient's planted stream (used for nothing else).
        lnm: pathological nodal status, 0 or 1.
        strengths: canonical strengths (`canonical_planting`).
        shape: the tumour's solid (the overlays live inside it).
    """
    u = rng.normal(size=len(PLANTED_SEQUENCES))
    texture = Texture.draw(rng, 1.0, T2_TEXTURE_WAVELENGTH_MM)
    a = tuple(float(u[i] + strengths[key] * (lnm - 0.5)) for i, key in enumerate(PLANTED_SEQUENCES))
    a_t2, a_cet1, a_adc = a
    t2_texture = Texture(_sigmoid_map(a_t2, T2_TEXTURE_AMPLITUDE), texture.wavevectors, texture.phases)
    overlays = (
        Overlay((T.T2, T.T2FS), (T.TUMOUR,), shape, texture=t2_texture),
        Overlay((T.CET1,), (T.TUMOUR,), shape, core_depth=_sigmoid_map(a_cet1, CET1_CORE_DEPTH)),
    )
    return PlantedTumour(a, _sigmoid_map(a_adc, ADC_VALUE), overlays)  # type: ignore[arg-type]
