"""A sweep's comparison for people: the verdicts first, then one table per study, as a terminal table (readable at
100 columns), ``comparison.md`` and a self-contained ``comparison.html`` (verdicts, a forest plot of the differences
with their CIs, the tables, and the ROC curves of the pooled out-of-fold predictions, embedded as base64 PNG; for a
detector study also its FROC and precision-recall curves from the pooled out-of-fold detections)."""

from __future__ import annotations

import base64
import html
import math
import tempfile
from pathlib import Path

from harness.console import wide_when_piped
from harness.metrics.paired import format_p

from .comparison import DASH, Comparison, Configuration
from .factors import StudyVerdict

TASK_TITLES = {"classification": "classifier", "detection": "detector", "unknown": "without a task"}
COLUMNS = {
    "classification": ["Configuration", "Trials", "OOF AUC [95% CI]", "Repeat SD", "Test AUC", "Best"],
    "detection": ["Configuration", "Trials", "Patient AUC [95% CI]", "mAP@0.5", "FROC", "Best"],
}


def number(value: float | None, digits: int = 3) -> str:
    """Three decimals, '—' when missing."""
    return DASH if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _auc_ci(configuration: Configuration, prefix: str) -> str:
    auc, low, high = (configuration.metric(f"{prefix}{k}") for k in ("", "_ci_low", "_ci_high"))
    if auc is None:
        return DASH
    if low is None or high is None:
        return f"{auc:.3f}"
    return f"{auc:.3f} [{low:.3f}–{high:.3f}]" + (" (zero width)" if low == high else "")


def _mean_sd(configuration: Configuration, key: str) -> str:
    mean, sd = configuration.metric(f"{key}_mean"), configuration.metric(f"{key}_sd")
    return DASH if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _trials(configuration: Configuration) -> str:
    finished = sum(t.status == "FINISHED" for t in configuration.trials)
    expected = configuration.params.get("folds"), configuration.params.get("repeats")
    total = int(expected[0]) * int(expected[1]) if all(expected) else len(configuration.trials)
    return f"{finished}/{total}"


def _best_cell(configuration: Configuration, study: StudyVerdict) -> str:
    if configuration.name == study.top:
        return "top"
    if configuration.name in study.best:
        return "tie"  # not significantly worse than the top
    if configuration.name in study.versus_top:
        return format_p(study.versus_top[configuration.name][1]).replace("p ", "worse, p ")
    return DASH


def table_rows(comparison: Comparison, study: StudyVerdict) -> tuple[list[str], list[list[str]]]:
    """Header and cell texts of a study's table, one row per configuration."""
    configurations = comparison.studies().get(study.study, [])
    header = COLUMNS.get(study.task, COLUMNS["classification"])
    rows = []
    for c in configurations:
        if study.task == "detection":
            metrics = [_auc_ci(c, "oof_auc"), _mean_sd(c, "val_map50"), _mean_sd(c, "val_froc")]
        else:
            test = _auc_ci(c, "test_auc") if c.metric("test_auc") is not None else DASH
            metrics = [_auc_ci(c, "oof_auc"), number(c.metric("oof_auc_repeat_sd")), test]
        rows.append([c.name, _trials(c), *metrics, _best_cell(c, study)])
    return header, rows


def _title(comparison: Comparison) -> str:
    return f"Sweep {comparison.sweep!r} (experiment {comparison.experiment!r})"


def study_lines(comparison: Comparison, study: StudyVerdict) -> list[str]:
    """The sentences of a study: what the numbers rest on, the verdicts, the best set, what was left out."""
    configurations = comparison.studies().get(study.study, [])
    repeats = max((int(c.metric("n_repeats") or 1) for c in configurations), default=1)
    folds = configurations[0].params.get("folds", "1") if configurations else "1"
    lines = [
        f"{study.n_patients} patients ({study.n_positive} node-positive), each scored out of fold by {folds} folds "
        f"x {repeats} repeat{'s' if repeats != 1 else ''}; AUC CIs: patient bootstrap ({comparison.n_boot} resamples)."
    ]
    if study.task == "detection":
        lines.append("A patient's detector score is its highest detection score over its slices.")
    lines += [f"{c.factor}: {c.text}" for c in study.comparisons]
    if not study.comparisons and len(configurations) > 1:
        lines.append("no paired comparison could be made (see below)")
    if study.top:
        ties = [name for name in study.best if name != study.top]
        lines.append(
            f"best: {study.top}"
            + (f", tied with {', '.join(ties)} (not significantly worse, Holm)" if ties else " (every other is worse)")
            if len(configurations) > 1
            else f"best: {study.top} (the only configuration)"
        )
    lines += [f"left out of paired tests: {name}: {why}" for name, why in study.excluded.items()]
    lines += study.notes
    if study.task == "detection":
        lines += detection_lines(configurations, repeats)
    return lines


def _curves_basis(drawn: list[Configuration]) -> str:
    """'repeat 0 of each of 3 folds: 60 patients, 480 slices, 95 lesions' (per configuration when they differ)."""
    counts = {
        c.name: f"{c.detections.n_patients} patients, {c.detections.n_slices} slices, {c.detections.n_lesions} lesions"
        for c in drawn
    }
    folds = {c.detections.n_trials for c in drawn}
    where = f"repeat {drawn[0].detections.repeat} of each of {folds.pop()} folds" if len(folds) == 1 else "one repeat"
    if len(set(counts.values())) == 1:
        return f"{where}: {next(iter(counts.values()))} per configuration"
    return f"{where}: " + "; ".join(f"{name} {text}" for name, text in counts.items())


def detection_lines(configurations: list[Configuration], repeats: int = 1) -> list[str]:
    """What a detector study's FROC and precision-recall figures rest on, and which configurations they lack."""
    drawn = [c for c in configurations if c.detections is not None and c.detections.complete]
    lines = []
    if drawn:
        lines.append(
            "FROC (lesion sensitivity against false positives per patient) and precision-recall curves (IoU 0.5, "
            f"node locations pooled) in comparison.html, from the out-of-fold detections of {_curves_basis(drawn)}"
            + (" (the other repeats are not averaged in)." if repeats > 1 else ".")
        )
    for c in configurations:
        if c in drawn:
            continue
        pooled = c.detections
        if pooled is None:
            lines.append(f"{c.name}: no finished trial, so no FROC or precision-recall curve")
        else:
            lines.append(
                f"{c.name}: no detections for {len(pooled.missing)} of its {pooled.n_trials} folds in repeat "
                f"{pooled.repeat} ({', '.join(pooled.missing)}; runs logged before detections.json.gz have none): "
                "left out of the FROC and precision-recall figures"
            )
    return lines


def print_comparison(comparison: Comparison, verdicts: list[StudyVerdict], console) -> None:
    """The verdicts, then one table per study, on a rich ``console`` (fits 100 columns)."""
    from rich.padding import Padding
    from rich.table import Table

    wide_when_piped(console, width=100)
    console.print(f"[bold]{_title(comparison)}")
    if not comparison.configurations:
        console.print("No runs under this sweep run.")
    for study in verdicts:
        console.print(f"\n[bold]Study {study.study}[/] ({TASK_TITLES.get(study.task, study.task)})")
        for line in study_lines(comparison, study):
            console.print(Padding(f"• {line}", (0, 0, 0, 2)), highlight=False)  # wrapped lines stay indented
        header, rows = table_rows(comparison, study)
        table = Table(show_edge=False, pad_edge=False)
        for name in header:
            table.add_column(name, overflow="fold", no_wrap=name != "Configuration")
        for row in rows:
            table.add_row(*row, style="bold" if row[-1] == "top" else None)
        console.print(table)
    console.print(
        "OOF: every patient scored by the fold that held it out, averaged over repeats. Sensitivity and specificity "
        "(MLflow) use each fold's Youden threshold from its own training patients."
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(comparison: Comparison, verdicts: list[StudyVerdict]) -> str:
    """The comparison as Markdown: verdicts first, then the tables."""
    lines = [f"# {_title(comparison)}", ""]
    for study in verdicts:
        lines += [f"## Study {study.study} ({TASK_TITLES.get(study.task, study.task)})", ""]
        lines += [f"- {_md_cell(line)}" for line in study_lines(comparison, study)] + [""]
        header, rows = table_rows(comparison, study)
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def write_markdown(comparison: Comparison, verdicts: list[StudyVerdict], path: Path) -> Path:
    """Write `markdown` to ``path``; returns it."""
    path = Path(path)
    path.write_text(markdown(comparison, verdicts), encoding="utf-8")
    return path


def _png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def figures(comparison: Comparison, verdicts: list[StudyVerdict]) -> dict[str, str]:
    """Title -> base64 PNG: the forest plot of every comparison, each study's pooled OOF ROC curves, and a detector
    study's FROC and precision-recall curves."""
    from harness.metrics.plots import plot_forest, plot_roc_curves

    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        rows = [
            {
                "label": f"{c.study}: {c.level_a} − {c.level_b}",
                "diff": c.result.diff,
                "low": c.result.ci_low,
                "high": c.result.ci_high,
                "significant": c.significant,
                "note": f"{format_p(c.adjusted_p)} (Holm)",
            }
            for study in verdicts
            for c in study.comparisons
        ]
        if rows:
            path = plot_forest(rows, Path(folder) / "forest.png", title="Paired differences (level a − level b)")
            out["Paired differences between factor levels"] = _png(path)
        for study in verdicts:
            scored = [c for c in comparison.studies()[study.study] if c.scores is not None]
            if scored:
                curves = {c.name: (c.labels.to_numpy(), c.scores.to_numpy()) for c in scored}
                ci = {c.name: (c.metric("oof_auc_ci_low"), c.metric("oof_auc_ci_high")) for c in scored}
                ci = {name: bounds for name, bounds in ci.items() if None not in bounds}
                path = plot_roc_curves(curves, Path(folder) / f"roc-{study.study}.png", title=f"{study.study}", ci=ci)
                out[f"ROC curves of study {study.study}, pooled out-of-fold predictions"] = _png(path)
            if study.task == "detection":
                out.update(_detector_figures(comparison.studies()[study.study], study.study, Path(folder)))
    return out


def _detector_figures(configurations: list[Configuration], study: str, folder: Path) -> dict[str, str]:
    """Title -> base64 PNG: a detector study's FROC and precision-recall curves, one per configuration whose folds
    all left their detections."""
    from harness.metrics.plots import plot_froc, plot_pr_curves

    drawn = [c for c in configurations if c.detections is not None and c.detections.complete]
    if not drawn:
        return {}
    basis = _curves_basis(drawn)
    froc = plot_froc({c.name: c.detections.froc for c in drawn}, folder / f"froc-{study}.png", title=f"{study}: FROC")
    ap = {c.name: c.detections.ap for c in drawn if c.detections.ap is not None}
    pr = plot_pr_curves(
        {c.name: (c.detections.recall, c.detections.precision) for c in drawn},
        folder / f"pr-{study}.png",
        title=f"{study}: precision-recall (IoU 0.5)",
        ap=ap,
    )
    return {
        f"FROC of study {study}, pooled out-of-fold detections ({basis})": _png(froc),
        f"Precision-recall (IoU 0.5) of study {study}, pooled out-of-fold detections ({basis})": _png(pr),
    }


STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f0f0f0}"
    "tr.top{font-weight:bold;background:#eef6ee}img{max-width:100%;margin:0.5em 0}li{margin:0.2em 0}"
)


def html_report(comparison: Comparison, verdicts: list[StudyVerdict]) -> str:
    """A self-contained HTML page: verdicts, the forest plot, the tables, the ROC figures (no external file)."""
    escape = html.escape
    parts = [f"<h1>{escape(_title(comparison))}</h1>"]
    pictures = figures(comparison, verdicts)
    for study in verdicts:
        parts.append(f"<h2>Study {escape(study.study)} ({escape(TASK_TITLES.get(study.task, study.task))})</h2>")
        parts.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in study_lines(comparison, study)) + "</ul>")
    for title, data in pictures.items():
        if title.startswith("Paired"):
            parts += [f"<h2>{escape(title)}</h2>", f'<img alt="{escape(title)}" src="data:image/png;base64,{data}">']
    for study in verdicts:
        header, rows = table_rows(comparison, study)
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join(
            f"<tr{' class=top' if row[-1] == 'top' else ''}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
            for row in rows
        )
        parts += [
            f"<h3>{escape(study.study)}</h3>",
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        ]
    for title, data in pictures.items():
        if not title.startswith("Paired"):
            parts += [f"<h3>{escape(title)}</h3>", f'<img alt="{escape(title)}" src="data:image/png;base64,{data}">']
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{escape(_title(comparison))}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_html(comparison: Comparison, verdicts: list[StudyVerdict], path: Path) -> Path:
    """Write `html_report` to ``path``; returns it."""
    path = Path(path)
    path.write_text(html_report(comparison, verdicts), encoding="utf-8")
    return path
