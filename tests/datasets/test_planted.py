"""Planted mode of the synthetic cohort (``harness synth --signal-by-sequence``): each sequence carries its own, known
signal, a sequence planted at 0 carries none (bit-for-bit in the classifier's crops), the default output is unchanged,
and the CLI / config parse and refuse what they should."""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sklearn.metrics import roc_auc_score

from harness.cli import main as harness_main
from harness.config import ConfigError, SynthSpec, parse_config
from harness.datasets.classification import roi_with_margin
from harness.datasets.synthetic import centre_protocol, generate_cohort
from harness.datasets.synthetic.cohort import cohort_key, plan_cohort
from harness.datasets.synthetic.features import ceiling_auc, feature_aucs, measure_cohort
from harness.datasets.synthetic.patient import PatientPlan, axial_half_window, generate_patient, patient_streams
from harness.datasets.synthetic.phantom import draw_phantom
from harness.datasets.synthetic.planted import (
    NODE_CLEARANCE_MM,
    canonical_planting,
    draw_planted,
    parse_planting,
    planting_label,
)
from harness.datasets.synthetic.render import make_grid, render_contrast, render_labels, render_overlays
from harness.datasets.synthetic.shapes import Blob
from harness.train.data import synth_folder
from tests.datasets.test_synthetic import read_csv, tree_hashes

# SHA-256 over "relative path, file SHA-256" lines of generate_cohort(patients=2, centers=1, seed=5, signal=1.5), taken
# before planted mode existed: the default output must not change (bump GENERATOR_VERSION if it ever has to).
DEFAULT_DIGEST = "8eaa37f74abe81cd6487adb8a396a5a5f61a3fad8b3d92b216f901a4199393c1"
ALLOWED = "allowed keys: T2WI, CET1WI, ADC (DWI = ADC)"


def position_of(ds: pydicom.Dataset) -> float:
    o = np.asarray(ds.ImageOrientationPatient, float)
    return float(np.dot(np.cross(o[:3], o[3:]), np.asarray(ds.ImagePositionPatient, float)))


def test_default_output_is_byte_identical_to_before_planted_mode(tmp_path):
    root = tmp_path / "default"
    generate_cohort(root, patients=2, centers=1, seed=5, signal=1.5)
    lines = "".join(f"{k} {v}\n" for k, v in sorted(tree_hashes(root).items()))
    assert hashlib.sha256(lines.encode()).hexdigest() == DEFAULT_DIGEST
    assert cohort_key(0, 60, 3, 2.5) == "lnm-harness-synth/1/0/60/3/2.5"  # the default mode's UIDs are unchanged


def test_plantings_are_canonical_and_their_keys_and_folders_never_collide():
    assert parse_planting("T2WI=2.5, DWI=1") == {"T2WI": 2.5, "CET1WI": 0.0, "ADC": 1.0}
    assert canonical_planting({"ADC": 1, "DWI": 1.0}) == {"T2WI": 0.0, "CET1WI": 0.0, "ADC": 1.0}
    assert canonical_planting({"T2WI": -0.0}) == {"T2WI": 0.0, "CET1WI": 0.0, "ADC": 0.0}
    assert list(canonical_planting({"ADC": 1, "T2WI": 2})) == ["T2WI", "CET1WI", "ADC"]
    for bad in (
        "T2WI=1,FOO=2",
        "T2WI=x",
        "T2WI",
        "T2WI=-1",
        "T2WI=nan",
        "T2WI=inf",
        "DWI=1,ADC=2",
        "T2WI=1,T2WI=1",
        "",
    ):
        with pytest.raises(ValueError, match=re.escape(ALLOWED)):
            parse_planting(bad)
    plantings = [{"T2WI": 2.5}, {"T2WI": 2.5, "ADC": 1.0}, {"T2WI": 2.5000001}, {"CET1WI": 2.5}, {}]
    keys = {cohort_key(0, 48, 2, 0.0, canonical_planting(p)) for p in plantings}
    keys |= {cohort_key(0, 48, 2, 0.5, canonical_planting(plantings[0])), cohort_key(0, 48, 2, 0.0)}
    assert len(keys) == len(plantings) + 2
    labels = {planting_label(canonical_planting(p), 0.0) for p in plantings}
    assert len(labels) == len(plantings) and "planted-T2WI2.5-CET1WI0-ADC0" in labels
    assert planting_label(canonical_planting(plantings[0]), 0.5) == "planted-T2WI2.5-CET1WI0-ADC0-shared0.5"


def test_synth_spec_validates_and_names_planted_cohorts():
    spec = SynthSpec(patients=48, centers=2, signal_by_sequence={"T2WI": 3, "DWI": 1.5})
    assert spec.signal_by_sequence == {"T2WI": 3.0, "CET1WI": 0.0, "ADC": 1.5}
    assert synth_folder(spec).name == "synth-48p-2c-seed0-planted-T2WI3-CET1WI0-ADC1.5"
    same = SynthSpec(patients=48, centers=2, signal_by_sequence={"ADC": 1.5, "T2WI": 3.0, "CET1WI": 0}, shared_signal=0)
    assert synth_folder(same) == synth_folder(spec)
    shared = SynthSpec(patients=48, centers=2, signal_by_sequence={"T2WI": 3}, shared_signal=0.5)
    assert synth_folder(shared).name.endswith("-shared0.5")
    assert synth_folder(SynthSpec()).name == "synth-60p-3c-seed0-signal2.5"  # unchanged default names
    assert synth_folder(SynthSpec(signal=1.5)).name == "synth-60p-3c-seed0-signal1.5"
    for bad in (
        {"signal_by_sequence": {"FLAIR": 1}},
        {"signal_by_sequence": {"T2WI": -1}},
        {"signal_by_sequence": {"T2WI": math.inf}},
        {"signal_by_sequence": {"T2WI": 1}, "signal": 1.0},
        {"shared_signal": 1.0},
        {"signal_by_sequence": {"T2WI": 1}, "shared_signal": -1},
        {"signal_by_sequence": {"T2WI": 1}, "shared_signal": math.nan},
    ):
        with pytest.raises(ConfigError, match=r"data\.synth"):
            parse_config({"task": "classification", "model": "wu2020", "data": {"synth": bad}})


def test_generate_cohort_refuses_mixed_or_bad_plantings(tmp_path):
    out = tmp_path / "out"
    for kwargs in (
        {"signal": 1.0, "signal_by_sequence": {"T2WI": 1}},
        {"shared_signal": 1.0},
        {"signal_by_sequence": {"T1": 1}},
        {"signal_by_sequence": {"ADC": math.nan}},
        {"signal_by_sequence": {"T2WI": 1}, "shared_signal": -0.5},
    ):
        with pytest.raises(ValueError):
            generate_cohort(out, patients=1, centers=1, seed=0, **kwargs)
    assert not out.exists()


def test_cli_parses_the_planting_and_rejects_bad_flags(tmp_path, monkeypatch, capsys):
    import harness.datasets.synthetic as synthetic

    seen = {}

    def fake(out, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before anything is written; the CLI answers 130

    monkeypatch.setattr(synthetic, "generate_cohort", fake)
    out = str(tmp_path / "c")
    assert harness_main(["synth", out, "--signal-by-sequence", "T2WI=2.5,DWI=1.0,CET1WI=0", "--shared-signal", "0.5"])
    assert seen["signal_by_sequence"] == {"T2WI": 2.5, "CET1WI": 0.0, "ADC": 1.0}
    assert seen["shared_signal"] == 0.5 and seen["signal"] is None
    seen.clear()
    harness_main(["synth", out, "--signal", "1.5"])
    assert seen["signal"] == 1.5 and seen["signal_by_sequence"] is None and seen["shared_signal"] is None
    capsys.readouterr()
    planted = "--signal-by-sequence"
    for flags, expected in (
        ([planted, "T2WI=1,FLAIR=2"], (planted, "'FLAIR'", ALLOWED)),
        ([planted, "T2WI=high"], (planted, "'T2WI=high'", ALLOWED)),
        ([planted, "ADC=-1"], (planted, "finite number >= 0", ALLOWED)),
        ([planted, "DWI=1,ADC=2"], (planted, "alias", ALLOWED)),
        ([planted, "T2WI=1", "--signal", "2"], ("--signal and --signal-by-sequence",)),
        (["--shared-signal", "1"], ("--shared-signal only applies",)),
        ([planted, "T2WI=1", "--shared-signal", "-1"], ("--shared-signal:",)),
    ):
        seen.clear()
        assert harness_main(["synth", out, *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("harness synth: error: "), err  # one line
        assert all(text in err for text in expected) and not seen, err  # names the flag; nothing was generated
    assert not Path(out).exists()


def test_latents_carry_exactly_the_planted_strengths():
    strengths = canonical_planting({"T2WI": 2.5, "CET1WI": 0.0, "ADC": 1.0})
    lnm = np.random.default_rng(0).integers(0, 2, size=800)
    shape = Blob((0.0, 0.0, 0.0), (10.0, 10.0, 10.0))
    drawn = [draw_planted(np.random.default_rng([3, i]), int(y), strengths, shape) for i, y in enumerate(lnm)]
    for i, key in enumerate(("T2WI", "CET1WI", "ADC")):
        auc = roc_auc_score(lnm, [d.latents[i] for d in drawn])
        assert abs(auc - ceiling_auc(strengths[key])) < 0.05, (key, auc)
    # The features are strictly monotone maps of the latents: the same ranks, so the same AUC.
    amplitude = [d.overlays[0].texture.amplitude for d in drawn]
    depth = [d.overlays[1].core_depth for d in drawn]
    assert roc_auc_score(lnm, amplitude) == roc_auc_score(lnm, [d.latents[0] for d in drawn])
    assert roc_auc_score(lnm, depth) == roc_auc_score(lnm, [d.latents[1] for d in drawn])
    assert roc_auc_score(lnm, [-d.adc for d in drawn]) == roc_auc_score(lnm, [d.latents[2] for d in drawn])


def test_each_sequence_sees_only_its_own_planted_feature():
    """Same patient, same lnm, other strengths: a sequence's noise-free image depends on its own strength only."""
    centre = centre_protocol(1)
    low, high = canonical_planting({"T2WI": 2.0}), canonical_planting({"T2WI": 2.0, "CET1WI": 4.0, "ADC": 4.0})
    images = {}
    for name, planting in (("low", low), ("high", high)):
        phantom = draw_phantom(
            patient_streams(4, 1, 2), site="cervix", lnm=1, signal=0.0, z_half_window=34, planting=planting
        )
        for protocol in (centre.t2, centre.cet1):
            grid = make_grid(protocol, phantom)
            labels, mod = render_labels(phantom, grid)
            factors = render_overlays(phantom, grid, labels)
            images[name, protocol.sequence] = render_contrast(labels, mod, phantom.lut, protocol.contrast, factors)
        images[name, "tumour ADC"] = phantom.tumour.adc
    assert np.array_equal(images["low", "T2WI"], images["high", "T2WI"])
    assert not np.array_equal(images["low", "CET1WI"], images["high", "CET1WI"])
    assert images["low", "tumour ADC"] != images["high", "tumour ADC"]


def test_planted_nodes_keep_clear_of_the_tumour_and_always_fit():
    planting = canonical_planting({"T2WI": 3.0})
    for seed in range(40):
        for centre, site in ((1, "cervix"), (4, "rectum")):
            half = axial_half_window(centre_protocol(centre))
            phantom = draw_phantom(
                patient_streams(seed, centre, 1), site=site, lnm=1, signal=0.0, z_half_window=half, planting=planting
            )
            assert any(n.metastatic for n in phantom.nodes)
            lo, hi = phantom.tumour.shape.aabb()
            for node in phantom.nodes:
                n_lo, n_hi = node.halo.aabb()
                assert np.any(n_hi <= lo - NODE_CLEARANCE_MM) or np.any(n_lo >= hi + NODE_CLEARANCE_MM), (seed, site)


def _crops(folder: Path, annotations: list[dict[str, str]], sequence: str) -> list[np.ndarray]:
    """Pixels of the classifier's ROIs (tumour box + 10 mm, slices k-1..k+1, every b-value) of one written series."""
    by_position: dict[float, list] = defaultdict(list)
    for path in sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem)):
        ds = pydicom.dcmread(path)
        by_position[round(position_of(ds), 3)].append(ds)
    positions = sorted(by_position)
    crops = []
    for a in annotations:
        if a["sequence"] != sequence or a["kind"] != "tumour":
            continue
        k = positions.index(round(float(a["slice_position_mm"]), 3))
        ds = by_position[positions[k]][0]
        box = [int(a[c]) for c in ("x_min", "y_min", "x_max", "y_max")]
        x0, y0, x1, y1 = roi_with_margin(box, tuple(float(v) for v in ds.PixelSpacing), 10.0)
        r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)), ds.Rows)
        c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)), ds.Columns)
        for j in range(max(k - 1, 0), min(k + 2, len(positions))):
            crops += [d.pixel_array[r0:r1, c0:c1] for d in by_position[positions[j]]]
    return crops


@pytest.mark.parametrize("centre", [2, 4])
def test_a_sequence_planted_at_zero_is_bit_for_bit_the_same_for_both_labels(tmp_path, centre):
    """Flip lnm for one patient: every sequence planted at 0 shows the same pixels in the classifier's tumour crops
    (with a margin twice the default), while a planted sequence and the nodes elsewhere do change. Seed 4 at centre
    4 puts a mesorectal node into the crops when nodes keep only the tumour's box (no NODE_CLEARANCE_MM)."""
    protocol = centre_protocol(centre)
    folders = {
        "T2WI": f"{protocol.t2.series_number}_",
        "CET1WI": f"{protocol.cet1.series_number}_",
        "DWI": f"{protocol.dwi.series_number}_",
        "ADC": f"{protocol.adc_series_number}_",
    }
    for planting, null in (({"CET1WI": 3.0, "ADC": 3.0}, ("T2WI",)), ({"T2WI": 3.0}, ("CET1WI", "DWI", "ADC"))):
        crops, whole = {}, {}
        for lnm in (0, 1):
            root = tmp_path / f"{sorted(planting)}-{lnm}"
            plan = PatientPlan(protocol, centre, 1, f"SYN-C{centre}-0001", lnm)
            result = generate_patient(
                root, plan, seed=4, signal=0.0, cohort_key="test", planting=canonical_planting(planting)
            )
            for sequence, prefix in folders.items():
                folder = next((root / plan.patient_id).glob(f"{prefix}*"))
                crops[sequence, lnm] = _crops(folder, result.annotations, sequence)
                whole[sequence, lnm] = [pydicom.dcmread(p).pixel_array for p in sorted(folder.glob("*.dcm"))]
        for sequence in folders:
            same = all(np.array_equal(a, b) for a, b in zip(crops[sequence, 0], crops[sequence, 1], strict=True))
            assert same == (sequence in null), (planting, sequence)
        assert not all(np.array_equal(a, b) for a, b in zip(whole["T2WI", 0], whole["T2WI", 1], strict=True))


def test_strongly_planted_features_separate_the_classes_in_the_written_files(tmp_path):
    root = tmp_path / "planted"
    summary = generate_cohort(
        root, patients=8, centers=2, seed=3, signal_by_sequence={"T2WI": 5, "CET1WI": 5, "DWI": 5}, workers=2
    )
    assert summary.signal_by_sequence == {"T2WI": 5.0, "CET1WI": 5.0, "ADC": 5.0} and summary.signal == 0.0
    assert 0 < summary.lnm_positive < 8
    rows = measure_cohort(root)
    aucs = feature_aucs(rows)
    assert all(auc > 0.75 for auc in aucs.values()), aucs
    manifest = read_csv(root / "manifest.csv")
    assert [int(r["lnm"]) for r in manifest] == [p.lnm for p in plan_cohort(8, 2, 3)]  # labels as in default mode
    tumour_boxes = [a for a in read_csv(root / "annotations.csv") if a["kind"] == "tumour"]
    assert {a["sequence"] for a in tumour_boxes} == {"T2WI", "CET1WI", "DWI", "ADC"}
