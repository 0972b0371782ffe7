"""anomalib's PatchCore and PaDiM at their best, on the Lite0 weights UniAS's CPU recipes use (for ``quality.py``).

Two substitutions, stated in the result tables: PatchCore's coreset is selected by :func:`greedy_coreset`, the
same k-center-greedy criterion as anomalib's ``KCenterGreedy`` but on the raw features (anomalib first projects
them randomly) with squared distances from one matrix-vector product per step, ~15x faster here.  PaDiM's batched
covariance inverse can hang inside Lightning (MKL); :func:`padim` inverts through a Cholesky factorisation in
chunks (:func:`stable_inverse`), the same maths.  Their map blur is chosen on the select half (:func:`best_blur`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import timm
import torch
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.engine import Engine
from anomalib.models import Padim, Patchcore
from anomalib.models.components import GaussianBlur2d

BASELINE_BACKBONE = "tf_efficientnet_lite0"


def greedy_coreset(features: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of a k-center-greedy coreset of ``features`` (N, D): each step adds the farthest point.

    Squared Euclidean distances from one matrix-vector product per step (``|x|^2 - 2 x.c + |c|^2``);
    the first centre is drawn at random, as in anomalib's ``KCenterGreedy``.
    """
    features = features.float().contiguous()
    squared_norms = (features * features).sum(dim=1)
    index = int(torch.randint(features.shape[0], (1,), generator=generator))
    nearest = torch.full_like(squared_norms, float("inf"))
    selected = [index]
    for _ in range(size - 1):
        distances = squared_norms - 2 * (features @ features[index]) + squared_norms[index]
        torch.minimum(nearest, distances, out=nearest)
        nearest[index] = 0
        index = int(torch.argmax(nearest))
        selected.append(index)
    return torch.tensor(selected)


def patchcore(layers: Sequence[str], coreset_ratio: float, seed: int, **common: Any) -> Patchcore:
    """Anomalib's ``Patchcore`` on Lite0 whose coreset comes from :func:`greedy_coreset`."""
    model = Patchcore(
        backbone=BASELINE_BACKBONE,
        layers=list(layers),
        coreset_sampling_ratio=coreset_ratio,
        num_neighbors=9,
        **common,
    )
    torch_model = model.model
    generator = torch.Generator().manual_seed(seed)

    def subsample_embedding(sampling_ratio: float, embeddings: torch.Tensor | None = None) -> None:
        del embeddings
        bank = torch.vstack(torch_model.embedding_store)
        torch_model.embedding_store.clear()
        size = max(1, int(bank.shape[0] * sampling_ratio))
        start = time.perf_counter()
        torch_model.memory_bank = bank[greedy_coreset(bank, size, generator)]
        seconds = time.perf_counter() - start
        print(f"coreset: {size} of {bank.shape[0]} patches ({bank.shape[1]} features) in {seconds:.0f} s", flush=True)

    torch_model.subsample_embedding = subsample_embedding
    return model


def stable_inverse(covariance: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Inverse of a batch of symmetric positive-definite matrices via Cholesky, ``chunk`` at a time."""
    return torch.cat([torch.cholesky_inverse(torch.linalg.cholesky(part)) for part in covariance.split(chunk)])


def padim(layers: Sequence[str], **common: Any) -> Padim:
    """Anomalib's ``Padim`` on Lite0 (all features) with the covariance inverse of :func:`stable_inverse`."""
    channels = timm.create_model(BASELINE_BACKBONE, features_only=True, pretrained=False).feature_info
    all_features = sum(info["num_chs"] for info in channels.get_dicts() if info["module"] in layers)
    model = Padim(backbone=BASELINE_BACKBONE, layers=list(layers), n_features=all_features, **common)
    gaussian = model.model.gaussian

    def forward(embedding: torch.Tensor) -> list[torch.Tensor]:
        batch, channels, height, width = embedding.shape
        vectors = embedding.reshape(batch, channels, height * width).permute(2, 0, 1)  # (HW, B, C)
        gaussian.mean = vectors.mean(dim=1).T  # (C, HW)
        centred = vectors - vectors.mean(dim=1, keepdim=True)
        covariance = centred.transpose(1, 2) @ centred / (batch - 1)
        identity = torch.eye(channels, dtype=covariance.dtype)
        gaussian.inv_covariance = stable_inverse(covariance + (0.01 + 1e-5) * identity)
        return [gaussian.mean, gaussian.inv_covariance]

    gaussian.forward = forward
    return model


def set_blur(model: Patchcore | Padim, sigma: float) -> None:
    """Give a baseline's anomaly map the Gaussian blur of ``sigma`` (anomalib's kernel-size rule; default 4)."""
    kernel = 2 * int(4.0 * sigma + 0.5) + 1
    blur = GaussianBlur2d(kernel_size=(kernel, kernel), sigma=(sigma, sigma), channels=1)
    model.model.anomaly_map_generator.blur = blur


def best_blur(
    model: Patchcore | Padim,
    engine: Engine,
    datamodule: AnomalibDataModule,
    sigmas: Sequence[float],
    settings: dict[str, Any],
) -> dict[str, float]:
    """Test the baseline on the (current, select) test half with each blur; keep the best pAP; its results."""
    tried = {}
    for sigma in sigmas:
        set_blur(model, sigma)
        tried[sigma] = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
        print(f"  blur sigma {sigma}: select pAP {100 * tried[sigma]['pixel_AP/mean']:.2f}", flush=True)
    best = max(tried, key=lambda sigma: tried[sigma]["pixel_AP/mean"])
    set_blur(model, best)
    settings["blur_sigma"] = best
    settings["select_pAP_by_sigma"] = {str(k): round(100 * v["pixel_AP/mean"], 2) for k, v in tried.items()}
    return tried[best]
