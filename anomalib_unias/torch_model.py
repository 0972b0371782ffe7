"""PyTorch model of UniAS ("Towards Accurate Unified Anomaly Segmentation", Ma et al., WACV 2025).

Frozen backbone taps -> Gaussian/residual feature preparation -> FPN pixel decoder -> multi-level
hybrid decoder (sample-aware queries, neighbour-masked spatial + channel attention, MGG-CNN) ->
per-level reconstructions.  Training returns the loss; evaluation returns anomalib's
``InferenceBatch`` with the fused multi-level anomaly map and its maximum as the image score.

Paper: Ma et al., "Towards Accurate Unified Anomaly Segmentation", WACV 2025, https://arxiv.org/abs/2501.12295
(BibTeX in the README).  Reference implementation: https://github.com/Mwxinnn/UniAS (MIT licence); this
package re-implements it from the paper and our design notes (``docs/design.md``), without its code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from anomalib.data import InferenceBatch
from torch import nn

from .anomaly_map import AnomalyMapGenerator, Fusion
from .architecture import GROUP_NORM_GROUPS, LEVEL_STRIDES, PAPER_ARCHITECTURE, Architecture
from .backbone import FrozenBackbone
from .components import FeaturePreparation, HybridDecoder, PixelDecoder
from .errors import UniASArgumentError
from .loss import UniASLoss
from .normal_maps import NormalMaps
from .resolution import WorkingResolution
from .tiling import TileGrid, Tiler, check_tiler, random_tiles


@dataclass
class Reconstruction:
    """Targets and reconstructions of every level, coarse to fine."""

    targets: list[torch.Tensor]
    reconstructions: list[torch.Tensor]


class UniASHead(nn.Module):
    """Everything after the backbone taps: the trainable part of UniAS plus its loss and anomaly map.

    Args:
        feature_channels: Backbone tap channels, fine to coarse (B4: 24, 32, 56, 160).
        architecture: Input size, widths, depths, neighbourhood, jitter, loss and map fusion (paper values by
            default).
    """

    def __init__(self, feature_channels: Sequence[int], architecture: Architecture = PAPER_ARCHITECTURE) -> None:
        super().__init__()
        self.architecture = architecture
        self.input_size = architecture.input_size
        grid = architecture.query_grid
        # The backbone's taps run fine to coarse; the head reads the coarsest len(levels) of them.
        coarse_to_fine = list(reversed(feature_channels))[: len(architecture.levels)]
        self.level_names = tuple(f"stride{stride}" for stride in architecture.levels)
        self.feature_preparation = FeaturePreparation(
            jitter_scale=architecture.jitter_scale, jitter_prob=architecture.jitter_prob
        )
        self.pixel_decoder = PixelDecoder(
            in_channels=[2 * c for c in coarse_to_fine],
            grid_size=grid,
            dim=architecture.pixel_dim,
            num_heads=architecture.num_heads,
            ffn_dim=architecture.ffn_dim,
            num_encoder_layers=architecture.num_encoder_layers,
            dropout=architecture.dropout,
            norm_groups=GROUP_NORM_GROUPS,
        )
        self.decoder = HybridDecoder(
            target_channels=coarse_to_fine,
            grid_size=grid,
            pixel_dim=architecture.pixel_dim,
            dim=architecture.hidden_dim,
            num_heads=architecture.num_heads,
            ffn_dim=architecture.ffn_dim,
            neighbour_size=architecture.neighbour_size,
            dropout=architecture.dropout,
        )
        self.loss = UniASLoss(
            weight=architecture.loss_weight,
            legacy_cos_sign=architecture.legacy_cos_sign,
            hard_mining=architecture.hard_mining,
            hard_mining_warmup=architecture.hard_mining_warmup,
        )
        self.anomaly_map = AnomalyMapGenerator(
            num_levels=len(coarse_to_fine),
            input_size=self.input_size,
            fusion=Fusion.of(
                # the paper's product until map_fusion="auto" has chosen on validation data
                "product" if architecture.fuses_automatically else architecture.map_fusion,
                architecture.map_strides,
                architecture.levels,
            ),
        )

    def reconstruct(self, features: list[torch.Tensor]) -> Reconstruction:
        """Reconstruct the blurred taps from the raw taps ``features`` (fine to coarse; the coarsest ``levels``)."""
        coarse_to_fine = list(reversed(features))[: len(self.level_names)]
        targets, inputs = self.feature_preparation(coarse_to_fine)
        pixel_maps = self.pixel_decoder(inputs)
        reconstructions = self.decoder(pixel_maps, [t.shape[-2:] for t in targets])
        return Reconstruction(targets, reconstructions)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]] | InferenceBatch:
        """Training: ``(loss, per-level terms)``; evaluation: ``InferenceBatch(pred_score, anomaly_map)``."""
        result = self.reconstruct(features)
        if self.training:
            return self.loss(result.reconstructions, result.targets)
        anomaly_map = self.anomaly_map(result.reconstructions, result.targets)
        # A NaN/Inf input pixel turns (part of) the map into NaN, and NaN compares as "not above the
        # threshold": score it as maximally anomalous instead, in eager PyTorch and in exported graphs alike.
        anomaly_map = torch.where(torch.isnan(anomaly_map), torch.full_like(anomaly_map, float("inf")), anomaly_map)
        return InferenceBatch(pred_score=anomaly_map.flatten(1).amax(dim=1), anomaly_map=anomaly_map)


class UniASModel(nn.Module):
    """UniAS: a frozen backbone and the :class:`UniASHead`, optionally over tiles of a larger image.

    With a working size larger than the architecture's ``input_size`` the model takes images of that size,
    cuts them into ``input_size`` tiles (:attr:`tiler`, anomalib's tiles cut and blended by
    :class:`~anomalib_unias.tiling.TileGrid`), and returns the untiled full-size map (:mod:`anomalib_unias.tiling`).
    anomalib's ``TilerConfigurationCallback`` may set :attr:`tiler` too; a tiler that does not fit is refused.

    Args:
        backbone: The frozen feature network (see :func:`anomalib_unias.backbone.create_backbone`), tapped
            at strides 2, 4, 8 and 16.
        architecture: Input size (with tiling: the tile), widths, depths, neighbourhood, jitter, loss and map
            fusion (paper values by default).
        resolution: The working size, its tiles and training tiles (:class:`~anomalib_unias.resolution.
            WorkingResolution`); ``None`` = ``input_size``, no tiling.  Until an ``"auto"`` one is resolved the
            model works at ``input_size``.
    """

    def __init__(
        self,
        backbone: FrozenBackbone,
        architecture: Architecture = PAPER_ARCHITECTURE,
        resolution: WorkingResolution | None = None,
    ) -> None:
        super().__init__()
        strides = list(backbone.reductions)
        if strides != list(reversed(LEVEL_STRIDES)):
            msg = (
                f"UniAS reads exactly four backbone feature maps, at strides 2, 4, 8 and 16; this backbone has "
                f"{len(strides)} taps at strides {strides}. Use a timm CNN with feature levels at those strides "
                "(e.g. tf_efficientnet_b4, tf_efficientnet_lite0) tapped at out_indices (0, 1, 2, 3)."
            )
            raise UniASArgumentError(msg)
        self.backbone = backbone
        self.head = UniASHead(feature_channels=backbone.channels, architecture=architecture)
        self.normal_maps = NormalMaps()
        self.input_size = architecture.input_size
        self.use_resolution(resolution or WorkingResolution.of(input_size=self.input_size))

    def use_resolution(self, resolution: WorkingResolution) -> None:
        """Take images of ``resolution``'s working size from now on, cut into its tiles where it is larger.

        Raises:
            UniASArgumentError: ``resolution`` is for another ``input_size`` than the architecture's.
        """
        if resolution.input_size != self.input_size:
            msg = f"The resolution's tile {list(resolution.input_size)} is not input_size {list(self.input_size)}."
            raise UniASArgumentError(msg)
        self.resolution = resolution
        self._tiler = TileGrid(resolution.size, self.input_size, resolution.tile_stride) if resolution.tiled else None

    @property
    def image_size(self) -> tuple[int, int]:
        """The size ``(H, W)`` of the images the model takes."""
        return self.resolution.size

    @property
    def train_tiles(self) -> int | None:
        """Random training tiles per image per step; ``None`` = every grid tile."""
        return self.resolution.train_tiles

    @property
    def tiler(self) -> TileGrid | None:
        """The grid of ``input_size`` tiles the images are cut into, or ``None`` (no tiling)."""
        return self._tiler

    @tiler.setter
    def tiler(self, tiler: Tiler | None) -> None:
        """Tile like anomalib's ``tiler`` (as its ``TilerConfigurationCallback`` sets it), once it is checked to fit.

        The model cuts and blends the same tiles with a :class:`~anomalib_unias.tiling.TileGrid` of its stride.

        Raises:
            UniASArgumentError: the tile is not ``input_size``, or its tiles do not cover ``image_size``.
        """
        if tiler is None:
            self._tiler = None
            return
        stride = check_tiler(tiler, self.input_size)
        self.resolution = self.resolution.with_stride(stride)
        self._tiler = TileGrid(self.image_size, self.input_size, stride)

    @property
    def tile_stride(self) -> tuple[int, int]:
        """The stride between tiles (``input_size`` when there is no tiler)."""
        return self._tiler.stride if self._tiler is not None else self.input_size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]] | InferenceBatch:
        """Training: ``(loss, per-level terms)``; evaluation: ``InferenceBatch``, without an autograd graph.

        With a tiler, training reads the batch's tiles (every grid tile, or :attr:`train_tiles` random ones
        per image, anywhere or on the grid) as samples, and evaluation untiles the tiles' maps into the image's
        map (overlaps blended by :meth:`~anomalib_unias.tiling.TileGrid.untile`), whose maximum is the image
        score.  Evaluation never needs gradients, and anomalib's ``TorchInferencer`` calls the model without
        switching them off (its ``.numpy()`` then fails on tensors that require grad).
        """
        self._check_image_size(images)
        if self.training:
            if self._tiler is not None:
                images = self._training_tiles(images)
            return self.head(self.backbone(images))
        with torch.no_grad():
            features = self.backbone(self._tiler.tile(images) if self._tiler is not None else images)
            output = self.head(features)
            if self._tiler is None and not self.normal_maps.active:
                return output
            anomaly_map = self._tiler.untile(output.anomaly_map) if self._tiler is not None else output.anomaly_map
            if self.normal_maps.active:
                anomaly_map = self.normal_maps(anomaly_map, self._descriptors(features, self._tiler))
            return InferenceBatch(pred_score=anomaly_map.flatten(1).amax(dim=1), anomaly_map=anomaly_map)

    def _training_tiles(self, images: torch.Tensor) -> torch.Tensor:
        """The samples a training step reads: every grid tile, or :attr:`train_tiles` per image where it says."""
        if not self.train_tiles:
            return self._tiler.tile(images)
        if self.resolution.train_tile_positions == "grid":
            return self._tiler.sample(images, self.train_tiles)
        return random_tiles(images, self.input_size, self.train_tiles)

    @staticmethod
    def _descriptors(features: list[torch.Tensor], tiler: TileGrid | None) -> torch.Tensor:
        """Each image's descriptor (B, D): its stride-16 backbone features averaged over the image (all its tiles).

        The tiles per image are the grid's (a constant of the model), so an exported graph keeps a free batch size.
        """
        pooled = features[-1].mean(dim=(2, 3))
        return pooled.unflatten(0, (-1, tiler.count if tiler is not None else 1)).mean(dim=1)

    @torch.no_grad()
    def fused_maps(
        self, images: torch.Tensor, fusions: Sequence[Fusion], tiler: TileGrid | None = None
    ) -> list[torch.Tensor]:
        """The anomaly maps (B, 1, H, W) of ``images`` under each of ``fusions``, from one reconstruction.

        Each is made as the model's own map is (tiles fused, then untiled and blended), so a fusion's map
        here equals the model's map once the map generator uses that fusion (NaN pixels stay NaN here), before
        any z-score against normal images (:mod:`anomalib_unias.normal_maps`).
        ``tiler``: cut and blend with this grid of ``input_size`` tiles instead of the model's own (e.g. another
        stride or blend); the model is not changed.  Used to choose the fusion (``map_fusion: auto``) and by the
        benchmarks to score every fusion and tiling of one model.
        """
        return self.maps_and_descriptors(images, fusions, tiler)[0]

    @torch.no_grad()
    def maps_and_descriptors(
        self, images: torch.Tensor, fusions: Sequence[Fusion], tiler: TileGrid | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`fused_maps` and the images' descriptors (B, D), which pick a category's normal statistics.

        A fusion ``against_normal`` gives its map as it is here (its z-score is against statistics that are
        not fixed yet while ``map_fusion: auto`` chooses; :mod:`anomalib_unias.normal_maps`).
        """
        if tiler is None:
            self._check_image_size(images)
            tiler = self._tiler
        generator = self.head.anomaly_map
        tiles = tiler.tile(images) if tiler is not None else images
        features = self.backbone(tiles)
        result = self.head.reconstruct(features)
        levels = generator.level_maps(result.reconstructions, result.targets)
        maps = [generator.fuse(levels, fusion) for fusion in fusions]
        maps = [tiler.untile(fused) for fused in maps] if tiler is not None else maps
        return maps, self._descriptors(features, tiler)

    def _check_image_size(self, images: torch.Tensor) -> None:
        if self._tiler is not None and tuple(images.shape[-2:]) != self.image_size:
            msg = (
                f"This UniAS model tiles images of {list(self.image_size)} (its image_size) into "
                f"{list(self.input_size)} tiles, but got {list(images.shape[-2:])}: resize the images first "
                "(UniAS's pre-processor does, in anomalib's pipeline and in exported models)."
            )
            raise UniASArgumentError(msg)
