"""Score networks ``forward(sample f32[B, ...], timestep i64[B]) -> score f32[B, ...]`` and the model registry."""

from .registry import BUILTIN_MODELS, DEFAULT_MODEL, ModelSpec, load_model

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "ModelSpec", "load_model"]
