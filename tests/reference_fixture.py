"""Access to the golden parity fixture in ``../shared/reference`` (docs/parity_fixture.md).

The fixture stores the reference model's outputs for given raw backbone taps; its weights are not
stored but defined by a closed-form formula (docs/parity_fixture.md §2), regenerated here.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
FIXTURE_FILE = REFERENCE_DIR / "unias_parity_fixture.safetensors"
HEAD_TSV = REFERENCE_DIR / "official_head_state_dict.tsv"
FULL_TSV = REFERENCE_DIR / "official_full_state_dict.tsv"
ALL_TENSORS_SHA256 = "190fd51f187c956d1ab9ec6715e8f8d9127edcee3553dc45aaa35f8d46dcd2b5"

_M, _A, _B, _C, _D = 2147483647, 141592653, 589793238, 462643383, 279502884


def require_reference() -> None:
    """Skip when the shared reference folder is absent, except in CI where it must be there."""
    if not FIXTURE_FILE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"golden fixture missing: {FIXTURE_FILE}")
        pytest.skip(f"golden fixture not found at {FIXTURE_FILE}")


def _base_sequence(k: int, n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.int64)
    m = (((i * i) % _M) * _A % _M + ((_B + _D * k) % _M) * i % _M + (_C * k) % _M) % _M
    return np.sin(m.astype(np.float64) * (2.0 * math.pi / _M))


def formula_tensor(k: int, shape: tuple[int, ...], family: str) -> np.ndarray:
    """Tensor ``k`` of the head in the fixture's closed form (docs/parity_fixture.md §2)."""
    x = _base_sequence(k, math.prod(shape))
    if family == "weight":
        x = x * math.sqrt(2.0 / math.prod(shape[1:]))
    elif family == "embedding":
        x = x * math.sqrt(2.0)
    elif family == "norm_weight":
        x = 1.0 + 0.1 * x
    else:
        x = 0.1 * x
    return x.astype(np.float32).reshape(shape)


def head_rows() -> list[dict[str, str]]:
    """Rows of ``official_head_state_dict.tsv`` as dicts."""
    lines = HEAD_TSV.read_text().splitlines()
    names = lines[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines[1:]]


def full_rows() -> list[dict[str, str]]:
    """Rows of ``official_full_state_dict.tsv`` as dicts."""
    lines = FULL_TSV.read_text().splitlines()
    names = lines[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines[1:]]


def parse_shape(text: str) -> tuple[int, ...]:
    """``'256x48x1x1'`` -> ``(256, 48, 1, 1)``; ``'scalar'`` -> ``()``."""
    return () if text == "scalar" else tuple(int(s) for s in text.split("x"))


def formula_head_state_dict() -> tuple[dict[str, torch.Tensor], str]:
    """The 324 reference-named head tensors and the SHA-256 of all of them concatenated."""
    digest = hashlib.sha256()
    state = {}
    for row in head_rows():
        value = formula_tensor(int(row["index"]), parse_shape(row["shape"]), row["family"])
        digest.update(value.tobytes())
        state[row["official_key"]] = torch.from_numpy(value)
    return state, digest.hexdigest()
