"""Safe loading of nnU-Net v2 checkpoints (``fold_k/checkpoint_final.pth``).

nnU-Net stores training logs with numpy scalars, which ``torch.load(weights_only=True)``
rejects. Rather than turning the safety off (``weights_only=False`` runs arbitrary pickled
code), exactly the numpy scalar reconstructor and dtype are allowed, under both the numpy 1
and numpy 2 module paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """The parts of a checkpoint inference uses."""

    path: Path
    weights: dict[str, Any] = field(repr=False, hash=False)
    trainer_name: str
    configuration: str
    mirror_axes: tuple[int, ...] | None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint with ``weights_only=True`` plus the numpy scalar allowance.

    Raises:
        ModelError: missing file, unsafe or corrupt content, or missing keys.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} is missing")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        detail = [line for line in str(err).splitlines() if line.strip()]
        # torch's first line advises weights_only=False, the unsafe way out: name the object instead.
        named = [line for line in detail if "GLOBAL" in line or "but got" in line]
        unpickling = any("Weights only load failed" in line for line in detail)
        fallback = "it holds objects that are not plain weights" if unpickling else (detail[0] if detail else "")
        reason = named[0] if named else fallback
        raise ModelError(
            f"{path}: cannot load checkpoint ({reason.strip()}); it may be corrupt or hold objects "
            "that are unsafe to unpickle"
        ) from err
    if not isinstance(raw, dict) or "network_weights" not in raw:
        raise ModelError(f"{path}: not an nnU-Net v2 checkpoint (no 'network_weights')")
    init_args = raw.get("init_args") or {}
    mirror = raw.get("inference_allowed_mirroring_axes")
    return Checkpoint(
        path=path,
        weights=raw["network_weights"],
        trainer_name=str(raw.get("trainer_name", "nnUNetTrainer")),
        configuration=str(init_args.get("configuration", "3d_fullres")),
        mirror_axes=None if mirror is None else tuple(int(a) for a in mirror),
    )
