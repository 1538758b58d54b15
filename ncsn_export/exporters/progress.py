"""Progress bars with an ETA for the export's stages (trace, compose, write, validate), on tqdm.

:func:`stage_bar` counts items (graphs written, validation runs); :func:`timed_bar` covers one long call that
cannot report progress itself (the dynamo trace, a fused validation run): a ticker thread advances the bar
against an estimate of its seconds, so the ETA is the estimate's, and the bar stops short of 100 % until
the work really ends. Both are no-ops when ``enabled`` is False (``--no-progress``, ``-q``, not a terminal).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ncsn_runtime.conventions import NoBar, progress_bar

TICK_SECONDS = 0.5


def _bar(total: float, **options: Any) -> Any:
    return progress_bar(total=total, config={"file": sys.stderr, "dynamic_ncols": True, "leave": True, **options})


@contextlib.contextmanager
def stage_bar(description: str, total: int, enabled: bool) -> Iterator[Any]:
    """A bar over ``total`` items of one stage; ``bar.update()`` after each."""
    bar = _bar(total, desc=description, unit="item") if enabled and total > 0 else NoBar()
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def timed_bar(description: str, estimate_seconds: float, enabled: bool) -> Iterator[Any]:
    """A bar over one call expected to take ``estimate_seconds``; advanced by a ticker thread, completed on exit."""
    if not enabled:
        yield NoBar()
        return
    total = max(round(float(estimate_seconds), 1), 0.1)
    bar = _bar(total, desc=description, unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s est. "
               "[{elapsed}<{remaining}]")
    if isinstance(bar, NoBar):  # tqdm is not installed
        yield bar
        return
    done = threading.Event()
    start = time.perf_counter()

    def tick() -> None:
        while not done.wait(TICK_SECONDS):
            shown = min(time.perf_counter() - start, total * 0.99)
            bar.update(shown - bar.n)

    ticker = threading.Thread(target=tick, name="ncsn-export-progress", daemon=True)
    ticker.start()
    try:
        yield bar
    finally:
        done.set()
        ticker.join()
        bar.update(total - bar.n)
        bar.close()
