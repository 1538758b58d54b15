"""ncsn_runtime: run exported NCSN samplers with numpy + onnxruntime (never imports torch)."""

from .scheduler import AnnealedLangevinDynamicsOutput, AnnealedLangevinDynamicsScheduler

__all__ = ["AnnealedLangevinDynamicsOutput", "AnnealedLangevinDynamicsScheduler"]
__version__ = "0.1.0"
