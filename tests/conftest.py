"""Shared pytest fixtures."""

from __future__ import annotations

import signal

import pytest

# A job started in the background without job control (`bash .ci/run &`) starts with SIGINT ignored, and every
# process it spawns inherits that: the Ctrl-C tests would then send a signal nobody can receive. Give the test
# process Python's default handler, so it and the samplers it starts see Ctrl-C as a user's terminal gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def one_torch_thread():
    """Tiny networks are dominated by per-op overhead: one thread is several times faster on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
