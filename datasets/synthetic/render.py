"""Sampling the phantom on a series' voxel grid: labels, contrasts, partial volume, coil bias, Rician noise, ADC.

Grids are axis-aligned (axial: rows along +y, columns along +x; sagittal: rows along -z, columns along +y). Each slice
is sampled at ``N_SUB`` planes through its thickness (the centres of its thirds) and the signals averaged, so partial
volume through the slice is real. In-plane, each pixel is sampled at its centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import tissues as T
from .phantom import Phantom
from .scanners import SeriesProtocol

N_SUB = 3
SUB_OFFSETS = np.array([-1.0 / 3.0, 0.0, 1.0 / 3.0])  # x thickness
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
ADC_MAX = 4000.0  # 1e-6 mm^2/s, the scanner's clip
ADC_NOISE_THRESHOLD = 4.0  # ADC is set to 0 where b0 < this many noise sigmas (the scanner's background mask)


@dataclass(frozen=True)
class SliceGrid:
    """Voxel centres of one series. ``positions`` are ascending along the patient axis the slices step along."""

    plane: str
    positions: np.ndarray  # (n,) z of each axial slice / x of each sagittal slice, mm, ascending
    row_coords: np.ndarray  # (rows,) y (axial) or z (sagittal, descending) of each row
    col_coords: np.ndarray  # (cols,) x (axial) or y (sagittal) of each column
    pixel_mm: float
    thickness_mm: float
    spacing_mm: float

    @property
    def axes(self) -> tuple[int, int, int]:
        """Patient axis (0=x, 1=y, 2=z) of the slice, row and column directions."""
        return (2, 1, 0) if self.plane == "axial" else (0, 2, 1)

    @property
    def orientation(self) -> tuple[float, ...]:
        return AXIAL_IOP if self.plane == "axial" else SAGITTAL_IOP

    @property
    def fine_positions(self) -> np.ndarray:
        """(n * N_SUB,) sampling planes through every slice, ascending."""
        return (self.positions[:, None] + SUB_OFFSETS[None, :] * self.thickness_mm).ravel()

    def ipp(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient of slice k: the centre of its first pixel."""
        if self.plane == "axial":
            return (float(self.col_coords[0]), float(self.row_coords[0]), float(self.positions[k]))
        return (float(self.positions[k]), float(self.col_coords[0]), float(self.row_coords[0]))

    def slice_position(self, k: int) -> float:
        """dot(cross(row, col), ImagePositionPatient): +z for axial, -x for sagittal (normal = -x)."""
        return float(self.positions[k]) if self.plane == "axial" else -float(self.positions[k])


def _coords(center: float, n: int, step: float) -> np.ndarray:
    first = round(center - (n - 1) / 2 * step, 3)  # IPP is written with 3 decimals: render exactly that geometry
    return np.round(first + step * np.arange(n), 3)


def make_grid(protocol: SeriesProtocol, phantom: Phantom) -> SliceGrid:
    """The series' grid, centred on the tumour through-plane and on the pelvis in-plane (as a radiographer would)."""
    fx, fy, fz = phantom.focus
    cx, cy = phantom.fov_center_xy
    px, n = protocol.pixel_mm, protocol.n_slices
    if protocol.plane == "axial":
        positions = _coords(fz, n, protocol.spacing_mm)
        rows, cols = _coords(cy, protocol.rows, px), _coords(cx, protocol.columns, px)
    else:
        positions = _coords(fx, n, protocol.spacing_mm)
        rows, cols = _coords(fz, protocol.rows, px)[::-1].copy(), _coords(cy + 5.0, protocol.columns, px)
    return SliceGrid(protocol.plane, positions, rows, cols, px, protocol.thickness_mm, protocol.spacing_mm)


def _index_range(coords: np.ndarray, lo: float, hi: float) -> tuple[int, int] | None:
    idx = np.nonzero((coords >= lo) & (coords <= hi))[0]
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else None


def _paint(phantom: Phantom, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and texture on the grid xs x ys x zs (ascending), as (len(zs), len(ys), len(xs)) arrays."""
    shape = (zs.size, ys.size, xs.size)
    labels = np.zeros(shape, dtype=np.uint8)
    mod = np.zeros(shape, dtype=np.float32)
    textured = False
    for obj in phantom.objects:
        lo, hi = obj.shape.aabb()
        rz, ry, rx = _index_range(zs, lo[2], hi[2]), _index_range(ys, lo[1], hi[1]), _index_range(xs, lo[0], hi[0])
        if rz is None or ry is None or rx is None:
            continue
        gz = zs[rz[0] : rz[1], None, None]
        gy = ys[None, ry[0] : ry[1], None]
        gx = xs[None, None, rx[0] : rx[1]]
        box = (slice(*rz), slice(*ry), slice(*rx))
        inside = np.broadcast_to(obj.shape.inside(gx, gy, gz), (gz.shape[0], gy.shape[1], gx.shape[2]))
        labels[box][inside] = obj.label
        if obj.texture is not None:
            field = obj.texture.field(*obj.shape.offsets(gx, gy, gz))
            mod[box][inside] = np.broadcast_to(field, inside.shape)[inside]
            textured = True
        elif textured:  # an untextured object painted over a textured one
            mod[box][inside] = 0.0
    return labels, mod


def _sampling_axes(grid: SliceGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ascending x, y, z sampling coordinates (float32) of a grid's sub-samples, for `_paint`-shaped arrays."""
    fine = grid.fine_positions.astype(np.float32)
    if grid.plane == "axial":
        return grid.col_coords.astype(np.float32), grid.row_coords.astype(np.float32), fine
    return fine, grid.col_coords.astype(np.float32), grid.row_coords[::-1].astype(np.float32)


def _to_grid(volume: np.ndarray, grid: SliceGrid) -> np.ndarray:
    """A (z, y, x) array painted on `_sampling_axes` as (slices, N_SUB, rows, cols) of the grid."""
    if grid.plane != "axial":  # painted on ascending z: (z, y, x) -> (x, z descending, y)
        volume = volume.transpose(2, 0, 1)[:, ::-1, :]
    shape = (grid.positions.size, N_SUB, grid.row_coords.size, grid.col_coords.size)
    return np.ascontiguousarray(volume).reshape(shape)


def render_labels(phantom: Phantom, grid: SliceGrid) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint8) and texture (float32) at every sub-sample, shaped (slices, N_SUB, rows, cols)."""
    labels, mod = _paint(phantom, *_sampling_axes(grid))
    return _to_grid(labels, grid), _to_grid(mod, grid)


def render_overlays(phantom: Phantom, grid: SliceGrid, labels: np.ndarray) -> dict[int, np.ndarray]:
    """The planted overlays' factors per tissue property, shaped like `labels`; empty when there are none.

    A factor is 1 everywhere except inside its overlay's solid where one of its labels is painted, so an overlay
    never reaches past the painted tumour (necrosis and anything painted over it are untouched).
    """
    factors: dict[int, np.ndarray] = {}
    if not phantom.overlays:
        return factors
    xs, ys, zs = _sampling_axes(grid)
    for overlay in phantom.overlays:
        volume = np.ones((zs.size, ys.size, xs.size), dtype=np.float32)
        lo, hi = overlay.shape.aabb()
        rz, ry, rx = _index_range(zs, lo[2], hi[2]), _index_range(ys, lo[1], hi[1]), _index_range(xs, lo[0], hi[0])
        if rz is None or ry is None or rx is None:
            continue
        gz, gy, gx = zs[rz[0] : rz[1], None, None], ys[None, ry[0] : ry[1], None], xs[None, None, rx[0] : rx[1]]
        volume[slice(*rz), slice(*ry), slice(*rx)] = overlay.factor(gx, gy, gz)
        factor = _to_grid(volume, grid)
        factor[~np.isin(labels, overlay.labels)] = 1.0
        for prop in overlay.props:
            factors[prop] = factors[prop] * factor if prop in factors else factor
    return factors


def _property(
    labels: np.ndarray, mod: np.ndarray, lut: np.ndarray, prop: int, factors: dict[int, np.ndarray] | None = None
) -> np.ndarray:
    values = np.take(lut[:, prop], labels)
    values = values * (1.0 + T.TEXTURE_COUPLING[prop] * mod)
    if factors and prop in factors:  # planted mode only; the default path is untouched (byte-identical output)
        values = values * factors[prop]
    return values


def render_contrast(
    labels: np.ndarray,
    mod: np.ndarray,
    lut: np.ndarray,
    contrast: str,
    factors: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """Noise-free relative signal of a T2WI / FS T2WI / CET1WI series, averaged over the sub-samples.

    Args:
        labels: tissue labels from `render_labels`.
        mod: texture from `render_labels`.
        lut: the phantom's tissue values.
        contrast: "t2", "t2fs" or "cet1".
        factors: planted overlays from `render_overlays` (none by default).
    """
    prop = {"t2": T.T2, "t2fs": T.T2FS, "cet1": T.CET1}[contrast]
    return _property(labels, mod, lut, prop, factors).mean(axis=1)


def render_dwi(
    labels: np.ndarray,
    mod: np.ndarray,
    lut: np.ndarray,
    b_values: tuple[int, ...],
    factors: dict[int, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Noise-free relative DWI signal ``S0 exp(-b ADC)`` per b-value; partial volume averages signals, not ADCs.

    Args:
        labels: tissue labels from `render_labels`.
        mod: texture from `render_labels`.
        lut: the phantom's tissue values.
        b_values: the series' b-values, s/mm^2.
        factors: planted overlays from `render_overlays` (none by default).
    """
    s0 = _property(labels, mod, lut, T.S0, factors)
    adc = np.maximum(_property(labels, mod, lut, T.ADC, factors), 0.05) * 1e-3
    return [(s0 * np.exp(-float(b) * adc)).mean(axis=1) if b else s0.mean(axis=1) for b in b_values]


def bias_field(
    grid: SliceGrid, focus: tuple[float, float, float], amplitude: float, rng: np.random.Generator
) -> np.ndarray:
    """Receiver gain times a smooth coil inhomogeneity, separable along the patient axes, shaped (n, rows, cols).

    The gain (log-normal, 10 %) varies per series like a scanner's auto-prescan does, so stored intensities are not
    comparable between patients without normalisation, as in real data.
    """
    beta = rng.normal(0.0, amplitude / 2, size=3)
    gamma = rng.normal(0.0, amplitude / 2, size=3)
    factors = []
    for axis, coords in zip(grid.axes, (grid.positions, grid.row_coords, grid.col_coords), strict=True):
        u = (coords - focus[axis]) / 150.0
        factors.append(np.exp(beta[axis] * u + gamma[axis] * u * u).astype(np.float32))
    gain = np.float32(np.exp(rng.normal(0.0, 0.1)))
    return gain * factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise, rounded to the stored uint16 values."""
    re = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.clip(np.rint(np.hypot(re, im)), 0, 65535).astype(np.uint16)


def scanner_adc(b0: np.ndarray, bh: np.ndarray, b_value: float, sigma: float, slope: float) -> np.ndarray:
    """The scanner's ADC map from the stored DWI: ln(S0/Sb)/b in 1e-6 mm^2/s, stored as round(ADC / slope).

    Background (b0 below ``ADC_NOISE_THRESHOLD`` sigmas, or Sb == 0) is 0; negative ADC (noise) is clipped to 0.
    """
    s0, sb = b0.astype(np.float64), bh.astype(np.float64)
    valid = (s0 > ADC_NOISE_THRESHOLD * sigma) & (sb > 0)
    adc = np.zeros_like(s0)
    adc[valid] = np.log(s0[valid] / sb[valid]) / b_value * 1e6
    adc = np.clip(adc, 0.0, ADC_MAX)
    return np.rint(adc / slope).astype(np.uint16)


def object_boxes(
    labels: np.ndarray, grid: SliceGrid, label_set: tuple[int, ...], aabb: tuple[np.ndarray, np.ndarray]
) -> list[tuple[int, int, int, int, int]]:
    """(slice, x_min, y_min, x_max, y_max) of an object on every slice where it appears.

    The object's rendered mask on a slice is the set of pixels where it is the painted label in at least one of the
    slice's sub-samples (>= 1/3 partial volume); boxes are half-open XYXY (x = column, y = row).
    """
    lo, hi = aabb
    ax_s, ax_r, ax_c = grid.axes
    rs = _index_range(grid.fine_positions, lo[ax_s], hi[ax_s])
    rr = _index_range(grid.row_coords, lo[ax_r], hi[ax_r])
    rc = _index_range(grid.col_coords, lo[ax_c], hi[ax_c])
    if rs is None or rr is None or rc is None:
        return []
    k0, k1 = rs[0] // N_SUB, -(-rs[1] // N_SUB)
    crop = labels[k0:k1, :, rr[0] : rr[1], rc[0] : rc[1]]
    mask = np.isin(crop, label_set).any(axis=1)
    out = []
    for dk in range(mask.shape[0]):
        rows_hit = np.nonzero(mask[dk].any(axis=1))[0]
        if rows_hit.size == 0:
            continue
        cols_hit = np.nonzero(mask[dk].any(axis=0))[0]
        r0, c0 = rr[0], rc[0]
        out.append(
            (
                k0 + dk,
                c0 + int(cols_hit[0]),
                r0 + int(rows_hit[0]),
                c0 + int(cols_hit[-1]) + 1,
                r0 + int(rows_hit[-1]) + 1,
            )
        )
    return out
