"""The comparison's false-alarm rate through the whole pipeline: real cohorts, real training, real statistics.

Each cohort seed gives a synthetic cohort where nothing is planted (no sequence carries any information about the
label), and one cross-validated sweep study compares two sequences on it exactly as `harness run` + `harness
compare` do (Ray, MLflow, Wu 2020 classifiers trained per fold, paired DeLong, Holm). Any "significant" call is a
false alarm; the rate over seeds should stay near the nominal 5 %. docs/metrics.md records the measured rate.

    .venv/bin/python benchmarks/false_alarms.py --seeds 20 --out /tmp/false-alarms

About 2 minutes per seed on 2 CPU cores. `tests/sweep/test_planted_truth.py` runs one such study (and a planted one)
in CI; the study definition is shared from here.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from scipy.stats import binomtest

NULL_SEQUENCES = ["T2WI", "CET1WI"]


def cv_study(
    name: str, planting: dict[str, float], sequences: list[str], *, patients: int, seed: int = 3, folds: int = 3
) -> dict:
    """One cross-validated study over ``sequences`` on a planted synthetic cohort, sized for a 2-core CPU (small
    crops, a narrow network, 5 epochs, 3 folds)."""
    return {
        "name": name,
        "task": "classification",
        "model": "wu2020",
        "model_kwargs": {"width": 32},
        "data": {
            "synth": {"patients": patients, "centers": 2, "seed": seed, "signal_by_sequence": planting},
            "crop_size": 32,  # CPU-sized: a quarter of Wu's 64x64 pixels
        },
        "train": {"stage1_epochs": 0, "stage2_epochs": 5, "stage2_optimizer": "rmsprop", "stage2_lr": 1e-4},
        "n_boot": 200,
        "grid": {"sequence": sequences},
        "cv": {"folds": folds, "seed": 0},
        "resources": {"cpus": 1},
        "max_failures": 0,
    }


def null_sweep(seeds: range, storage: Path, patients: int) -> dict:
    """One study per cohort seed, nothing planted (``shared_signal`` stays 0 in the planted mode)."""
    studies = [cv_study(f"null-s{seed}", {}, NULL_SEQUENCES, patients=patients, seed=seed) for seed in seeds]
    return {"name": "false-alarms", "storage": str(storage / "runs"), "studies": studies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="cohort seeds (one study each; default 20)")
    parser.add_argument("--first-seed", type=int, default=100, help="first cohort seed (default 100)")
    parser.add_argument("--patients", type=int, default=30, help="patients per cohort (default 30, as in CI)")
    parser.add_argument("--out", type=Path, required=True, help="an empty folder for cohorts, runs and mlflow.db")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--no-run", action="store_true", help="only read the comparison of an earlier run in --out")
    args = parser.parse_args(argv)

    from harness.sweep import plan_sweep
    from harness.sweep.comparison import load_comparison
    from harness.sweep.factors import ALPHA, conclude
    from harness.sweep.run import run_sweep
    from harness.tracking import default_tracking_uri

    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)  # the synthetic cohorts go to ./data
    uri = default_tracking_uri(args.out)
    if not args.no_run:
        raw = null_sweep(range(args.first_seed, args.first_seed + args.seeds), args.out, args.patients)
        outcome = run_sweep(plan_sweep(raw, "false-alarms"), tracking_uri=uri, num_cpus=args.num_cpus)
        failed = [t.key for t in outcome.trials if t.status != "FINISHED"]
        if failed:
            print(f"trials not finished: {failed}")
            return 1
    verdicts = conclude(load_comparison(uri, "false-alarms", n_boot=200))
    calls = [(v.study, c) for v in verdicts for c in v.comparisons]
    print()
    for study, c in calls:
        print(f"{study:10} p {c.result.p_value:.4f}  Holm over the sweep {c.adjusted_p:.3f}  {c.text}")
    # Each study compares two levels once: its own p is what one user's sweep on one cohort would be judged by.
    summary = {"comparisons": len(calls)}
    for name, alarms in (
        ("per_study", sum(c.result.p_value < ALPHA and c.result.diff != 0 for _, c in calls)),
        ("holm_over_sweep", sum(c.significant for _, c in calls)),
    ):
        interval = binomtest(alarms, len(calls)).proportion_ci(0.95)  # Clopper-Pearson
        summary[name] = {"false_alarms": alarms, "rate": alarms / len(calls)}
        summary[name]["ci95"] = [round(interval.low, 3), round(interval.high, 3)]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
