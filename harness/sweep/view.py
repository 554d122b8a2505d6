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
    retries: int = 0


class TrialBoard:
    """Trial states fed by Tune's driver callbacks; rendered with rich.Live (thread-safe updates)."""

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
                if isinstance(value, (int, float)) and math.isfinite(value) and not result.get("finished"):
                    better = row.best is None or (value > row.best if row.mode == "max" else value < row.best)
                    row.best = value if better else row.best
        if self._live is not None:
            self._live.update(self.render())

    def render(self) -> Table:
        table = Table(title="Trials", title_justify="left")
        for column in ("trial", "grid point", "state", "epoch", "best so far"):
            table.add_column(column, justify="right" if column in ("epoch",) else "left")
        for row in self.rows.values():
            best = f"{row.metric} {row.best:.3f}" if row.best is not None else "—"
            state = row.state + (f" (retry {row.retries})" if row.retries else "")
            table.add_row(row.key, row.run_name, f"[{STATE_STYLE.get(row.state, '')}]{state}", str(row.epoch), best)
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
    """``harness run --dry-run``: every trial with its grid point and what it asks Ray for."""
    wide_when_piped(console)
    for study in plan.studies:
        res = study.study.resources
        asks = (
            f"{res.cpus:g} CPU"
            + (f", {res.gpus:g} GPU" if res.gpus else "")
            + (f" x {res.workers} workers" if res.workers > 1 else "")
        )
        scheduler = study.study.scheduler
        title = (
            f"study {study.study.name}: {study.task}, {len(study.trials)} trials, {asks} each, "
            f"scheduler {scheduler.type}"
            + (f" on {scheduler.metric} ({scheduler.mode})" if scheduler.type != "none" else "")
        )
        table = Table(title=title, title_justify="left")
        for column in ("trial", "model", "sequence", "augment", "grid point", "epochs"):
            table.add_column(column)
        for trial in study.trials:
            config = trial.config
            epochs = trial_epochs(config)
            table.add_row(
                trial.key,
                config["model"],
                config["data"]["sequence"],
                config["data"]["augment"],
                trial.run_name.split(": ", 1)[1],
                str(epochs),
            )
        console.print(table)
    total = len(plan.trials)
    console.print(f"{total} trials in {len(plan.studies)} studies; results under {plan.settings.storage}")
