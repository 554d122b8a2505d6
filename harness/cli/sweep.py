"""``harness run`` and ``harness compare``: sweeps with Ray Tune, tracked and compared in MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path

RUN_EPILOG = """\
examples:
  harness run examples/sweep.yaml --dry-run       list the trials and the resources they ask for
  harness run examples/sweep.yaml                 run on a local Ray, log to ./mlflow.db
  harness run examples/sweep.yaml --resume        continue an interrupted sweep (finished trials are kept)
  harness run examples/paper.yaml --address 10.0.0.1:6379 --tracking-uri http://10.0.0.1:5000
  mlflow ui --backend-store-uri sqlite:///mlflow.db     open the runs side by side (http://127.0.0.1:5000)
"""


def add_run(commands) -> None:
    parser = commands.add_parser(
        "run",
        help="run a sweep (studies of trials) with Ray Tune, tracked in MLflow",
        description="Expand SWEEP.yaml into trials (grid x search samples per study), train them with Ray Tune on a "
        "local Ray or a cluster, log every trial to MLflow as a child of the sweep's run, and print the comparison "
        "table. The sweep file format is in docs/sweeps.md. Exits 1 when a trial failed (named with its reason).",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep", type=Path, help="sweep YAML")
    parser.add_argument("--dry-run", action="store_true", help="print the expanded trials and their resources; exit")
    parser.add_argument(
        "--address",
        help="join this Ray cluster (host:port or 'auto'); default: RAY_ADDRESS, else a "
        "local Ray started for the sweep",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (http://host:port for a server); default: "
        "MLFLOW_TRACKING_URI, else sqlite:///<working dir>/mlflow.db",
    )
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep of the same name")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete the sweep's earlier results folder and start over (MLflow keeps the earlier runs)",
    )
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument(
        "--report-dir", type=Path, help="where the comparison report goes (default: the sweep's folder under storage)"
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console

    from harness.sweep import load_sweep
    from harness.sweep.view import print_plan

    console = Console()
    plan = load_sweep(args.sweep)
    if args.dry_run:
        print_plan(plan, console)
        return 0
    if args.resume and args.fresh:
        raise ValueError("--resume and --fresh contradict each other: choose one")
    from harness.sweep.compare import compare_command
    from harness.sweep.run import run_sweep
    from harness.tracking import tracking_uri_from

    uri = tracking_uri_from(args.tracking_uri or plan.settings.tracking_uri)
    address = args.address or os.environ.get("RAY_ADDRESS")
    outcome = run_sweep(
        plan,
        tracking_uri=uri,
        address=address,
        resume=args.resume,
        fresh=args.fresh,
        console=console,
        num_cpus=args.num_cpus,
    )
    report_dir = args.report_dir or plan.settings.storage / plan.settings.name
    compare_command(plan.settings.name, uri, report_dir, console, record=True)
    console.print(f"Report: {report_dir / 'comparison.html'} (also attached to the sweep's run in MLflow)")
    server = "http://127.0.0.1:5000" if uri.startswith("sqlite:") else uri.rstrip("/")
    if uri.startswith("sqlite:"):
        console.print(f"MLflow UI: mlflow ui --backend-store-uri {uri}", highlight=False)
    console.print(
        f"Configurations, best first (folds and repeats nested under each): {server}{outcome.ui_path}",
        highlight=False,
        soft_wrap=True,
    )
    if outcome.failed:
        console.print(f"[bold red]{len(outcome.failed)} trial(s) failed:")
        for trial in outcome.failed:
            console.print(f"  {trial.key} ({trial.run_name}): {trial.error}")
        return 1
    return 0


def add_compare(commands) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare a sweep's configurations from MLflow: verdicts per factor, best set, tables, reports",
        description="For each study of the latest execution of a sweep: the pooled out-of-fold AUC of every "
        "configuration with its 95%% CI (patient bootstrap), the spread over repeats and the held-out test AUC; per "
        "factor (sequence, augment, backbone, any grid key) the paired difference between its levels with a 95%% CI "
        "and a DeLong p-value, Holm-adjusted over all comparisons shown, and a verdict in words; the best set "
        "(configurations not significantly worse than the top one). Written as comparison.md and comparison.html "
        "(forest plot, ROC curves). Definitions: docs/metrics.md, 'Comparing configurations'.",
    )
    parser.add_argument("experiment", nargs="?", help="MLflow experiment = sweep name (default: the latest sweep)")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite:///<working dir>/mlflow.db")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for comparison.md/.html (default: .)")
    parser.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.sweep.compare import compare_command
    from harness.tracking import tracking_uri_from

    compare_command(args.experiment, tracking_uri_from(args.tracking_uri), args.out, Console())
    return 0
