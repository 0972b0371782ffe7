"""Tiling (anomalib's ``Tiler``) for images larger than UniAS's input: maps, training, callback, checkpoint, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.callbacks import TilerConfigurationCallback
from anomalib.data.utils.tiler import Tiler
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_unias import UniAS
from anomalib_unias.data import UniASDemo
from anomalib_unias.errors import UniASArgumentError
from anomalib_unias.normal_maps import NormalMapStatistics, nearest_category, positive_scores
from anomalib_unias.tiling import TileGrid, pyramid_window, random_tiles

from .tiny import TINY_UNIAS

TILE = TINY_UNIAS["input_size"]  # 64 x 64


@pytest.fixture
def float64() -> None:
    """Compare in float64: anomalib's ``Tiler`` builds its tiles with the default dtype."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _tiled(**kwargs: object) -> UniAS:
    torch.manual_seed(0)
    return UniAS(**TINY_UNIAS, pre_trained=False, **kwargs).double().eval()


def _tile_map(model: UniAS, tile: torch.Tensor) -> torch.Tensor:
    """The untiled head's map of one tile (the same weights, no tiler involved)."""
    with torch.no_grad():
        return model.model.head(model.model.backbone(tile)).anomaly_map


@pytest.mark.usefixtures("float64")
def test_non_overlapping_tiles_give_the_per_tile_maps_placed_in_the_canvas() -> None:
    model = _tiled(image_size=(128, 192))
    images = torch.rand(2, 3, 128, 192, dtype=torch.float64)
    tiled = model.model(images)
    canvas = torch.zeros(2, 1, 128, 192, dtype=torch.float64)
    for top in (0, 64):
        for left in (0, 64, 128):
            tile = images[..., top : top + 64, left : left + 64]
            canvas[..., top : top + 64, left : left + 64] = _tile_map(model, tile)
    assert tiled.anomaly_map.shape == (2, 1, 128, 192)
    assert (tiled.anomaly_map - canvas).abs().max() <= 1e-6 * (canvas.max() - canvas.min())
    assert torch.equal(tiled.pred_score, tiled.anomaly_map.flatten(1).amax(1))  # the score is the full map's


@pytest.mark.usefixtures("float64")
def test_a_tiling_given_to_the_evaluation_call_equals_a_model_built_with_it_and_changes_nothing() -> None:
    """``fused_maps(images, fusions, tiler)``: how the benchmarks score other tilings; the model is left as it was."""
    model = _tiled(image_size=(64, 128))
    overlapping = _tiled(image_size=(64, 128), tile_stride=(64, 32))  # the same weights (the same seed)
    images = torch.rand(2, 3, 64, 128, dtype=torch.float64)
    grid = TileGrid((64, 128), TILE, (64, 32)).double()
    (fused,) = model.model.fused_maps(images, [model.model.head.anomaly_map.fusion], tiler=grid)
    expected = overlapping.model(images).anomaly_map
    assert (fused - expected).abs().max() <= 1e-9 * (expected.max() - expected.min())
    assert model.model.tiler.stride == (64, 64)  # its own tiling is untouched
    assert not torch.allclose(model.model(images).anomaly_map, expected)  # and differs from the one given


@pytest.mark.usefixtures("float64")
def test_overlapping_tiles_are_blended_by_the_pyramid_window() -> None:
    model = _tiled(image_size=(64, 128), tile_stride=(64, 32))
    images = torch.rand(1, 3, 64, 128, dtype=torch.float64)
    # The window by hand: 1 at a tile's border pixel, growing by 1 per pixel towards the centre, per axis.
    ramp = torch.tensor([min(i + 1, 64 - i) for i in range(64)], dtype=torch.float64)
    window = ramp[:, None] * ramp[None, :]
    total = torch.zeros(1, 1, 64, 128, dtype=torch.float64)
    weight = torch.zeros_like(total)
    plain = torch.zeros_like(total)
    for left in (0, 32, 64):
        tile_map = _tile_map(model, images[..., left : left + 64])
        total[..., left : left + 64] += window * tile_map
        weight[..., left : left + 64] += window
        plain[..., left : left + 64] += tile_map
    expected = total / weight
    tiled = model.model(images).anomaly_map
    assert (tiled - expected).abs().max() <= 1e-6 * (expected.max() - expected.min())
    # Not anomalib's plain average: where two tiles overlap, the one holding the pixel nearer its centre weighs more.
    average = plain / torch.tensor([1.0] * 32 + [2.0] * 64 + [1.0] * 32, dtype=torch.float64)
    assert (tiled - average).abs().max() > 1e-3 * (expected.max() - expected.min())


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(
    ("image_size", "tile", "stride"),
    [((64, 192), (64, 64), (64, 64)), ((128, 2048), (128, 128), (64, 64)), ((96, 160), (64, 64), (16, 48))],
)
def test_the_tile_grid_cuts_anomalibs_tiles_and_blends_them_back_by_gathers(image_size, tile, stride) -> None:
    """Tiles equal to anomalib's ``Tiler.tile``; uniform blend = its ``untile``; pyramid = the window-weighted mean."""
    grid, tiler = TileGrid(image_size, tile, stride).double(), Tiler(tile_size=tile, stride=stride)
    images = torch.rand(2, 3, *image_size)
    tiles = grid.tile(images)
    assert torch.equal(tiles, tiler.tile(images))
    maps = torch.rand(tiles.shape[0], 1, *tile)
    uniform = TileGrid(image_size, tile, stride, blend="uniform").double().untile(maps)
    assert (uniform - tiler.untile(maps)).abs().max() <= 1e-6  # 1/3 and the like, as float32 weights
    window = pyramid_window(tile).double()
    expected = tiler.untile(maps * window) / tiler.untile(window.expand_as(maps).clone())
    assert (grid.untile(maps) - expected).abs().max() <= 1e-6  # weights normalised once, kept in float32
    maps[0, 0, 5, 5] = float("inf")  # a NaN input pixel's map value: it stays infinite, never NaN
    blended = grid.untile(maps)
    assert blended.isinf().sum() == 1
    assert not blended.isnan().any()


class _TileCounter:
    """Record the batch size the backbone is called with."""

    def __init__(self, model: UniAS) -> None:
        self.sizes: list[int] = []
        model.model.backbone.register_forward_pre_hook(lambda _module, args: self.sizes.append(args[0].shape[0]))


def test_training_reads_every_grid_tile_or_random_tiles_and_learns() -> None:
    images = torch.rand(2, 3, 64, 192)
    for train_tiles, expected in ((None, 6), (4, 8)):
        torch.manual_seed(0)
        model = UniAS(**TINY_UNIAS, pre_trained=False, image_size=(64, 192), train_tiles=train_tiles)
        counter = _TileCounter(model)
        optimizer = model.configure_optimizers()["optimizer"]
        model.train()
        loss, _ = model.model(images)
        loss.backward()
        optimizer.step()
        assert counter.sizes == [expected]
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in model.model.head.parameters() if p.requires_grad)


def test_random_tiles_are_crops_of_their_own_image_and_repeat_with_the_seed() -> None:
    images = torch.arange(2 * 3 * 40 * 90, dtype=torch.float32).reshape(2, 3, 40, 90)
    torch.manual_seed(5)
    tiles = random_tiles(images, (16, 32), count=3)
    torch.manual_seed(5)
    assert torch.equal(tiles, random_tiles(images, (16, 32), count=3))
    assert tiles.shape == (6, 3, 16, 32)
    for index, tile in enumerate(tiles):
        image = images[index // 3]
        top, left = divmod(int((tile[0, 0, 0] - image[0, 0, 0]).item()), 90)
        assert torch.equal(tile, image[:, top : top + 16, left : left + 32])


def test_grid_sampled_tiles_are_the_test_grids_own_tiles_without_repeats_until_the_grid_is_used_up() -> None:
    images = torch.rand(3, 2, 48, 80)
    grid = TileGrid((48, 80), (16, 32), (16, 16))  # 3 x 4 = 12 overlapping tiles per image
    every = grid.tile(images).view(3, grid.count, 2, 16, 32)
    for count in (5, 12, 14):
        torch.manual_seed(7)
        tiles = grid.sample(images, count)
        torch.manual_seed(7)
        assert torch.equal(tiles, grid.sample(images, count))
        assert tiles.shape == (3 * count, 2, 16, 32)
        for image, image_tiles in enumerate(tiles.view(3, count, 2, 16, 32)):
            positions = [next(i for i in range(grid.count) if torch.equal(t, every[image, i])) for t in image_tiles]
            assert len(set(positions[: grid.count])) == min(count, grid.count)  # a permutation of the grid first


def test_training_tiles_follow_train_tile_positions() -> None:
    images = torch.rand(2, 3, 64, 192)
    torch.manual_seed(0)
    model = UniAS(**TINY_UNIAS, pre_trained=False, image_size=(64, 192), train_tiles=2, train_tile_positions="grid")
    grid = model.model.tiler
    every = grid.tile(images).view(2, grid.count, 3, 64, 64)
    seen: list[torch.Tensor] = []
    model.model.backbone.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    model.train()
    model.model(images)
    tiles = seen[0].view(2, 2, 3, 64, 64)
    assert all(any(torch.equal(tile, grid_tile) for grid_tile in every[b]) for b in range(2) for tile in tiles[b])
    assert model.model.resolution.with_stride((64, 64)).train_tile_positions == "grid"
    refusal = r"train_tile_positions='tiles': must be one of \['anywhere', 'grid'\]"
    with pytest.raises(UniASArgumentError, match=refusal):
        UniAS(**TINY_UNIAS, pre_trained=False, image_size=(64, 192), train_tiles=2, train_tile_positions="tiles")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # The stride was not set: the image size is what is off the grid, and the nearest sizes on it are named.
        ({"image_size": (64, 200)}, r"image_size=\[64, 200\]: the width 200 is not covered .* width of 192 or 256"),
        ({"image_size": (64, 200), "tile_stride": (64, 32)}, r"tile_stride=\[64, 32\]: .* image_size width 192 or 224"),
        # One tile along the height: its stride is still checked (it used to fail after an epoch, or divide by 0).
        ({"image_size": (64, 192), "tile_stride": (0, 64)}, r"height stride 0 must be in \[1, 64\]"),
        ({"image_size": (64, 192), "tile_stride": (100, 64)}, r"height stride 100 must be in \[1, 64\]"),
        ({"image_size": "auto", "tile_stride": (0, 64)}, r"height stride 0 must be in \[1, 64\]"),
        ({"image_size": (64, 192), "train_tiles": 2.5}, r"train_tiles=2.5: must be a whole number"),
        ({"image_size": (64, 192), "train_tiles": 1_000_000}, r"train_tiles=1000000: must be in \[1, 256\]"),
        ({"image_size": (64, 192), "tile_stride": (64, 80)}, r"width stride 80 must be in \[1, 64\]"),
        ({"image_size": (32, 192)}, r"image_size=\[32, 192\]: is smaller than the tile input_size=\[64, 64\]"),
        ({"image_size": (64, 192), "train_tiles": 0}, r"train_tiles=0: must be in \[1, 256\]"),
        ({"train_tiles": 2}, r"train_tiles=2: needs tiling"),
        ({"image_size": (72, 128)}, r"image_size=\[72, 128\]: the height 72 is not covered .* height of 64 or 128"),
    ],
)
def test_tilings_that_do_not_fit_are_refused_with_working_values(arguments: dict, message: str) -> None:
    with pytest.raises(UniASArgumentError, match=message):
        UniAS(**TINY_UNIAS, pre_trained=False, **arguments)


def test_the_working_resolution_is_one_checked_record_and_auto_resolves_from_image_sizes() -> None:
    from anomalib.pre_processing import PreProcessor

    from anomalib_unias.resolution import WorkingResolution, auto_image_size

    auto = WorkingResolution.of(input_size=TILE, image_size="auto", tile_stride=(64, 32), train_tiles=2)
    assert auto.auto and auto.size == TILE and not auto.tiled  # the model works at input_size until resolved
    strips = [(256, 1024)] * 3
    resolved = auto.resolve(strips)
    assert resolved.size == auto_image_size(strips, TILE, (64, 32)) == (128, 512)
    assert (resolved.tiled, resolved.tile_stride, resolved.train_tiles) == (True, (64, 32), 2)
    assert resolved.resolve([(70, 100)]) is resolved  # resolved once: other data does not move it
    assert auto.resolve([(70, 100)]).train_tiles is None  # no tiling, no training tiles
    grid_auto = WorkingResolution.of(input_size=TILE, image_size="auto", train_tiles=2, train_tile_positions="grid")
    assert grid_auto.resolve(strips).train_tile_positions == "grid"
    # A stride set later (anomalib's TilerConfigurationCallback) is checked against the working size like the others.
    with pytest.raises(UniASArgumentError, match=r"tile_stride=\[64, 48\]: tiles of width 64 at stride 48"):
        resolved.with_stride((64, 48))
    # image_size "auto" sets the resize of UniAS's own pre-processor: a custom one is refused before any work.
    with pytest.raises(UniASArgumentError, match="image_size='auto' sets the resize of UniAS's own pre-processor"):
        UniAS(**TINY_UNIAS, pre_trained=False, image_size="auto", pre_processor=PreProcessor())


def _engine(tmp_path, **tiler: object) -> Engine:
    return Engine(
        max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        callbacks=[TilerConfigurationCallback(enable=True, **tiler)],
    )  # fmt: skip


def test_anomalib_tiler_callback_trains_tests_checkpoints_and_exports(tmp_path, demo_root) -> None:
    """anomalib's own ``TilerConfigurationCallback``: its stride is used, stored, restored and exported.

    Six overlapping tiles, two rows of three: the exported gathers cut and blend along both axes as eager does.
    """
    from anomalib.deploy import OpenVINOInferencer

    seed_everything(0)
    datamodule = UniASDemo(root=demo_root, train_batch_size=4, eval_batch_size=4, num_workers=0)
    model = UniAS(**TINY_UNIAS, image_size=(128, 128), visualizer=False)
    engine = _engine(tmp_path, tile_size=64, stride=(64, 32))
    engine.fit(model=model, datamodule=datamodule)
    assert model.model.tile_stride == (64, 32)
    (result,) = engine.test(model=model, datamodule=datamodule, verbose=False)
    assert 0 <= result["pixel_AP/mean"] <= 1
    (checkpoint,) = tmp_path.rglob("model.ckpt")
    loaded = UniAS.load_from_checkpoint(checkpoint).eval()
    assert loaded.model.tile_stride == (64, 32)
    assert loaded.model.image_size == (128, 128)
    assert loaded.model.tiler.count == 6

    xml = engine.export(model=loaded, export_type="openvino", export_root=tmp_path / "export")
    inferencer = OpenVINOInferencer(path=xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    image = torch.rand(1, 3, 80, 140)  # any size: the graph resizes to image_size, then tiles
    exported = inferencer.predict(image.numpy())
    with torch.no_grad():
        eager = loaded(image)
    assert exported.anomaly_map.shape == (1, 1, 128, 128)
    span = float(eager.anomaly_map.max() - eager.anomaly_map.min())
    assert abs(exported.anomaly_map - eager.anomaly_map.numpy()).max() <= 1e-4 * span
    assert bool(exported.pred_label[0]) == bool(eager.pred_label[0])


def test_a_tiler_callback_that_does_not_fit_fails_before_training(tmp_path, demo_root) -> None:
    datamodule = UniASDemo(root=demo_root, train_batch_size=4, eval_batch_size=4, num_workers=0)
    model = UniAS(**TINY_UNIAS, pre_trained=False, image_size=(64, 128), visualizer=False)
    engine = _engine(tmp_path, tile_size=32, stride=32)
    with pytest.raises(UniASArgumentError, match=r"tile_size=\[32, 32\] differs from UniAS input_size=\[64, 64\]"):
        engine.fit(model=model, datamodule=datamodule)
    assert engine.trainer.global_step == 0
    with pytest.raises(UniASArgumentError, match=r"do not cover the image width 128"):
        _engine(tmp_path, tile_size=64, stride=48).fit(model=model, datamodule=datamodule)


@pytest.fixture(scope="module")
def strips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-category MVTec-layout folder of 70 x 200 grey strips (train, good and defective test images)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("strips")
    generator = np.random.default_rng(0)
    folders = {"train/good": 6, "test/good": 2, "test/spot": 2}
    for folder, count in folders.items():
        (root / "fabric" / folder).mkdir(parents=True)
        for index in range(count):
            pixels = (generator.random((70, 200)) * 60 + 100).astype(np.uint8)
            if folder == "test/spot":
                pixels[30:36, 90:96] = 255
                (root / "fabric" / "ground_truth" / "spot").mkdir(parents=True, exist_ok=True)
                mask = np.zeros((70, 200), dtype=np.uint8)
                mask[30:36, 90:96] = 255
                Image.fromarray(mask).save(root / "fabric" / "ground_truth" / "spot" / f"{index}_mask.png")
            Image.fromarray(pixels).save(root / "fabric" / folder / f"{index}.png")
    return root


def test_auto_image_size_is_the_data_size_on_the_tile_grid_and_is_stored(tmp_path, strips) -> None:
    from anomalib_unias.data import UnifiedFolder

    datamodule = UnifiedFolder(root=strips, train_batch_size=2, eval_batch_size=2, num_workers=0)
    model = UniAS(**TINY_UNIAS, image_size="auto", train_tiles=2, visualizer=False)
    engine = Engine(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=datamodule)
    # 70 x 200 at its own aspect on the 64-px grid: half would make the short side less than a tile, so one tile.
    assert model.model.image_size == (64, 192)
    assert model.model.train_tiles == 2
    assert list(model.pre_processor.transform.transforms[0].size) == [64, 192]
    for dataset in (datamodule.train_data, datamodule.test_data):  # anomalib resizes in the datasets too
        transforms = getattr(dataset.augmentations, "transforms", [dataset.augmentations])
        assert [list(t.size) for t in transforms if hasattr(t, "size")] == [[64, 192]]
    (checkpoint,) = tmp_path.rglob("model.ckpt")
    loaded = UniAS.load_from_checkpoint(checkpoint)
    assert loaded.model.image_size == (64, 192)
    assert list(loaded.pre_processor.transform.transforms[0].size) == [64, 192]


def test_auto_image_size_keeps_the_plain_resize_where_it_loses_no_detail(tmp_path, strips) -> None:
    from PIL import Image

    from anomalib_unias.data import UnifiedFolder
    from anomalib_unias.resolution import auto_image_size

    # The rule alone: MTD-like 265 x 375 tiles at 128 x 128 shrink < 4x with aspect change < 2x: no tiling;
    # 500 x 1258 (thin cracks), 1130 x 460 and 256 x 4096 strips are tiled at half their own size; a huge
    # image at no more than 1.5 Mpixel.
    assert auto_image_size([(265, 375)] * 3, (128, 128)) == (128, 128)
    assert auto_image_size([(500, 1258)] * 3, (128, 128)) == (256, 640)
    assert auto_image_size([(1130, 460)] * 3, (128, 128)) == (512, 256)
    assert auto_image_size([(256, 4096)] * 3, (128, 128)) == (128, 2048)
    assert auto_image_size([(4000, 6000)] * 3, (128, 128)) == (1024, 1536)
    # Small, long images keep their aspect (one tile on the short side), never a square that says it keeps the detail.
    assert auto_image_size([(40, 160)] * 3, (64, 64)) == (64, 256)
    # In a model: 70 x 200 strips cut to 70 x 100 (shrink 1.1x / 1.6x at 64 x 64) train untiled, the
    # train_tiles setting is dropped with the tiling, and the checkpoint rebuilds the untiled model.
    root = tmp_path / "halves"
    for source in strips.rglob("*.png"):
        target = root / source.relative_to(strips)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).crop((0, 0, 100, 70)).save(target)
    datamodule = UnifiedFolder(root=root, train_batch_size=2, eval_batch_size=2, num_workers=0)
    model = UniAS(**TINY_UNIAS, image_size="auto", train_tiles=2, visualizer=False)
    engine = Engine(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=datamodule)
    assert model.model.tiler is None
    assert model.model.image_size == (64, 64)
    assert list(model.pre_processor.transform.transforms[0].size) == [64, 64]
    (checkpoint,) = tmp_path.rglob("model.ckpt")
    loaded = UniAS.load_from_checkpoint(checkpoint)
    assert loaded.model.tiler is None
    assert list(loaded.hparams["image_size"]) == [64, 64]
    assert loaded.hparams["train_tiles"] is None


def test_a_resize_that_erases_detail_is_reported_once_with_the_fix(tmp_path, strips, caplog) -> None:
    from anomalib_unias.data import UnifiedFolder

    datamodule = UnifiedFolder(root=strips, train_batch_size=2, eval_batch_size=2, num_workers=0)
    model = UniAS(**{**TINY_UNIAS, "input_size": (32, 32), "neighbour_size": 1}, visualizer=False)
    engine = Engine(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with caplog.at_level("WARNING", logger="anomalib_unias.lightning_model"):
        engine.fit(model=model, datamodule=datamodule)
        engine.test(model=model, datamodule=datamodule, verbose=False)
    (advice,) = [record.getMessage() for record in caplog.records if "typically 70 x 200" in record.getMessage()]
    assert "the height shrinks 2.2x and the width 6.2x" in advice
    assert "aspect ratio 2.86 -> 1.00" in advice
    assert "image_size to [32, 96] or 'auto'" in advice


def test_a_tiled_model_refuses_images_of_another_size() -> None:
    model = _tiled(image_size=(64, 128)).float()
    with pytest.raises(ValueError, match=r"tiles images of \[64, 128\] .* got \[64, 120\]: resize the images first"):
        model.model(torch.rand(1, 3, 64, 120))


def test_auto_reads_the_images_shapes_and_names_those_the_resize_distorts() -> None:
    from anomalib_unias.resolution import distorted_images, typical_size

    # MTD-like tiles with a few fabric strips: the typical image is a tile, not a 324 x 4096 chimera of medians.
    sizes = [(324, 270)] * 5 + [(256, 4096)] * 4
    assert typical_size(sizes) == pytest.approx((324, 270))
    paths = [f"tile{i}.png" for i in range(5)] + [f"strip{i}.png" for i in range(4)]
    warning = distorted_images(paths, sizes, (128, 128))
    assert warning.startswith("4 of 9 images have an aspect ratio more than 2x away from the working size 128 x 128")
    assert "strip0.png (256 x 4096, 16.0x)" in warning
    assert "tile" not in warning.split("worst:")[1]
    # Half portrait, half landscape: any one working size distorts one half, and the warning says so.
    mixed = [(256, 4096), (4096, 256)] * 3
    assert "3 of 6 images" in distorted_images([f"{i}.png" for i in range(6)], mixed, (128, 2048))
    assert distorted_images(["a.png"], [(265, 375)], (128, 128)) is None


@pytest.mark.slow
def test_a_tiled_model_exports_to_openvino_then_torch_from_one_object(tmp_path) -> None:
    """The same model object exported twice (a pickle error used to leave a 668-byte model.pt behind)."""
    model = UniAS(**TINY_UNIAS, pre_trained=False, image_size=(64, 192), tile_stride=(64, 32), visualizer=False)
    model.eval()
    model.to_openvino(tmp_path, "model", onnx_kwargs={"optimize": False})
    path = model.to_torch(tmp_path)
    assert path.stat().st_size > 1_000_000
    loaded = torch.load(path, map_location="cpu", weights_only=False)["model"].eval()
    image = torch.rand(1, 3, 70, 200)
    with torch.no_grad():
        assert torch.allclose(loaded(image).anomaly_map, model(image).anomaly_map)


@pytest.mark.usefixtures("float64")
def test_a_tiled_model_z_scores_the_untiled_map_with_the_category_its_tiles_describe() -> None:
    """Normal-map statistics are per image: the descriptor averages all of an image's tiles, at any batch size."""
    model = _tiled(image_size=(64, 192), tile_stride=(64, 64))
    images = torch.rand(3, 3, 64, 192, dtype=torch.float64)
    images[1] *= 0.2  # a darker image: another category
    fusion = model.model.head.anomaly_map.fusion
    (raw,), descriptors = model.model.maps_and_descriptors(images, [fusion])
    for index in range(3):  # each image's descriptor: its three tiles' stride-16 features, averaged
        tiles = [images[index : index + 1, :, :, left : left + 64] for left in (0, 64, 128)]
        pooled = torch.cat([model.model.backbone(tile)[-1].mean(dim=(2, 3)) for tile in tiles]).mean(dim=0)
        torch.testing.assert_close(descriptors[index], pooled)
    statistics = NormalMapStatistics(
        ("bright", "dark"),
        descriptors[[0, 1]],
        torch.rand(2, 1, 64, 192, dtype=torch.float64) * raw.max(),
        0.5 + torch.rand(2, 1, 64, 192, dtype=torch.float64),
    )
    model.model.normal_maps.use(statistics)
    output = model.model(images)
    nearest = [0, 1, int(nearest_category(descriptors[2:], statistics.prototypes))]
    expected = positive_scores((raw - statistics.mean[nearest]) / statistics.spread[nearest])
    torch.testing.assert_close(output.anomaly_map, expected)
    torch.testing.assert_close(output.pred_score, expected.flatten(1).amax(dim=1))
    torch.testing.assert_close(model.model(images[1:2]).anomaly_map, expected[1:2])  # batch of one: same map
