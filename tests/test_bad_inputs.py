"""Bad input is caught before any work is spent, named, and explained; numbers that cannot be computed are n/a.

Data files (truncated, 16-bit, float, noisy/JPEG/odd-sized masks), model arguments, backbone names,
checkpoint and weights files, categories without defects and non-finite pixels, on tiny settings.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from anomalib.data import ImageBatch
from anomalib.engine import Engine
from PIL import Image

from anomalib_unias import UniAS
from anomalib_unias.backbone import WeightsMismatchError, create_backbone
from anomalib_unias.checkpointing import CheckpointFileError
from anomalib_unias.data import UnifiedFolder
from anomalib_unias.data.reading import DataCheckError, UnreadableFileError, read_image, read_mask
from anomalib_unias.errors import UniASArgumentError
from anomalib_unias.metrics import PaperDice, PerCategory, format_category_table
from anomalib_unias.metrics.report import NOT_COMPUTABLE_NOTE

from .conftest import REPO
from .tiny import TINY_UNIAS


def write_mvtec_root(root: Path, size: int = 48, train: int = 4, good: int = 2, defects: int = 2) -> Path:
    """A one-category MVTec-layout folder of random 8-bit PNGs with binary masks."""
    rng = np.random.default_rng(0)
    category = root / "widget"
    for folder in ("train/good", "test/good", "test/scratch", "ground_truth/scratch"):
        (category / folder).mkdir(parents=True, exist_ok=True)
    for split, count in (("train/good", train), ("test/good", good), ("test/scratch", defects)):
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                category / split / f"{index:03d}.png"
            )
    for index in range(defects):
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[10:20, 10:20] = 255
        Image.fromarray(mask).save(category / "ground_truth/scratch" / f"{index:03d}_mask.png")
    return root


# ------------------------------------------------------------------------------------------------ data files
def test_all_bad_files_are_listed_in_one_error_before_any_training_step(tmp_path: Path) -> None:
    root = write_mvtec_root(tmp_path / "data")
    test_image = root / "widget/test/scratch/001.png"
    test_image.write_bytes(test_image.read_bytes()[:200])  # truncated test image
    (root / "widget/train/good/002.png").write_bytes(b"")  # empty train image
    datamodule = UnifiedFolder(root, train_batch_size=2, eval_batch_size=2, num_workers=0)
    model = UniAS(**TINY_UNIAS)
    engine = Engine(
        max_epochs=1, accelerator="cpu", logger=False, default_root_dir=tmp_path / "results", enable_progress_bar=False
    )
    with pytest.raises(DataCheckError) as error:
        engine.fit(model, datamodule=datamodule)
    message = str(error.value)
    assert "2 of 8 data files cannot be used" in message
    assert str(test_image) in message
    assert str(root / "widget/train/good/002.png") in message
    assert "re-save it" in message
    assert engine.trainer.global_step == 0


def test_a_read_error_after_the_check_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(UnreadableFileError, match=str(path)):
        read_image(path)


def test_16_bit_and_float_images_are_scaled_not_saturated(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.stack([values] * 3, axis=-1))
    tifffile.imwrite(tmp_path / "float.tif", (values / 65535).astype(np.float32))
    expected = torch.from_numpy(values / 65535).float()
    for name in ("grey16.png", "rgb16.tif", "float.tif"):
        image = read_image(tmp_path / name)
        assert image.shape == (3, 2, 2), name
        assert torch.allclose(image[0], expected, atol=1e-6), name
        assert torch.equal(image[0], image[2])


def test_deployment_reads_16_bit_and_float_files_as_training_does(tmp_path: Path) -> None:
    """``anomalib predict`` (PredictDataset), OpenVINOInferencer and TorchInferencer get the training's model input.

    Each entry point calls the ``read_image`` of its own module; anomalib's turned these files white and black.
    """
    from anomalib.data.predict import PredictDataset
    from anomalib.deploy import OpenVINOInferencer
    from anomalib.deploy.inferencers import openvino_inferencer, torch_inferencer

    gradient = np.linspace(0.1, 0.9, 12 * 20).reshape(12, 20)
    Image.fromarray((gradient * 65535).astype(np.uint16)).save(tmp_path / "grey16.png")
    tifffile.imwrite(tmp_path / "float.tif", gradient.astype(np.float32))
    for path in (tmp_path / "grey16.png", tmp_path / "float.tif"):
        training = read_image(path)  # what UnifiedFolder feeds the model
        assert 0.09 < float(training.min()) < float(training.max()) < 0.91  # neither white nor black
        inputs = {
            "anomalib predict": PredictDataset(path)[0].image,
            "TorchInferencer.predict(path)": torch_inferencer.read_image(path, as_tensor=True),
            "OpenVINOInferencer.predict(path)": torch.from_numpy(
                OpenVINOInferencer.pre_process(openvino_inferencer.read_image(path, as_tensor=False))[0]
            ),
        }
        for entry_point, image in inputs.items():
            assert torch.equal(image.float(), training), f"{entry_point} reads {path.name} differently"
    nan_image = gradient.astype(np.float32)
    nan_image[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan_image)
    for reader in (PredictDataset(tmp_path / "nan.tif").__getitem__, torch_inferencer.read_image):
        with pytest.raises(UnreadableFileError, match=r"nan.tif: 1 NaN/Inf pixel values"):
            reader(0) if reader.__name__ == "__getitem__" else reader(tmp_path / "nan.tif")


def test_8_bit_images_read_exactly_as_anomalib_reads_them(tmp_path: Path) -> None:
    """anomalib 2.7's own reader, written out (the plugin replaces ``anomalib.data.utils.read_image`` by ours)."""
    from torchvision.transforms.v2.functional import to_dtype, to_image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "rgb.jpg", quality=80)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / "grey.png")
    for name in ("rgb.jpg", "grey.png"):
        anomalib_image = to_dtype(to_image(Image.open(tmp_path / name).convert("RGB")), torch.float32, scale=True)
        assert torch.equal(read_image(tmp_path / name), anomalib_image)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.array([[0.0, 1.5]], dtype=np.float32), "not in \\[0, 1\\]"),
        (np.array([[0.0, np.nan]], dtype=np.float32), "NaN/Inf"),
        (np.array([[-5, 70000]], dtype=np.int32), "outside the 16-bit range"),
    ],
)
def test_images_without_a_unit_range_meaning_are_refused(tmp_path: Path, array: np.ndarray, reason: str) -> None:
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, array)
    with pytest.raises(UnreadableFileError, match=reason):
        read_image(path)


@pytest.mark.parametrize(
    ("values", "binarised"),
    [
        ([0, 255], False),
        ([0, 1], False),
        ([0, 1, 2, 3, 255], True),  # noise where 0 is meant
        ([0, 100, 200], True),  # a grey mask
    ],
)
def test_mask_rule(tmp_path: Path, values: list[int], binarised: bool) -> None:
    array = np.array([values * 4], dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "mask.png")
    mask, note = read_mask(tmp_path / "mask.png")
    assert (note is not None) == binarised
    expected = array > (127 if binarised else 0)
    assert torch.equal(mask.bool(), torch.from_numpy(expected))


def test_rgb_and_jpeg_masks(tmp_path: Path) -> None:
    array = np.zeros((32, 32), dtype=np.uint8)
    array[8:24, 8:24] = 255
    Image.fromarray(np.stack([array] * 3, axis=-1)).save(tmp_path / "rgb.png")
    mask, note = read_mask(tmp_path / "rgb.png")
    assert note is None
    assert int(mask.sum()) == 16 * 16
    shifted = np.roll(array, (3, 5), axis=(0, 1))  # edges off the 8x8 JPEG blocks: ringing around them
    Image.fromarray(shifted).save(tmp_path / "lossy.jpg", quality=50)
    mask, note = read_mask(tmp_path / "lossy.jpg")
    assert note is not None and note.changed_pixels > 0  # "> 0" would have grown the defect
    assert abs(int(mask.sum()) - 16 * 16) < 40


def test_binarised_masks_are_reported_once_and_empty_masks_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_mvtec_root(tmp_path / "data")
    noisy = np.zeros((48, 48), dtype=np.uint8)
    noisy[:, :10] = 2
    noisy[10:20, 10:20] = 255
    Image.fromarray(noisy).save(root / "widget/ground_truth/scratch/000_mask.png")
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(root / "widget/ground_truth/scratch/001_mask.png")
    datamodule = UnifiedFolder(root, num_workers=0)
    with caplog.at_level(logging.WARNING):
        datamodule.setup()
    text = caplog.text
    assert "1 masks are not binary and were binarised" in text
    assert "000_mask.png: 3 distinct values" in text
    assert "1 defective test images have an empty mask" in text and "001_mask.png" in text


def test_mask_of_another_size_is_an_error_unless_resizing_is_asked_for(tmp_path: Path) -> None:
    root = write_mvtec_root(tmp_path / "data")
    Image.fromarray(np.full((24, 40), 255, dtype=np.uint8)).save(root / "widget/ground_truth/scratch/000_mask.png")
    with pytest.raises(DataCheckError, match="mask is 40x24 \\(W x H\\) but its image is 48x48"):
        UnifiedFolder(root, num_workers=0).setup()
    datamodule = UnifiedFolder(root, num_workers=0, resize_masks=True)
    datamodule.setup()
    sample = datamodule.test_data[
        next(i for i, p in enumerate(datamodule.test_data.samples.mask_path) if "000_mask" in p)
    ]
    assert sample.gt_mask.shape == (48, 48)
    assert bool(sample.gt_mask.all())


# ------------------------------------------------------------------------------------------------ metrics
def test_a_category_without_defects_is_not_applicable_not_zero() -> None:
    metric = PerCategory(PaperDice(strict=False), name="DSC")
    maps = torch.rand(4, 8, 8)
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[2, 2:5, 2:5] = True
    batch = ImageBatch(
        image=torch.rand(4, 3, 8, 8), anomaly_map=maps, gt_mask=masks, gt_label=masks.flatten(1).any(1).int(),
        image_path=["r/good_only/test/good/0.png", "r/good_only/test/good/1.png", "r/mixed/test/bad/2.png",
                    "r/mixed/test/good/3.png"],
    )  # fmt: skip
    metric.update(batch)
    assert metric.undefined_categories() == ["good_only"]
    values = metric.compute_per_category()
    assert list(values) == ["mixed"]
    assert float(metric.compute()) == pytest.approx(float(values["mixed"]))
    table = format_category_table({"DSC/mixed": values["mixed"], "DSC/mean": metric.compute()} | {})
    table_with_gap = format_category_table(
        {"DSC/mixed": 0.5, "DSC/mean": 0.5, "pixel_AP/good_only": 0.1, "pixel_AP/mean": 0.1}
    )
    assert "| mixed |" in table
    assert "| mixed | 50.00 | n/a |" in table_with_gap
    assert NOT_COMPUTABLE_NOTE.format(categories="good_only, mixed") in table_with_gap


def test_a_category_without_defect_images_keeps_its_row_in_a_real_run(tmp_path: Path, demo_root: Path, caplog) -> None:
    """Two categories, one with good test images only: its row shows n/a and the note names it (not just the mean)."""
    import shutil

    root = tmp_path / "two"
    for category in ("brick", "grass"):
        shutil.copytree(demo_root / category, root / category)
    for folder in [*(root / "grass" / "test").iterdir(), root / "grass" / "ground_truth"]:
        if folder.name != "good":
            shutil.rmtree(folder)
    datamodule = UnifiedFolder(root=root, train_batch_size=8, eval_batch_size=8, num_workers=0)
    engine = Engine(
        max_epochs=1, limit_train_batches=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False
    )
    model = UniAS(**TINY_UNIAS, visualizer=False)
    engine.fit(model, datamodule=datamodule)
    with caplog.at_level(logging.INFO, logger="anomalib_unias"):
        engine.test(model, datamodule=datamodule, verbose=False)
    (table,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("| category |")]
    grass = next(line for line in table.splitlines() if line.startswith("| grass |"))
    assert grass.count("n/a") == 6  # every metric needs a defect: image AUROC, pixel AUROC, pAP, DSC, F1max, AUPRO
    assert next(line for line in table.splitlines() if line.startswith("| brick |")).count("n/a") == 0
    assert NOT_COMPUTABLE_NOTE.format(categories="grass") in table


# ------------------------------------------------------------------------------------------------ non-finite
def test_non_finite_pixels_are_scored_anomalous() -> None:
    model = UniAS(**TINY_UNIAS)
    model.eval()
    images = torch.rand(2, 3, 64, 64)
    images[1, :, 5, 5] = float("nan")
    output = model(images)
    assert torch.isfinite(output.pred_score[0])
    assert output.pred_score[1] == 1.0  # normalised: s / (s + t) with s = inf
    assert bool(output.pred_label[1])
    assert not output.anomaly_map.requires_grad


# ------------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"pixel_dim": 64, "hidden_dim": 32}, "hidden_dim=32"),
        ({"pixel_dim": 48, "hidden_dim": 48}, "pixel_dim=48"),
        ({"num_heads": 0}, "num_heads=0"),
        ({"num_heads": 3}, "num_heads=3"),
        ({"neighbour_size": -3}, "neighbour_size=-3"),
        ({"neighbour_size": 4}, "neighbour_size=4"),
        ({"jitter_prob": 2.0}, "jitter_prob=2.0"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"loss_weight": 0.0}, "loss_weight=0.0"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"lr_step_epochs": 0}, "lr_step_epochs=0"),
        ({"lr_gamma": 0.0}, "lr_gamma=0.0"),
        ({"input_size": (80, 80)}, "input_size=[80, 80]"),
        ({"input_size": (72, 64)}, "input_size=[72, 64]"),
        ({"input_size": (48, 96), "neighbour_size": 3}, "input_size=[48, 96]"),
    ],
)
def test_arguments_that_cannot_run_are_refused_by_name(override: dict, named: str) -> None:
    with pytest.raises(UniASArgumentError) as error:
        UniAS(**{**TINY_UNIAS, **override})
    message = str(error.value)
    assert message.startswith(f"UniAS argument {named}:")
    assert "A value that works:" in message


def test_unknown_backbone_names_suggest_timm_names() -> None:
    with pytest.raises(ValueError, match=r"timm has no model of that name.*tf_efficientnet_lite0"):
        UniAS(**{**TINY_UNIAS, "backbone": "tf_efficientnet_lite00"})


# ------------------------------------------------------------------------------------------------ files
def test_empty_and_corrupt_checkpoints_are_explained(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFileError, match="is empty \\(0 bytes\\)"):
        UniAS.load_from_checkpoint(empty)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 then nothing useful" * 10)
    with pytest.raises(CheckpointFileError, match="not a PyTorch checkpoint"):
        UniAS.load_from_checkpoint(corrupt)


def test_corrupt_weights_file_never_suggests_unsafe_loading(tmp_path: Path) -> None:
    corrupt = tmp_path / "weights.pth"
    torch.save({"x": torch.ones(3)}, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    with pytest.raises(WeightsMismatchError) as error:
        create_backbone("tf_efficientnet_lite0", weights=corrupt)
    assert "truncated" in str(error.value)
    assert "weights_only" not in str(error.value)


def test_a_failed_torch_export_leaves_no_partial_file_and_keeps_the_earlier_one(tmp_path: Path) -> None:
    model = UniAS(**TINY_UNIAS, pre_trained=False)
    first = model.to_torch(tmp_path)
    size = first.stat().st_size
    model.unpicklable = lambda: None  # an attribute pickle cannot write (as objects left by other exports were)
    with pytest.raises((AttributeError, TypeError), match="pickle"):
        model.to_torch(tmp_path)
    assert sorted(p.name for p in first.parent.iterdir()) == ["model.pt", "thresholds.json"]
    assert first.stat().st_size == size


def test_no_raise_in_the_package_names_a_built_in_error() -> None:
    """Every ``raise`` in ``anomalib_unias`` raises a UniAS error (``NotImplementedError`` and ``SystemExit`` aside)."""
    import ast
    import builtins

    allowed = {"NotImplementedError", "SystemExit"}
    built_in = {name for name in dir(builtins) if isinstance(getattr(builtins, name), type)} - allowed
    offenders = []
    for path in sorted((REPO / "anomalib_unias").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            call = node.exc if isinstance(node, ast.Raise) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in built_in:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {call.func.id}")
    assert not offenders, offenders


def test_every_error_the_package_raises_on_purpose_is_a_uniaserror() -> None:
    """One family (``except UniASError``), each also the built-in error it stands for."""
    import inspect

    import anomalib_unias
    from anomalib_unias.errors import UniASError

    modules = [m for name, m in sys.modules.items() if name.startswith("anomalib_unias")]
    errors = {
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__.startswith("anomalib_unias")
    }
    assert anomalib_unias is not None
    assert len(errors) >= 8
    assert all(issubclass(cls, UniASError) for cls in errors), sorted(c.__name__ for c in errors)
    builtin = (ValueError, OSError, RuntimeError, LookupError, TypeError)
    assert all(issubclass(cls, builtin) for cls in errors - {UniASError})  # each also the built-in error it stands for
    with pytest.raises(UniASError, match=r"UniAS argument backbone='resnet_nope': timm has no model of that name"):
        UniAS(backbone="resnet_nope")
