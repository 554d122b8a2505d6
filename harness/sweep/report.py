"""The comparison of a sweep as tables: a rich table on the console, ``comparison.md`` and a self-contained
``comparison.html`` (tables plus the classifiers' validation ROC curves per sequence, embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import math
import tempfile
from pathlib import Path

from harness.console import wide_when_piped

from .comparison import BEST_METRIC, DASH, Comparison, Trial

TASK_TITLES = {"classification": "Classifiers", "detection": "Detectors", "unknown": "Trials without a task"}
COMMON_COLUMNS = ["Sequence", "Augment", "Backbone", "Run", "Status"]
P_COLUMN = "p vs best (DeLong)"
METRIC_COLUMNS = {
    "classification": ["AUC [95% CI]", "Sensitivity", "Specificity", P_COLUMN],
    "detection": ["mAP@0.5", "mAP", "FROC", "Patient AUC", P_COLUMN],
}
DETECTOR_NOTE = (
    "Detectors: a patient's score is its highest detection score over its slices (as for Patient AUC); p: DeLong on "
    "those scores, with the patients' nodal status from the manifest ('—' for runs without it)."
)


def number(value: float | None) -> str:
    """Three decimals, '—' when missing."""
    return DASH if value is None or not math.isfinite(value) else f"{value:.3f}"


def p_text(p: float) -> str:
    """A p-value as reported: '<0.001' below 0.001, three decimals otherwise, '—' when not computed."""
    if p is None or not math.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def auc_with_ci(trial: Trial) -> str:
    """``0.912 [0.850–0.970]``; the AUC alone without a CI; '—' without an AUC."""
    auc, low, high = (trial.metric(k) for k in ("val_auc", "val_auc_ci_low", "val_auc_ci_high"))
    if auc is None:
        return DASH
    return f"{auc:.3f} [{low:.3f}–{high:.3f}]" if low is not None and high is not None else f"{auc:.3f}"


def metric_cells(trial: Trial) -> list[str]:
    """The task's metric cells of one trial."""
    if trial.task == "classification":
        sens, spec = (number(trial.metric(k)) for k in ("val_sensitivity", "val_specificity"))
        return [auc_with_ci(trial), sens, spec, p_text(trial.p_value)]
    if trial.task == "detection":
        keys = ("val_map50", "val_map", "val_froc", "val_patient_auc")
        return [number(trial.metric(k)) for k in keys] + [p_text(trial.p_value)]
    return []


def table_rows(comparison: Comparison, task: str) -> tuple[list[str], list[list[str]], list[Trial]]:
    """Header, cell texts and the trials (same order) of ``task``'s table."""
    trials = comparison.tasks().get(task, [])
    header = COMMON_COLUMNS + METRIC_COLUMNS.get(task, [])
    rows = [[*trial.group(), trial.name, trial.status, *metric_cells(trial)] for trial in trials]
    return header, rows, trials


def _title(comparison: Comparison) -> str:
    return f"Sweep {comparison.sweep!r} (experiment {comparison.experiment!r}, parent run {comparison.parent_run_id})"


def _best_note(comparison: Comparison, task: str) -> str:
    best = comparison.best(task)
    if best is None:
        return f"No trial has {BEST_METRIC.get(task, 'a comparison metric')}: no best trial, no p-values."
    note = f"Best trial: {best.name} (highest {BEST_METRIC[task]})."
    return note + " p: DeLong against it on the validation patients both scored." if task == "classification" else note


def print_comparison(comparison: Comparison, console) -> None:
    """One rich table per task on ``console``; the best trial in bold; sequences separated by a rule."""
    from rich.table import Table

    wide_when_piped(console)
    console.print(_title(comparison))
    if not comparison.trials:
        console.print("No trial runs under this sweep run.")
    for task in comparison.tasks():
        header, rows, trials = table_rows(comparison, task)
        table = Table(title=TASK_TITLES.get(task, task), caption=_best_note(comparison, task))
        for name in header:
            table.add_column(name, overflow="fold")
        for k, (row, trial) in enumerate(zip(rows, trials, strict=True)):
            if k and trial.group()[0] != trials[k - 1].group()[0]:
                table.add_section()
            table.add_row(*row, style="bold" if trial.is_best else None)
        console.print(table)
        if task == "detection":
            console.print(DETECTOR_NOTE)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(comparison: Comparison) -> str:
    """The comparison as Markdown: a title, then one table per task (the best trial's name in bold)."""
    lines = [f"# {_title(comparison)}", ""]
    for task in comparison.tasks():
        header, rows, trials = table_rows(comparison, task)
        lines += [f"## {TASK_TITLES.get(task, task)}", "", _best_note(comparison, task), ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, trial in zip(rows, trials, strict=True):
            cells = [_md_cell(c) for c in row]
            if trial.is_best:
                cells[3] = f"**{cells[3]}**"
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", DETECTOR_NOTE, ""] if task == "detection" else [""]
    return "\n".join(lines)


def write_markdown(comparison: Comparison, path: Path) -> Path:
    """Write `markdown` to ``path``; returns it."""
    path = Path(path)
    path.write_text(markdown(comparison), encoding="utf-8")
    return path


def roc_figures(comparison: Comparison) -> dict[str, bytes]:
    """PNG bytes of the classifiers' validation ROC curves, one figure per sequence (trials with predictions)."""
    from harness.metrics.plots import plot_roc_curves

    figures: dict[str, bytes] = {}
    classifiers = comparison.tasks().get("classification", [])
    sequences = dict.fromkeys(t.group()[0] for t in classifiers if t.val_predictions is not None)
    with tempfile.TemporaryDirectory() as folder:
        for sequence in sequences:
            trials = [t for t in classifiers if t.group()[0] == sequence and t.val_predictions is not None]
            curves = {t.name: (t.val_predictions["lnm"].astype(int), t.val_predictions["dl_score"]) for t in trials}
            ci = {t.name: (t.metric("val_auc_ci_low"), t.metric("val_auc_ci_high")) for t in trials}
            ci = {name: bounds for name, bounds in ci.items() if None not in bounds}
            path = plot_roc_curves(curves, Path(folder) / "roc.png", title=f"Validation ROC, {sequence}", ci=ci)
            figures[sequence] = path.read_bytes()
    return figures


def _html_table(comparison: Comparison, task: str) -> str:
    header, rows, trials = table_rows(comparison, task)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row, trial in zip(rows, trials, strict=True):
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
        body.append(f'<tr class="best">{cells}</tr>' if trial.is_best else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f0f0f0}"
    "tr.best{font-weight:bold;background:#eef6ee}img{max-width:480px;margin:0.5em}"
)


def html_report(comparison: Comparison) -> str:
    """A self-contained HTML page: the tables and the ROC figures as base64 PNG (no external file)."""
    parts = [f"<h1>{html.escape(_title(comparison))}</h1>"]
    for task in comparison.tasks():
        parts += [
            f"<h2>{html.escape(TASK_TITLES.get(task, task))}</h2>",
            f"<p>{html.escape(_best_note(comparison, task))}</p>",
            _html_table(comparison, task),
        ]
        if task == "detection":
            parts.append(f"<p>{html.escape(DETECTOR_NOTE)}</p>")
    figures = roc_figures(comparison)
    if figures:
        parts.append("<h2>Validation ROC curves of the classifiers, per sequence</h2>")
    for sequence, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img alt="ROC {html.escape(sequence)}" src="data:image/png;base64,{data}">')
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(_title(comparison))}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_html(comparison: Comparison, path: Path) -> Path:
    """Write `html_report` to ``path``; returns it."""
    path = Path(path)
    path.write_text(html_report(comparison), encoding="utf-8")
    return path
