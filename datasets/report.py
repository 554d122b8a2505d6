"""`harness data check` for people: the `CheckReport` as rich tables on the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.datasets.check import CheckReport
from harness.datasets.sequences import SEQUENCES

_MAX_PATIENT_ROWS = 40


def print_check_report(report: CheckReport, console: Console) -> None:
    """Print `harness data check`'s report: summary tables, then every problem, then the verdict."""
    summary = report.summary
    patients = summary["patients"]
    console.rule(f"[bold]{report.root}")
    if "centers" in summary:
        console.print(_centers_table(summary))
        console.print(_sequences_table(summary))
        console.print(_boxes_table(summary))
        console.print(_patients_table(summary))
        if summary["unmapped_series"]:
            listed = ", ".join(f"{d!r} x{n}" for d, n in summary["unmapped_series"].items())
            console.print(f"Unmapped series (no sequence rule matched; not used): {listed}")
        if summary["files_ignored"]:
            console.print(f"Ignored files (hidden or DICOMDIR): {len(summary['files_ignored'])}")
        if summary["files_skipped"]:
            console.print(f"[yellow]Skipped unreadable files (--on-error skip): {len(summary['files_skipped'])}")
        if patients["excluded"]:
            console.print(f"[yellow]Excluded patients (--on-error skip): {len(patients['excluded'])}")
    for problem in report.problems:
        colour = "red" if problem.severity.value == "error" else "yellow"
        console.print(f"[{colour}]{problem.severity.value}[/] {problem.where}: {problem.message}", highlight=False)
    errors = sum(p.severity.value == "error" for p in report.problems)
    warnings = len(report.problems) - errors
    verdict = "[green]usable[/]" if report.usable else "[red]NOT usable[/]"
    console.print(
        f"{verdict}: {patients['usable']} of {patients['manifest']} patients usable, "
        f"{errors} error(s), {warnings} warning(s)"
    )


def _centers_table(summary: dict) -> Table:
    table = Table(title="Patients per centre")
    for column in ("centre", "LNM+", "LNM-", "total"):
        table.add_column(column, justify="right")
    for center, counts in summary["centers"].items():
        pos, neg = counts["lnm_positive"], counts["lnm_negative"]
        table.add_row(center, str(pos), str(neg), str(pos + neg))
    return table


def _sequences_table(summary: dict) -> Table:
    table = Table(title="Sequences")
    for column in ("sequence", "patients", "slices"):
        table.add_column(column, justify="right")
    for sequence in SEQUENCES:
        table.add_row(sequence, str(summary["sequences"][sequence]), str(summary["slices"][sequence]))
    return table


def _boxes_table(summary: dict) -> Table:
    table = Table(title="Boxes per class")
    for column in ("class", "metastatic", "benign"):
        table.add_column(column, justify="right")
    tumour = summary["boxes"]["tumour"]
    table.add_row("tumour ROI", ", ".join(f"{s} {n}" for s, n in sorted(tumour.items())) or "0", "")
    for name, counts in summary["boxes"].items():
        if name != "tumour":
            table.add_row(name, str(counts["metastatic"]), str(counts["benign"]))
    return table


def _patients_table(summary: dict) -> Table:
    rows = summary["per_patient"]
    title = "Sequences per patient"
    if len(rows) > _MAX_PATIENT_ROWS:
        title += f" (first {_MAX_PATIENT_ROWS} of {len(rows)}; --json lists all)"
    table = Table(title=title)
    for column in ("patient", "centre", "LNM", "sequences"):
        table.add_column(column)
    for row in rows[:_MAX_PATIENT_ROWS]:
        table.add_row(row["patient_id"], row["center"], str(row["lnm"]), ", ".join(row["sequences"]))
    return table
