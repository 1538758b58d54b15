"""ncsn_export: NCSN score networks, the annealed Langevin sampler as one graph, and its exporters."""

from .sampler import AnnealedLangevinSampler
from .scheduler import AnnealedLangevinDynamicsOutput, AnnealedLangevinDynamicsScheduler
from .step import LangevinStep

__all__ = ["AnnealedLangevinDynamicsOutput", "AnnealedLangevinDynamicsScheduler", "AnnealedLangevinSampler", "LangevinStep"]
__version__ = "0.1.0"
