"""Opt-in switches beside the paper's recipe: each is off by default and changes what it says, nothing else."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from anomalib_unias import UniAS
from anomalib_unias.errors import UniASArgumentError
from anomalib_unias.loss import HARD_MINING_FACTOR, UniASLoss

from .tiny import TINY_UNIAS

SWITCHES = {
    "map_fusion": "product",
    "map_strides": None,
    "hard_mining": None,
    "image_size": None,
    "train_tiles": None,
    "train_tile_positions": "anywhere",
    "lr_schedule": "step",
    "betas": (0.9, 0.999),
    "lr_floor": 0.0,
}


def _model(**switches: object) -> UniAS:
    torch.manual_seed(0)
    return UniAS(**TINY_UNIAS, pre_trained=False, **switches)


def test_every_switch_defaults_to_the_paper() -> None:
    defaults = inspect.signature(UniAS).parameters
    assert {name: defaults[name].default for name in SWITCHES} == SWITCHES


def _level_maps(model: UniAS, images: torch.Tensor) -> list[torch.Tensor]:
    head = model.model.head
    with torch.no_grad():
        result = head.reconstruct(model.model.backbone(images))
        return head.anomaly_map.level_maps(result.reconstructions, result.targets)


def _upsample(level_map: torch.Tensor) -> torch.Tensor:
    return F.interpolate(level_map, size=TINY_UNIAS["input_size"], mode="bilinear", align_corners=True)


def _training_loss(model: UniAS, images: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)  # same jitter and dropout draws
    model.train()
    return model.model(images)[0]


@pytest.mark.parametrize(
    ("switches", "fuse"),
    [
        ({"map_fusion": "mean"}, lambda maps: torch.stack(maps).mean(0)),
        ({"map_strides": [16, 8]}, lambda maps: maps[0] * maps[1]),
        ({"map_fusion": "mean", "map_strides": [8, 2]}, lambda maps: (maps[1] + maps[3]) / 2),
        ({}, lambda maps: maps[3] * maps[0] * maps[1] * maps[2]),
    ],
)
def test_map_switches_change_the_fusion_only(switches: dict, fuse) -> None:
    images = torch.rand(2, 3, *TINY_UNIAS["input_size"])
    paper, switched = _model(), _model(**switches)
    switched.load_state_dict(paper.state_dict())
    paper.eval()
    switched.eval()
    expected = _upsample(fuse(_level_maps(paper, images)))
    assert torch.allclose(switched.model(images).anomaly_map, expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(_training_loss(switched, images), _training_loss(paper, images))


def test_hard_mining_is_the_global_cosine_with_easy_gradients_scaled_down() -> None:
    torch.manual_seed(0)
    target = torch.randn(2, 8, 5, 6)
    reconstruction = (target + 0.5 * torch.randn_like(target)).requires_grad_()
    loss = UniASLoss(weight=1.0, hard_mining=0.75, hard_mining_warmup=0)
    value, (term,) = loss([reconstruction], [target])
    global_cosine = 1 - F.cosine_similarity(reconstruction.flatten(1), target.flatten(1), dim=1)
    assert torch.allclose(term, global_cosine.mean())
    value.backward()
    plain = reconstruction.detach().clone().requires_grad_()
    (1 - F.cosine_similarity(plain.flatten(1), target.flatten(1), dim=1)).mean().backward()
    distance = 1 - F.cosine_similarity(reconstruction.detach(), target, dim=1)
    easy = distance <= distance.flatten().kthvalue(round(0.75 * distance.numel())).values
    assert easy.sum() == round(0.75 * distance.numel())
    ratio = reconstruction.grad / plain.grad
    assert torch.allclose(ratio.permute(0, 2, 3, 1)[easy], torch.tensor(HARD_MINING_FACTOR), rtol=1e-4)
    assert torch.allclose(ratio.permute(0, 2, 3, 1)[~easy], torch.tensor(1.0), rtol=1e-4)


def test_hard_mining_share_ramps_up_and_its_step_count_is_checkpointed() -> None:
    loss = UniASLoss(hard_mining=0.9, hard_mining_warmup=4)
    target = torch.randn(1, 4, 3, 3)
    for _ in range(3):
        loss([target.clone().requires_grad_()], [target])
    assert int(loss.state_dict()["steps"]) == 3
    assert "steps" not in UniASLoss().state_dict()  # the paper's loss keeps the reference state dict


def test_hard_mining_changes_the_loss_only_not_the_map() -> None:
    images = torch.rand(2, 3, *TINY_UNIAS["input_size"])
    paper, mined = _model(), _model(hard_mining=0.9)
    mined.load_state_dict(paper.state_dict(), strict=False)  # all but the step counter
    paper.eval()
    mined.eval()
    assert torch.equal(mined.model(images).anomaly_map, paper.model(images).anomaly_map)
    assert not torch.equal(_training_loss(mined, images), _training_loss(paper, images))


@pytest.mark.parametrize(
    ("switches", "message"),
    [
        ({"map_fusion": "max"}, r"map_fusion='max': must be 'product' \(paper\), 'mean' or 'auto'"),
        ({"map_strides": [32]}, r"map_strides=\[32\]: must be distinct strides of the reconstructed levels"),
        ({"map_strides": []}, r"map_strides=\[\]"),
        ({"hard_mining": 1.0}, r"hard_mining=1.0: is a share of pixels"),
        ({"hard_mining_warmup": -1}, r"hard_mining_warmup=-1"),
        ({"betas": (0.9, 1.0)}, r"betas=\[0.9, 1.0\]: must be two numbers in \[0, 1\)"),
        ({"lr_floor": 2.0}, r"lr_floor=2.0: must be in \[0, 1\]"),
    ],
)
def test_bad_switch_values_are_refused_by_name(switches: dict, message: str) -> None:
    with pytest.raises(UniASArgumentError, match=message):
        _model(**switches)


def _learning_rates(model: UniAS, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` optimiser steps under the model's schedule."""
    config = model.optimizer_recipe.configure(model.model.head.parameters(), steps)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_short_run_optimiser_settings_change_the_schedule_and_betas_only() -> None:
    recipe = {"lr_schedule": "cosine", "learning_rate": 2e-3, "warmup_fraction": 0.1}
    plain, floored = _model(**recipe), _model(**recipe, lr_floor=0.1, betas=(0.5, 0.999))
    plain_rates, floored_rates = _learning_rates(plain, 100), _learning_rates(floored, 100)
    assert plain_rates[:10] == pytest.approx([2e-3 * (k + 1) / 10 for k in range(10)])  # linear warm-up
    assert floored_rates[:11] == pytest.approx(plain_rates[:11])  # the same up to the peak
    assert plain_rates[-1] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))  # cosine to 0
    # The floor lifts the cosine: lr = floor + (1 - floor) * cosine, ending at 0.1 x 2e-3.
    assert floored_rates[10:] == pytest.approx([2e-4 + 0.9 * rate for rate in plain_rates[10:]])
    config = floored.optimizer_recipe.configure(floored.model.head.parameters(), 100)
    assert config["optimizer"].param_groups[0]["betas"] == (0.5, 0.999)


def test_reconstructing_the_coarse_levels_only_gives_the_same_coarse_reconstructions() -> None:
    """``levels=[16, 8]``: the decoder runs coarse to fine, so the two coarse levels come out as the full model's."""
    images = torch.rand(2, 3, *TINY_UNIAS["input_size"])
    paper, coarse = _model(), _model(levels=[16, 8])
    state = paper.state_dict()
    state["model.head.decoder.level_embed"] = state["model.head.decoder.level_embed"][:2]
    missing, unexpected = coarse.load_state_dict(state, strict=False)
    assert not missing  # every tensor of the two-level head is the full head's
    assert all(".2." in key or ".3." in key or ".1." in key for key in unexpected)  # only the finer levels' are left
    paper.eval()
    coarse.eval()
    with torch.no_grad():
        full = paper.model.head.reconstruct(paper.model.backbone(images))
        two = coarse.model.head.reconstruct(coarse.model.backbone(images))
    assert len(two.reconstructions) == 2
    for level in range(2):
        assert torch.allclose(two.reconstructions[level], full.reconstructions[level], atol=1e-6)
        assert torch.equal(two.targets[level], full.targets[level])
    # Its map: the product of those two levels, smoothed at the finest reconstructed level's size (stride 8).
    generator = coarse.model.head.anomaly_map
    level_maps = generator.level_maps(full.reconstructions[:2], full.targets[:2])
    assert level_maps[0].shape[-2:] == full.targets[1].shape[-2:]
    expected = _upsample(level_maps[1] * level_maps[0])
    assert torch.allclose(coarse.model(images).anomaly_map, expected, atol=1e-6)
    assert coarse.model.head.level_names == ("stride16", "stride8")


def test_levels_must_be_the_coarsest_run() -> None:
    with pytest.raises(UniASArgumentError, match=r"levels=\[8, 4\]: must be the coarsest levels"):
        _model(levels=[8, 4])
    with pytest.raises(UniASArgumentError, match=r"map_strides=\[4\]: must be distinct strides of the reconstructed"):
        _model(levels=[16, 8], map_strides=[4])


def test_every_architecture_and_optimiser_field_is_a_unias_argument_with_the_same_default() -> None:
    """``Architecture.from_arguments(locals())`` and the optimiser recipe read UniAS's arguments by name."""
    from dataclasses import fields

    from anomalib_unias.architecture import Architecture
    from anomalib_unias.components.optimizer import OptimizerRecipe

    parameters = inspect.signature(UniAS).parameters
    for record in (Architecture, OptimizerRecipe):
        for field in fields(record):
            assert field.name in parameters, f"{record.__name__}.{field.name} is not a UniAS argument"
            default = parameters[field.name].default
            expected = field.default
            assert (list(default) if isinstance(default, tuple) else default) == (
                list(expected) if isinstance(expected, tuple) else expected
            ), field.name
