"""The working resolution, read from the data when a run starts (``image_size: auto``; :mod:`..resolution`)."""

from __future__ import annotations

import logging

from lightning.pytorch import Callback, LightningModule, Trainer

from ..resolution import data_image_sizes, distorted_images, resolution_advice

logger = logging.getLogger(__name__)


class WorkingResolutionFromData(Callback):
    """Once per model: resolve ``image_size="auto"`` from the data, or warn where the resolution erases detail.

    The first trainer with a data module that sets the model up reads the image headers of the module's
    samples (no decoding) into ``UniAS.data_sizes``.  Like anomalib's ``TilerConfigurationCallback`` it sets
    the model's tiling; it also sets the pre-processor's resize and the stored hyperparameters, so that the
    checkpoint rebuilds the model that was trained.  It warns, naming files, where the resize distorts images.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Read the data's image sizes and work at the resolution they call for (runs before ``UniAS.setup``)."""
        datamodule = getattr(trainer, "datamodule", None)
        if pl_module.data_sizes is not None or datamodule is None:
            return
        paths, sizes = data_image_sizes(datamodule)
        pl_module.data_sizes = sizes
        model = pl_module.model
        if model.resolution.auto:
            resolution = model.resolution.resolve(sizes)
            pl_module.hparams["image_size"], pl_module.hparams["train_tiles"] = (
                list(resolution.size),
                resolution.train_tiles,
            )
            model.use_resolution(resolution)
            logger.info(resolution.describe(sizes))
            if resolution.tiled:  # else the plain resize to input_size keeps the detail: no tiling
                pl_module.pre_processor.resize_to(resolution.size)  # UniAS's own: "auto" refuses a custom one
                # anomalib copied the pre-processor's old resize into the datasets' augmentations; copy the new one.
                datamodule.setup(stage)
        elif advice := resolution_advice(sizes, model.resolution.size, model.resolution.input_size):
            logger.warning(advice)
        if sizes and (distorted := distorted_images(paths, sizes, model.image_size)):
            logger.warning("UniAS: %s", distorted)
