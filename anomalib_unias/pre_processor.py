"""UniAS's pre-processor: a resize to the working resolution without antialiasing, then the backbone's statistics.

The resize is not antialiased: the exported graph's resize cannot be (ONNX/OpenVINO), and the same resize in
training, ``anomalib test`` and deployment keeps exported scores equal to the checkpoint's.  anomalib applies
the same resize to the ground-truth masks, so metrics are computed at model resolution as in the paper
(docs/design.md §8).
"""

from __future__ import annotations

from collections.abc import Sequence

from anomalib.pre_processing import PreProcessor
from anomalib.pre_processing.utils.transform import get_exportable_transform
from torchvision.transforms.v2 import Compose, Normalize, Resize

from .backbone import IMAGENET_MEAN, IMAGENET_STD


class UniASPreProcessor(PreProcessor):
    """Anomalib's ``PreProcessor`` resizing to ``image_size`` (no antialias) and normalising with ``mean``/``std``.

    Args:
        image_size: The working resolution ``(H, W)`` (paper: 224 x 224).
        mean: RGB mean of the backbone's weights (ImageNet's for the paper's B4).
        std: RGB standard deviation, as ``mean``.
    """

    def __init__(
        self,
        image_size: Sequence[int] = (224, 224),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        super().__init__(transform=self._transform(image_size))

    def _transform(self, image_size: Sequence[int]) -> Compose:
        return Compose([Resize(list(image_size), antialias=False), Normalize(mean=self.mean, std=self.std)])

    def resize_to(self, image_size: Sequence[int]) -> None:
        """Resize to ``image_size`` from now on, in training, evaluation and the exported graph.

        anomalib copies a pre-processor's transform into the datasets it sets up; set them up again after this.
        """
        self.transform = self._transform(image_size)
        self.export_transform = get_exportable_transform(self.transform)
