"""UniAS as an anomalib model ("Towards Accurate Unified Anomaly Segmentation", Ma et al., WACV 2025).

One class-agnostic model reconstructs the Gaussian-blurred multi-level features of a frozen
EfficientNet from their low-pass/high-pass split; the product of the per-level cosine-distance maps is
the anomaly map.  Train it on one category or, as the paper does, on all categories at once (see
:mod:`anomalib_unias.data`).

Paper: Ma et al., "Towards Accurate Unified Anomaly Segmentation", WACV 2025, https://arxiv.org/abs/2501.12295
(BibTeX in the README).  Reference implementation: https://github.com/Mwxinnn/UniAS (MIT licence); this
package re-implements it from the paper and our design notes (``docs/design.md``), without its code.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_unias import UniAS
    >>> from anomalib_unias.data import UniASDemo
    >>> engine = Engine(max_epochs=1)
    >>> engine.train(UniAS(backbone="tf_efficientnet_lite0"), datamodule=UniASDemo())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from anomalib import LearningType
from anomalib.data import Batch, InferenceBatch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT, OptimizerLRSchedulerConfig

from .architecture import Architecture, MapFusion
from .arguments import check_normalization
from .backbone import IMAGENET_MEAN, IMAGENET_STD, create_backbone
from .callbacks import CategoryTableLogger, EpochProgressLine, FusionChoice, LastCheckpoint, WorkingResolutionFromData
from .checkpointing import RNG_STATES_KEY, check_overrides, restore_rng_states, rng_states
from .components.optimizer import LearningRateSchedule, OptimizerRecipe, clip_gradient_norm
from .errors import UniASArgumentError, refuse
from .export import INT8_VARIANTS, Int8Variant, UniASExportMixin
from .fusion_selection import restore_fusion, upgrade_signed_z_scores
from .metrics import unias_evaluator
from .post_processor import UniASPostProcessor
from .pre_processor import UniASPreProcessor
from .resolution import TrainTilePositions, WorkingResolution
from .thresholds import CategoryThresholds
from .torch_model import UniASModel
from .visualizer import UnifiedImageVisualizer

logger = logging.getLogger(__name__)


class UniAS(UniASExportMixin, AnomalibModule):
    """UniAS: unified anomaly segmentation by multi-level hybrid feature reconstruction.

    Args:
        backbone: timm CNN tapped at strides 2, 4, 8 and 16 (paper: ``tf_efficientnet_b4``).  The
            ``tf_efficientnet_lite0/1/2`` ImageNet weights ship with this package and work offline.
        pre_trained: Load ImageNet weights for the backbone.
        weights: Optional local backbone weights file (overrides the download).
        input_size: Model input (H, W), multiples of 16 (paper: 224 x 224); the query grid is
            input_size / 16.  With tiling (``image_size`` larger), the tile.
        image_size: Working resolution (H, W) the pre-processor resizes images to; ``None`` = ``input_size``.
            Larger: cut into ``input_size`` tiles whose maps are blended into the full map (anomalib's ``Tiler``).
            ``"auto"``: read from the data when a run starts (:mod:`~anomalib_unias.resolution`).  Not in the paper.
        tile_stride: Stride (H, W) between tiles, which must cover ``image_size``; ``None`` = ``input_size``.
        train_tiles: Training tiles per image per step, drawn at random; ``None`` = every grid tile.
        train_tile_positions: Where those tiles are cut: ``"anywhere"`` in the image, or ``"grid"``: only the
            tiles test and predict cut.  Not in the paper (it has no tiles).
        input_mean: RGB mean the pre-processor normalises with; ``None`` = the backbone weights' own (timm's
            ``pretrained_cfg``: ImageNet's for B4, 0.5 for EfficientNet-Lite), stored in the checkpoint.
        input_std: RGB standard deviation, as ``input_mean``.
        pixel_dim: Pixel-decoder width (paper: 256).
        hidden_dim: Query width (paper: 256).
        num_heads: Attention heads (paper: 4).
        ffn_dim: FFN width (paper: 2048).
        num_encoder_layers: Pixel-decoder transformer encoder depth (paper: 3).
        neighbour_size: Side of the neighbourhood each query may not attend to (paper: 7).
        levels: Backbone strides of the levels reconstructed, coarsest first (paper: ``[16, 8, 4, 2]``); fewer
            levels cost less per step (the reference configures its tapped levels).
        dropout: Transformer dropout (paper: 0.1).
        jitter_scale: Feature-jitter scale (paper: 20).
        jitter_prob: Per-level feature-jitter probability (paper: 0.5).
        loss_weight: Reconstruction loss weight (paper: 10 on MVTec AD, 1 on VisA).
        legacy_cos_sign: Add ``+cos`` to the loss as the reference code does, instead of the paper's
            cosine distance ``1 - cos``.
        map_fusion: How the level maps are fused: ``"product"`` (paper), ``"mean"`` (Dinomaly, CVPR 2025) or
            ``"auto"``: the best on the validation split (:mod:`~anomalib_unias.fusion_selection`).  Not in the paper.
        map_strides: Backbone strides of the levels fused into the map, e.g. ``[16, 8]``; ``None`` = all
            (paper), or chosen by ``map_fusion="auto"``.  Read at evaluation only.  Not in the paper.
        map_normal_readings: How ``map_fusion="auto"`` also reads each candidate against the category's normal
            maps: ``["z-score"]`` (default), ``["z-score", "ratio"]`` (also divided by the normal mean), or ``[]``
            (the maps as they are only).  Not in the paper.
        hard_mining: ``None`` = the paper's loss; a share ``p`` (Dinomaly: 0.9) = Dinomaly's loose loss with hard
            mining (:mod:`~anomalib_unias.loss`).  Not in the paper.
        hard_mining_warmup: Training steps over which the hard-mining share ramps up (Dinomaly: 1000).
        learning_rate: AdamW learning rate (paper: 1e-4).
        weight_decay: AdamW weight decay on every trainable parameter (paper: 1e-4).
        betas: AdamW's moment decay rates (paper: (0.9, 0.999)).  RD4AD trains with (0.5, 0.999), InvAD with
            (0, 0.99) (:mod:`~anomalib_unias.components.optimizer`).
        lr_schedule: ``"step"`` = the paper's StepLR per epoch; ``"cosine"`` = linear warm-up over
            ``warmup_fraction`` of the steps, then cosine decay per batch (for short budgets).  Not in the paper.
        lr_step_epochs: StepLR period in epochs (paper: 400).
        lr_gamma: StepLR factor (paper: 0.1).
        warmup_fraction: Share of the training steps spent warming up with ``lr_schedule="cosine"``.
        lr_floor: Where the cosine decay ends, as a share of ``learning_rate`` (0: at 0; Dinomaly, CVPR 2025:
            2e-3 to 2e-4, i.e. 0.1).  Not in the paper.
        max_epochs: Leave ``None`` and set the trainer's; set it only where no trainer section exists
            (``anomalib benchmark`` configs): it then overrides the trainer's value.
        int8_variant: What ``anomalib export --compression_type INT8_PTQ`` quantises
            (:data:`~anomalib_unias.export.INT8_VARIANTS`): ``"head-int8"`` only the trained head (the backbone's
            taps are the reconstruction targets: in INT8 they cost 3.86 pAP on MTD,
            ``benchmarks/results/deployed_accuracy_mtd/int8_accuracy.md``); ``"anomalib"``: NNCF's defaults.
        thresholds: A ``thresholds.json`` (:mod:`~anomalib_unias.thresholds`; written by export, editable) to
            label with instead of the fitted thresholds, also over a checkpoint's; no retraining.
        category: The category of test/predict images whose path names none, for the per-category thresholds;
            ``None``: such images use the global ones.
        pre_processor: Pre-processor, or ``True`` for resize to ``input_size`` + normalisation with
            ``input_mean``/``input_std``.
        post_processor: Post-processor, or ``True`` for the default.
        evaluator: Evaluator, or ``True`` for the default (pAP, DSC, AUROCs, AUPRO per category).
        visualizer: Visualizer, or ``True`` for the default.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_b4",
        pre_trained: bool = True,
        weights: str | Path | None = None,
        input_size: tuple[int, int] = (224, 224),
        input_mean: tuple[float, float, float] | None = None,
        input_std: tuple[float, float, float] | None = None,
        image_size: tuple[int, int] | Literal["auto"] | None = None,
        tile_stride: tuple[int, int] | None = None,
        train_tiles: int | None = None,
        train_tile_positions: TrainTilePositions = "anywhere",
        pixel_dim: int = 256,
        hidden_dim: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 2048,
        num_encoder_layers: int = 3,
        neighbour_size: int = 7,
        levels: tuple[int, ...] = (16, 8, 4, 2),
        dropout: float = 0.1,
        jitter_scale: float = 20.0,
        jitter_prob: float = 0.5,
        loss_weight: float = 10.0,
        legacy_cos_sign: bool = False,
        map_fusion: MapFusion = "product",
        map_strides: list[int] | None = None,
        map_normal_readings: tuple[str, ...] = ("z-score",),
        hard_mining: float | None = None,
        hard_mining_warmup: int = 1000,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: LearningRateSchedule = "step",
        lr_step_epochs: int = 400,
        lr_gamma: float = 0.1,
        warmup_fraction: float = 0.05,
        lr_floor: float = 0.0,
        max_epochs: int | None = None,
        int8_variant: Int8Variant = "head-int8",
        thresholds: str | Path | None = None,
        category: str | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        architecture = Architecture.from_arguments(locals())
        input_size = architecture.input_size
        self.optimizer_recipe = OptimizerRecipe(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            betas=betas,
            lr_schedule=lr_schedule,
            lr_step_epochs=lr_step_epochs,
            lr_gamma=lr_gamma,
            warmup_fraction=warmup_fraction,
            lr_floor=lr_floor,
        )
        resolution = WorkingResolution.of(
            input_size=input_size,
            image_size=image_size,
            tile_stride=tile_stride,
            train_tiles=train_tiles,
            train_tile_positions=train_tile_positions,
        )
        if resolution.auto and pre_processor is not True:
            msg = (
                "UniAS argument image_size='auto' sets the resize of UniAS's own pre-processor, but a custom "
                "pre_processor was given: give image_size as [height, width] matching its resize."
            )
            raise UniASArgumentError(msg)
        check_normalization(input_mean=input_mean, input_std=input_std)
        attached_thresholds = CategoryThresholds.from_json(thresholds) if thresholds else None
        frozen_backbone = create_backbone(backbone, pre_trained=pre_trained, weights=weights)
        backbone_mean, backbone_std = frozen_backbone.input_statistics
        input_mean = tuple(float(v) for v in (input_mean or backbone_mean))
        input_std = tuple(float(v) for v in (input_std or backbone_std))
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(resolution.size, mean=input_mean, std=input_std)
        super().__init__(
            pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator, visualizer=visualizer
        )
        # The checkpoint keeps the statistics actually used, not "None": a later timm could name others.
        self.hparams.update(input_mean=input_mean, input_std=input_std)
        self.model = UniASModel(backbone=frozen_backbone, architecture=architecture, resolution=resolution)
        self.max_epochs = max_epochs
        if int8_variant not in INT8_VARIANTS:
            refuse("int8_variant", int8_variant, f"must be one of {list(INT8_VARIANTS)}", "'head-int8'")
        self.int8_variant = int8_variant
        self.data_sizes: list[tuple[int, int]] | None = None  # the data's image sizes, read by the first setup
        # The checkpoint keeps the thresholds themselves (in the post-processor), not the file's path.
        self.hparams.pop("thresholds", None)
        self._attached_thresholds = attached_thresholds
        if isinstance(self.post_processor, UniASPostProcessor):
            self.post_processor.category = category
            if self._attached_thresholds:
                self.post_processor.pin_thresholds(self._attached_thresholds)

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> PreProcessor:
        """Resize to the model input (default 224 x 224, no antialias) and normalise with ``mean``/``std``.

        ``UniAS`` passes the backbone's own statistics (:class:`~anomalib_unias.pre_processor.UniASPreProcessor`).
        """
        return UniASPreProcessor(image_size or (224, 224), mean=mean, std=std)

    def configure_post_processor(self) -> UniASPostProcessor:
        """Anomalib's thresholding with a strictly monotone normalisation, so ranks (pAP, AUROC) survive."""
        return UniASPostProcessor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image/pixel AUROC, pAP, the paper's DSC and AUPRO, per category and as a macro mean (docs/design.md §8)."""
        return unias_evaluator()

    @classmethod
    def configure_visualizer(cls) -> UnifiedImageVisualizer:
        """Anomalib's image visualizer, saving under ``images/<category>/<defect>/`` for unified runs."""
        return UnifiedImageVisualizer()

    def configure_callbacks(self) -> list[Callback]:
        """Anomalib's component callbacks and UniAS's (:mod:`anomalib_unias.callbacks`).

        The working resolution from the data, ``last.ckpt`` and a progress line every epoch, the map's fusion
        before validation (``map_fusion="auto"``), the per-category table after testing.
        """
        callbacks = super().configure_callbacks()
        callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
        return [
            *callbacks,
            WorkingResolutionFromData(),
            LastCheckpoint(),
            EpochProgressLine(),
            FusionChoice(),
            CategoryTableLogger(),
        ]

    def setup(self, stage: str) -> None:
        """Refuse a thresholds file for training (the image sizes are read by :class:`WorkingResolutionFromData`)."""
        if stage == "fit" and self._attached_thresholds:
            msg = (
                "UniAS argument thresholds: a thresholds file labels a trained model (test, predict, export); "
                "training fits the thresholds on validation and would replace it. Train without it, then attach it "
                "to the checkpoint (--model.thresholds with anomalib test/predict/export)."
            )
            raise UniASArgumentError(msg)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Anomalib's checkpoint content plus the random-generator states (for an exact resume).

        The tile stride stored is the one in use: anomalib's ``TilerConfigurationCallback`` may have set
        another than the constructor's, and the checkpoint must rebuild the model that was trained.
        """
        super().on_save_checkpoint(checkpoint)
        checkpoint[RNG_STATES_KEY] = rng_states()
        if self.model.tiler is not None:
            checkpoint.setdefault("hyper_parameters", {})["tile_stride"] = list(self.model.tile_stride)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fuse as the checkpoint's ``map_fusion="auto"`` choice did; a resumed training continues its random draws."""
        upgrade_signed_z_scores(checkpoint)
        super().on_load_checkpoint(checkpoint)
        if self.model.head.architecture.fuses_automatically:
            restore_fusion(checkpoint, self.model)
        states = checkpoint.get(RNG_STATES_KEY)
        if states is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            restore_rng_states(states)

    def forward(self, batch: torch.Tensor, *args, **kwargs) -> InferenceBatch:
        """Anomalib's pipeline (pre-processor, model, post-processor), plus: an image with a NaN/Inf pixel is anomalous.

        This is the graph that ``to_torch``/``to_onnx``/``to_openvino`` export.  The check runs on the
        input image itself, before the in-graph resize (whose sampling may or may not reach the bad
        pixel), so eager PyTorch and every exported runtime give such an image score 1 and label True.
        """
        output = super().forward(batch, *args, **kwargs)
        non_finite = ~torch.isfinite(batch).flatten(1).all(dim=1)
        return output._replace(
            pred_score=torch.where(non_finite, torch.ones_like(output.pred_score), output.pred_score),
            pred_label=torch.where(non_finite, torch.ones_like(output.pred_label), output.pred_label),
        )

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args, **kwargs) -> UniAS:  # type: ignore[override]
        """Load a checkpoint without downloading backbone weights: the checkpoint already holds them.

        An empty, truncated or foreign file is refused first with a message that says what to do, and so is an
        override of a setting the checkpoint fixes, which could not take effect
        (:func:`~anomalib_unias.checkpointing.check_overrides`).
        """
        check_overrides(checkpoint_path, kwargs)
        kwargs.setdefault("pre_trained", False)
        kwargs.setdefault("weights", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Reconstruction loss of the batch; logs the total and each level's unweighted term."""
        del args, kwargs
        loss, levels = self.model(batch.image)
        batch_size = batch.image.shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        for name, level in zip(self.model.head.level_names, levels, strict=True):
            self.log(f"train_loss_{name}", level, on_step=False, on_epoch=True, batch_size=batch_size)
        return {"loss": loss}

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Predict anomaly maps and scores; returning the updated batch lets anomalib fit its thresholds."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(pred_score=predictions.pred_score, anomaly_map=predictions.anomaly_map)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW on the trainable parameters + the learning-rate schedule (:mod:`~anomalib_unias.components.optimizer`).

        The paper's: AdamW 1e-4, weight decay 1e-4, StepLR per epoch (docs/design.md §7).
        """
        recipe = self.optimizer_recipe
        total_steps = int(self.trainer.estimated_stepping_batches) if recipe.lr_schedule == "cosine" else 0
        return recipe.configure((p for p in self.model.parameters() if p.requires_grad), total_steps)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the global L2 norm of all gradients (paper: 0.1), computed for all tensors at once (``foreach``)."""
        if gradient_clip_val is None or gradient_clip_algorithm not in (None, "norm"):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        else:
            clip_gradient_norm(optimizer, gradient_clip_val)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """What must never change: gradient clipping at 0.1 (global L2 norm), no sanity validation.

        anomalib lets these override the user's trainer flags, so epochs are left to the configs unless
        ``max_epochs`` was given to the model (for ``anomalib benchmark``, which has no trainer section).
        """
        arguments: dict[str, Any] = {
            "gradient_clip_val": 0.1,
            "gradient_clip_algorithm": "norm",
            "num_sanity_val_steps": 0,
        }
        if self.max_epochs is not None:
            arguments["max_epochs"] = self.max_epochs
        return arguments

    @property
    def learning_type(self) -> LearningType:
        """UniAS learns from normal images only."""
        return LearningType.ONE_CLASS
