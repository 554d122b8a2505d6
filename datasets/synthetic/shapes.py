"""Solid primitives of the phantom, evaluated on axis-aligned grids in patient (LPS) millimetres.

Every shape answers two questions: its axis-aligned bounding box (so that rendering only evaluates the voxels that can
be inside it) and ``inside(gx, gy, gz)`` for broadcastable coordinate arrays shaped ``(nz, 1, 1)``, ``(1, ny, 1)``,
``(1, 1, nx)``. Shapes are plain frozen dataclasses of floats and tuples, so two draws compare with ``==``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]


def rotation(rx_deg: float = 0.0, ry_deg: float = 0.0, rz_deg: float = 0.0) -> tuple[Vec3, Vec3, Vec3]:
    """Rotation matrix Rz @ Ry @ Rx as a tuple of rows; its columns are the rotated x, y, z axes."""
    ax, ay, az = (math.radians(a) for a in (rx_deg, ry_deg, rz_deg))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    m = rz @ ry @ rx
    return tuple(tuple(float(v) for v in row) for row in m)  # type: ignore[return-value]


IDENTITY = rotation()


@dataclass(frozen=True)
class Texture:
    """A smooth zero-mean, unit-variance random field: a sum of K plane waves (random Fourier features).

    Used for the heterogeneity of the tumour and of metastatic nodes: the rendered property is multiplied by
    ``1 + coupling * amplitude * field``.
    """

    amplitude: float
    wavevectors: tuple[Vec3, ...]  # rad/mm
    phases: tuple[float, ...]

    @classmethod
    def draw(cls, rng: np.random.Generator, amplitude: float, wavelength_mm: tuple[float, float]) -> Texture:
        k = 6
        dirs = rng.normal(size=(k, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lengths = rng.uniform(*wavelength_mm, size=k)
        vecs = dirs * (2 * math.pi / lengths)[:, None]
        phases = rng.uniform(0, 2 * math.pi, size=k)
        return cls(float(amplitude), tuple(tuple(float(v) for v in w) for w in vecs), tuple(float(p) for p in phases))

    def field(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """``amplitude * field`` at offsets from the object's centre (broadcast arrays), clipped to +-2.5 amplitude."""
        out = 0.0
        for (wx, wy, wz), ph in zip(self.wavevectors, self.phases, strict=True):
            out = out + np.cos(dx * wx + dy * wy + dz * wz + ph)
        scaled = self.amplitude * math.sqrt(2.0 / len(self.phases)) * out
        return np.clip(scaled, -2.5 * self.amplitude, 2.5 * self.amplitude)


@dataclass(frozen=True)
class Blob:
    """A rotated ellipsoid, optionally lobulated by outward bumps.

    A point p is inside when ``rho < 1 + sum_l a_l * max(0, u . d_l) ** 4``, where ``q = R^T (p - c) / radii``,
    ``rho = |q|`` and ``u = q / rho``: bumps only push the surface outward, so the smallest diameter of the solid is
    at least ``2 * min(radii)`` (the node short axis).
    """

    center: Vec3
    radii: Vec3
    rot: tuple[Vec3, Vec3, Vec3] = IDENTITY  # rows of R; columns are the blob's axes in patient coordinates
    lobe_dirs: tuple[Vec3, ...] = ()  # unit vectors in the blob's normalised frame
    lobe_amps: tuple[float, ...] = ()

    @property
    def max_extent(self) -> float:
        """Largest factor by which the bumps scale the ellipsoid."""
        return 1.0 + sum(self.lobe_amps)

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        r = np.asarray(self.rot) * (np.asarray(self.radii) * self.max_extent)[None, :]
        half = np.sqrt((r**2).sum(axis=1))
        c = np.asarray(self.center)
        return c - half, c + half

    def inside(self, gx: np.ndarray, gy: np.ndarray, gz: np.ndarray) -> np.ndarray:
        dx, dy, dz = gx - self.center[0], gy - self.center[1], gz - self.center[2]
        R = self.rot
        q = [(dx * R[0][i] + dy * R[1][i] + dz * R[2][i]) * (1.0 / self.radii[i]) for i in range(3)]
        rho2 = q[0] * q[0] + q[1] * q[1] + q[2] * q[2]
        if not self.lobe_amps:
            return rho2 < 1.0
        rho = np.sqrt(rho2) + 1e-9
        limit = 1.0
        for (ux, uy, uz), amp in zip(self.lobe_dirs, self.lobe_amps, strict=True):
            cos = np.maximum((q[0] * ux + q[1] * uy + q[2] * uz) / rho, 0.0)
            cos2 = cos * cos
            limit = limit + amp * cos2 * cos2
        return rho < limit

    def offsets(self, gx: np.ndarray, gy: np.ndarray, gz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return gx - self.center[0], gy - self.center[1], gz - self.center[2]


@dataclass(frozen=True)
class Tube:
    """An elliptic cylinder along z whose centre and semi-axes change linearly with z, cut to ``z_range``.

    Body outline, subcutaneous fat, pelvic cavity, rectum and vessels are tubes: cheap (2D per slice) and a good
    description of structures that run cranio-caudally.
    """

    center: tuple[float, float]  # (x, y) at z = 0
    slope: tuple[float, float]  # d(x, y) / dz
    semi_axes: tuple[float, float]  # (a along x, b along y) at z = 0
    growth: tuple[float, float] = (0.0, 0.0)  # d(a, b) / dz
    z_range: tuple[float, float] = (-math.inf, math.inf)

    def at(self, z: float) -> tuple[float, float, float, float]:
        """(cx, cy, a, b) of the cross-section at height z."""
        return (
            self.center[0] + self.slope[0] * z,
            self.center[1] + self.slope[1] * z,
            max(self.semi_axes[0] + self.growth[0] * z, 0.1),
            max(self.semi_axes[1] + self.growth[1] * z, 0.1),
        )

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        z0, z1 = self.z_range
        if not (math.isfinite(z0) and math.isfinite(z1)):
            if self.slope != (0.0, 0.0) or self.growth != (0.0, 0.0):
                return np.full(3, -math.inf), np.full(3, math.inf)
            z0, z1 = max(z0, -1e6), min(z1, 1e6)  # a straight tube: x/y extents do not depend on z
        ends = [self.at(z0), self.at(z1)]
        lo = [min(cx - a for cx, _, a, _ in ends), min(cy - b for _, cy, _, b in ends), z0]
        hi = [max(cx + a for cx, _, a, _ in ends), max(cy + b for _, cy, _, b in ends), z1]
        return np.asarray(lo, float), np.asarray(hi, float)

    def inside(self, gx: np.ndarray, gy: np.ndarray, gz: np.ndarray) -> np.ndarray:
        cx = self.center[0] + self.slope[0] * gz
        cy = self.center[1] + self.slope[1] * gz
        a = np.maximum(self.semi_axes[0] + self.growth[0] * gz, 0.1)
        b = np.maximum(self.semi_axes[1] + self.growth[1] * gz, 0.1)
        u, v = (gx - cx) / a, (gy - cy) / b
        ins = u * u + v * v < 1.0
        z0, z1 = self.z_range
        if math.isfinite(z0) or math.isfinite(z1):
            ins = ins & (gz >= z0) & (gz <= z1)
        return ins

    def offsets(self, gx: np.ndarray, gy: np.ndarray, gz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return gx - self.center[0] - self.slope[0] * gz, gy - self.center[1] - self.slope[1] * gz, gz

    def distance_xy(self, x: float, y: float, z: float) -> float:
        """In-plane distance from (x, y) to the tube's axis at height z (for keeping nodes off vessels)."""
        cx, cy, _, _ = self.at(z)
        return math.hypot(x - cx, y - cy)


Shape = Blob | Tube
