"""Behaviour of the UniAS torch model at tiny widths and small inputs (docs/design.md §1-6)."""

from __future__ import annotations

import pytest
import torch

from anomalib_unias.architecture import Architecture
from anomalib_unias.backbone import create_backbone
from anomalib_unias.components import neighbour_mask
from anomalib_unias.torch_model import UniASModel

from .tiny import TINY_UNIAS

TINY = {key: TINY_UNIAS[key] for key in ("pixel_dim", "hidden_dim", "ffn_dim", "num_encoder_layers")}


def tiny_model(input_size: tuple[int, int] = (64, 64), neighbour_size: int = 3, **kwargs) -> UniASModel:
    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0", pre_trained=False)
    architecture = Architecture(input_size=input_size, neighbour_size=neighbour_size, **{**TINY, **kwargs})
    return UniASModel(backbone, architecture)


@pytest.mark.parametrize("input_size", [(64, 64), (128, 96)])
def test_shapes_at_every_level(input_size: tuple[int, int]) -> None:
    model = tiny_model(input_size).eval()
    images = torch.randn(2, 3, *input_size)
    features = model.backbone(images)
    h, w = input_size
    assert [tuple(f.shape[1:]) for f in features] == [
        (16, h // 2, w // 2), (24, h // 4, w // 4), (40, h // 8, w // 8), (112, h // 16, w // 16)
    ]  # fmt: skip
    with torch.no_grad():
        result = model.head.reconstruct(features)
        pixel_maps = model.head.pixel_decoder(model.head.feature_preparation(list(reversed(features)))[1])
        output = model(images)
    for level, (reconstruction, target) in enumerate(zip(result.reconstructions, result.targets, strict=True)):
        assert reconstruction.shape == target.shape
        assert target.shape[-2:] == (h // 2 ** (4 - level), w // 2 ** (4 - level))
        assert pixel_maps[level].shape == (2, 32, *target.shape[-2:])
    assert output.anomaly_map.shape == (2, 1, h, w)
    assert output.pred_score.shape == (2,)
    assert torch.allclose(output.pred_score, output.anomaly_map.flatten(1).amax(1))


def test_gradients_reach_every_trainable_parameter_and_not_the_backbone() -> None:
    model = tiny_model().train()
    loss, levels = model(torch.randn(2, 3, 64, 64))
    assert len(levels) == 4
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith("head.") for n in trainable)
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not model.backbone.network.training


def test_backbone_stays_in_eval_mode_and_frozen() -> None:
    model = tiny_model().train()
    assert model.head.training
    assert not any(m.training for m in model.backbone.modules())
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_jitter_only_in_training() -> None:
    model = tiny_model()
    prep = model.head.feature_preparation
    prep.jitter_prob = 1.0
    features = [torch.randn(2, 8, 8, 8)]
    prep.eval()
    _, clean = prep(features)
    _, clean_again = prep(features)
    assert torch.equal(clean[0], clean_again[0])
    prep.train()
    _, jittered = prep(features)
    assert not torch.allclose(jittered[0], clean[0])
    prep.jitter_prob = 0.0
    _, unjittered = prep(features)
    assert torch.equal(unjittered[0], clean[0])


def test_jitter_magnitude_follows_the_formula() -> None:
    """Noise std per element = scale * ||x||_2 / C (docs/design.md §2)."""
    torch.manual_seed(1)
    model = tiny_model()
    prep = model.head.feature_preparation.train()
    prep.jitter_prob = 1.0
    features = [torch.ones(4, 8, 32, 32)]
    _, (jittered,) = prep(features)
    _, (clean,) = prep.eval()(features)
    noise = jittered - clean
    expected_std = 20 * clean.norm(dim=1).mean() / 16
    assert abs(noise.std().item() / expected_std.item() - 1) < 0.02


def test_eval_mode_is_deterministic() -> None:
    model = tiny_model().eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        first, second = model(images), model(images)
    assert torch.equal(first.anomaly_map, second.anomaly_map)


def test_batch_items_are_independent_in_eval() -> None:
    model = tiny_model().eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        together = model(images).anomaly_map
        alone = model(images[1:2]).anomaly_map
    assert torch.allclose(together[1:2], alone, atol=1e-5)


def test_size_not_multiple_of_16_is_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_model((72, 64))


def test_grid_leaving_a_query_without_keys_is_refused() -> None:
    """64 px gives a 4x4 grid: a 7x7 neighbourhood blocks every key of the central queries."""
    with pytest.raises(ValueError, match=r"no key outside its neighbourhood.*neighbour_size of at most 3"):
        tiny_model((64, 64), neighbour_size=7)


def test_neighbour_mask_blocks_the_window_including_the_query() -> None:
    mask = neighbour_mask(14, 14, 7)
    blocked_per_query = mask.sum(dim=1).view(14, 14)
    assert blocked_per_query[7, 7] == 49
    assert blocked_per_query[0, 0] == 16
    assert blocked_per_query[0, 7] == 28
    assert mask.diagonal().all()
    assert torch.equal(mask, mask.T)


def test_channel_branch_needs_cells_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tiny_model((80, 80), num_heads=8, neighbour_size=3)  # 5x5 = 25 cells


def test_legacy_cos_sign_changes_only_the_loss_term() -> None:
    model = tiny_model().eval()
    features = model.backbone(torch.randn(2, 3, 64, 64))
    with torch.no_grad():
        result = model.head.reconstruct(features)
        paper, _ = model.head.loss(result.reconstructions, result.targets)
        model.head.loss.legacy_cos_sign = True
        code, _ = model.head.loss(result.reconstructions, result.targets)
    cos_means = [
        torch.nn.functional.cosine_similarity(r, t, dim=1).mean()
        for r, t in zip(result.reconstructions, result.targets, strict=True)
    ]
    expected_gap = 10 * sum(1 - 2 * c for c in cos_means)
    assert torch.allclose(paper - code, expected_gap, rtol=1e-4)


def test_backbone_with_a_fifth_tap_is_refused_before_any_forward() -> None:
    backbone = create_backbone("tf_efficientnet_lite0", pre_trained=False, out_indices=(0, 1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"exactly four backbone feature maps.*5 taps at strides \[2, 4, 8, 16, 32\]"):
        UniASModel(backbone, Architecture(input_size=(64, 64), neighbour_size=3, **TINY))


def test_head_names_its_levels_coarse_to_fine() -> None:
    assert tiny_model().head.level_names == ("stride16", "stride8", "stride4", "stride2")
