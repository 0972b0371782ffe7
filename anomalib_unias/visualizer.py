"""Visualizer for unified (multi-category) runs (docs/design.md §7, unified training).

anomalib's ``ImageVisualizer`` saves to ``images/<defect>/<file>`` when the datamodule's name does not
occur in the image path; in a unified run every category has e.g. ``test/good/000.png``, so the categories
overwrite each other. :class:`UnifiedImageVisualizer` saves to ``images/<category>/<defect>/<file>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer

from .layout import category_of

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from anomalib.models import AnomalibModule
    from lightning.pytorch import Trainer


class UnifiedImageVisualizer(ImageVisualizer):
    """anomalib's ``ImageVisualizer`` writing ``<output_dir>/<category>/<defect>/<file>``.

    The category is ``category_of(image_path)``. Paths outside the MVTec layout (e.g. a predict run on a
    plain folder) are saved as anomalib does, to ``<output_dir>/<parent folder>/<file>``. Arguments are
    those of ``ImageVisualizer``; ``output_dir`` defaults to ``<trainer.default_root_dir>/images``.
    """

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
            image = self.visualize(item)
            if image is None:
                continue
            image_path = item.image_path or ""
            try:
                output_dir = Path(self.output_dir) / category_of(image_path)
            except ValueError:
                output_dir = Path(self.output_dir)
            image.save(generate_output_filename(input_path=image_path, output_path=output_dir))
