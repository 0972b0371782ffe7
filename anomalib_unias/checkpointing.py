"""Crash-safe, exactly resumable training: a checkpoint every epoch that also holds the RNG states.

anomalib writes one ``weights/lightning/model.ckpt`` after each validation; with validation only at the
last epoch a crash before it leaves nothing, and Lightning stores no random-generator states, so a
resumed run draws other feature jitter, dropout and shuffling than an uninterrupted one.

* :class:`~anomalib_unias.callbacks.LastCheckpoint` writes ``weights/lightning/last.ckpt`` every epoch
  (see there).
* :func:`rng_states` / :func:`restore_rng_states` capture and restore the generators training draws
  from (torch CPU and CUDA, numpy, Python); :class:`~anomalib_unias.UniAS` stores them in every
  checkpoint and restores them when training resumes, so the resumed run continues with the same
  random numbers (the shuffling order comes from torch's generator at the start of each epoch).
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .architecture import Architecture
from .errors import UniASArgumentError, UniASError

RNG_STATES_KEY = "rng_states"
LAST_CHECKPOINT = "last.ckpt"
FIXED_BY_CHECKPOINT = (
    "backbone",
    "input_mean",
    "input_std",
    "image_size",
    "tile_stride",
    *Architecture.weight_fields(),
)
"""UniAS arguments a checkpoint fixes: its weights, its restored pre-processor and its tiling were built for them."""


class CheckpointFileError(UniASError, ValueError):
    """A checkpoint file that is missing, empty or not a PyTorch checkpoint."""


def check_checkpoint_file(path: str | Path) -> Path:
    """Refuse a missing, empty, truncated or non-PyTorch checkpoint file with a message that says what to do.

    Checks only what can be seen without unpickling (existence, size, the zip container ``torch.save``
    writes), so it costs nothing even for large checkpoints.

    Raises:
        CheckpointFileError: naming the file, what is wrong and the fix.
    """
    path = Path(path).expanduser()
    fix = (
        "use another checkpoint of that run (weights/lightning/model.ckpt or last.ckpt, written after every "
        "epoch), or train again"
    )
    if not path.is_file():
        msg = f"Checkpoint {path} does not exist; {fix}."
        raise CheckpointFileError(msg)
    size = path.stat().st_size
    if size == 0:
        msg = f"Checkpoint {path} is empty (0 bytes): the run that wrote it was probably killed while saving; {fix}."
        raise CheckpointFileError(msg)
    if not zipfile.is_zipfile(path):
        msg = (
            f"Checkpoint {path} ({size} bytes) is not a PyTorch checkpoint (truncated, corrupt, or another kind "
            f"of file); {fix}."
        )
        raise CheckpointFileError(msg)
    return path


def read_hyper_parameters(path: str | Path) -> dict[str, Any]:
    """The ``hyper_parameters`` a Lightning checkpoint was saved with (read safely, ``weights_only=True``)."""
    path = check_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        msg = f"Checkpoint {path} cannot be read ({type(error).__name__}); it is truncated or corrupt."
        raise CheckpointFileError(msg) from error
    return dict(checkpoint.get("hyper_parameters", {}))


def rng_states() -> dict[str, Any]:
    """The states of torch's (CPU and every CUDA device's), numpy's and Python's default generators."""
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_keys.astype(np.int64)),
            "pos": int(numpy_pos),
            "has_gauss": int(numpy_has_gauss),
            "gauss": float(numpy_gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured (CUDA states only where CUDA is in use)."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        ),
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])


def _same(value: Any) -> Any:
    """A setting in one comparable form (tuples and lists alike)."""
    return list(value) if isinstance(value, tuple | list) else value


def check_overrides(path: str | Path, overrides: dict[str, Any]) -> None:
    """Refuse an unreadable checkpoint file, and ``overrides`` of settings it fixes (:data:`FIXED_BY_CHECKPOINT`).

    Raises:
        CheckpointFileError: the file is missing, empty, truncated or not a PyTorch checkpoint.
        UniASArgumentError: an override differs from the checkpoint's value; it could not take effect.
    """
    check_checkpoint_file(path)
    stored = read_hyper_parameters(path)
    for name in FIXED_BY_CHECKPOINT:
        if name in overrides and name in stored and _same(overrides[name]) != _same(stored[name]):
            msg = (
                f"UniAS.load_from_checkpoint: {name}={overrides[name]!r} cannot override the checkpoint's "
                f"{_same(stored[name])!r}: its weights, pre-processor and tiling were built for that value. "
                f"Load without {name}, or train a model with it."
            )
            raise UniASArgumentError(msg)
