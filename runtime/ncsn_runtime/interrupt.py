"""Every onnxruntime call we make can be stopped: Ctrl-C (``RunOptions.terminate``) and, where asked, a deadline.

Python runs its SIGINT handler only between bytecodes of the main thread, so a ``session.run`` made from the main
thread would ignore Ctrl-C until it returns: a fused ``sampler.onnx`` call runs the whole loop, and one call of a
slow ``score.onnx`` or ``step.onnx`` can take as long. :func:`run_interruptibly` (``session.run``) and
:func:`run_with_iobinding_interruptibly` (``session.run_with_iobinding``, the stepwise engines) hand the call to
ONE persistent worker thread while the main thread waits in an interruptible wait with a SIGINT handler installed
that sets ``run_options.terminate``; onnxruntime then abandons the run at its next node (inside a ``Loop`` too)
and :class:`KeyboardInterrupt` is raised in the caller (a second Ctrl-C stops waiting for a node that does not
return). A persistent worker costs ~30 us per call (a new thread
per call: ~130-320 us; measured on the 2-core machine), and every main-thread run happens on the same thread
(CUDA-graph capture and replay included).

``timeout_s`` bounds a call we run ourselves (ncsn-triton's self-check): a timer sets ``terminate`` and
:class:`RunTimeoutError` is raised. Outside the main thread (no signal handler can be installed there) the call
runs directly, still under its deadline. A run options object whose run was stopped is reset
(``terminate = False``), so steppers can reuse theirs.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["RunTimeoutError", "call_interruptibly", "quiet_run_options", "run_interruptibly",
           "run_with_iobinding_interruptibly"]

POLL_SECONDS = 0.05
T = TypeVar("T")


class RunTimeoutError(TimeoutError):
    """An onnxruntime call did not finish within its deadline (and was terminated)."""


def quiet_run_options() -> Any:
    """``RunOptions`` that do not log a terminated run's "Exiting due to terminate flag" as an error."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


def run_interruptibly(session: Any, output_names: Sequence[str] | None, feeds: dict[str, Any],
                      run_options: Any | None = None, *, timeout_s: float | None = None) -> list[Any]:
    """``session.run(output_names, feeds, run_options)``; Ctrl-C terminates it and raises KeyboardInterrupt, and
    past ``timeout_s`` seconds it is terminated and :class:`RunTimeoutError` is raised."""
    options = quiet_run_options() if run_options is None else run_options
    return call_interruptibly(lambda: session.run(output_names, feeds, options), options, timeout_s=timeout_s)


def run_with_iobinding_interruptibly(session: Any, binding: Any, run_options: Any, *,
                                     timeout_s: float | None = None) -> None:
    """``session.run_with_iobinding(binding, run_options)``, stoppable like :func:`run_interruptibly`."""
    call_interruptibly(lambda: session.run_with_iobinding(binding, run_options), run_options, timeout_s=timeout_s)


def call_interruptibly(call: Callable[[], T], run_options: Any, *, timeout_s: float | None = None) -> T:
    """``call()``, an onnxruntime run made with ``run_options``; stopped by Ctrl-C or after ``timeout_s`` seconds."""
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"`timeout_s` must be > 0 seconds, got {timeout_s}")
    expired: list[bool] = []
    timer = None
    if timeout_s is not None:
        def expire() -> None:
            expired.append(True)
            run_options.terminate = True

        timer = threading.Timer(timeout_s, expire)
        timer.daemon = True
        timer.start()
    interrupted: list[int] = []
    try:
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            value, error = _capture(call)
        else:
            value, error = _on_worker(call, run_options, interrupted)
    finally:
        if timer is not None:
            timer.cancel()
        if interrupted or expired:
            run_options.terminate = False  # reusable for the next run
    if interrupted:
        raise KeyboardInterrupt("sampling interrupted (onnxruntime run terminated)")
    if error is not None:
        if expired:
            raise RunTimeoutError(f"the onnxruntime run did not finish within {timeout_s:g} s and was stopped") from None
        raise error
    return value


def _capture(call: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    try:
        return call(), None
    except BaseException as error:  # handed to the caller
        return None, error


def _on_worker(call: Callable[[], T], run_options: Any, interrupted: list[int]) -> tuple[T | None, BaseException | None]:
    """Run ``call`` on the worker thread; the main thread waits with a SIGINT handler that terminates the run."""
    done = threading.Event()
    box: list[tuple[Any, BaseException | None]] = []

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.append(signum)
        run_options.terminate = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        _worker().put((call, box, done))
        while not done.wait(POLL_SECONDS):
            if len(interrupted) > 1:  # a second Ctrl-C: stop waiting for a node that ignores `terminate`
                return None, None
    finally:
        signal.signal(signal.SIGINT, previous)
    return box[0]


_queue: queue.SimpleQueue | None = None
_queue_pid: int | None = None
_lock = threading.Lock()


def _worker() -> queue.SimpleQueue:
    """The worker thread's job queue (started once per process; a forked child starts its own)."""
    global _queue, _queue_pid
    with _lock:
        if _queue is None or _queue_pid != os.getpid():
            jobs: queue.SimpleQueue = queue.SimpleQueue()

            def serve() -> None:
                while True:
                    call, box, done = jobs.get()
                    box.append(_capture(call))
                    done.set()

            threading.Thread(target=serve, name="ncsn-onnxruntime-run", daemon=True).start()
            _queue, _queue_pid = jobs, os.getpid()
        return _queue
