"""Unified (multi-category) anomalib data modules (UniAS paper Sec. 4.1; docs/design.md §7).

UniAS trains ONE model on all categories of a dataset shuffled together and evaluates it per category
(MVTec AD: 3,629 train images of 15 classes; VisA: 8,659 of 12). anomalib 2.7 data modules take a single
``category``; the modules here serve several categories of an MVTec-layout root
(:mod:`anomalib_unias.layout`) at once.  Each sample keeps its path, so its category is
``category_of(image_path)``; the samples table also has a ``category`` column.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from anomalib.data import MVTecAD, Visa
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.datamodules.image.mvtecad import DOWNLOAD_INFO as MVTEC_DOWNLOAD_INFO
from anomalib.data.datamodules.image.visa import DOWNLOAD_INFO as VISA_DOWNLOAD_INFO
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.datasets.image.visa import CATEGORIES as VISA_CATEGORIES
from anomalib.data.datasets.image.visa import EXTENSIONS as VISA_EXTENSIONS
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from anomalib.utils.path import resolve_dataset_root
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms.v2 import Compose, Transform

from ..errors import UniASArgumentError, UniASFileNotFoundError, UniASRuntimeError
from ..layout import IMAGE_EXTENSIONS
from .augmentation import mvtec_paper_augmentation, visa_paper_augmentation
from .dataset import UnifiedDataset
from .reading import check_samples
from .samples import discover_categories

logger = logging.getLogger(__name__)


class UnifiedFolder(AnomalibDataModule):
    """All categories of any MVTec-layout root in ONE train set and ONE test set (unified setting, docs/design.md §7).

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
            raise UniASFileNotFoundError(msg)

    def val_dataloader(self) -> DataLoader:
        """Anomalib's validation loader; multi-process runs see every sample once (no padding)."""
        return _evaluation_loader(
            self.val_data, self.eval_batch_size, self.num_workers, self.external_collate_fn or self.val_data.collate_fn
        )

    def test_dataloader(self) -> DataLoader:
        """Anomalib's test loader; multi-process runs see every sample once (no padding)."""
        return _evaluation_loader(
            self.test_data,
            self.eval_batch_size,
            self.num_workers,
            self.external_collate_fn or self.test_data.collate_fn,
        )

    def _setup(self, _stage: str | None = None) -> None:
        categories = self.categories
        root, extensions, resize_masks = self.data_root, self.extensions, self.resize_masks
        self.train_data = UnifiedDataset(root, categories, Split.TRAIN, extensions, resize_masks=resize_masks)
        self.test_data = UnifiedDataset(root, categories, Split.TEST, extensions, resize_masks=resize_masks)
        if self.check_files:
            rows = [
                (row.image_path, row.mask_path)
                for data in (self.train_data, self.test_data)
                for row in data.samples.itertuples()
            ]
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
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn
    )


def _with_paper_augmentation(augmentation: Transform, train_augmentations: Transform | None) -> Transform:
    """Run the paper's per-category flips/rotation first, then the user's train augmentations."""
    return Compose([augmentation, train_augmentations]) if train_augmentations else augmentation


class UnifiedMVTecAD(UnifiedFolder):
    """MVTec AD, all 15 categories (or a subset) in one train and one test set (docs/design.md §7).

    Missing categories are downloaded with anomalib's own MVTecAD download (whole archive) when the network
    is reachable; offline, a clear error says where to put the data.

    Args:
        root: folder holding the category folders. ``None`` = anomalib's datasets dir ``/MVTecAD``.
        categories: subset of anomalib's 15 MVTec AD categories; ``None`` = all.
        paper_augmentations: prepend the paper's per-category HFLIP/VFLIP/ROTATE (docs/design.md §7, with
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
    """VisA, all 12 categories (or a subset) in one train and one test set, standard "1cls" split (docs/design.md §7).

    Uses anomalib's ``Visa`` preparation: download when the raw data is missing, then the 1cls split into
    ``<root>/visa_pytorch/<category>/{train,test,ground_truth}`` (defect folder ``bad``).

    Args:
        root: folder holding the raw VisA data and ``visa_pytorch``. ``None`` = anomalib's datasets dir ``/visa``.
        categories: subset of anomalib's 12 VisA categories; ``None`` = all.
        paper_augmentations: prepend the paper's per-category VisA HFLIP/VFLIP/ROTATE (docs/design.md §7).
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
        raise UniASArgumentError(msg)
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
        raise UniASRuntimeError(msg) from error
    if still_missing := datamodule.missing_categories():
        msg = f"{datamodule.name}: categories {still_missing} are still missing in {datamodule.data_root}."
        raise UniASFileNotFoundError(msg)
