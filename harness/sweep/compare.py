"""``harness compare`` (and the end of ``harness run``): load a sweep's comparison, conclude, print, write the
reports; at the end of a sweep also record each configuration's aggregates on its MLflow run and attach the report
to the sweep's parent run."""

from __future__ import annotations

from pathlib import Path

from harness import tracking

from .comparison import Comparison, load_comparison
from .factors import StudyVerdict, conclude
from .report import print_comparison, write_html, write_markdown


def compare_command(
    experiment: str | None, tracking_uri: str, out_dir: Path, console, *, record: bool = False
) -> tuple[Comparison, list[StudyVerdict]]:
    """``harness compare``: load the sweep, conclude, print, write ``comparison.md`` and ``comparison.html``.

    Args:
        experiment: experiment name, or None for the latest sweep experiment.
        tracking_uri: MLflow tracking URI.
        out_dir: folder for the two reports (created).
        console: a ``rich.console.Console``.
        record: log each configuration's aggregate metrics on its run and attach the reports to the parent run
            (the end of ``harness run``; a plain ``harness compare`` writes nothing to MLflow).

    Returns:
        The `Comparison` and its per-study verdicts.
    """
    comparison = load_comparison(tracking_uri, experiment)
    verdicts = conclude(comparison)
    print_comparison(comparison, verdicts, console)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = write_markdown(comparison, verdicts, out_dir / "comparison.md")
    page = write_html(comparison, verdicts, out_dir / "comparison.html")
    console.print(f"Wrote {markdown} and {page}")
    if record:
        aggregates = {c.run_id: c.metrics for c in comparison.configurations if c.run_id and c.metrics}
        tracking.record_comparison(tracking_uri, comparison.parent_run_id, aggregates, [markdown, page])
    return comparison, verdicts
