"""Apparent diffusion coefficient maps computed from DWI when a patient has no ADC series.

With a low-b signal S_low (usually b=0) and a high-b signal S_high of the same slices,
ADC = ln(S_low / S_high) / (b_high - b_low), computed in float64. Voxels where either signal is <= 0 (or not finite)
are masked to 0, the scanners' convention for background, and a negative ADC (S_high > S_low: noise) is clipped to 0,
so the map never holds NaN or inf. Units are 1e-6 mm^2/s, what scanners store in ADC series; the map is a float32
`Volume` with the DWI geometry.
"""

from __future__ import annotations

import numpy as np

from .errors import SeriesError
from .series import Volume

ADC_UNITS_PER_MM2_S = 1e6  # ADC series store 1e-6 mm^2/s
_POSITION_TOLERANCE_MM = 1e-3
_DIRECTION_TOLERANCE = 1e-4


def _where(volume: Volume) -> str:
    return f"series '{volume.series_description}' ({volume.series_uid})"


def _check_geometry(low: Volume, high: Volume) -> None:
    """Raise `SeriesError` unless the two volumes share shape, slice positions, orientation and pixel spacing."""
    if low.pixels.shape != high.pixels.shape:
        raise SeriesError(_where(high), f"b-volumes differ in shape: {low.pixels.shape} vs {high.pixels.shape}")
    checks = (
        ("slice positions", low.positions, high.positions, _POSITION_TOLERANCE_MM),
        ("orientation", np.r_[low.row_dir, low.col_dir], np.r_[high.row_dir, high.col_dir], _DIRECTION_TOLERANCE),
        ("pixel spacing", np.asarray(low.pixel_spacing), np.asarray(high.pixel_spacing), _DIRECTION_TOLERANCE),
        ("origin", np.asarray(low.origin), np.asarray(high.origin), _POSITION_TOLERANCE_MM),
    )
    for what, a, b, tolerance in checks:
        if np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max() > tolerance:
            raise SeriesError(
                _where(high), f"b-volumes differ in {what} (b={low.b_value} vs b={high.b_value}): not the same slices"
            )


def compute_adc(b0: Volume, high_b: Volume) -> Volume:
    """ADC map from a low-b (usually b0) and a high-b volume of the same slices.

    Args:
        b0: the low-b volume; its ``b_value`` None counts as 0.
        high_b: the high-b volume; its ``b_value`` must exceed the low one.

    Returns:
        A float32 `Volume` in 1e-6 mm^2/s with ``high_b``'s geometry and source files, ``b_value`` None.

    Raises:
        SeriesError: the volumes differ in geometry, or the b-values do not give a positive difference.
    """
    if high_b.b_value is None:
        raise SeriesError(_where(high_b), "the high-b volume has no b-value: cannot compute ADC")
    b_low = 0.0 if b0.b_value is None else float(b0.b_value)
    delta_b = float(high_b.b_value) - b_low
    if delta_b <= 0:
        raise SeriesError(_where(high_b), f"b={high_b.b_value:g} is not above the low b={b_low:g}: cannot compute ADC")
    _check_geometry(b0, high_b)

    low = b0.pixels.astype(np.float64)
    high = high_b.pixels.astype(np.float64)
    valid = (low > 0) & (high > 0) & np.isfinite(low) & np.isfinite(high)
    adc = np.zeros(low.shape, dtype=np.float64)
    adc[valid] = np.log(low[valid] / high[valid]) / delta_b * ADC_UNITS_PER_MM2_S
    # Noise makes S_high > S_low in places: a negative diffusion coefficient has no meaning, so clip to background.
    np.clip(adc, 0.0, np.finfo(np.float32).max, out=adc)
    return Volume(
        pixels=adc.astype(np.float32),
        positions=high_b.positions.copy(),
        row_dir=high_b.row_dir.copy(),
        col_dir=high_b.col_dir.copy(),
        normal=high_b.normal.copy(),
        origin=np.asarray(high_b.origin, dtype=np.float64).copy(),
        pixel_spacing=high_b.pixel_spacing,
        slice_spacing=high_b.slice_spacing,
        series_uid=high_b.series_uid,
        series_description=f"ADC computed from {high_b.series_description} (b={b_low:g}, b={high_b.b_value:g})",
        b_value=None,
        source_files=list(high_b.source_files),
    )
