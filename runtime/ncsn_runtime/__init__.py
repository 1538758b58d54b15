"""ncsn_runtime: run exported NCSN samplers with numpy + onnxruntime (never imports torch).

``NCSNPipeline`` (and the onnxruntime import it brings) loads on first use, so importing the package
for the numpy scheduler or the noise stays light.
"""

from typing import Any

from .scheduler import AnnealedLangevinDynamicsOutput, AnnealedLangevinDynamicsScheduler

__all__ = ["AnnealedLangevinDynamicsOutput", "AnnealedLangevinDynamicsScheduler", "NCSNPipeline", "NCSNPipelineOutput"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("NCSNPipeline", "NCSNPipelineOutput"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ncsn_runtime' has no attribute {name!r}")
