"""Every onnxruntime call we make can be stopped: Ctrl-C (``RunOptions.terminate``) and, where asked, a deadline.

Python runs its SIGINT handler only between bytecodes of the main thread, so a ``session.run`` made from the main
thread would ignore Ctrl-C until it returns: a fused ``sampler.onnx`` call runs the whole loop, and one call of a
slow ``score.onnx`` or ``step.onnx`` can take as long. :func:`run_interruptibly` (``session.run``) and
:func:`run_with_iobinding_interruptibly` (``session.run_with_iobinding``, the stepwise engines) therefore make the
call with a SIGINT handler installed and Python's signal wakeup fd (:func:`signal.set_wakeup_fd`) pointed at a pipe
that one persistent watcher thread reads: the C-level handler writes the signal number there at once, even while
the main thread is inside onnxruntime, and the watcher sets the run's ``run_options.terminate``. onnxruntime
abandons the run at its next node (inside a ``Loop`` too) and :class:`KeyboardInterrupt` is raised in the caller.
The call itself stays on the calling thread (no hand-off per step; CUDA-graph capture and replay stay where they
were). Installing the handler and the wakeup fd costs two ``sigaction`` calls and two wakeup-fd swaps (6-40 us per
run on the loaded 2-core machine), so a series of runs (the stepwise loop) does it once with :func:`sigint_armed`;
each run inside then costs about 7 us instead of 53-78 us (same loaded machine, measured side by side). Another owner's wakeup
fd (asyncio's) gets every byte forwarded while ours is in place, and is restored afterwards.

``timeout_s`` bounds a call we run ourselves (ncsn-triton's self-check): a timer sets ``terminate`` and
:class:`RunTimeoutError` is raised. Outside the main thread (no signal handler can be installed there) the call
runs directly, still under its deadline. ``terminate`` is reset after every run, so steppers reuse their options.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["RunTimeoutError", "call_interruptibly", "quiet_run_options", "run_interruptibly",
           "run_with_iobinding_interruptibly", "sigint_armed"]

T = TypeVar("T")


class RunTimeoutError(TimeoutError):
    """An onnxruntime call did not finish within its deadline (and was terminated)."""


def quiet_run_options(gpu_graph_id: str = "0") -> Any:
    """``RunOptions`` that do not log a terminated run's "Exiting due to terminate flag" as an error.

    ``gpu_graph_id`` is set explicitly (``"0"`` is onnxruntime's default, no CUDA-graph annotation): without the
    entry, onnxruntime 1.32's Python wrapper looks it up through a raised and caught RuntimeError on every
    ``run`` / ``run_with_iobinding``, ~30 us per call (measured: 125-130 us vs 93-98 us per toy step).
    """
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    options.add_run_config_entry("gpu_graph_id", gpu_graph_id)
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
        armed = _armed[-1] if _armed and threading.current_thread() is threading.main_thread() else None
        if armed is not None:
            value, error = _armed_run(call, run_options)
            interrupted = armed.interrupted
        elif threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            value, error = _capture(call)
        else:
            value, error = _with_sigint_watch(call, run_options, interrupted)
    finally:
        if timer is not None:
            timer.cancel()
        run_options.terminate = False  # reusable for the next run
    if interrupted:
        interrupted.clear()
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


def _with_sigint_watch(call: Callable[[], T], run_options: Any,
                       interrupted: list[int]) -> tuple[T | None, BaseException | None]:
    """Run ``call`` on this (the main) thread while SIGINT terminates it through the watcher (see the module doc)."""
    watch = _watch()

    def on_sigint(signum: int, frame: Any) -> None:  # runs once the main thread is back in Python
        interrupted.append(signum)
        run_options.terminate = True

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            previous_fd = signal.set_wakeup_fd(watch.write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # a platform whose wakeup fd must be a socket: Ctrl-C acts after the run
            return _capture(call)
        try:
            with watch.lock:
                watch.current, watch.forward = run_options, previous_fd
            try:
                return _capture(call)
            finally:
                with watch.lock:
                    watch.current, watch.forward = None, -1
        finally:
            signal.set_wakeup_fd(previous_fd)
    finally:
        signal.signal(signal.SIGINT, previous_handler)


class _Armed:
    """The state of one :func:`sigint_armed` block.

    Each SIGINT reaches both the watcher (its byte on the wakeup fd) and, later, the Python handler; whichever acts
    first tells the other to let that signal go: ``absorbed`` (the watcher stopped a run, so the handler must not
    raise a second KeyboardInterrupt at the main thread's next check) and ``stale`` (the handler acted, so the
    watcher must not stop the next run with the byte). ``interrupted``: SIGINTs that stopped a run.
    """

    def __init__(self) -> None:
        self.interrupted: list[int] = []
        self.absorbed = False
        self.stale = False


_armed: list[_Armed] = []  # the active sigint_armed block of the main thread


@contextlib.contextmanager
def sigint_armed() -> Iterator[None]:
    """Install the SIGINT handler and the wakeup fd once for every run made inside (e.g. a stepwise loop).

    Ctrl-C during a run terminates it (:class:`KeyboardInterrupt` from the run's call); between runs it raises
    :class:`KeyboardInterrupt` at once, as Python's default handler does. Outside the main thread, when SIGINT is
    ignored, or nested in another block, it does nothing.
    """
    if (threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            or _armed):
        yield
        return
    watch = _watch()
    state = _Armed()

    def on_sigint(signum: int, frame: Any) -> None:
        with watch.lock:
            if state.absorbed:  # the watcher has stopped the run for this signal already
                state.absorbed = False
                return
            state.stale = True
            if watch.current is not None:  # the run has just returned: stop like the watcher would
                watch.current.terminate = True
                state.interrupted.append(signum)
                return
        raise KeyboardInterrupt  # between runs

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            previous_fd = signal.set_wakeup_fd(watch.write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # a platform whose wakeup fd must be a socket: runs are stopped per call
            yield
            return
        try:
            with watch.lock:
                watch.forward, watch.state = previous_fd, state
            _armed.append(state)
            try:
                yield
            finally:
                _armed.pop()
                with watch.lock:
                    watch.forward, watch.state = -1, None
        finally:
            signal.set_wakeup_fd(previous_fd)
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def _armed_run(call: Callable[[], T], run_options: Any) -> tuple[T | None, BaseException | None]:
    watch = _watch()
    with watch.lock:
        watch.current = run_options
    try:
        return _capture(call)
    finally:
        with watch.lock:
            watch.current = None


class _Watch:
    """A pipe for Python's signal wakeup fd and the daemon thread that reads it (one per process)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)  # set_wakeup_fd requires it; the reader blocks
        self.lock = threading.RLock()  # re-entrant: the main thread's SIGINT handler may run while it holds it
        self.current: Any | None = None  # the run options of the run in progress
        self.forward = -1  # the wakeup fd we displaced, which gets every byte too
        self.state: _Armed | None = None  # the active sigint_armed block
        self.pid = os.getpid()
        threading.Thread(target=self._serve, name="ncsn-sigint-watch", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data = os.read(self.read_fd, 512)
            except OSError:  # pragma: no cover - the pipe was closed
                return
            with self.lock:
                if self.forward >= 0:
                    with contextlib.suppress(OSError):
                        os.write(self.forward, data)
                if int(signal.SIGINT) not in data:
                    continue
                if self.state is not None and self.state.stale:  # the handler has acted on this signal already
                    self.state.stale = False
                elif self.current is not None:
                    self.current.terminate = True
                    if self.state is not None:
                        self.state.interrupted.append(int(signal.SIGINT))
                        self.state.absorbed = True


_watcher: _Watch | None = None
_lock = threading.Lock()


def _watch() -> _Watch:
    """The process's watcher (a forked child starts its own)."""
    global _watcher
    with _lock:
        if _watcher is None or _watcher.pid != os.getpid():
            _watcher = _Watch()
        return _watcher
