"""Centre protocols of the synthetic cohort: scanner, series geometry, contrast, intensity scale and noise.

Centres 1-3 follow the acquisition parameters of Wu et al. 2020 (eMethods 1), centre 4 follows Table 1 of Lu et al.
2018. Values the papers do not give (T2WI / CET1WI matrices, some FOVs, scales, noise, series descriptions) are our
choices, said so in the comments; docs/synthetic.md lists which is which. Centres beyond 4 reuse protocol
``(n - 1) % 4 + 1`` with a deterministic perturbation (`centre_protocol`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeriesProtocol:
    """One acquired series of a centre's protocol.

    Images have square pixels: ``columns`` is the frequency matrix along the image width (left-right for axial,
    anterior-posterior for sagittal), the pixel size is ``fov_mm[0] / columns`` and ``rows`` follows from the FOV
    height. ``acquisition_matrix`` is the (frequency, phase) matrix as the paper states it, written to
    AcquisitionMatrix (0018,1310).
    """

    sequence: str  # "T2WI", "CET1WI" or "DWI" (the ADC series is derived from the DWI protocol)
    description: str  # SeriesDescription, vendor-typical
    series_number: int
    plane: str  # "axial" or "sagittal"
    fov_mm: tuple[float, float]  # (width along the columns, height along the rows)
    columns: int
    acquisition_matrix: tuple[int, int]  # (frequency, phase)
    thickness_mm: float
    gap_mm: float
    n_slices: int
    repetition_time_ms: float
    echo_time_ms: float
    averages: float
    contrast: str  # tissue property rendered: "t2", "t2fs", "cet1" or "dwi"
    scale: float  # stored value of relative signal 1.0
    noise: float  # Gaussian sigma per quadrature channel, as a fraction of `scale`
    scanning_sequence: str  # DICOM ScanningSequence (0018,0020)
    sequence_variant: str
    sequence_name: str

    @property
    def pixel_mm(self) -> float:
        """Square pixel size in mm (rounded to 1e-6 so that the written PixelSpacing is the rendering geometry)."""
        return round(self.fov_mm[0] / self.columns, 6)

    @property
    def rows(self) -> int:
        return int(round(self.fov_mm[1] / self.pixel_mm))

    @property
    def spacing_mm(self) -> float:
        """Centre-to-centre distance of adjacent slices: DICOM SpacingBetweenSlices (thickness + gap)."""
        return round(self.thickness_mm + self.gap_mm, 6)


@dataclass(frozen=True)
class CentreProtocol:
    """A centre: its scanner, its three acquired series and how it writes DWI / ADC."""

    label: str
    source: str  # where the parameters come from
    institution: str
    manufacturer: str
    model: str
    field_strength_t: float
    t2: SeriesProtocol
    cet1: SeriesProtocol
    dwi: SeriesProtocol
    adc_description: str
    adc_series_number: int
    b_values: tuple[int, int]
    b_value_tag: str  # "siemens" (0019,xx0C), "ge" (0043,xx39 with 1e9 offset), "ge_plain" (no offset), "standard"
    adc_rescale_slope: float  # ADC stored = round(ADC[1e-6 mm2/s] / slope)
    axial_head_first: bool  # InstanceNumber 1 = most superior slice (GE habit) instead of most inferior
    dwi_interleaved: bool  # DWI numbering b0,b800,b0,b800... per position (GE) instead of all b0 then all b800
    bias: float  # amplitude of the smooth receive-coil intensity inhomogeneity (larger at 3 T)
    tumour_site: str  # "cervix" (Wu's cervical cancer) or "rectum" (Lu's rectal cancer)

    @property
    def series(self) -> tuple[SeriesProtocol, SeriesProtocol, SeriesProtocol]:
        return (self.t2, self.cet1, self.dwi)


# (ScanningSequence, SequenceVariant, SequenceName) by vendor and sequence.
_PULSE = {
    ("siemens", "T2WI"): ("SE", "SK\\SP\\OSP", "*tse2d1_15"),
    ("siemens", "CET1WI"): ("GR", "SK\\SP\\MP\\OSP", "*fl3d1"),
    ("siemens", "DWI"): ("EP", "SK\\SP", "*ep_b0_800t"),
    ("ge", "T2WI"): ("SE", "SK\\OSP", "frfse2d"),
    ("ge", "CET1WI"): ("GR", "SS\\SK", "efgre3d"),
    ("ge", "DWI"): ("EP\\SE", "SK\\SS", "epi2d"),
}


def _series(vendor: str, sequence: str, description: str, number: int, plane: str, **kw) -> SeriesProtocol:
    scanning, variant, name = _PULSE[(vendor, sequence)]
    return SeriesProtocol(
        sequence=sequence, description=description, series_number=number, plane=plane,
        scanning_sequence=scanning, sequence_variant=variant, sequence_name=name, **kw,
    )  # fmt: skip


def _yunnan() -> CentreProtocol:
    # Wu 2020 eMethods 1, Yunnan Cancer Hospital, Siemens Avanto 1.5 T. T2/CET1 matrices are chosen (not in Wu).
    # Wu's DWI is 256x256 over 200x180 mm; 20 slices (68 mm) instead of the ~26 of the other series keep the
    # patient near 12 MB: this 0.78 mm DWI is by far the largest series of the cohort.
    t2 = _series(
        "siemens", "T2WI", "t2_tse_tra", 3, "axial", fov_mm=(200.0, 180.0), columns=256,
        acquisition_matrix=(256, 230), thickness_mm=3.0, gap_mm=0.3, n_slices=24, repetition_time_ms=4000,
        echo_time_ms=100, averages=4, contrast="t2", scale=900.0, noise=0.035,
    )  # fmt: skip
    cet1 = _series(
        "siemens", "CET1WI", "t1_vibe_fs_sag_post", 9, "sagittal", fov_mm=(260.0, 220.0), columns=256,
        acquisition_matrix=(256, 217), thickness_mm=3.6, gap_mm=0.7, n_slices=20, repetition_time_ms=4.65,
        echo_time_ms=1.55, averages=8, contrast="cet1", scale=700.0, noise=0.03,
    )  # fmt: skip
    dwi = _series(
        "siemens", "DWI", "ep2d_diff_tra_b0_800", 5, "axial", fov_mm=(200.0, 180.0), columns=256,
        acquisition_matrix=(256, 256), thickness_mm=3.0, gap_mm=0.4, n_slices=20, repetition_time_ms=6000,
        echo_time_ms=55, averages=4, contrast="dwi", scale=500.0, noise=0.045,
    )  # fmt: skip
    return CentreProtocol(
        label="1",
        source="Wu 2020 eMethods 1 (Yunnan Cancer Hospital)",
        institution="Synthetic centre 1 (Yunnan protocol)",
        manufacturer="SIEMENS",
        model="Avanto",
        field_strength_t=1.5,
        t2=t2,
        cet1=cet1,
        dwi=dwi,
        adc_description="ep2d_diff_tra_b0_800_ADC",
        adc_series_number=6,
        b_values=(0, 800),
        b_value_tag="siemens",
        adc_rescale_slope=1.0,
        axial_head_first=False,
        dwi_interleaved=False,
        bias=0.10,
        tumour_site="cervix",
    )


def _sun_yat_sen() -> CentreProtocol:
    # Wu 2020 eMethods 1, Sun Yat-sen University Cancer Center, GE Discovery MR750 3.0 T (its 1.5 T Signa is not
    # modelled). T2/CET1 matrices are chosen.
    t2 = _series(
        "ge", "T2WI", "Ax T2 FRFSE", 3, "axial", fov_mm=(360.0, 360.0), columns=288,
        acquisition_matrix=(288, 224), thickness_mm=5.0, gap_mm=1.0, n_slices=15, repetition_time_ms=3966,
        echo_time_ms=86, averages=2, contrast="t2", scale=2500.0, noise=0.02,
    )  # fmt: skip
    cet1 = _series(
        "ge", "CET1WI", "Sag T1 FSPGR +C", 8, "sagittal", fov_mm=(280.0, 280.0), columns=224,
        acquisition_matrix=(224, 192), thickness_mm=3.0, gap_mm=0.0, n_slices=28, repetition_time_ms=5.25,
        echo_time_ms=1.82, averages=1, contrast="cet1", scale=1800.0, noise=0.02,
    )  # fmt: skip
    dwi = _series(
        "ge", "DWI", "Ax DWI b800", 5, "axial", fov_mm=(240.0, 200.0), columns=160,
        acquisition_matrix=(160, 112), thickness_mm=3.0, gap_mm=0.3, n_slices=26, repetition_time_ms=4800,
        echo_time_ms=75, averages=4, contrast="dwi", scale=1200.0, noise=0.03,
    )  # fmt: skip
    return CentreProtocol(
        label="2",
        source="Wu 2020 eMethods 1 (Sun Yat-sen University Cancer Center, 3.0 T)",
        institution="Synthetic centre 2 (Sun Yat-sen protocol)",
        manufacturer="GE MEDICAL SYSTEMS",
        model="DISCOVERY MR750",
        field_strength_t=3.0,
        t2=t2,
        cet1=cet1,
        dwi=dwi,
        adc_description="Apparent Diffusion Coefficient (mm2/s)",
        adc_series_number=500,
        b_values=(0, 800),
        b_value_tag="ge",
        adc_rescale_slope=1.0,
        axial_head_first=True,
        dwi_interleaved=True,
        bias=0.20,
        tumour_site="cervix",
    )


def _henan() -> CentreProtocol:
    # Wu 2020 eMethods 1, Henan Provincial People's Hospital: GE MR750 or Siemens TrioTim 3.0 T; we model the TrioTim
    # (a second vendor among Wu's centres). T2/CET1 matrices are chosen.
    t2 = _series(
        "siemens", "T2WI", "t2_tse_tra_p2", 3, "axial", fov_mm=(340.0, 340.0), columns=288,
        acquisition_matrix=(288, 230), thickness_mm=6.0, gap_mm=1.0, n_slices=13, repetition_time_ms=4000,
        echo_time_ms=85, averages=3, contrast="t2", scale=1200.0, noise=0.02,
    )  # fmt: skip
    cet1 = _series(
        "siemens", "CET1WI", "t1_tse_sag_fs_post", 10, "sagittal", fov_mm=(360.0, 360.0), columns=256,
        acquisition_matrix=(256, 205), thickness_mm=4.0, gap_mm=1.0, n_slices=18, repetition_time_ms=3022,
        echo_time_ms=85, averages=2, contrast="cet1", scale=900.0, noise=0.025,
    )  # fmt: skip
    dwi = _series(
        "siemens", "DWI", "ep2d_diff_b0_800_tra", 6, "axial", fov_mm=(300.0, 300.0), columns=200,
        acquisition_matrix=(200, 196), thickness_mm=6.0, gap_mm=1.0, n_slices=13, repetition_time_ms=4616,
        echo_time_ms=76, averages=4, contrast="dwi", scale=650.0, noise=0.03,
    )  # fmt: skip
    return CentreProtocol(
        label="3",
        source="Wu 2020 eMethods 1 (Henan Provincial People's Hospital)",
        institution="Synthetic centre 3 (Henan protocol)",
        manufacturer="SIEMENS",
        model="TrioTim",
        field_strength_t=3.0,
        t2=t2,
        cet1=cet1,
        dwi=dwi,
        adc_description="ep2d_diff_b0_800_tra_ADC",
        adc_series_number=7,
        b_values=(0, 800),
        b_value_tag="standard",
        adc_rescale_slope=0.5,  # stored = 2 x ADC: a reader that ignores RescaleSlope gets ADC twice too high
        axial_head_first=False,
        dwi_interleaved=False,
        bias=0.20,
        tumour_site="cervix",
    )


def _qingdao() -> CentreProtocol:
    # Lu 2018 Table 1, Affiliated Hospital of Qingdao University, GE Signa HDx 3.0 T, rectal cancer.
    # Table 1 AX FS T2WI: 320x192, 6 mm + 1.5 mm gap, FOV 36-44 cm: 400 x 240 mm gives square 1.25 mm pixels.
    t2 = _series(
        "ge", "T2WI", "AX FS T2 FRFSE", 4, "axial", fov_mm=(400.0, 240.0), columns=320,
        acquisition_matrix=(320, 192), thickness_mm=6.0, gap_mm=1.5, n_slices=12, repetition_time_ms=3000,
        echo_time_ms=90, averages=2, contrast="t2fs", scale=2800.0, noise=0.022,
    )  # fmt: skip
    # Lu acquired no contrast-enhanced series: this one is invented (GE LAVA-like 3D FSPGR, chosen values).
    cet1 = _series(
        "ge", "CET1WI", "Sag T1 LAVA +C", 9, "sagittal", fov_mm=(300.0, 300.0), columns=256,
        acquisition_matrix=(256, 192), thickness_mm=4.0, gap_mm=1.0, n_slices=18, repetition_time_ms=4.2,
        echo_time_ms=2.1, averages=1, contrast="cet1", scale=1600.0, noise=0.022,
    )  # fmt: skip
    # Table 1 AX DWI: "96 x 130" (130 taken as the frequency matrix), 6 mm + 1.5 mm, FOV 36-52 cm, b = 700.
    dwi = _series(
        "ge", "DWI", "AX DWI b700", 5, "axial", fov_mm=(380.0, 280.0), columns=130,
        acquisition_matrix=(130, 96), thickness_mm=6.0, gap_mm=1.5, n_slices=12, repetition_time_ms=4000,
        echo_time_ms=80, averages=4, contrast="dwi", scale=900.0, noise=0.035,
    )  # fmt: skip
    return CentreProtocol(
        label="4",
        source="Lu 2018 Table 1 (Affiliated Hospital of Qingdao University)",
        institution="Synthetic centre 4 (Qingdao protocol)",
        manufacturer="GE MEDICAL SYSTEMS",
        model="Signa HDxt",
        field_strength_t=3.0,
        t2=t2,
        cet1=cet1,
        dwi=dwi,
        adc_description="Apparent Diffusion Coefficient (mm2/s)",
        adc_series_number=500,
        b_values=(0, 700),
        b_value_tag="ge_plain",
        adc_rescale_slope=1.0,
        axial_head_first=True,
        dwi_interleaved=True,
        bias=0.20,
        tumour_site="rectum",
    )


_BASE = (_yunnan, _sun_yat_sen, _henan, _qingdao)
N_BASE_PROTOCOLS = len(_BASE)


def centre_protocol(number: int) -> CentreProtocol:
    """The protocol of centre ``number`` (1-based).

    Centres 1-4 are the papers' sites. Centre n > 4 reuses protocol ``(n - 1) % 4 + 1`` perturbed deterministically
    (from n alone): intensity scales x U(0.7, 1.4), noise x U(0.8, 1.5), FOV x U(0.95, 1.10), TE x U(0.9, 1.1),
    slice thickness +-0.5 mm and coil inhomogeneity U(0.1, 0.3), so that every extra centre is its own domain.

    Args:
        number: the centre's 1-based number; its label is ``str(number)``.
    """
    if number < 1:
        raise ValueError(f"centre numbers start at 1, not {number}")
    base = _BASE[(number - 1) % N_BASE_PROTOCOLS]()
    if number <= N_BASE_PROTOCOLS:
        return base
    rng = np.random.default_rng([number, 20_200_707])
    scale, noise = rng.uniform(0.7, 1.4), rng.uniform(0.8, 1.5)
    fov, te = rng.uniform(0.95, 1.10), rng.uniform(0.9, 1.1)
    dthick = float(rng.choice([-0.5, 0.5]))

    def perturb(p: SeriesProtocol) -> SeriesProtocol:
        return dataclasses.replace(
            p,
            fov_mm=(round(p.fov_mm[0] * fov, 1), round(p.fov_mm[1] * fov, 1)),
            thickness_mm=max(2.0, p.thickness_mm + dthick),
            echo_time_ms=round(p.echo_time_ms * te, 2),
            scale=round(p.scale * scale, 1),
            noise=round(p.noise * noise, 4),
        )

    return dataclasses.replace(
        base,
        label=str(number),
        source=f"protocol of centre {base.label}, perturbed",
        institution=f"Synthetic centre {number} (centre {base.label} protocol, perturbed)",
        t2=perturb(base.t2),
        cet1=perturb(base.cet1),
        dwi=perturb(base.dwi),
        bias=round(float(rng.uniform(0.1, 0.3)), 3),
    )
