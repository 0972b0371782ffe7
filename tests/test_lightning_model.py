"""The UniAS AnomalibModule: construction offline, training recipe, steps (docs/design.md §7)."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from anomalib.data import ImageBatch
from lightning.pytorch import Callback

from anomalib_unias import UniAS

from .tiny import TINY_UNIAS

TINY = {k: v for k, v in TINY_UNIAS.items() if k != "backbone"}


@pytest.fixture(scope="module")
def model() -> UniAS:
    return UniAS(backbone="tf_efficientnet_lite0", **TINY)


OFFLINE_SCRIPT = """
import torch
from anomalib_unias import UniAS
from anomalib_unias.backbone import WeightsUnavailableError, create_backbone
tiny = {tiny!r}
model = UniAS(backbone="tf_efficientnet_lite0", **tiny)
bundled = create_backbone("tf_efficientnet_lite0", pre_trained=True).network.conv_stem.weight
random = create_backbone("tf_efficientnet_lite0", pre_trained=False).network.conv_stem.weight
ours = model.model.backbone.network.conv_stem.weight
print("BUNDLED", torch.equal(ours, bundled), torch.equal(ours, random))
try:
    UniAS(backbone="tf_efficientnet_b4", **tiny)
    print("B4 BUILT")
except WeightsUnavailableError as error:
    print("REFUSED |", str(error).replace(chr(10), " "))
"""


@pytest.mark.slow
def test_offline_lite0_uses_bundled_weights_and_b4_fails_fast_with_the_fixes(tmp_path, run) -> None:
    """HF_HUB_OFFLINE=1 set before the interpreter starts (huggingface_hub reads it once, at import)."""
    empty_cache = tmp_path / "hf_cache"
    result = run(
        [sys.executable, "-c", OFFLINE_SCRIPT.format(tiny=TINY)], cwd=tmp_path, env={"HF_HUB_CACHE": str(empty_cache)}
    )
    lines = result.stdout.splitlines()
    assert "BUNDLED True False" in lines
    (refused,) = [line for line in lines if line.startswith("REFUSED")]  # without asking the hub
    for fix in ("weights", "tf_efficientnet_lite0", "pre_trained", "HF_HUB_OFFLINE is set"):
        assert fix in refused


def test_trainer_arguments_hold_only_fixed_settings(model: UniAS) -> None:
    assert model.trainer_arguments == {
        "gradient_clip_val": 0.1,
        "gradient_clip_algorithm": "norm",
        "num_sanity_val_steps": 0,
    }
    benchmark_model = UniAS(backbone="tf_efficientnet_lite0", pre_trained=False, max_epochs=3, **TINY)
    assert benchmark_model.trainer_arguments["max_epochs"] == 3


def test_optimiser_is_adamw_on_the_head_with_step_lr(model: UniAS) -> None:
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (1e-4, 1e-4, (0.9, 0.999))
    optimised = {id(p) for p in group["params"]}
    assert optimised == {id(p) for p in model.model.head.parameters()}
    assert not optimised & {id(p) for p in model.model.backbone.parameters()}
    assert (scheduler.step_size, scheduler.gamma, config["lr_scheduler"]["interval"]) == (400, 0.1, "epoch")


def test_pre_processor_resizes_to_the_input_size_without_antialias(model: UniAS) -> None:
    resize = model.pre_processor.transform.transforms[0]
    assert list(resize.size) == [64, 64]
    assert resize.antialias is False
    image = torch.rand(1, 3, 100, 80)
    assert model.pre_processor.transform(image).shape == (1, 3, 64, 64)


def test_training_and_validation_steps(model: UniAS) -> None:
    batch = ImageBatch(
        image=torch.rand(2, 3, 64, 64),
        gt_label=torch.tensor([0, 1]),
        gt_mask=torch.zeros(2, 64, 64, dtype=torch.bool),
        image_path=["a/cat/test/good/0.png", "a/cat/test/bad/1.png"],
    )
    model.train()
    loss = model.training_step(batch)["loss"]
    assert loss.ndim == 0
    assert loss.requires_grad
    model.eval()
    with torch.no_grad():
        out = model.validation_step(batch)
    assert out is batch
    assert out.anomaly_map.shape == (2, 64, 64)  # anomalib batches store maps without the channel axis
    assert torch.allclose(out.pred_score, out.anomaly_map.flatten(1).amax(1))


def test_foreach_optimiser_and_clipping_equal_the_per_tensor_recipe() -> None:
    """Three steps of our optimiser + clipping give the parameters PyTorch's per-tensor AdamW + clip give."""
    torch.manual_seed(0)
    ours = UniAS(backbone="tf_efficientnet_lite0", pre_trained=False, **TINY)
    reference = copy.deepcopy(ours)
    optimizer = ours.configure_optimizers()["optimizer"]
    reference_optimizer = torch.optim.AdamW(
        [p for p in reference.model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4, foreach=False
    )
    images = torch.rand(2, 3, 64, 64)
    for step in range(3):
        for model, opt in ((ours, optimizer), (reference, reference_optimizer)):
            torch.manual_seed(step)  # same jitter and dropout draws in both models
            model.train()
            opt.zero_grad()
            model.model(images)[0].backward()
            if model is ours:
                model.configure_gradient_clipping(opt, 0.1, "norm")
            else:
                torch.nn.utils.clip_grad_norm_(list(model.model.parameters()), 0.1, foreach=False)
            opt.step()
    for (name, mine), theirs in zip(ours.model.named_parameters(), reference.model.parameters(), strict=True):
        assert torch.allclose(mine, theirs, rtol=0, atol=1e-7), name


def _normalisation(model: UniAS) -> tuple[list[float], list[float]]:
    (normalize,) = [t for t in model.pre_processor.transform.transforms if type(t).__name__ == "Normalize"]
    return list(normalize.mean), list(normalize.std)


def test_normalisation_follows_the_backbone_lite_half_b4_imagenet(model: UniAS) -> None:
    """timm's Lite ports were trained on (x - 0.5) / 0.5; B4 (the paper's) on ImageNet statistics."""
    assert _normalisation(model) == ([0.5] * 3, [0.5] * 3)
    assert (model.hparams["input_mean"], model.hparams["input_std"]) == ((0.5,) * 3, (0.5,) * 3)
    b4 = UniAS(backbone="tf_efficientnet_b4", pre_trained=False, **TINY)
    assert _normalisation(b4) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    chosen = UniAS(backbone="tf_efficientnet_lite0", input_mean=(0.1, 0.2, 0.3), input_std=(1, 2, 3), **TINY)
    assert _normalisation(chosen) == ([0.1, 0.2, 0.3], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(("argument", "value"), [("input_mean", (0.5, 0.5)), ("input_std", (0.5, 0.0, 0.5))])
def test_bad_normalisation_is_refused_by_name(argument: str, value: tuple) -> None:
    with pytest.raises(ValueError, match=rf"UniAS argument {argument}="):
        UniAS(backbone="tf_efficientnet_lite0", pre_trained=False, **{argument: value}, **TINY)


class _FirstTrainingBatch(Callback):
    """Keep the first training batch's image as ``training_step`` receives it (after the pre-processor)."""

    image: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        del trainer, pl_module, outputs, batch_idx
        if self.image is None:
            self.image = batch.image.clone()


def test_training_and_checkpoint_use_the_backbone_statistics(tmp_path, demo_root) -> None:
    """A real fit step sees (x - 0.5) / 0.5 for Lite0, and the checkpoint restores the same transform."""
    from anomalib.engine import Engine

    from anomalib_unias.data import UniASDemo

    seen = _FirstTrainingBatch()
    datamodule = UniASDemo(root=demo_root, train_batch_size=4, eval_batch_size=4, num_workers=0)
    model = UniAS(backbone="tf_efficientnet_lite0", visualizer=False, **TINY)
    engine = Engine(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, default_root_dir=tmp_path, logger=False,
        callbacks=[seen], enable_progress_bar=False,
    )  # fmt: skip
    engine.fit(model=model, datamodule=datamodule)
    datamodule.setup("fit")
    raw = torch.cat([batch.image for batch in datamodule.train_dataloader()])  # shuffled: find the seen image
    resized = torch.nn.functional.interpolate(raw, size=TINY["input_size"], mode="bilinear", antialias=False)
    closest = ((resized - 0.5) / 0.5 - seen.image[:1]).abs().flatten(1).amax(1).min()
    assert closest < 1e-5
    imagenet = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert ((resized - imagenet[0]) / imagenet[1] - seen.image[:1]).abs().flatten(1).amax(1).min() > 0.1
    (checkpoint,) = tmp_path.rglob("model.ckpt")
    loaded = UniAS.load_from_checkpoint(checkpoint)
    assert _normalisation(loaded) == ([0.5] * 3, [0.5] * 3)
