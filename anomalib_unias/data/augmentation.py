"""The paper's per-category training augmentations (docs/design.md §7).

UniAS trains one model on all categories, but flips and rotations are only applied to the categories where
they keep an image normal (a flipped transistor or a rotated metal nut can look like a defect). The
reference recipe, docs/design.md §7:

* HFLIP with probability 0.3, VFLIP with probability 0.3,
* ROTATE by an angle drawn uniformly from {0, 90, 180, 270} (always drawn, so 75 % of the images rotate),
* the mask follows the same flip/rotation,
* per-category lists for MVTec AD and VisA (below). The reference spells ``hazel_nut``, which matches no
  MVTec category, so hazelnut is never augmented there; these lists use the real name ``hazelnut``.

anomalib applies ``train_augmentations`` per sample inside ``AnomalibDataset.__getitem__`` as
``augmentations(image, mask)``, which carries no category. :class:`CategoryAugmentation` therefore takes the
category as an extra ``str`` input, ``augmentations(image, mask, category)``;
:class:`~anomalib_unias.data.dataset.UnifiedDataset` passes it. Every torchvision-v2 transform passes
``str`` inputs through unchanged, so a :class:`CategoryAugmentation` can sit anywhere in a ``Compose``
together with the ``Resize`` that anomalib appends from the model's pre-processor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import Compose, RandomHorizontalFlip, RandomVerticalFlip, Transform
from torchvision.transforms.v2.functional import is_pure_tensor

from ..errors import UniASUsageError

FLIP_PROBABILITY = 0.3
"""Probability of each of HFLIP and VFLIP (docs/design.md §7)."""

MVTEC_HFLIP = ("bottle", "carpet", "grid", "hazelnut", "metal_nut", "pill", "screw", "tile", "wood", "zipper")
MVTEC_VFLIP = MVTEC_HFLIP
MVTEC_ROTATE = ("bottle", "carpet", "hazelnut", "screw", "tile", "wood")

VISA_HFLIP = ("candle", "macaroni2", "capsules", "chewinggum", "fryum", "macaroni1", "pipe_fryum")
VISA_VFLIP = ("macaroni2", "capsules", "chewinggum", "fryum", "pipe_fryum")
VISA_ROTATE = ("macaroni2", "capsules", "fryum")


class RandomRightAngleRotation(Transform):
    """Rotate images and masks by k * 90 degrees, k drawn uniformly from {0, 1, 2, 3} (docs/design.md §7, ROTATE).

    The rotation is exact (``torch.rot90``, no interpolation) and the same k is used for every input of one
    call, so a mask stays aligned with its image. Non-square inputs swap height and width.
    """

    _transformed_types = (tv_tensors.Image, tv_tensors.Video, tv_tensors.Mask, is_pure_tensor)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw the number of quarter turns."""
        del flat_inputs
        return {"quarter_turns": int(torch.randint(4, ()).item())}

    def transform(self, inpt: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Rotate the last two (height, width) dimensions."""
        quarter_turns = params["quarter_turns"]
        if quarter_turns == 0:
            return inpt
        rotated = torch.rot90(inpt.as_subclass(torch.Tensor), quarter_turns, dims=(-2, -1))
        return tv_tensors.wrap(rotated, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else rotated


class CategoryAugmentation(Transform):
    """Apply a different augmentation to each category; categories without one pass through unchanged.

    Call it as ``transform(image, mask, category)``: exactly one input must be the category ``str``; the
    category's transform is applied jointly to all other inputs, and the outputs keep the input order.

    Args:
        transforms: category name -> transform applied to that category's samples.
    """

    def __init__(self, transforms: Mapping[str, Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleDict(dict(transforms))

    @classmethod
    def from_lists(
        cls,
        hflip: Iterable[str],
        vflip: Iterable[str],
        rotate: Iterable[str],
        flip_probability: float = FLIP_PROBABILITY,
    ) -> CategoryAugmentation:
        """Build the reference recipe: HFLIP, then VFLIP, then ROTATE, each only for the listed categories."""
        hflip, vflip, rotate = set(hflip), set(vflip), set(rotate)
        transforms = {}
        for category in sorted(hflip | vflip | rotate):
            steps: list[Transform] = []
            if category in hflip:
                steps.append(RandomHorizontalFlip(flip_probability))
            if category in vflip:
                steps.append(RandomVerticalFlip(flip_probability))
            if category in rotate:
                steps.append(RandomRightAngleRotation())
            transforms[category] = Compose(steps)
        return cls(transforms)

    def forward(self, *inputs: Any) -> Any:
        """Apply the transform of the sample's category to the non-``str`` inputs."""
        categories = [inpt for inpt in inputs if isinstance(inpt, str)]
        if len(categories) != 1:
            msg = (
                "CategoryAugmentation needs the sample's category as exactly one str input, e.g. "
                f"transform(image, mask, 'bottle'); got {len(categories)} str inputs. Use it as train_augmentations "
                "of a Unified* datamodule (their datasets pass the category)."
            )
            raise UniASUsageError(msg)
        if categories[0] not in self.transforms:
            return inputs if len(inputs) > 1 else inputs[0]
        tensors = [inpt for inpt in inputs if not isinstance(inpt, str)]
        transformed = self.transforms[categories[0]](*tensors)
        outputs = iter(transformed if len(tensors) > 1 else (transformed,))
        return tuple(inpt if isinstance(inpt, str) else next(outputs) for inpt in inputs)


def mvtec_paper_augmentation() -> CategoryAugmentation:
    """Build the paper's MVTec AD train augmentation (docs/design.md §7), with ``hazelnut`` spelled correctly."""
    return CategoryAugmentation.from_lists(MVTEC_HFLIP, MVTEC_VFLIP, MVTEC_ROTATE)


def visa_paper_augmentation() -> CategoryAugmentation:
    """Build the paper's VisA train augmentation (docs/design.md §7)."""
    return CategoryAugmentation.from_lists(VISA_HFLIP, VISA_VFLIP, VISA_ROTATE)
