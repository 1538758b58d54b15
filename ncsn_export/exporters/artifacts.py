"""Which artifacts an export makes (``--artifacts``), and which of them may be skipped.

Names are the contract's keys (:data:`ncsn_runtime.contract.GRAPHS` for ONNX graphs,
:data:`ncsn_runtime.contract.ARTIFACTS` for the torch files), plus the aliases and groups below.
``default`` is every ONNX graph of the contract plus ``sampler.pt`` (a ``torch.jit.script``, seconds);
``sampler.pt2`` (a second ``torch.export`` of the whole sampler) is made only on request, and so is ``ort``
(an ORT-format model ``ort/KEY.ort`` of every shipped ONNX graph plus ``ort/required_operators.config``,
:mod:`.ort_format`).

An artifact the user named explicitly must be made (else the export fails); one that is only in
``default`` and cannot be made, or fails validation, is skipped with its reason in the export table
and the manifest. ``score``, ``step`` and ``sampler`` are always required: the runtime needs them.
With ``ort`` named, the ``.ort`` models of those three are required too; the other ``.ort`` models
(``ort:gpu_step``, ``ort:gpu_sampler``) are skipped with their reason when they cannot be made or fail validation.
``mobile`` (fixed-shape graphs for NNAPI / Core ML under ``mobile/``, :mod:`.mobile_artifact`) is made only on request
(or by ``all``); its graphs ``mobile:score`` / ``mobile:step`` are then required.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ncsn_runtime.contract import ARTIFACTS, GRAPH_NAMES, ORT_PREFIX
from ncsn_runtime.mobile import MOBILE_PREFIX

from .errors import ExportInputError

ONNX_KEYS: tuple[str, ...] = GRAPH_NAMES
TORCH_KEYS: tuple[str, ...] = tuple(ARTIFACTS)  # torchscript (sampler.pt), torch_export (sampler.pt2)
ORT_KEY = "ort"  # ORT-format models of the shipped graphs (.ort_format)
MOBILE_KEY = "mobile"  # fixed-shape NNAPI / Core ML graphs under mobile/ (.mobile_artifact)
ALL_KEYS: tuple[str, ...] = ONNX_KEYS + TORCH_KEYS + (ORT_KEY, MOBILE_KEY)
REQUIRED: frozenset[str] = frozenset({"score", "step", "sampler"})
ALIASES: dict[str, str] = {"pt": "torchscript", "sampler.pt": "torchscript", "pt2": "torch_export",
                           "sampler.pt2": "torch_export", **{f"{key}.onnx": key for key in ONNX_KEYS}}
GROUPS: dict[str, tuple[str, ...]] = {
    "default": ONNX_KEYS + ("torchscript",),
    "onnx": ONNX_KEYS,
    "torch": TORCH_KEYS,
    "all": ALL_KEYS,
}
CHOICES_HELP = ", ".join([*GROUPS, *ALL_KEYS, "pt", "pt2"])


@dataclass(frozen=True)
class ArtifactSelection:
    """The artifacts to make (in contract order) and which of them must not be skipped."""

    keys: tuple[str, ...]
    required: frozenset[str]

    @property
    def graphs(self) -> tuple[str, ...]:
        return tuple(key for key in self.keys if key in ONNX_KEYS)

    @property
    def torch(self) -> tuple[str, ...]:
        return tuple(key for key in self.keys if key in TORCH_KEYS)

    @property
    def ort(self) -> bool:
        """ORT-format models of the shipped graphs were requested."""
        return ORT_KEY in self.keys

    @property
    def mobile(self) -> bool:
        """The fixed-shape mobile graphs were requested."""
        return MOBILE_KEY in self.keys

    def is_required(self, key: str) -> bool:
        """``key``: an artifact key, ``ort:GRAPH`` (required when ``ort`` and ``GRAPH`` both are) or ``mobile:GRAPH``."""
        if key.startswith(ORT_PREFIX):
            return ORT_KEY in self.required and key[len(ORT_PREFIX):] in REQUIRED
        if key.startswith(MOBILE_PREFIX):
            return MOBILE_KEY in self.required
        return key in self.required


def select_artifacts(names: str | Iterable[str] | None = None) -> ArtifactSelection:
    """Parse ``--artifacts`` (comma-separated string or a list; None = ``default``).

    Raises :class:`ExportError` naming an unknown entry and the accepted names.
    """
    if names is None:
        names = ["default"]
    elif isinstance(names, str):
        names = [names]
    chosen: set[str] = set(REQUIRED)
    explicit: set[str] = set(REQUIRED)
    items = [part.strip() for name in names for part in str(name).split(",")]
    if not any(items):
        raise ExportInputError(f"`artifacts` is empty; name at least one of: {CHOICES_HELP} (or leave it out for default)")
    for item in items:
        if not item:
            continue
        key = ALIASES.get(item, item)
        if key in GROUPS:
            chosen.update(GROUPS[key])
            if key != "default":
                explicit.update(GROUPS[key])
        elif key in ALL_KEYS:
            chosen.add(key)
            explicit.add(key)
        else:
            raise ExportInputError(f"`artifacts`: unknown entry {item!r}; accepted: {CHOICES_HELP}")
    return ArtifactSelection(tuple(key for key in ALL_KEYS if key in chosen), frozenset(explicit))
