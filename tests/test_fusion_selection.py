"""``map_fusion: auto``: the binned pixel AP, the choice, and a real run that chooses, fits, saves and restores."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from sklearn.metrics import average_precision_score

from anomalib_unias import UniAS
from anomalib_unias.anomaly_map import PAPER_FUSION, Fusion, candidate_fusions
from anomalib_unias.data import UniASDemo
from anomalib_unias.data.reading import read_image
from anomalib_unias.errors import UniASArgumentError
from anomalib_unias.fusion_selection import (
    AGAINST_NORMAL_SCALE,
    BINS,
    CHECKPOINT_KEY,
    FusionScores,
    binned_average_precision,
    checkpoint_entry,
    restore_fusion,
    score_bins,
    upgrade_signed_z_scores,
)
from anomalib_unias.layout import category_of
from anomalib_unias.normal_maps import NormalMapStatistics, NormalStatistics, positive_scores, z_score

from .tiny import TINY_UNIAS


def _binned_ap(scores: torch.Tensor, defect: torch.Tensor) -> float:
    bins = score_bins(scores)
    counts = torch.stack([torch.bincount(bins[~defect], minlength=BINS), torch.bincount(bins[defect], minlength=BINS)])
    return float(binned_average_precision(counts))


def test_binned_ap_is_sklearns_ap_exactly_on_distinct_scores_and_closely_on_continuous_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([1e-9, 1e-4, 0.02, 0.3, 5.0])  # far apart: every score in a bin of its own
    scores = levels[torch.randint(0, 5, (5000,), generator=generator)]
    defect = torch.rand(5000, generator=generator) < scores.clamp(max=1) * 0.9
    assert _binned_ap(scores, defect) == pytest.approx(average_precision_score(defect, scores), abs=1e-12)
    for separation in (0.5, 1.0, 2.0):
        defect = torch.rand(100_000, generator=generator) < 0.02
        scores = torch.exp(torch.randn(100_000, generator=generator) * 0.5 + separation * defect) * 0.01
        expected = average_precision_score(defect, scores)
        assert _binned_ap(scores, defect) == pytest.approx(expected, rel=0.01)


def test_score_bins_rank_zero_negative_and_nan_scores() -> None:
    bins = score_bins(torch.tensor([-0.1, 0.0, 1e-3, 1e-2, 16.0, float("nan")]))
    assert bins.tolist()[:2] == [0, 0]  # 1 - cos rounding below 0 counts as no anomaly
    assert bins[2] < bins[3] < bins[4] < bins[5] == BINS - 1  # NaN: as anomalous as it gets (as the model scores it)


def _maps(truth: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    return (truth.float() + noise * torch.rand(truth.shape, generator=generator))[:, None]


def _geometric_mean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _ap_per_category(masks: torch.Tensor, scores: torch.Tensor) -> list[float]:
    """scikit-learn's pixel AP of images 0-1 (category "a") and 2-3 (category "b")."""
    return [average_precision_score(masks[rows].ravel(), scores[rows].ravel()) for rows in (slice(0, 2), slice(2, 4))]


def test_the_fusion_whose_map_finds_the_defects_is_chosen_by_the_geometric_mean_over_categories() -> None:
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[0, 2:5, 3:6] = masks[2, 8:12, 1:3] = True  # one defective image per category
    fusions = (PAPER_FUSION, Fusion("mean", (16, 8)), Fusion("product", (16,)))
    scores = FusionScores(fusions)
    # fusion 1 is right in both categories; fusion 2 perfectly in "a" only; the paper's map is noise.
    maps = [torch.rand(4, 1, 16, 16, generator=generator), _maps(masks, 0.9, generator), _maps(masks, 0.5, generator)]
    maps[2][2:] = torch.rand(2, 1, 16, 16, generator=generator)
    scores.update(maps, masks, ["a", "a", "b", "b"])
    expected = {fusion: _geometric_mean(_ap_per_category(masks, maps[i])) for i, fusion in enumerate(fusions)}
    measured = scores.average_precision()
    assert measured == pytest.approx(expected, abs=0.01)  # 512 pixels: a few share a bin
    assert scores.best() == max(expected, key=expected.get) == fusions[1]


def test_a_map_that_serves_every_category_beats_one_whose_mean_rests_on_a_single_category() -> None:
    """The arithmetic mean would choose the map perfect on "a" and blind on "b"; every category counts instead."""
    generator = torch.Generator().manual_seed(1)
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[0, 2:5, 3:6] = masks[2, 8:12, 1:3] = True
    one_category, every_category = Fusion("product", (16,)), Fusion("mean", (16, 8))
    scores = FusionScores((PAPER_FUSION, one_category, every_category))
    single = masks.float()[:, None].clone()
    single[2:] = torch.rand(2, 1, 16, 16, generator=generator)  # perfect on "a", noise on "b"
    both = _maps(masks, 3.0, generator)  # fair on both
    scores.update([torch.rand(4, 1, 16, 16, generator=generator), single, both], masks, ["a", "a", "b", "b"])
    per_category = {"single": _ap_per_category(masks, single), "both": _ap_per_category(masks, both)}
    assert np.mean(per_category["single"]) > np.mean(per_category["both"])  # the arithmetic mean's pick
    assert _geometric_mean(per_category["single"]) < _geometric_mean(per_category["both"])
    assert scores.best() == every_category


def test_ties_keep_the_paper_map_and_no_defect_pixel_chooses_nothing() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :2] = True
    same = masks.float()[:, None]
    scores = FusionScores((PAPER_FUSION, Fusion("mean", (16, 8))))
    scores.update([same, same.clone()], masks, ["a", "a"])
    assert scores.best() == PAPER_FUSION
    empty = FusionScores((Fusion("mean", (16, 8)), PAPER_FUSION))
    empty.update([same, same], torch.zeros_like(masks), ["a", "a"])
    assert empty.best() is None
    assert all(np.isnan(value) for value in empty.average_precision().values())


def test_candidates_keep_the_coarsest_level_with_the_paper_map_first() -> None:
    fusions = candidate_fusions()
    assert fusions[0] == PAPER_FUSION
    assert len(fusions) == len(set(fusions)) == 7  # 3 runs of 2+ levels from stride 16 x (product, mean) + stride 16
    assert all(fusion.strides[0] == 16 for fusion in fusions)
    assert Fusion("product", (2,)) not in fusions  # fine texture alone (it overfitted AITEX's validation half)
    assert Fusion("mean", (16, 4)) not in fusions  # a level left out between two fused ones
    assert Fusion("mean", (16,)) == Fusion("product", (16,))  # one level: the same map under one name
    assert candidate_fusions((16, 8)) == (Fusion("product", (16, 8)), Fusion("mean", (16, 8)), Fusion("mean", (16,)))


def test_auto_with_fixed_strides_is_refused() -> None:
    with pytest.raises(UniASArgumentError, match=r"map_strides=\[16, 8\]: must be null with map_fusion='auto'"):
        UniAS(**TINY_UNIAS, pre_trained=False, map_fusion="auto", map_strides=[16, 8])


READINGS = ("z-score", "ratio")
"""The normal readings :func:`trained` offers (the default offers the z-score only)."""
STAND_IN = Fusion("mean", (16,))
"""The map the model starts with in :func:`trained` (stride 16 alone, a candidate that loses there)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> tuple[UniAS, Engine, UniASDemo]:
    """A tiny ``map_fusion="auto"`` model (both normal readings offered) after one epoch and its final validation."""
    seed_everything(0)
    model = UniAS(**TINY_UNIAS, map_fusion="auto", map_normal_readings=READINGS)
    model.model.head.anomaly_map.use(STAND_IN)  # a map the choice must replace before the thresholds are fitted
    datamodule = UniASDemo(root=demo_root, train_batch_size=8, eval_batch_size=8, num_workers=0)
    work = tmp_path_factory.mktemp("fusion")
    engine = Engine(max_epochs=1, default_root_dir=work, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    return model, engine, datamodule


def _normal_statistics(model: UniAS, datamodule: UniASDemo, fusions: tuple[Fusion, ...]) -> dict[tuple, tuple]:
    """``(fusion, category) -> (mean, spread)`` of the fusion's map over the category's training images (numpy)."""
    maps: dict[tuple, list[np.ndarray]] = {}
    for path in datamodule.train_data.samples.image_path:
        image = model.pre_processor.transform(read_image(path)[None])
        for fusion, fused in zip(fusions, model.model.fused_maps(image, fusions), strict=True):
            maps.setdefault((fusion, category_of(path)), []).append(fused[0, 0].numpy().astype(np.float64))
    statistics = {}
    for key, stack in maps.items():
        deviation = np.std(stack, axis=0)
        statistics[key] = (np.mean(stack, axis=0), deviation + 0.1 * deviation.mean())
    return statistics


def _validation_ap(model: UniAS, datamodule: UniASDemo, fusions: tuple[Fusion, ...]) -> dict[Fusion, float]:
    """Every fusion's geometric mean over categories of scikit-learn's pixel AP on the validation set, independently.

    A fusion ``against_normal`` is read per pixel against the statistics of the image's own category: z-scored, or
    divided by the normal mean (never by less than a millionth of its mean over the image).
    """
    as_read = tuple(dict.fromkeys(fusion.as_read() for fusion in fusions))
    normal = _normal_statistics(model, datamodule, as_read) if any(f.against_normal for f in fusions) else {}
    maps: dict[Fusion, dict[str, list[np.ndarray]]] = {fusion: {} for fusion in fusions}
    masks: dict[str, list[np.ndarray]] = {}
    model.eval()
    for batch in datamodule.val_dataloader():
        image, mask = model.pre_processor.transform(batch.image, batch.gt_mask)
        fused = dict(zip(as_read, model.model.fused_maps(image, as_read), strict=True))
        for index, path in enumerate(batch.image_path):
            category = category_of(path)
            masks.setdefault(category, []).append(mask[index].bool().numpy().ravel())
            for fusion in fusions:
                values = fused[fusion.as_read()][index, 0].numpy()
                if fusion.against_normal and fusion.normal_reading == "ratio":
                    mean, _ = normal[fusion.as_read(), category]
                    values = values / np.maximum(mean, 1e-6 * mean.mean())
                elif fusion.against_normal:
                    mean, spread = normal[fusion.as_read(), category]
                    values = (values - mean) / spread
                maps[fusion].setdefault(category, []).append(values.ravel())
    return {
        fusion: _geometric_mean(
            [average_precision_score(np.concatenate(masks[c]), np.concatenate(maps[fusion][c])) for c in masks]
        )
        for fusion in fusions
    }


def _all_candidates() -> tuple[Fusion, ...]:
    """What ``auto`` scores on data with training images: every candidate as it is and in each of :data:`READINGS`."""
    read = (fusion.against_normal_images(reading) for reading in READINGS for fusion in candidate_fusions())
    return candidate_fusions() + tuple(read)


def test_auto_chooses_the_best_fusion_on_validation_and_fits_the_thresholds_on_its_map(trained) -> None:
    model, _, datamodule = trained
    chosen = model.model.head.anomaly_map.fusion
    assert chosen != STAND_IN  # chosen before validation: the thresholds below were fitted on the chosen map
    independent = _validation_ap(model, datamodule, _all_candidates())
    assert independent[chosen] == pytest.approx(max(independent.values()), abs=0.005)
    assert model.model.normal_maps.active == chosen.against_normal
    # The validation loop ran after the choice: anomalib's min/max are those of the model's (chosen) map.
    maxima = []
    for batch in datamodule.val_dataloader():
        image, _ = model.pre_processor.transform(batch.image, batch.gt_mask)
        maxima.append(model.model(image).anomaly_map.max())
    assert float(model.post_processor.pixel_max) == pytest.approx(float(torch.stack(maxima).max()), rel=1e-5)


def test_the_choice_is_logged_saved_and_used_by_a_loaded_checkpoint(trained, caplog) -> None:
    model, engine, datamodule = trained
    chosen = model.model.head.anomaly_map.fusion
    checkpoint_path = engine.trainer.checkpoint_callback.best_model_path
    entry = torch.load(checkpoint_path, map_location="cpu", weights_only=False)[CHECKPOINT_KEY]
    reading = entry.get("normal_reading", "z-score")
    assert Fusion(entry["kind"], tuple(entry["strides"]), entry["against_normal"], reading) == chosen
    assert set(entry["validation_pixel_AP"]) == {fusion.name for fusion in _all_candidates()}
    assert len(entry["validation_pixel_AP"]) == 21  # 7 fusions, each as it is, z-scored and divided by the mean
    loaded = UniAS.load_from_checkpoint(checkpoint_path).eval()
    assert loaded.hparams["map_fusion"] == "auto"
    assert loaded.model.head.anomaly_map.fusion == chosen
    image, _ = model.pre_processor.transform(next(iter(datamodule.val_dataloader())).image, None)
    torch.testing.assert_close(loaded.model(image).anomaly_map, model.model(image).anomaly_map)
    with caplog.at_level(logging.INFO, logger="anomalib_unias"):
        engine.validate(model, datamodule=datamodule)
    (line,) = [r.getMessage() for r in caplog.records if "map_fusion 'auto'" in r.getMessage()]
    assert f"map_fusion 'auto': {chosen.name} (validation pixel AP" in line


def test_a_z_score_reads_each_image_against_the_normal_maps_of_its_nearest_category() -> None:
    generator = torch.Generator().manual_seed(0)
    statistics = NormalStatistics()
    # two categories: descriptors far apart, normal maps with a hot column in different places
    for category, column, centre in (("left", 1, 0.0), ("right", 6, 10.0)):
        for _ in range(5):
            normal = torch.rand(1, 1, 4, 8, generator=generator) * 0.1
            normal[..., column] += 1.0
            statistics.update([normal], torch.full((1, 3), centre) + torch.rand(1, 3, generator=generator), [category])
    fitted = statistics.of(0)
    assert fitted.categories == ("left", "right")
    test = torch.rand(2, 1, 4, 8, generator=generator) * 0.1
    test[0, ..., 1] += 1.0  # a "left" image: its hot column is normal for its category
    test[1, ..., 6] += 1.0
    test[1, 0, 2, 3] += 1.0  # a "right" image with one defect pixel
    scored = z_score(test, torch.tensor([[0.5] * 3, [10.5] * 3]), fitted)
    for image, category in enumerate((0, 1)):
        mean, spread = fitted.mean[category], fitted.spread[category]
        torch.testing.assert_close(scored[image], (test[image] - mean) / spread)
    assert scored[1].flatten().argmax() == 2 * 8 + 3  # the defect, not the category's hot column
    assert scored[0, 0, :, 1].abs().max() < 5  # the normal hot column is no longer anomalous
    lone = NormalStatistics()
    # one category: no nearest to find
    lone.update([torch.cat([test[:1], test[:1] * 2])], torch.zeros(2, 3), ["only", "only"])
    assert not NormalStatistics().usable
    assert z_score(test, torch.randn(2, 3), lone.of(0)).shape == test.shape


def test_a_ratio_reading_ranks_every_pixel_as_the_map_divided_by_its_categorys_normal_mean() -> None:
    generator = torch.Generator().manual_seed(1)
    statistics = NormalStatistics()
    for category, centre in (("left", 0.0), ("right", 10.0)):
        for _ in range(4):
            normal = torch.rand(1, 1, 4, 8, generator=generator) + (0.5 if category == "left" else 2.0)
            statistics.update([normal], torch.full((1, 3), centre), [category])
    fitted = statistics.of(0)
    ratio = fitted.read_as("ratio")
    assert fitted.read_as("z-score") is fitted
    torch.testing.assert_close(ratio.mean, fitted.mean)
    test = torch.rand(2, 1, 4, 8, generator=generator) * 3
    read = z_score(test, torch.tensor([[0.0] * 3, [10.0] * 3]), ratio)
    for image, category in enumerate((0, 1)):  # each image against its own category's mean
        torch.testing.assert_close(read[image], test[image] / fitted.mean[category] - 1)
    served = positive_scores(read).flatten()
    divided = torch.cat([test[0] / fitted.mean[0], test[1] / fitted.mean[1]]).flatten()
    assert (served[divided.argsort()].diff() >= 0).all()  # in the ratio's order
    zero_mean = NormalMapStatistics(("only",), torch.zeros(1, 3), torch.zeros(1, 1, 4, 8), torch.ones(1, 1, 4, 8))
    assert torch.isfinite(z_score(test, torch.zeros(2, 3), zero_mean.read_as("ratio"))).all()  # never / 0


def test_a_ratio_choice_in_a_checkpoint_entry_makes_the_same_map_when_restored() -> None:
    torch.manual_seed(0)
    model = UniAS(**TINY_UNIAS, pre_trained=False, visualizer=False, map_fusion="auto").eval()
    images = model.pre_processor(torch.rand(3, 3, *TINY_UNIAS["input_size"]))
    chosen = Fusion("mean", (16, 8), against_normal=True, normal_reading="ratio")
    plain = model.model.fused_maps(images, [chosen.as_read()])[0]
    statistics = NormalMapStatistics(("only",), torch.zeros(1, 8), plain.mean(dim=0, keepdim=True), plain[:1])
    entry = checkpoint_entry(chosen, {chosen: 0.5}, statistics.read_as("ratio"))
    assert entry["normal_reading"] == "ratio"
    restored = UniAS(**TINY_UNIAS, pre_trained=False, visualizer=False, map_fusion="auto").eval()
    restored.model.load_state_dict(model.model.state_dict())
    assert restore_fusion({CHECKPOINT_KEY: entry}, restored.model) == chosen
    assert chosen.name == "mean of strides 16+8, divided by the normal mean"
    with torch.no_grad():
        served = restored.model(images).anomaly_map
    expected = positive_scores(plain / torch.maximum(statistics.mean, 1e-6 * statistics.mean.mean()) - 1)
    torch.testing.assert_close(served, expected)


@pytest.mark.parametrize("readings", [["ratio", "ratio"], ["spread"], "ratio"])
def test_normal_readings_that_cannot_work_are_refused(readings) -> None:
    with pytest.raises(UniASArgumentError, match=r"map_normal_readings=.*must be distinct values of"):
        UniAS(**TINY_UNIAS, pre_trained=False, map_fusion="auto", map_normal_readings=readings)


def test_a_map_read_against_normal_images_keeps_the_order_of_its_z_scores_through_the_post_processor() -> None:
    """Pixels below their normal mean have negative z-scores; the post-processor used to tie them all at 0."""
    torch.manual_seed(0)
    model = UniAS(**TINY_UNIAS, pre_trained=False, visualizer=False).eval()
    images = torch.rand(2, 3, *TINY_UNIAS["input_size"])
    with torch.no_grad():
        plain = model.model(model.pre_processor(images)).anomaly_map
    mean, spread = plain.mean(dim=0, keepdim=True), torch.full_like(plain[:1], plain.std().item())
    statistics = NormalMapStatistics(("only",), torch.zeros(1, 8), mean, spread)
    model.model.normal_maps.use(statistics)
    with torch.no_grad():
        served = model(images).anomaly_map.flatten()
    z = z_score(plain, torch.zeros(2, 8), statistics).flatten()
    assert (z < 0).float().mean() > 0.3
    assert (served[z.argsort()].diff() >= 0).all()  # in the z-scores' order
    assert served.unique().numel() >= 0.99 * z.unique().numel()  # and apart


def test_a_checkpoint_saved_with_signed_z_scores_gets_its_thresholds_on_the_positive_scale() -> None:
    signed = {"_pixel_threshold": -0.5, "_image_threshold": 3.0, "pixel_min": -9.0}
    signed = {name: torch.tensor(value) for name, value in signed.items()}
    old_entry = checkpoint_entry(Fusion("mean", (16, 8), against_normal=True), {})
    del old_entry["scale"]  # as saved before the map was made positive
    checkpoint = {
        CHECKPOINT_KEY: old_entry,
        "state_dict": {f"post_processor.{name}": value.clone() for name, value in signed.items()},
        "anomalib_post_processor_config": {"category_thresholds": {"tile": [2.0, -1.0]}},
    }
    upgrade_signed_z_scores(checkpoint)
    for name, value in signed.items():
        torch.testing.assert_close(checkpoint["state_dict"][f"post_processor.{name}"], positive_scores(value))
    image, pixel = checkpoint["anomalib_post_processor_config"]["category_thresholds"]["tile"]
    assert pixel < 1 < image  # -1 and 2 on either side of z = 0, which maps to 1
    assert checkpoint[CHECKPOINT_KEY]["scale"] == AGAINST_NORMAL_SCALE
    upgraded = {key: value.clone() for key, value in checkpoint["state_dict"].items()}
    upgrade_signed_z_scores(checkpoint)  # once only
    assert all(torch.equal(checkpoint["state_dict"][key], value) for key, value in upgraded.items())
    plain = {CHECKPOINT_KEY: checkpoint_entry(Fusion("mean", (16, 8)), {}), "state_dict": {}}
    plain["state_dict"]["post_processor.pixel_min"] = torch.tensor(-1.0)
    upgrade_signed_z_scores(plain)  # a map not read against normal images keeps its thresholds
    assert plain["state_dict"]["post_processor.pixel_min"].item() == -1.0


def test_positive_scores_keep_the_order_of_z_scores_across_the_binned_range() -> None:
    values = torch.tensor([-1e4, -3.0, -0.05, 0.0, 0.05, 2.0, 50.0, 1e4])
    bins = score_bins(positive_scores(values))
    assert torch.all(bins[1:] > bins[:-1])  # every z-score in a bin of its own, in order


def _gathered_scores(rank: int, world_size: int, port: int, queue) -> None:
    """One process of a gloo group: count its half of the images (one category only it sees), gather, report."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    maps, masks, categories = _split_data()
    scores = FusionScores(_FUSIONS)
    rows = slice(rank, None, world_size)
    scores.update([m[rows] for m in maps], masks[rows], categories[rows])
    scores.gather()
    queue.put((rank, {fusion.name: value for fusion, value in scores.average_precision().items()}))
    torch.distributed.destroy_process_group()


_FUSIONS = (PAPER_FUSION, Fusion("mean", (16, 8)))


def _split_data() -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    generator = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 8, 8, generator=generator) > 0.8
    maps = [_maps(masks, noise, generator) for noise in (2.0, 0.7)]
    return maps, masks, ["a", "b", "a", "b", "c", "a"]  # "c" lies on process 0 only


@pytest.mark.slow
def test_processes_add_their_counts_to_the_single_process_choice() -> None:
    import socket

    import torch.multiprocessing as mp

    maps, masks, categories = _split_data()
    single = FusionScores(_FUSIONS)
    single.update(maps, masks, categories)
    expected = {fusion.name: value for fusion, value in single.average_precision().items()}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_gathered_scores, args=(rank, 2, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert results[0] == results[1] == pytest.approx(expected, abs=1e-12)
