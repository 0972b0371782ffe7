"""Unified (multi-category) anomalib data modules (UniAS spec sections 7 and 12).

UniAS trains ONE model on all categories of a dataset shuffled together and evaluates it per category
(spec section 7: 3,629 MVTec AD train images of 15 classes; VisA 8,659 of 12). anomalib 2.7 data modules
take a single ``category``; the modules here serve several categories of an MVTec-layout root at once::

    <root>/<category>/train/good/<file>
    <root>/<category>/test/<good|defect>/<file>
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png   (or <stem>.png)

Each sample keeps its path, so its category is ``category_of(image_path)``; the samples table also has a
``category`` column. Masks are paired with defective images by file stem (anomalib pairs them by sorted
position), and every image extension in ``extensions`` is read (anomalib's MVTecAD reads only PNG).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from anomalib.data import MVTecAD, Visa
from anomalib.data.dataclasses import ImageItem
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.datamodules.image.mvtecad import DOWNLOAD_INFO as MVTEC_DOWNLOAD_INFO
from anomalib.data.datamodules.image.visa import DOWNLOAD_INFO as VISA_DOWNLOAD_INFO
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.datasets.image.visa import CATEGORIES as VISA_CATEGORIES
from anomalib.data.datasets.image.visa import EXTENSIONS as VISA_EXTENSIONS
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode, validate_path
from anomalib.utils.path import resolve_dataset_root
from pandas import DataFrame
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms.v2 import Compose, Transform
from torchvision.tv_tensors import Mask

from .augmentation import mvtec_paper_augmentation, visa_paper_augmentation
from .category import SPLIT_FOLDERS
from .reading import check_samples, read_image, read_mask

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Image file extensions read by :class:`UnifiedFolder` (compared case-insensitively)."""

NORMAL_FOLDER = "good"
MASK_FOLDER = "ground_truth"
MASK_SUFFIX = "_mask"


def make_unified_samples(
    root: str | Path,
    categories: Sequence[str],
    split: str | Split,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> DataFrame:
    """Build anomalib's samples table for several categories of an MVTec-layout root.

    The columns are those of anomalib's ``make_mvtec_ad_dataset`` (``path, split, label, image_path,
    mask_path, label_index``) plus ``category``; ``mask_path`` is ``""`` for normal images, as in anomalib's
    ``make_folder_dataset`` (``None`` would turn into NaN when pandas concatenates the splits).
    The train split reads ``train/good``; the test split reads every ``test/<label>`` folder, and each
    defective image gets the mask of the same stem in ``ground_truth/<label>/`` (``<stem>_mask.<ext>``
    preferred, else ``<stem>.<ext>``).

    Raises:
        FileNotFoundError: a category folder is missing, or a defective image has no mask.
        RuntimeError: a category has no image of ``extensions`` in the split.
    """
    root = validate_path(root)
    split = Split(split)
    extensions = tuple(extension.lower() for extension in extensions)
    rows = []
    for category in categories:
        category_root = root / category
        if not category_root.is_dir():
            msg = f"Category folder {category_root} does not exist (categories: {list(categories)})."
            raise FileNotFoundError(msg)
        image_folders = (
            [category_root / "train" / NORMAL_FOLDER]
            if split == Split.TRAIN
            else sorted(path for path in (category_root / "test").glob("*") if path.is_dir())
        )
        images = [
            path
            for folder in image_folders
            for path in sorted(folder.glob("*"))
            if path.is_file() and path.suffix.lower() in extensions
        ]
        if not images:
            folders = ", ".join(str(folder) for folder in image_folders) or str(category_root / "test")
            msg = f"Found no {split.value} images with extensions {extensions} in {folders}."
            raise RuntimeError(msg)
        for image_path in images:
            label = image_path.parent.name
            is_normal = label == NORMAL_FOLDER
            mask_path = "" if is_normal else str(_find_mask(image_path, category_root, extensions))
            rows.append(
                (
                    str(category_root),
                    split.value,
                    label,
                    str(image_path),
                    mask_path,
                    LabelName.NORMAL if is_normal else LabelName.ABNORMAL,
                    category,
                ),
            )
    samples = DataFrame(
        rows,
        columns=["path", "split", "label", "image_path", "mask_path", "label_index", "category"],
    )
    samples.label_index = samples.label_index.astype(int)
    samples.attrs["task"] = "segmentation"
    return samples


def _find_mask(image_path: Path, category_root: Path, extensions: Sequence[str]) -> Path:
    """Return the ground-truth mask of a defective test image, paired by file stem."""
    mask_folder = category_root / MASK_FOLDER / image_path.parent.name
    for stem in (image_path.stem + MASK_SUFFIX, image_path.stem):
        for candidate in sorted(mask_folder.glob(f"{stem}.*")):
            if candidate.suffix.lower() in extensions:
                return candidate
    msg = (
        f"The defective test image {image_path} has no ground-truth mask: expected "
        f"{mask_folder / (image_path.stem + MASK_SUFFIX)}.png (or {image_path.stem}.png; any of {tuple(extensions)}). "
        f"Add the mask there (0 = normal, >0 = defect), or move the image out of {image_path.parent}."
    )
    raise FileNotFoundError(msg)


def discover_categories(root: str | Path) -> list[str]:
    """Return the sorted sub-folders of ``root`` that contain a ``train`` or ``test`` folder.

    Raises:
        FileNotFoundError: ``root`` is missing, or it holds no category folder.
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"Dataset root {root} does not exist."
        raise FileNotFoundError(msg)
    categories = sorted(path.name for path in root.iterdir() if (path / "train").is_dir() or (path / "test").is_dir())
    if not categories:
        hint = (
            f" {root} itself looks like ONE category folder: pass its parent {root.parent} as root."
            if any((root / folder).is_dir() for folder in SPLIT_FOLDERS)
            else ""
        )
        msg = f"No category folders (<category>/train, <category>/test) found in {root}.{hint}"
        raise FileNotFoundError(msg)
    return categories


class UnifiedDataset(AnomalibDataset):
    """anomalib dataset over several categories of an MVTec-layout root (one split).

    Images and masks are read by :mod:`anomalib_unias.data.reading` (8-bit files exactly as anomalib
    reads them; 16-bit and float files scaled by their depth; masks binarised by one documented rule;
    errors name the file), into anomalib's ``ImageItem``.  Unlike ``AnomalibDataset.__getitem__``, the
    augmentations are called as
    ``augmentations(image, mask, category)``, so a
    :class:`~anomalib_unias.data.augmentation.CategoryAugmentation` can pick the transform of the sample's
    category (spec section 7); other torchvision-v2 transforms pass the ``str`` through.

    Args:
        root: dataset root holding one folder per category.
        categories: category folder names.
        split: ``"train"`` or ``"test"``.
        extensions: image file extensions (case-insensitive).
        augmentations: transform called as ``augmentations(image, mask, category)``.
        resize_masks: resize a mask whose size differs from its image (nearest) instead of refusing it.
    """

    def __init__(
        self,
        root: str | Path,
        categories: Sequence[str],
        split: str | Split,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        augmentations: Transform | None = None,
        resize_masks: bool = False,
    ) -> None:
        super().__init__(augmentations=augmentations)
        self.root = Path(root)
        self.categories = list(categories)
        self.split = Split(split)
        self.resize_masks = resize_masks
        self.samples = make_unified_samples(self.root, self.categories, self.split, extensions)

    def __getitem__(self, index: int) -> ImageItem:
        """Read one sample and augment image and mask jointly, knowing the sample's category."""
        sample = self.samples.iloc[index]
        image = read_image(sample.image_path)
        if sample.label_index == LabelName.NORMAL:
            gt_mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
        else:
            gt_mask, _ = read_mask(sample.mask_path, tuple(image.shape[-2:]), self.resize_masks)
        if self.augmentations:
            image, gt_mask, _ = self.augmentations(image, gt_mask, sample.category)
        return ImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=torch.tensor(sample.label_index),
            image_path=sample.image_path,
            mask_path=sample.mask_path,
        )


class UnifiedFolder(AnomalibDataModule):
    """All categories of any MVTec-layout root in ONE train set and ONE test set (unified setting, spec §7).

    Args:
        root: dataset root holding one folder per category.
        categories: category folders to use; ``None`` = every sub-folder with a ``train`` or ``test`` folder.
        extensions: image file extensions, case-insensitive (JPG included, unlike anomalib's MVTecAD).
        train_batch_size, eval_batch_size, num_workers, train_augmentations, val_augmentations,
        test_augmentations, augmentations, test_split_mode, test_split_ratio, val_split_mode,
        val_split_ratio, seed: as in anomalib's ``MVTecAD`` (same defaults, ``val_split_mode`` =
        ``same_as_test``). The augmentations are called as ``augmentations(image, mask, category)``.
        check_files: decode every image and mask once at setup, before training, and refuse the data set
            with one error listing every unusable file (:func:`~anomalib_unias.data.reading.check_samples`).
        resize_masks: resize a mask whose size differs from its image (nearest neighbour) instead of
            refusing it.
    """

    def __init__(
        self,
        root: Path | str,
        categories: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        check_files: bool = True,
        resize_masks: bool = False,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        self.root = Path(root)
        self.requested_categories = list(categories) if categories is not None else None
        self.extensions = tuple(extensions)
        self.check_files = check_files
        self.resize_masks = resize_masks

    @property
    def data_root(self) -> Path:
        """Folder that holds the category folders."""
        return self.root

    @property
    def categories(self) -> list[str]:
        """The categories served: the requested ones, or all category folders found under :attr:`data_root`."""
        if self.requested_categories is not None:
            return self.requested_categories
        return discover_categories(self.data_root)

    def missing_categories(self) -> list[str]:
        """Categories whose folder does not exist (yet) under :attr:`data_root`."""
        return [category for category in self.categories if not (self.data_root / category).is_dir()]

    def prepare_data(self) -> None:
        """Check that every category folder exists (subclasses download or generate the data here)."""
        if missing := self.missing_categories():
            msg = f"Category folders {missing} not found in {self.data_root}."
            raise FileNotFoundError(msg)

    def val_dataloader(self) -> DataLoader:
        """Anomalib's validation loader; multi-process runs see every sample once (no padding)."""
        return _evaluation_loader(self.val_data, self.eval_batch_size, self.num_workers,
                                  self.external_collate_fn or self.val_data.collate_fn)

    def test_dataloader(self) -> DataLoader:
        """Anomalib's test loader; multi-process runs see every sample once (no padding)."""
        return _evaluation_loader(self.test_data, self.eval_batch_size, self.num_workers,
                                  self.external_collate_fn or self.test_data.collate_fn)

    def _setup(self, _stage: str | None = None) -> None:
        categories = self.categories
        root, extensions, resize_masks = self.data_root, self.extensions, self.resize_masks
        self.train_data = UnifiedDataset(root, categories, Split.TRAIN, extensions, resize_masks=resize_masks)
        self.test_data = UnifiedDataset(root, categories, Split.TEST, extensions, resize_masks=resize_masks)
        if self.check_files:
            rows = [(row.image_path, row.mask_path) for data in (self.train_data, self.test_data)
                    for row in data.samples.itertuples()]
            start = time.perf_counter()
            check_samples(rows, resize_masks=self.resize_masks)
            logger.info("Checked %d images and their masks in %.1f s.", len(rows), time.perf_counter() - start)


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sampler for multi-process runs: every sample exactly once over all processes.

    torch's ``DistributedSampler`` (what Lightning puts in otherwise) repeats samples so that every
    process gets as many; repeated test images would count twice in every metric.  Here process ``r``
    of ``n`` takes samples ``r, r + n, r + 2n, ...`` in order, and processes may get one sample fewer.
    """

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        """This process's indices, without padding."""
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        """Number of samples of this process."""
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def _evaluation_loader(dataset: Dataset, batch_size: int, num_workers: int, collate_fn: Callable) -> DataLoader:
    """A sequential evaluation loader; in a multi-process run, with :class:`UnpaddedDistributedSampler`."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    sampler = UnpaddedDistributedSampler(dataset) if distributed and torch.distributed.get_world_size() > 1 else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn)


def _with_paper_augmentation(augmentation: Transform, train_augmentations: Transform | None) -> Transform:
    """Run the paper's per-category flips/rotation first, then the user's train augmentations."""
    return Compose([augmentation, train_augmentations]) if train_augmentations else augmentation


class UnifiedMVTecAD(UnifiedFolder):
    """MVTec AD, all 15 categories (or a subset) in one train and one test set (spec section 7).

    Missing categories are downloaded with anomalib's own MVTecAD download (whole archive) when the network
    is reachable; offline, a clear error says where to put the data.

    Args:
        root: folder holding the category folders. ``None`` = anomalib's datasets dir ``/MVTecAD``.
        categories: subset of anomalib's 15 MVTec AD categories; ``None`` = all.
        paper_augmentations: prepend the paper's per-category HFLIP/VFLIP/ROTATE (spec section 7, with
            ``hazelnut`` spelled correctly) to the train augmentations.
        Other arguments: as :class:`UnifiedFolder` / anomalib's ``MVTecAD``.
    """

    def __init__(
        self,
        root: Path | str | None = "./datasets/MVTecAD",
        categories: Sequence[str] | None = None,
        paper_augmentations: bool = True,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        check_files: bool = True,
        resize_masks: bool = False,
    ) -> None:
        super().__init__(
            root=resolve_dataset_root(root, "MVTecAD"),
            categories=_checked(categories, MVTEC_CATEGORIES, "MVTec AD"),
            extensions=(".png",),
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
            check_files=check_files,
            resize_masks=resize_masks,
        )
        self.paper_augmentations = paper_augmentations
        if paper_augmentations:
            self.train_augmentations = _with_paper_augmentation(mvtec_paper_augmentation(), self.train_augmentations)

    def prepare_data(self) -> None:
        """Download MVTec AD with anomalib's ``MVTecAD.prepare_data`` if a category is missing."""
        if missing := self.missing_categories():
            _prepare_with_anomalib(
                self,
                MVTecAD(root=self.root, category=missing[0]),
                MVTEC_DOWNLOAD_INFO.url,
                "https://www.mvtec.com/company/research/datasets/mvtec-ad",
            )


class UnifiedVisa(UnifiedFolder):
    """VisA, all 12 categories (or a subset) in one train and one test set, standard "1cls" split (spec §7).

    Uses anomalib's ``Visa`` preparation: download when the raw data is missing, then the 1cls split into
    ``<root>/visa_pytorch/<category>/{train,test,ground_truth}`` (defect folder ``bad``).

    Args:
        root: folder holding the raw VisA data and ``visa_pytorch``. ``None`` = anomalib's datasets dir ``/visa``.
        categories: subset of anomalib's 12 VisA categories; ``None`` = all.
        paper_augmentations: prepend the paper's per-category VisA HFLIP/VFLIP/ROTATE (spec section 7).
        Other arguments: as :class:`UnifiedFolder` / anomalib's ``Visa``.
    """

    def __init__(
        self,
        root: Path | str | None = "./datasets/visa",
        categories: Sequence[str] | None = None,
        paper_augmentations: bool = True,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        check_files: bool = True,
        resize_masks: bool = False,
    ) -> None:
        super().__init__(
            root=resolve_dataset_root(root, "visa"),
            categories=_checked(categories, VISA_CATEGORIES, "VisA"),
            extensions=VISA_EXTENSIONS,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
            check_files=check_files,
            resize_masks=resize_masks,
        )
        self.paper_augmentations = paper_augmentations
        if paper_augmentations:
            self.train_augmentations = _with_paper_augmentation(visa_paper_augmentation(), self.train_augmentations)

    @property
    def data_root(self) -> Path:
        """Folder of anomalib's VisA split, ``<root>/visa_pytorch``."""
        return self.root / "visa_pytorch"

    def prepare_data(self) -> None:
        """Download and split VisA with anomalib's ``Visa.prepare_data`` if a category is missing."""
        if missing := self.missing_categories():
            _prepare_with_anomalib(
                self,
                Visa(root=self.root, category=missing[0]),
                VISA_DOWNLOAD_INFO.url,
                "https://github.com/amazon-science/spot-diff",
            )


def _checked(categories: Sequence[str] | None, known: Sequence[str], dataset: str) -> list[str]:
    """Return the requested categories (all when ``None``), refusing names the dataset does not have."""
    if categories is None:
        return list(known)
    if unknown := sorted(set(categories) - set(known)):
        msg = f"Unknown {dataset} categories {unknown}; known: {list(known)}."
        raise ValueError(msg)
    return list(categories)


def _prepare_with_anomalib(
    datamodule: UnifiedFolder, anomalib_module: AnomalibDataModule, url: str, homepage: str
) -> None:
    """Run anomalib's own download/preparation; turn a network failure into an error that says what to do.

    anomalib's single-category ``prepare_data`` fetches (and, for VisA, splits) the whole dataset.
    """
    missing = datamodule.missing_categories()
    logger.info("Categories %s not found in %s: preparing them with anomalib.", missing, datamodule.data_root)
    try:
        anomalib_module.prepare_data()
    except OSError as error:
        msg = (
            f"{datamodule.name}: categories {missing} are missing in {datamodule.data_root} and the download from "
            f"{url} failed ({error}). Without network access, get the dataset from {homepage}, extract it to "
            f"{datamodule.root}, or pass root= pointing at an existing copy."
        )
        raise RuntimeError(msg) from error
    if still_missing := datamodule.missing_categories():
        msg = f"{datamodule.name}: categories {still_missing} are still missing in {datamodule.data_root}."
        raise FileNotFoundError(msg)
