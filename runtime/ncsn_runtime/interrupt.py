"""Ctrl-C during a long onnxruntime call: stop it promptly with ``RunOptions.terminate``.

A fused ``sampler.onnx`` call runs every Langevin step inside one ``session.run``; Python's own SIGINT
handling would wait for it to return. :func:`run_interruptibly` runs the call in a worker thread
while the main thread waits in short, interruptible joins with a SIGINT handler installed that sets
``run_options.terminate``; onnxruntime then abandons the run at its next node (inside the ``Loop``
too) and :class:`KeyboardInterrupt` is raised in the caller. Outside the main thread (where no
signal handler can be installed) the call runs directly.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["run_interruptibly"]

POLL_SECONDS = 0.05


def run_interruptibly(session: Any, output_names: Sequence[str] | None, feeds: dict[str, Any],
                      run_options: Any | None = None) -> list[Any]:
    """``session.run(output_names, feeds, run_options)``; Ctrl-C (SIGINT) terminates it and raises KeyboardInterrupt."""
    import onnxruntime as ort

    if run_options is None:
        options = ort.RunOptions()
        options.log_severity_level = 4  # the terminated run's "Exiting due to terminate flag" is not an error to log
    else:
        options = run_options
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return session.run(output_names, feeds, options)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = session.run(output_names, feeds, options)
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    interrupted: list[int] = []

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.append(signum)
        options.terminate = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        worker = threading.Thread(target=work, name="ncsn-onnxruntime-run", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(POLL_SECONDS)
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt("sampling interrupted (onnxruntime run terminated)")
    if "error" in result:
        raise result["error"]
    return result["value"]
