"""What a person watches while a sweep runs: a live table of trials (state, epoch, best metric so far)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from harness.config import trial_epochs
from harness.console import wide_when_piped

STATE_STYLE = {
    "PENDING": "dim",
    "RUNNING": "cyan",
    "RETRYING": "yellow",
    "FINISHED": "green",
    "KILLED": "magenta",
    "FAILED": "bold red",
}


@dataclass
class _Row:
    key: str
    run_name: str
    metric: str
    mode: str
    state: str = "PENDING"
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    final: float | None = None
    retries: int = 0


class TrialBoard:
    """Trial states fed by Tune's driver callbacks; rendered with rich.Live (thread-safe updates).

    Two numbers per trial, labelled apart because they differ: the best per-epoch validation value so far (and its
    epoch), and the final value, computed once at the end on the model the run keeps (the early-stopping best, or
    the last epoch without early stopping), which is what MLflow and the comparison report.
    """

    def __init__(self, console: Console):
        wide_when_piped(console)
        self.console = console
        self.rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def add(self, key: str, run_name: str, metric: str, mode: str) -> None:
        """A trial to show; ``metric`` is the one whose best value so far is shown."""
        self.rows[key] = _Row(key, run_name, metric, mode)

    def update(self, key: str, state: str | None = None, result: dict | None = None) -> None:
        with self._lock:
            row = self.rows.get(key)
            if row is None:
                return
            if state == "RETRYING":
                row.retries += 1
            if state is not None:
                row.state = state
            if result:
                row.epoch = int(result.get("epoch", row.epoch) or row.epoch)
                value = result.get(row.metric)
                if not (isinstance(value, (int, float)) and math.isfinite(value)):
                    pass
                elif result.get("finished"):
                    row.final = value
                elif row.best is None or (value > row.best if row.mode == "max" else value < row.best):
                    row.best, row.best_epoch = value, row.epoch
        if self._live is not None:
            self._live.update(self.render())

    def render(self) -> Table:
        metric = next((row.metric for row in self.rows.values()), "metric")
        table = Table(title="Trials", title_justify="left")
        for column in ("trial", "run", "state", "epoch", f"best epoch's {metric}", f"final {metric}"):
            table.add_column(column, justify="right" if column == "epoch" else "left")
        for row in self.rows.values():
            best = f"{row.best:.3f} (epoch {row.best_epoch})" if row.best is not None else "—"
            final = f"{row.final:.3f}" if row.final is not None else "—"
            state = row.state + (f" (retry {row.retries})" if row.retries else "")
            style = STATE_STYLE.get(row.state, "")
            table.add_row(row.key, row.run_name, f"[{style}]{state}", str(row.epoch), best, final)
        return table

    def __enter__(self) -> TrialBoard:
        self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.update(self.render())
            live.__exit__(*exc)


def print_plan(plan, console: Console) -> None:
    """``harness run --dry-run``: every configuration with its values, folds x repeats, and what a trial asks Ray
    for; the totals say configurations x folds x repeats = trials."""
    wide_when_piped(console)
    for study in plan.studies:
        res = study.study.resources
        asks = (
            f"{res.cpus:g} CPU"
            + (f", {res.gpus:g} GPU" if res.gpus else "")
            + (f" x {res.workers} workers" if res.workers > 1 else "")
        )
        scheduler = study.study.scheduler
        on = f" on {scheduler.metric} ({scheduler.mode})" if scheduler.type != "none" else ""
        configurations = study.configurations
        cv = study.study.cv
        split = f"{cv.folds}-fold cv" if cv else "one split"
        test = (f", test: centres {', '.join(cv.test_centers)}" if cv.test_centers else "") if cv else ""
        if cv and cv.test_fraction:
            test = f", test: {cv.test_fraction:.0%} of patients"
        title = (
            f"study {study.study.name}: {study.task}, {len(configurations)} configurations x {study.folds} folds x "
            f"{study.study.repeats} repeats = {len(study.trials)} trials ({split}{test}); {asks} each, "
            f"scheduler {scheduler.type}{on}"
        )
        console.print(title, highlight=False)
        table = Table()
        for column in ("configuration", "run name", "model", "sequence", "augment", "trials", "epochs"):
            table.add_column(column)
        for key, trials in configurations.items():
            config = trials[0].config
            table.add_row(
                key,
                trials[0].configuration_name,
                config["model"],
                config["data"]["sequence"],
                config["data"]["augment"],
                str(len(trials)),
                str(trial_epochs(config)),
            )
        console.print(table)
    console.print(
        f"{len(plan.trials)} trials ({len(plan.configurations)} configurations) in {len(plan.studies)} studies; "
        f"results under {plan.settings.storage}"
    )
