"""Tests of the unified data modules, per-category augmentations (docs/design.md §7), demo data and visualizer.

Real files in tmp_path, real anomalib/torch code, no mocks.
"""

from __future__ import annotations

import filecmp
import socket
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
import torch
from anomalib.data import AnomalibDataModule, ImageBatch
from anomalib.data.datamodules.image.mvtecad import DOWNLOAD_INFO as MVTEC_DOWNLOAD_INFO
from anomalib.data.datamodules.image.visa import DOWNLOAD_INFO as VISA_DOWNLOAD_INFO
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.datasets.image.visa import CATEGORIES as VISA_CATEGORIES
from anomalib.data.utils import ValSplitMode
from anomalib.visualization import ImageVisualizer
from lightning.pytorch import Trainer
from torchvision import tv_tensors
from torchvision.transforms.v2 import Compose, Resize

from anomalib_unias.data import (
    DEFECT_TYPES,
    DEMO_CATEGORIES,
    CategoryAugmentation,
    RandomRightAngleRotation,
    UniASDemo,
    UnifiedDataset,
    UnifiedFolder,
    UnifiedMVTecAD,
    UnifiedVisa,
    generate_demo_dataset,
    mvtec_paper_augmentation,
    visa_paper_augmentation,
)
from anomalib_unias.data import augmentation as paper_lists
from anomalib_unias.layout import category_of
from anomalib_unias.visualizer import UnifiedImageVisualizer

from .conftest import require_data

DEMO_TRAIN, DEMO_TEST_GOOD, DEMO_TEST_DEFECT = 40, 10, 15  # generate_demo_dataset defaults


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default demo data set, generated through UniASDemo.prepare_data (root missing before)."""
    root = tmp_path_factory.mktemp("demo") / "unias_demo"
    assert not root.exists()
    datamodule = UniASDemo(root=root, num_workers=0)
    datamodule.prepare_data()
    return root


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)


def _dihedral(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/quarter turns of the last two dimensions (index = 4 * flipped + quarter turns)."""
    flipped = (tensor, tensor.flip(-1))
    variants = [torch.rot90(variant, turns, dims=(-2, -1)) for variant in flipped for turns in range(4)]
    if isinstance(tensor, tv_tensors.TVTensor):
        return [tv_tensors.wrap(variant, like=tensor) for variant in variants]
    return variants


def _matching_variant(raw: torch.Tensor, augmented: torch.Tensor) -> int:
    matches = [
        index
        for index, variant in enumerate(_dihedral(raw))
        if variant.shape == augmented.shape and torch.equal(variant, augmented)
    ]
    assert matches, "output is not a flip/quarter turn of the input"
    return matches[0]


# --------------------------------------------------------------------------------------------- demo data


def test_demo_generation_is_deterministic_and_in_mvtec_layout(tmp_path: Path) -> None:
    sizes = {"num_train": 3, "num_test_good": 2, "num_test_defect": 6, "image_size": 64}
    first = generate_demo_dataset(tmp_path / "a", seed=7, **sizes)
    second = generate_demo_dataset(tmp_path / "b", seed=7, **sizes)
    only_grass = generate_demo_dataset(tmp_path / "c", categories=["grass"], seed=7, **sizes)
    other_seed = generate_demo_dataset(tmp_path / "d", seed=8, **sizes)

    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    for path in (only_grass / "grass").rglob("*.png"):  # a category depends only on (seed, sizes, category)
        assert path.read_bytes() == (first / path.relative_to(only_grass)).read_bytes()
    assert (first / "brick/train/good/000.png").read_bytes() != (other_seed / "brick/train/good/000.png").read_bytes()

    for category in DEMO_CATEGORIES:
        folder = first / category
        assert sorted(p.name for p in (folder / "train/good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert len(list((folder / "test/good").iterdir())) == 2
        assert sorted(p.name for p in (folder / "test").iterdir()) == sorted([*DEFECT_TYPES, "good"])
        for kind in DEFECT_TYPES:
            images = sorted((folder / "test" / kind).iterdir())
            assert [p.name for p in images] == ["000.png", "001.png"]
            for image_path in images:
                image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
                mask = cv2.imread(
                    str(folder / "ground_truth" / kind / f"{image_path.stem}_mask.png"), cv2.IMREAD_UNCHANGED
                )
                assert image.shape == (64, 64, 3)
                assert mask.shape == (64, 64)
                assert set(np.unique(mask)) == {0, 255}
    with pytest.raises(FileExistsError, match="already exist"):
        generate_demo_dataset(first, categories=["brick"])


def test_demo_defects_have_several_sizes(tmp_path: Path) -> None:
    """Masks are non-empty, below half the image, of varied size; scratches are thinner than blobs."""
    root = generate_demo_dataset(tmp_path, categories=["gravel"], num_train=0, num_test_good=0, num_test_defect=30)
    areas = {}
    for kind in DEFECT_TYPES:
        masks = [
            cv2.imread(str(root / "gravel/ground_truth" / kind / f"{image.stem}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
            for image in sorted((root / "gravel/test" / kind).iterdir())
        ]
        areas[kind] = np.array([mask.mean() for mask in masks])
        assert len(masks) == 10
        assert ((areas[kind] > 0) & (areas[kind] < 0.5)).all(), (kind, areas[kind])
        assert areas[kind].max() > 2 * areas[kind].min(), (kind, areas[kind])
    assert np.median(areas["scratch"]) < np.median(areas["texture"])
    assert np.median(areas["scratch"]) < np.median(areas["stain"])


def test_demo_datamodule_generates_the_missing_root(demo_root: Path) -> None:
    datamodule = UniASDemo(root=demo_root, num_workers=0, eval_batch_size=5)
    datamodule.prepare_data()  # present now: nothing is regenerated
    datamodule.setup()
    assert datamodule.val_split_mode == ValSplitMode.SAME_AS_TEST
    assert len(datamodule.train_data) == 3 * DEMO_TRAIN
    assert len(datamodule.test_data) == 3 * (DEMO_TEST_GOOD + DEMO_TEST_DEFECT)
    assert len(datamodule.val_data) == len(datamodule.test_data)
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape == (5, 3, 256, 256)
    assert batch.gt_mask.shape == (5, 256, 256)


# ----------------------------------------------------------------------------------------- unified data


def test_unified_folder_on_demo_serves_all_categories(demo_root: Path) -> None:
    datamodule = UnifiedFolder(root=demo_root, num_workers=0, train_batch_size=8)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.categories == list(DEMO_CATEGORIES)
    assert datamodule.val_split_mode == ValSplitMode.SAME_AS_TEST
    train, test = datamodule.train_data.samples, datamodule.test_data.samples
    assert train.groupby("category").size().to_dict() == dict.fromkeys(DEMO_CATEGORIES, DEMO_TRAIN)
    assert test.groupby("category").size().to_dict() == dict.fromkeys(
        DEMO_CATEGORIES, DEMO_TEST_GOOD + DEMO_TEST_DEFECT
    )
    assert (test.label_index == 1).sum() == 3 * DEMO_TEST_DEFECT
    for samples in (train, test, datamodule.val_data.samples):
        assert [category_of(path) for path in samples.image_path] == list(samples.category)
    for sample in test[test.label_index == 1].itertuples():
        mask_path, image_path = Path(sample.mask_path), Path(sample.image_path)
        assert (
            mask_path == image_path.parents[2] / "ground_truth" / image_path.parent.name / f"{image_path.stem}_mask.png"
        )
    defective = int(np.flatnonzero(test.label_index.to_numpy() == 1)[0])
    item = datamodule.test_data[defective]
    assert item.gt_label == 1
    assert item.gt_mask.shape == item.image.shape[-2:]
    assert item.gt_mask.any()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.image.shape == (8, 3, 256, 256)
    assert not batch.gt_mask.any()

    subset = UnifiedFolder(root=demo_root, categories=["gravel", "brick"], num_workers=0)
    subset.setup()
    assert set(subset.train_data.samples.category) == {"gravel", "brick"}


def test_unified_folder_reads_jpg_mtd() -> None:
    datamodule = UnifiedFolder(root=require_data("mtd"), num_workers=0, eval_batch_size=4)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.categories == ["magnetic_tile"]
    train, test = datamodule.train_data.samples, datamodule.test_data.samples
    assert len(train) == 761
    assert test.groupby("label").size().to_dict() == {
        "good": 191,
        "blowhole": 115,
        "break": 85,
        "crack": 57,
        "fray": 32,
        "uneven": 103,
    }
    assert all(path.endswith(".jpg") for path in test.image_path)
    assert {category_of(path) for path in (*train.image_path, *test.image_path)} == {"magnetic_tile"}
    abnormal = test[test.label_index == 1]
    assert all(
        Path(m).name == f"{Path(i).stem}_mask.png" for i, m in zip(abnormal.image_path, abnormal.mask_path, strict=True)
    )
    item = datamodule.test_data[int(np.flatnonzero(test.label_index.to_numpy() == 1)[0])]
    assert item.image.shape[0] == 3  # grey JPG read as RGB by anomalib
    assert item.gt_mask.shape == item.image.shape[-2:]


def _tiny_category(root: Path, category: str) -> None:
    """A hand-made MVTec-layout category whose masks do NOT pair by sorted position."""
    rng = np.random.default_rng(0)
    for index in range(2):
        _write(root / category / "train/good" / f"{index}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    _write(root / category / "test/good/0.jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    for stem in ("x", "y"):
        _write(root / category / "test/crack" / f"{stem}.JPG", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    masks = {"x_mask.png": (0, 4), "y.png": (8, 16), "a_mask.png": (4, 8)}  # a_mask.png has no image
    for name, (start, stop) in masks.items():
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[start:stop] = 255
        _write(root / category / "ground_truth/crack" / name, mask)


def test_masks_pair_by_stem_and_missing_mask_names_the_file(tmp_path: Path) -> None:
    _tiny_category(tmp_path, "cable")
    dataset = UnifiedDataset(tmp_path, ["cable"], "test")
    by_stem = {Path(s.image_path).stem: s for s in dataset.samples.itertuples()}
    assert Path(by_stem["x"].mask_path).name == "x_mask.png"
    assert Path(by_stem["y"].mask_path).name == "y.png"
    assert by_stem["0"].mask_path == ""
    rows = {Path(path).stem: index for index, path in enumerate(dataset.samples.image_path)}
    assert torch.equal(dataset[rows["x"]].gt_mask.nonzero()[:, 0].unique(), torch.arange(0, 4))
    assert torch.equal(dataset[rows["y"]].gt_mask.nonzero()[:, 0].unique(), torch.arange(8, 16))

    (tmp_path / "cable/ground_truth/crack/y.png").unlink()
    with pytest.raises(FileNotFoundError) as error:
        UnifiedDataset(tmp_path, ["cable"], "test")
    message = str(error.value)
    assert str(tmp_path / "cable/test/crack/y.JPG") in message
    assert str(tmp_path / "cable/ground_truth/crack/y_mask.png") in message
    assert "Add the mask" in message


def test_category_discovery_and_clear_errors(tmp_path: Path) -> None:
    _tiny_category(tmp_path, "cable")
    _tiny_category(tmp_path, "screw")
    (tmp_path / "notes").mkdir()  # not a category: no train/test inside
    datamodule = UnifiedFolder(root=tmp_path, num_workers=0)
    assert datamodule.categories == ["cable", "screw"]
    datamodule.setup()
    assert len(datamodule.train_data) == 4

    with pytest.raises(FileNotFoundError, match="looks like ONE category folder"):
        UnifiedFolder(root=tmp_path / "cable").setup()
    with pytest.raises(FileNotFoundError, match=r"\['wood'\] not found"):
        UnifiedFolder(root=tmp_path, categories=["cable", "wood"]).prepare_data()
    with pytest.raises(RuntimeError, match="Found no train images"):
        UnifiedDataset(tmp_path, ["cable"], "train", extensions=(".bmp",))


def test_unified_visa_reads_anomalibs_split_layout(tmp_path: Path) -> None:
    """VisA after anomalib's 1cls split: JPG images in test/bad, PNG masks of the same stem."""
    _tiny_category(tmp_path / "visa_pytorch", "candle")
    datamodule = UnifiedVisa(root=tmp_path, categories=["candle"], num_workers=0)
    datamodule.prepare_data()  # found: no download
    datamodule.setup()
    assert len(datamodule.test_data) == 3
    assert set(datamodule.test_data.samples.category) == {"candle"}
    assert datamodule.val_split_mode == ValSplitMode.SAME_AS_TEST


def _host_resolves(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, 443)
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("datamodule_class", "url"),
    [(UnifiedMVTecAD, MVTEC_DOWNLOAD_INFO.url), (UnifiedVisa, VISA_DOWNLOAD_INFO.url)],
)
def test_offline_download_gives_a_clear_error(tmp_path: Path, datamodule_class: type, url: str) -> None:
    if _host_resolves(url):
        pytest.skip("dataset host reachable: would start a multi-GB download")
    datamodule = datamodule_class(root=tmp_path / "data", num_workers=0)
    with pytest.raises(RuntimeError, match=r"download from .* failed") as error:
        datamodule.prepare_data()
    assert str(tmp_path / "data") in str(error.value)


def test_known_categories_only(tmp_path: Path) -> None:
    assert UnifiedMVTecAD(root=tmp_path).categories == list(MVTEC_CATEGORIES)
    assert UnifiedVisa(root=tmp_path).categories == list(VISA_CATEGORIES)
    assert UniASDemo(root=tmp_path).categories == list(DEMO_CATEGORIES)
    with pytest.raises(ValueError, match="hazel_nut"):
        UnifiedMVTecAD(root=tmp_path, categories=["hazel_nut"])


def test_datamodules_build_from_yaml(tmp_path: Path, demo_root: Path) -> None:
    config = tmp_path / "data.yaml"
    config.write_text(
        "class_path: anomalib_unias.data.UnifiedFolder\n"
        f"init_args:\n  root: {demo_root}\n  categories: [grass, brick]\n  num_workers: 0\n"
        "  extensions: [.png]\n",
    )
    datamodule = AnomalibDataModule.from_config(config)
    assert isinstance(datamodule, UnifiedFolder)
    assert datamodule.categories == ["grass", "brick"]
    assert datamodule.extensions == (".png",)

    config.write_text("class_path: anomalib_unias.data.UnifiedMVTecAD\ninit_args:\n  paper_augmentations: false\n")
    assert AnomalibDataModule.from_config(config).train_augmentations is None


# ------------------------------------------------------------------------------------------ augmentation


def test_paper_category_lists() -> None:
    """docs/design.md §7, with the reference's ``hazel_nut`` typo fixed."""
    assert "hazelnut" in paper_lists.MVTEC_HFLIP
    assert "hazelnut" in paper_lists.MVTEC_VFLIP
    assert "hazelnut" in paper_lists.MVTEC_ROTATE
    assert set(paper_lists.MVTEC_HFLIP) == {
        "bottle",
        "carpet",
        "grid",
        "hazelnut",
        "metal_nut",
        "pill",
        "screw",
        "tile",
        "wood",
        "zipper",
    }
    assert set(paper_lists.MVTEC_VFLIP) == set(paper_lists.MVTEC_HFLIP)
    assert set(paper_lists.MVTEC_ROTATE) == {"bottle", "carpet", "hazelnut", "screw", "tile", "wood"}
    assert set(paper_lists.VISA_HFLIP) == {
        "candle",
        "macaroni2",
        "capsules",
        "chewinggum",
        "fryum",
        "macaroni1",
        "pipe_fryum",
    }
    assert set(paper_lists.VISA_VFLIP) == {"macaroni2", "capsules", "chewinggum", "fryum", "pipe_fryum"}
    assert set(paper_lists.VISA_ROTATE) == {"macaroni2", "capsules", "fryum"}
    mvtec, visa = mvtec_paper_augmentation(), visa_paper_augmentation()
    assert set(mvtec.transforms) <= set(MVTEC_CATEGORIES)
    assert set(visa.transforms) <= set(VISA_CATEGORIES)
    assert {"cable", "capsule", "leather", "toothbrush", "transistor"}.isdisjoint(mvtec.transforms)


def _sample(height: int = 6, width: int = 6) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    image = tv_tensors.Image(torch.rand(3, height, width))
    return image, tv_tensors.Mask(image[0] > 0.5)


def _outcomes(transform: CategoryAugmentation, category: str, shape: tuple[int, int], draws: int = 400) -> list[int]:
    """Apply the transform ``draws`` times; check image and mask moved together; return the variant indices."""
    torch.manual_seed(0)
    image, mask = _sample(*shape)
    outcomes = []
    for _ in range(draws):
        out_image, out_mask, out_category = transform(image, mask, category)
        assert out_category == category
        assert isinstance(out_image, tv_tensors.Image)
        assert isinstance(out_mask, tv_tensors.Mask)
        variant = _matching_variant(image, out_image)
        assert torch.equal(_dihedral(mask)[variant], out_mask)
        outcomes.append(variant)
    return outcomes


def test_flip_and_rotate_categories_move_image_and_mask_together() -> None:
    augmentation = mvtec_paper_augmentation()
    for category in ("bottle", "hazelnut"):  # HFLIP + VFLIP + ROTATE
        outcomes = _outcomes(augmentation, category, (6, 6))
        assert set(outcomes) == set(range(8))
        # identity = no flips and 0 deg, or both flips (= 180 deg) and 180 deg: 0.7^2/4 + 0.3^2/4 = 0.145
        assert 0.09 < outcomes.count(0) / len(outcomes) < 0.20
    # grid: flips only. hflip, vflip, both (= 180 deg) or nothing; never a quarter turn, shape kept
    flips_only = set(_outcomes(augmentation, "grid", (4, 7)))
    assert flips_only == {0, 2, 4, 6}
    assert set(_outcomes(augmentation, "transistor", (4, 7), draws=50)) == {0}
    visa = visa_paper_augmentation()
    assert set(_outcomes(visa, "macaroni1", (4, 7))) == {0, 4}  # HFLIP only
    assert set(_outcomes(visa, "pcb1", (4, 7), draws=50)) == {0}


def test_right_angle_rotation_is_uniform() -> None:
    torch.manual_seed(0)
    image, mask = _sample(5, 7)
    rotation = RandomRightAngleRotation()
    counts = [0, 0, 0, 0]
    for _ in range(800):
        out_image, out_mask = rotation(image, mask)
        turns = next(k for k in range(4) if torch.equal(torch.rot90(image, k, (-2, -1)), out_image))
        assert torch.equal(torch.rot90(mask, turns, (-2, -1)), out_mask)
        counts[turns] += 1
    assert all(150 < count < 250 for count in counts), counts


def test_category_augmentation_needs_the_category() -> None:
    image, mask = _sample()
    with pytest.raises(TypeError, match="category"):
        mvtec_paper_augmentation()(image, mask)


def test_paper_augmentation_switch(tmp_path: Path) -> None:
    assert isinstance(UnifiedMVTecAD(root=tmp_path).train_augmentations, CategoryAugmentation)
    assert isinstance(UnifiedVisa(root=tmp_path).train_augmentations, CategoryAugmentation)
    assert UnifiedMVTecAD(root=tmp_path, paper_augmentations=False).train_augmentations is None
    assert UnifiedVisa(root=tmp_path, paper_augmentations=False).train_augmentations is None
    user = Resize((32, 32))
    combined = UnifiedMVTecAD(root=tmp_path, train_augmentations=user).train_augmentations
    assert isinstance(combined, Compose)
    assert isinstance(combined.transforms[0], CategoryAugmentation)
    assert combined.transforms[1] is user
    assert UnifiedMVTecAD(root=tmp_path).val_augmentations is None


def test_per_category_augmentation_inside_the_dataset(demo_root: Path) -> None:
    """Train augmentation as anomalib installs it (+ the model's Resize): only 'brick' is turned/flipped."""
    augmentation = CategoryAugmentation.from_lists(hflip=["brick"], vflip=["brick"], rotate=["brick"])
    datamodule = UnifiedFolder(root=demo_root, train_augmentations=augmentation, num_workers=0)
    datamodule.setup()
    plain = UnifiedDataset(demo_root, DEMO_CATEGORIES, "test")
    augmented = UnifiedDataset(demo_root, DEMO_CATEGORIES, "test")
    AnomalibDataModule._update_subset_augmentations(augmented, datamodule.train_augmentations, Resize((128, 128)))
    assert isinstance(augmented.augmentations, Compose)

    torch.manual_seed(0)
    resize = Resize((128, 128))
    moved = dict.fromkeys(DEMO_CATEGORIES, 0)
    for index in range(0, len(plain), 2):
        raw, out = plain[index], augmented[index]
        category = augmented.samples.category[index]
        # anomalib order: augmentation first, then the model's resize. Find the flip/turn on the resized image
        # (equal up to rounding), then check it exactly in anomalib's order.
        variant = next(
            v for v, image in enumerate(_dihedral(resize(raw.image))) if torch.allclose(image, out.image, atol=1e-4)
        )
        assert torch.equal(resize(_dihedral(raw.image)[variant]), out.image)
        assert category == "brick" or variant == 0
        assert torch.equal(resize(_dihedral(raw.gt_mask)[variant]), out.gt_mask)
        moved[category] += variant != 0
    assert moved["brick"] > 6  # of 13; P(moved) = 0.855
    assert moved["grass"] == moved["gravel"] == 0

    datamodule_item = datamodule.train_data[0]  # the datamodule installed the augmentation on train only
    assert datamodule.train_data.augmentations is augmentation
    assert datamodule.test_data.augmentations is None
    assert datamodule_item.image.shape == (3, 256, 256)


# -------------------------------------------------------------------------------------------- visualizer


def test_visualizer_keeps_same_named_files_of_different_categories(tmp_path: Path, demo_root: Path) -> None:
    paths = [str(demo_root / category / "test/good/000.png") for category in ("brick", "grass")]
    batch = ImageBatch(
        image=torch.rand(2, 3, 32, 32),
        gt_mask=torch.zeros(2, 32, 32, dtype=torch.bool),
        anomaly_map=torch.rand(2, 32, 32),
        pred_score=torch.rand(2),
        pred_mask=torch.zeros(2, 32, 32, dtype=torch.bool),
        image_path=[*paths],
    )
    trainer = Trainer(default_root_dir=tmp_path / "run", logger=False, enable_checkpointing=False)
    UnifiedImageVisualizer().on_test_batch_end(trainer, None, batch, batch, 0)
    written = sorted(path.relative_to(tmp_path / "run/images") for path in (tmp_path / "run/images").rglob("*.png"))
    assert written == [Path("brick/good/000.png"), Path("grass/good/000.png")]
    assert not filecmp.cmp(tmp_path / "run/images" / written[0], tmp_path / "run/images" / written[1], shallow=False)

    anomalib_dir = tmp_path / "anomalib"  # the problem being fixed: anomalib keeps one of the two
    ImageVisualizer(output_dir=anomalib_dir).on_test_batch_end(trainer, None, batch, batch, 0)
    assert [path.relative_to(anomalib_dir) for path in anomalib_dir.rglob("*.png")] == [Path("good/000.png")]

    outside = tmp_path / "plain/folder/img.png"  # not MVTec layout: saved like anomalib does
    _write(outside, np.zeros((32, 32, 3), dtype=np.uint8))
    single = ImageBatch(image=torch.rand(1, 3, 32, 32), anomaly_map=torch.rand(1, 32, 32), image_path=[str(outside)])
    UnifiedImageVisualizer(output_dir=tmp_path / "out").on_test_batch_end(trainer, None, single, single, 0)
    assert (tmp_path / "out/folder/img.png").is_file()
