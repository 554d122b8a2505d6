"""Start several processes at the same moment (spawned, released by one event) and collect what each returned."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def _call(function: Callable[..., Any], args: tuple, start, results) -> None:
    start.wait()
    try:
        results.put(("ok", function(*args)))
    except Exception as error:  # reported to the parent, which fails with it
        results.put(("error", f"{type(error).__name__}: {error}"))


def all_at_once(function: Callable[..., Any], args: tuple, processes: int, timeout: float = 600) -> list[tuple]:
    """Run ``function(*args)`` in ``processes`` spawned processes released together; ``[("ok", result) or
    ("error", message), ...]``. ``function`` must be importable (module level)."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_call, args=(function, args, start, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = [results.get(timeout=timeout) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    return outcomes
