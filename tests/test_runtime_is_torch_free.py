"""The runtime package never imports torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_runtime_scheduler_and_noise_never_import_torch():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import ncsn_runtime
        from ncsn_runtime import AnnealedLangevinDynamicsScheduler
        from ncsn_runtime.noise import counter_normal, initial_sample, langevin_counter
        from ncsn_runtime import manifest, config, schedule  # noqa: F401

        scheduler = AnnealedLangevinDynamicsScheduler(10, 5, 0.01, 1.0, 2e-5)
        scheduler.set_timesteps(4)
        x = initial_sample([1, 2], (1, 4, 4))
        for position, level in enumerate(scheduler.timesteps):
            for t in range(scheduler.num_annealed_steps):
                z = counter_normal([1, 2], langevin_counter(position, t, 5), (1, 4, 4))
                x = scheduler.step(-x, int(level), x, noise=z).prev_sample
        assert np.isfinite(x).all()
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
