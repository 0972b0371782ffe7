"""Visualizer for unified (multi-category) runs (docs/design.md §7, unified training).

anomalib's ``ImageVisualizer`` saves to ``images/<defect>/<file>`` when the datamodule's name does not
occur in the image path; in a unified run every category has e.g. ``test/good/000.png``, so the categories
overwrite each other. :class:`UnifiedImageVisualizer` saves to ``images/<category>/<defect>/<file>``.
It also draws every field (image, mask, map) with the image's own aspect ratio: anomalib resizes each
to a 256 x 256 square, which turns a 4096 x 256 strip or a 500 x 1258 part into an unreadable square.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.item_visualizer import visualize_image_item
from PIL import Image

from .layout import category_of

MIN_FIELD_SIDE = 128
MAX_FIELD_SIDE = 2048


def aspect_field_size(image_size: tuple[int, int], area: int) -> tuple[int, int]:
    """``(width, height)`` of a field with the aspect ratio of ``image_size`` (W, H) and about ``area`` pixels.

    The shorter side is at least :data:`MIN_FIELD_SIDE` and the longer at most :data:`MAX_FIELD_SIDE`
    (unless the ratio itself exceeds their quotient), so strips stay readable along their short side.
    """
    width, height = image_size
    scale = (area / (width * height)) ** 0.5
    scale = max(scale, MIN_FIELD_SIDE / min(width, height))
    scale = min(scale, max(MAX_FIELD_SIDE / max(width, height), MIN_FIELD_SIDE / min(width, height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


if TYPE_CHECKING:
    from anomalib.data import ImageBatch, ImageItem
    from anomalib.models import AnomalibModule
    from lightning.pytorch import Trainer


class UnifiedImageVisualizer(ImageVisualizer):
    """anomalib's ``ImageVisualizer`` writing ``<output_dir>/<category>/<defect>/<file>``.

    The category is ``category_of(image_path)``. Paths outside the MVTec layout (e.g. a predict run on a
    plain folder) are saved as anomalib does, to ``<output_dir>/<parent folder>/<file>``. Arguments are
    those of ``ImageVisualizer``; ``output_dir`` defaults to ``<trainer.default_root_dir>/images``.
    ``field_size`` gives each field's area; its shape follows the image (:func:`aspect_field_size`).
    """

    def visualize_item(self, item: ImageItem) -> Image.Image | None:
        """Anomalib's picture of one item, each field with the aspect ratio of the item's image file."""
        if item.image_path:
            with Image.open(item.image_path) as image:
                size = image.size
        else:
            size = tuple(item.image.shape[-1:-3:-1])
        return visualize_image_item(
            item,
            fields=self.fields,
            overlay_fields=self.overlay_fields,
            field_size=aspect_field_size(size, self.field_size[0] * self.field_size[1]),
            fields_config=self.fields_config,
            overlay_fields_config=self.overlay_fields_config,
            text_config=self.text_config,
        )

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: AnomalibModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save one visualisation per item of the batch, in a folder per category."""
        del pl_module, outputs, batch_idx, dataloader_idx  # Unused arguments.
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        for item in batch:
            image = self.visualize_item(item)
            if image is None:
                continue
            image_path = item.image_path or ""
            try:
                output_dir = Path(self.output_dir) / category_of(image_path)
            except ValueError:
                output_dir = Path(self.output_dir)
            image.save(generate_output_filename(input_path=image_path, output_path=output_dir))
