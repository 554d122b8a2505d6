"""ROC, precision-recall and FROC figures as PNG files.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``, rendered by the Agg canvas), never
through pyplot, so nothing here switches the user's backend, opens a window or keeps figures alive in pyplot's
global registry (Ray workers and headless CI have no display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from .classification import binary_labels, roc_auc
from .froc import FrocResult


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_roc_curves(
    curves: Mapping[str, tuple[Any, Any]], path: str | Path, title: str = "ROC", ci: Mapping[str, tuple] | None = None
) -> Path:
    """ROC curves of several models or cohorts in one figure, AUC in the legend.

    Args:
        curves: ``{name: (labels, scores)}``; each curve is computed by scikit-learn's ``roc_curve``.
        path: output PNG file (folders are created).
        title: figure title.
        ci: optional ``{name: (low, high)}`` shown after the AUC.

    Returns:
        The written path.
    """
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for name, (labels, scores) in curves.items():
        y = binary_labels(labels)
        if y.min(initial=0) == y.max(initial=0):
            continue  # one class only: no ROC curve
        fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=np.float64))
        label = f"{name} (AUC {roc_auc(y, scores):.3f}"
        if ci and name in ci:
            label += f", 95% CI {ci[name][0]:.3f}-{ci[name][1]:.3f}"
        ax.plot(fpr, tpr, drawstyle="steps-post", label=label + ")")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_pr_curves(
    curves: Mapping[str, tuple[Any, Any]], path: str | Path, title: str = "Precision-recall", ap: Mapping | None = None
) -> Path:
    """Precision-recall curves (e.g. one per node location from `detection_pr_curve`).

    Args:
        curves: ``{name: (recall, precision)}`` in decreasing score order.
        path: output PNG file.
        title: figure title.
        ap: optional ``{name: AP}`` shown in the legend.

    Returns:
        The written path.
    """
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for name, (recall, precision) in curves.items():
        r, p = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
        if r.size == 0 or np.isnan(r).all():
            continue
        label = f"{name} (AP {ap[name]:.3f})" if ap and name in ap else name
        ax.plot(np.concatenate([[0.0], r]), np.concatenate([[p[0]], p]), label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_froc(results: Mapping[str, FrocResult] | FrocResult, path: str | Path, title: str = "FROC") -> Path:
    """FROC curve(s): lesion sensitivity against FP per patient (log2 axis), the read-out rates marked.

    Args:
        results: one `FrocResult` or ``{name: FrocResult}``.
        path: output PNG file.
        title: figure title.

    Returns:
        The written path.
    """
    named: Mapping[str, FrocResult] = {"": results} if isinstance(results, FrocResult) else results
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    rates: Sequence[float] = []
    for name, res in named.items():
        rates = res.fp_rates
        fp = np.maximum(res.curve_fp_per_patient, res.fp_rates.min() / 2)  # log axis: show 0 FP at the left edge
        # The curve stays flat past its last point (the read-out convention): draw it to the right edge.
        fp = np.append(fp, max(fp[-1], res.fp_rates.max() * 1.5))
        sens = np.append(res.curve_sensitivity, res.curve_sensitivity[-1])
        label = f"{name} (FROC {res.mean_sensitivity:.3f})" if name else f"FROC {res.mean_sensitivity:.3f}"
        (line,) = ax.plot(fp, sens, drawstyle="steps-post", label=label)
        ax.plot(res.fp_rates, res.sensitivities, "o", color=line.get_color())
    ax.set_xscale("log", base=2)
    if len(rates):
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.set_xlim(min(rates) / 2, max(rates) * 1.5)
    ax.set(xlabel="false positives per patient", ylabel="lesion sensitivity", ylim=(0, 1.01), title=title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_forest(
    rows: Sequence[dict[str, Any]], path: str | Path, title: str = "Differences", unit: str = "AUC"
) -> Path:
    """A forest plot: one row per comparison, its difference as a point and its CI as a bar, zero marked.

    Args:
        rows: ``{"label", "diff", "low", "high", "significant", "note"}`` per comparison, top to bottom; ``note`` (e.g.
            the adjusted p) is written at the right.
        path: output PNG file.
        title: figure title.
        unit: what the differences are in (x-axis label).

    Returns:
        The written path.
    """
    fig = Figure(figsize=(7.5, 0.5 * len(rows) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for row, position in zip(rows, y, strict=True):
        colour = "tab:red" if row.get("significant") else "tab:blue"
        low, high = row["low"], row["high"]
        if np.isfinite([low, high]).all():
            ax.plot([low, high], [position, position], color=colour, linewidth=2)
        ax.plot([row["diff"]], [position], marker="D", color=colour)
    ax.axvline(0, color="grey", linestyle=":", linewidth=1)
    ax.set_yticks(y, [row["label"] for row in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set(xlabel=f"difference in {unit} (95% CI); red: significant after Holm", title=title)
    right = ax.secondary_yaxis("right")
    right.set_yticks(y, [row.get("note", "") for row in rows])
    right.tick_params(length=0)
    return _save(fig, path)
