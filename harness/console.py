"""Terminal helpers shared by the commands that print tables (the sweep board, comparisons, benchmarks)."""

from __future__ import annotations

from rich.console import Console


def wide_when_piped(console: Console, width: int = 160) -> None:
    """Piped to a file or a CI log, rich assumes 80 columns and folds every table cell; a log can be wider."""
    if not console.is_terminal:
        console.width = max(console.width, width)
