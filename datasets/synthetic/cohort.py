"""The cohort driver behind ``harness synth``: plan the patients, write them into a temporary folder, then rename it.

An interrupted run (exception, Ctrl-C, SIGKILL) never leaves a half cohort at ``out``: everything is written into a
hidden sibling ``.<name>.partial-*`` that becomes ``out`` only once complete (removed on errors; after a SIGKILL it
stays behind, hidden, and can be deleted).
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.datasets.manifest import ANNOTATION_COLUMNS

from .label_export import TRUTH_FOLDERS, write_label_table
from .patient import PatientPlan, PatientResult, generate_patient
from .planted import PLANTING_VERSION, canonical_planting
from .scanners import centre_protocol

DEFAULT_SIGNAL = 2.5
LNM_PREVALENCE = 0.35
GENERATOR_VERSION = "1"  # part of every UID: bump when the output for the same arguments changes
MANIFEST_COLUMNS = ("patient_id", "center", "lnm", "mr_ln_status", "age")


@dataclass(frozen=True)
class CohortSummary:
    """What `generate_cohort` wrote."""

    out: Path
    patients: int
    centers: int
    seed: int
    signal: float  # strength of the shared tumour features (in planted mode: shared_signal)
    n_files: int
    n_bytes: int
    lnm_positive: int
    mr_ln_positive: int
    per_center: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (patients, lnm positive)
    signal_by_sequence: dict[str, float] | None = None  # planted mode: canonical per-sequence strengths


def _finite_non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def resolve_signals(
    signal: float | None, signal_by_sequence: Mapping[str, float] | None, shared_signal: float | None
) -> tuple[float, dict[str, float] | None]:
    """The shared features' strength and the canonical planting (None in the default mode) of `generate_cohort`'s
    arguments.

    Raises:
        ValueError: a bad value, `signal` together with `signal_by_sequence`, or `shared_signal` without it.
    """
    if signal_by_sequence is None:
        if shared_signal is not None:
            raise ValueError("shared_signal only applies in planted mode (with signal_by_sequence); use signal")
        return (DEFAULT_SIGNAL if signal is None else _finite_non_negative("signal", signal)), None
    if signal is not None:
        raise ValueError(
            "give signal or signal_by_sequence, not both: in planted mode the strength of the features every "
            "sequence sees is shared_signal (default 0)"
        )
    shared = 0.0 if shared_signal is None else _finite_non_negative("shared_signal", shared_signal) + 0.0  # no -0.0
    return shared, canonical_planting(signal_by_sequence)


def cohort_key(
    seed: int, patients: int, centers: int, signal: float, planting: Mapping[str, float] | None = None
) -> str:
    """The text every UID of a cohort is derived from: different arguments, different UIDs (and so different cache
    entries in the harness, whose keys hold the series UIDs). The default mode's key is unchanged since version 1."""
    key = f"lnm-harness-synth/{GENERATOR_VERSION}/{seed}/{patients}/{centers}/{float(signal)!r}"
    if planting is None:
        return key
    strengths = "/".join(f"{name}={float(value)!r}" for name, value in planting.items())
    return f"{key}/planted-{PLANTING_VERSION}/{strengths}"


def _validate(out: Path, patients: int, centers: int, seed: int, overwrite: bool, workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 1:
        raise ValueError(f"patients must be an integer >= 1, got {patients!r}")
    if isinstance(centers, bool) or not isinstance(centers, int) or centers < 1:
        raise ValueError(f"centers must be an integer >= 1, got {centers!r}")
    if centers > patients:
        raise ValueError(f"centers ({centers}) cannot exceed patients ({patients}): every centre needs a patient")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise FileExistsError(f"{out} exists and is not a folder; choose another output path")
        if any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
            if not (out / "manifest.csv").is_file():
                raise FileExistsError(
                    f"refusing to overwrite {out}: it is not empty and does not look like a cohort (no manifest.csv)"
                )


def plan_cohort(patients: int, centers: int, seed: int) -> list[PatientPlan]:
    """Patients split as evenly as possible over the centres; lnm drawn per centre.

    Each centre gets ``clip(Binomial(n, 0.35), 1, n - 1)`` positive patients when it has n >= 2 patients (both
    classes everywhere), a Bernoulli(0.35) draw when it has one.
    """
    plans = []
    for c in range(1, centers + 1):
        n = patients // centers + (1 if c <= patients % centers else 0)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(c, 0)))
        if n >= 2:
            positives = int(np.clip(rng.binomial(n, LNM_PREVALENCE), 1, n - 1))
        else:
            positives = int(rng.random() < LNM_PREVALENCE)
        lnm = np.zeros(n, dtype=int)
        lnm[rng.permutation(n)[:positives]] = 1
        protocol = centre_protocol(c)
        for i in range(n):
            pid = f"SYN-C{protocol.label}-{i + 1:04d}"
            plans.append(PatientPlan(protocol, c, i + 1, pid, int(lnm[i])))
    return plans


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _results(
    plans: list[PatientPlan],
    dicom: Path,
    seed: int,
    signal: float,
    key: str,
    workers: int,
    planting: dict[str, float] | None,
    truth_formats: tuple[str, ...] = (),
) -> Iterator[PatientResult]:
    """Per-patient results in plan order. Each patient has its own random streams, so the files do not depend on
    `workers`; processes are spawned (not forked) so that a caller holding threads (torch, Ray) is safe."""
    kwargs = {"seed": seed, "signal": signal, "cohort_key": key, "planting": planting, "truth_formats": truth_formats}
    if workers == 1 or len(plans) == 1:
        for plan in plans:
            yield generate_patient(dicom, plan, **kwargs)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(plans)), mp_context=ctx) as pool:
        futures = [pool.submit(generate_patient, dicom, p, **kwargs) for p in plans]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _install(tmp: Path, out: Path) -> None:
    """Put the finished cohort at `out` (replacing an empty folder or, when allowed, an old cohort)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def generate_cohort(
    out: Path,
    *,
    patients: int,
    centers: int,
    seed: int,
    signal: float | None = None,
    signal_by_sequence: Mapping[str, float] | None = None,
    shared_signal: float | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
    truth_formats: tuple[str, ...] = (),
) -> CohortSummary:
    """Generate a synthetic multi-centre pelvic MRI cohort in the harness's data format (docs/data-format.md).

    Args:
        out: the dataset folder to create (``manifest.csv``, ``annotations.csv``, ``dicom/``).
        patients: number of patients (>= 1), split as evenly as possible over the centres.
        centers: number of centres (1 <= centers <= patients); centre n uses `centre_protocol(n)`.
        seed: non-negative integer; the same arguments give byte-identical files.
        signal: effect size of the tumour-lnm association (difference of the latent tumour aggressiveness between
            lnm=1 and lnm=0 patients, in SD units); 0 means the tumour is independent of lnm. None (the default):
            `DEFAULT_SIGNAL`. Not with `signal_by_sequence`.
        signal_by_sequence: planted mode (planted.py, docs/synthetic.md): the strength of each sequence's own
            tumour feature, keys ``T2WI``, ``CET1WI``, ``ADC`` (alias ``DWI``), values finite >= 0, missing keys 0.
        shared_signal: planted mode only: the strength of the features every sequence sees (size, lobulation,
            necrosis, texture); default 0, so that only the planted features carry information.
        overwrite: replace `out` when it already holds a cohort (a folder with manifest.csv).
        progress: called as ``progress(done, total)`` after each patient.
        workers: processes rendering patients in parallel (the files are the same for any value).
        truth_formats: also write the ground truth, with ``labels.yaml``, as ``nifti`` label maps
            (``labels/<patient>/<SEQUENCE>.nii.gz``) and / or ``seg`` DICOM-SEGs and / or ``rtstruct`` RT structure sets
            (``labels-seg/<patient>/<SEQUENCE>.dcm``), see label_export.py: the input of ``harness data import``.

    Returns:
        A `CohortSummary`.

    Raises:
        ValueError: invalid counts, seed or strengths, or signal with signal_by_sequence.
        FileExistsError: `out` exists and is not empty (and overwrite is false, or it is not a cohort).
    """
    out = Path(out)
    signal, planting = resolve_signals(signal, signal_by_sequence, shared_signal)
    unknown = sorted(set(truth_formats) - set(TRUTH_FOLDERS))
    if unknown:
        raise ValueError(f"truth_formats: unknown {unknown}; known: {', '.join(TRUTH_FOLDERS)}")
    _validate(out, patients, centers, seed, overwrite, workers)
    plans = plan_cohort(patients, centers, seed)
    key = cohort_key(seed, patients, centers, signal, planting)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, which makes the folder private): the cohort gets the user's usual permissions.
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        manifest, annotations = [], []
        n_files = n_bytes = 0
        results = _results(plans, tmp / "dicom", seed, float(signal), key, workers, planting, truth_formats)
        try:
            for done, result in enumerate(results, start=1):
                manifest.append(result.manifest_row)
                annotations += result.annotations
                n_files += result.n_files
                n_bytes += result.n_bytes
                if progress is not None:
                    progress(done, len(plans))
        finally:
            results.close()  # stops the worker processes before anything below deletes their output folder
        _write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, manifest)
        _write_csv(tmp / "annotations.csv", ANNOTATION_COLUMNS, annotations)
        if truth_formats:
            write_label_table(tmp / "labels.yaml")
        _validate(out, patients, centers, seed, overwrite, workers)  # nothing appeared at `out` meanwhile
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    per_center: dict[str, tuple[int, int]] = {}
    for row in manifest:
        n, pos = per_center.get(row["center"], (0, 0))
        per_center[row["center"]] = (n + 1, pos + int(row["lnm"]))
    return CohortSummary(
        out=out,
        patients=len(manifest),
        centers=centers,
        seed=seed,
        signal=float(signal),
        n_files=n_files,
        n_bytes=n_bytes,
        lnm_positive=sum(int(r["lnm"]) for r in manifest),
        mr_ln_positive=sum(int(r["mr_ln_status"]) for r in manifest),
        per_center=per_center,
        signal_by_sequence=planting,
    )
