"""``harness compare`` (and the end of ``harness run``): load a sweep's comparison, print it, write the reports."""

from __future__ import annotations

from pathlib import Path

from .comparison import Comparison, load_comparison
from .report import print_comparison, write_html, write_markdown


def compare_command(experiment: str | None, tracking_uri: str, out_dir: Path, console) -> Comparison:
    """``harness compare``: load the sweep, print its tables, write ``comparison.md`` and ``comparison.html``.

    Args:
        experiment: experiment name, or None for the latest sweep experiment.
        tracking_uri: MLflow tracking URI.
        out_dir: folder for the two reports (created).
        console: a ``rich.console.Console``.

    Returns:
        The `Comparison`.
    """
    comparison = load_comparison(tracking_uri, experiment)
    print_comparison(comparison, console)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = write_markdown(comparison, out_dir / "comparison.md")
    html = write_html(comparison, out_dir / "comparison.html")
    console.print(f"Wrote {markdown} and {html}")
    return comparison
