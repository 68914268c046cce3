"""Safe loading of nnU-Net v2 checkpoints (``fold_k/checkpoint_final.pth``).

nnU-Net stores training logs with numpy scalars, which ``torch.load(weights_only=True)``
rejects. Rather than turning the safety off (``weights_only=False`` runs arbitrary pickled
code), exactly the numpy scalar reconstructor and dtype are allowed, under both the numpy 1
and numpy 2 module paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mrseg.errors import ModelError


def _numpy_scalar_globals() -> list[Any]:
    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    # numpy 2 pickles a scalar's dtype through its DType class (numpy.dtypes.Float64DType, ...).
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    return [
        (scalar, "numpy._core.multiarray.scalar"),
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
        *dtype_classes,
    ]


@dataclass(frozen=True)
class Checkpoint:
    """The parts of a checkpoint inference uses; the weights are read when a network is built.

    Weights are not kept here: :meth:`read_weights` memory-maps the file each time, so a
    model that is loaded but not built costs almost nothing, and a built float32 network on
    the CPU shares the file's pages instead of holding a second copy.
    """

    path: Path
    trainer_name: str
    configuration: str
    mirror_axes: tuple[int, ...] | None
    head_channels: int | None = None

    def read_weights(self) -> dict[str, Any]:
        """The ``network_weights`` state dict, memory-mapped from the file.

        Raises:
            ModelError: the file changed since it was loaded and is no longer a checkpoint.
        """
        return _network_weights(_read(self.path), self.path)


def _read(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, the numpy scalar allowance and mmap."""
    import torch

    if not path.is_file():
        raise ModelError(f"{path} is missing")
    if path.stat().st_size == 0:  # torch says only "Ran out of input" or nothing at all
        raise ModelError(
            f"{path}: cannot load checkpoint (the file is empty, 0 bytes); re-download or re-export the model"
        )
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):  # only the legacy (pre-zip) format cannot be mapped
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        detail = [line for line in str(err).splitlines() if line.strip()]
        # torch's first line advises weights_only=False, the unsafe way out: name the object instead.
        named = [line for line in detail if "GLOBAL" in line or "but got" in line]
        unpickling = any("Weights only load failed" in line for line in detail)
        if unpickling:
            fallback = "it holds objects that are not plain weights"
        else:  # some errors (EOFError of a truncated file) carry no message: name the exception then
            fallback = detail[0] if detail else type(err).__name__
        reason = named[0] if named else fallback
        raise ModelError(
            f"{path}: cannot load checkpoint ({reason.strip()}); it may be corrupt or hold objects "
            "that are unsafe to unpickle"
        ) from err


def _network_weights(raw: Any, path: Path) -> dict[str, Any]:
    if not isinstance(raw, dict) or "network_weights" not in raw:
        raise ModelError(f"{path}: not an nnU-Net v2 checkpoint (no 'network_weights')")
    return raw["network_weights"]


def head_channels(weights: dict[str, Any]) -> int | None:
    """Output channels of the segmentation head in a state dict (the deepest ``seg_layers``)."""
    heads = [(int(m.group(1)), key) for key in weights if (m := re.search(r"seg_layers\.(\d+)\.weight$", key))]
    if not heads:
        return None
    return int(weights[max(heads)[1]].shape[0])


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole checkpoint dictionary, read safely and memory-mapped (as :func:`load_checkpoint` reads it).

    Raises:
        ModelError: missing file, unsafe or corrupt content, or no ``network_weights``.
    """
    path = Path(path)
    raw = _read(path)
    _network_weights(raw, path)
    return dict(raw)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint's metadata safely (``weights_only=True`` plus the numpy scalar allowance).

    Raises:
        ModelError: missing file, unsafe or corrupt content, or missing keys.
    """
    path = Path(path)
    raw = _read(path)
    weights = _network_weights(raw, path)
    init_args = raw.get("init_args") or {}
    mirror = raw.get("inference_allowed_mirroring_axes")
    return Checkpoint(
        path=path,
        trainer_name=str(raw.get("trainer_name", "nnUNetTrainer")),
        configuration=str(init_args.get("configuration", "3d_fullres")),
        mirror_axes=None if mirror is None else tuple(int(a) for a in mirror),
        head_channels=head_channels(weights),
    )


INFERENCE_KEYS = ("trainer_name", "inference_allowed_mirroring_axes", "init_args")
"""What loading a model reads from a checkpoint besides ``network_weights``."""


def save_checkpoint(checkpoint: dict[str, Any], target: str | os.PathLike[str]) -> None:
    """Write ``checkpoint`` (``network_weights`` and :data:`INFERENCE_KEYS`) to ``target``, which
    appears only when complete (written beside it first, then renamed)."""
    import torch

    target = Path(target)
    kept = {key: checkpoint[key] for key in INFERENCE_KEYS if key in checkpoint}
    temporary = target.with_name(target.name + ".partial")
    torch.save({**kept, "network_weights": equal_tensors_shared(checkpoint["network_weights"])}, temporary)
    os.replace(temporary, target)


def equal_tensors_shared(weights: dict[str, Any]) -> dict[str, Any]:
    """``weights`` with tensors of one type, shape and value stored once.

    nnU-Net's state dicts name the encoder's tensors twice (again under ``decoder.encoder``); a
    state dict rebuilt name by name (cast by hand, or saved by another tool) holds two copies
    where nnU-Net's held one, and a checkpoint written from it is up to three times the size.
    Names whose tensors are equal (such copies, or two parameters that hold the same values, as a
    fresh network's norm weights do) share one; loading gives every name its values either way.
    """
    import torch

    seen: dict[tuple[Any, ...], list[Any]] = {}
    made: dict[str, Any] = {}
    for key, value in weights.items():
        if isinstance(value, torch.Tensor):
            alike = seen.setdefault((value.dtype, value.device, tuple(value.shape)), [])
            stored = next((kept for kept in alike if kept is value or torch.equal(kept, value)), None)
            if stored is None:
                alike.append(value)
            else:
                value = stored
        made[key] = value
    return made


def each_tensor_once(weights: dict[str, Any], make: Callable[[str, Any], Any]) -> dict[str, Any]:
    """``weights`` with every tensor replaced by ``make(key, tensor)``, called once per stored tensor.

    nnU-Net's state dicts name some tensors twice (the decoder's view of the encoder); such names
    keep sharing one new tensor, or a saved checkpoint triples in size.
    """
    made: dict[str, Any] = {}
    done: dict[tuple[int, tuple[int, ...], tuple[int, ...]], Any] = {}
    for key, value in weights.items():
        alias = (value.data_ptr(), tuple(value.shape), tuple(value.stride()))
        if alias not in done:
            done[alias] = make(key, value)
        made[key] = done[alias]
    return made


def in_half_precision(weights: dict[str, Any]) -> dict[str, Any]:
    """``weights`` with every floating-point tensor in float16 (half the file; networks built from
    it run in float32, see :meth:`mrseg.model.loader.Model.build_networks`), shared tensors kept
    shared (:func:`each_tensor_once`)."""
    import torch

    return each_tensor_once(weights, lambda _, value: value.to(torch.float16) if value.is_floating_point()
                            else value.clone())
