"""Per-category thresholds of one unified model: fitting, applying, the file, and every runtime alike."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.data.utils import read_image
from anomalib.deploy import OpenVINOInferencer, TorchInferencer
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_unias import UniAS
from anomalib_unias.data import UniASDemo
from anomalib_unias.errors import UniASArgumentError
from anomalib_unias.post_processor import UniASPostProcessor
from anomalib_unias.thresholds import THRESHOLDS_FILE, CategoryInferencer, CategoryThresholds, Thresholds

from .tiny import TINY_UNIAS


def _batch(category: str, scores: list[float], labels: list[int]) -> ImageBatch:
    """A validation batch of one category: maps constant at the image's score, masks full for defects."""
    count = len(scores)
    maps = torch.tensor(scores)[:, None, None].expand(count, 4, 4).clone()
    return ImageBatch(
        image=torch.zeros(count, 3, 4, 4),
        gt_label=torch.tensor(labels),
        gt_mask=torch.tensor(labels, dtype=torch.bool)[:, None, None].expand(count, 4, 4).clone(),
        image_path=[f"root/{category}/test/{'bad' if y else 'good'}/{i}.png" for i, y in enumerate(labels)],
        anomaly_map=maps,
        pred_score=torch.tensor(scores),
    )


@pytest.fixture
def fitted() -> UniASPostProcessor:
    """Validation of two categories whose score ranges differ by a factor of ten."""
    post_processor = UniASPostProcessor()
    low = _batch("grass", [0.01, 0.02, 0.03, 0.05, 0.06], [0, 0, 0, 1, 1])
    high = _batch("gravel", [0.1, 0.2, 0.3, 0.5, 0.6], [0, 0, 0, 1, 1])
    mixed = _batch("grass", [0.015], [0])
    for batch in (low, high, mixed):
        post_processor.on_validation_batch_end(None, None, batch)
    post_processor.on_validation_epoch_end(None, None)
    return post_processor


def test_thresholds_are_fitted_per_category_where_the_score_ranges_differ(fitted: UniASPostProcessor) -> None:
    thresholds = fitted.thresholds()
    grass, gravel = thresholds.categories["grass"], thresholds.categories["gravel"]
    assert 0.03 <= grass.image <= 0.05 + 1e-6  # the F1-best cut between grass's normal and defective scores
    assert 0.3 <= gravel.image <= 0.5 + 1e-6
    assert grass.pixel == pytest.approx(grass.image)  # maps are constant here
    # One global cut cannot separate both: it flags normal gravel or misses every grass defect.
    assert not (thresholds.global_thresholds.image < 0.05 and thresholds.global_thresholds.image >= 0.3)
    assert grass.image != pytest.approx(gravel.image)


def test_each_image_is_labelled_with_its_categorys_threshold(fitted: UniASPostProcessor) -> None:
    batch = _batch("grass", [0.055, 0.2], [0, 1])
    batch.image_path[1] = "root/gravel/test/good/9.png"
    fitted.post_process_batch(batch)
    assert batch.pred_label.tolist() == [True, False]  # 0.055 is high for grass, 0.2 low for gravel
    grass, gravel = fitted.category_thresholds["grass"][0], fitted.category_thresholds["gravel"][0]
    assert batch.pred_score.tolist() == pytest.approx([0.055 / (0.055 + grass), 0.2 / (0.2 + gravel)])
    assert batch.pred_mask[0].all() and not batch.pred_mask[1].any()


def test_scores_of_shape_batch_by_one_keep_their_shape_and_their_categorys_threshold(
    fitted: UniASPostProcessor,
) -> None:
    """Anomalib's tiled PaDiM scores a batch as (B, 1): each image still meets its own category's threshold."""
    batch = _batch("grass", [0.055, 0.2, 0.01], [0, 1, 0])
    batch.image_path[1] = "root/gravel/test/good/9.png"
    batch.pred_score = batch.pred_score[:, None]
    fitted.post_process_batch(batch)
    assert batch.pred_score.shape == (3, 1)
    assert batch.pred_label.flatten().tolist() == [True, False, False]


def test_an_unknown_category_falls_back_to_the_global_threshold_with_a_warning(
    fitted: UniASPostProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    batch = _batch("brick", [0.04, 0.2], [0, 1])
    with caplog.at_level(logging.WARNING):
        fitted.post_process_batch(batch)
    global_threshold = fitted.thresholds().global_thresholds.image
    assert batch.pred_label.tolist() == [global_threshold < 0.04, global_threshold < 0.2]
    assert "category 'brick' has no fitted thresholds" in caplog.text
    assert caplog.text.count("no fitted thresholds") == 1
    fitted.post_process_batch(_batch("brick", [0.1], [0]))
    assert caplog.text.count("no fitted thresholds") == 1  # once per category


def test_the_file_round_trips_and_editing_it_changes_the_labels_and_nothing_else(
    fitted: UniASPostProcessor, tmp_path: Path
) -> None:
    path = fitted.thresholds().to_json(tmp_path / THRESHOLDS_FILE)
    assert CategoryThresholds.from_json(path) == fitted.thresholds()
    normalised = {"pred_score": np.array([0.6, 0.9]), "anomaly_map": np.array([[0.6, 0.9]])}
    before = CategoryThresholds.from_json(path).apply(normalised, "grass")
    content = json.loads(path.read_text())
    content["categories"]["grass"]["image"] *= 4
    path.write_text(json.dumps(content))
    after = CategoryThresholds.from_json(path).apply(normalised, "grass")
    assert np.array_equal(after["anomaly_map"], before["anomaly_map"])
    assert np.array_equal(after["pred_mask"], before["pred_mask"])
    assert before["pred_label"].tolist() == [True, True]
    assert after["pred_label"].tolist() == [False, True]
    assert np.all(np.argsort(after["pred_score"]) == np.argsort(before["pred_score"]))


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"global": {"image": 1, "pixel": 1}, "categories": {"grass": {"image": -1}}}, r"entry 'categories/grass'"),
        ({"global": {"image": True, "pixel": 1}}, r"entry 'global' must be .* numbers > 0"),  # true is not 1.0
        ({"global": {"image": 1, "pixel": 1, "pxiel": 2}}, r"entry 'global' .* no other keys"),
        ({"global": {"image": 1, "pixel": 1}, "categoires": {}}, r"got unknown \['categoires'\]"),
        (
            {"global": {"image": 1, "pixel": 1}, "categories": {"grass": {"image": "0.5", "pixel": 1}}},
            r"'categories/grass'",
        ),
    ],
)
def test_a_broken_thresholds_file_is_refused_naming_the_entry(tmp_path: Path, content: dict, named: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=named):
        CategoryThresholds.from_json(path)


def test_a_category_named_global_stays_a_category(tmp_path: Path) -> None:
    thresholds = CategoryThresholds(Thresholds(0.5, 0.5), {"global": Thresholds(0.1, 0.1), "grass": Thresholds(1, 1)})
    read = CategoryThresholds.from_json(thresholds.to_json(tmp_path / "t.json"))
    assert read.global_thresholds == Thresholds(0.5, 0.5)
    assert read.categories["global"] == Thresholds(0.1, 0.1)


def test_editing_the_global_entry_labels_graph_outputs_as_eager_would(tmp_path: Path) -> None:
    """The graph keeps normalising with its own thresholds ('graph'); 'global' labels images of other categories."""
    graph = Thresholds(0.3, 0.3)
    raw = np.array([0.05, 0.2, 0.4, 0.9])
    outputs = {"pred_score": raw / (raw + graph.image), "anomaly_map": raw / (raw + graph.pixel)}
    path = CategoryThresholds(graph, {"grass": Thresholds(0.1, 0.1)}, graph_thresholds=graph).to_json(tmp_path / "t")
    content = json.loads(path.read_text())
    content["global"] = {"image": 0.5, "pixel": 0.5}  # a user raises the global thresholds
    path.write_text(json.dumps(content))
    edited = CategoryThresholds.from_json(path)
    assert edited.graph_thresholds == graph
    for category, threshold in ((None, 0.5), ("unknown", 0.5), ("grass", 0.1)):
        assert edited.apply(outputs, category)["pred_label"].tolist() == (raw > threshold).tolist()
        assert edited.apply(outputs, category)["pred_score"] == pytest.approx(raw / (raw + threshold))


def test_renormalising_the_graph_output_equals_normalising_the_raw_score() -> None:
    raw = np.array([0.0, 0.01, 0.2, 3.0, 50.0])
    graph, category = 0.3, 0.05
    thresholds = CategoryThresholds(Thresholds(graph, graph), {"c": Thresholds(category, category)})
    result = thresholds.apply({"pred_score": raw / (raw + graph), "anomaly_map": raw / (raw + graph)}, "c")
    assert result["pred_score"] == pytest.approx(raw / (raw + category))
    assert result["pred_label"].tolist() == (raw > category).tolist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> tuple[UniAS, Engine, Path]:
    """The tiny model fitted on the three demo categories; validation fits the thresholds."""
    work = tmp_path_factory.mktemp("thresholds")
    seed_everything(0)
    datamodule = UniASDemo(root=demo_root, train_batch_size=4, eval_batch_size=8, num_workers=0)
    model = UniAS(**TINY_UNIAS, visualizer=False)
    engine = Engine(max_epochs=1, default_root_dir=work, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=datamodule)
    return model, engine, work


def test_eager_torch_and_openvino_exports_label_every_image_with_its_category(
    trained, demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, engine, work = trained
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")  # anomalib's TorchInferencer unpickles model.pt
    thresholds = model.post_processor.thresholds()
    assert set(thresholds.categories) == {"brick", "grass", "gravel"}
    torch_path = engine.export(model=model, export_type="torch", export_root=work / "torch")
    openvino_path = engine.export(model=model, export_type="openvino", export_root=work / "openvino")
    assert CategoryThresholds.from_json(torch_path.parent / THRESHOLDS_FILE) == thresholds
    runtimes = {
        "torch": CategoryInferencer(TorchInferencer(path=torch_path), torch_path.parent / THRESHOLDS_FILE),
        "openvino": CategoryInferencer(
            OpenVINOInferencer(path=openvino_path, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"}),
            openvino_path.parent / THRESHOLDS_FILE,
        ),
    }
    model.eval()
    files = sorted(demo_root.glob("*/test/*/*.png"))[::3]
    checked = 0
    for path in files:
        category = path.parts[-4]
        image = read_image(path, as_tensor=True)[None]
        with torch.no_grad():
            raw = model.model(model.pre_processor(image)).pred_score.item()
        own = thresholds.categories[category].image
        if abs(raw - own) <= 1e-5 * own:  # a tie (the image that set the threshold): float32 decides either way
            continue
        expected = raw > own
        batch = ImageBatch(image=image, image_path=[str(path)], pred_score=torch.tensor([raw]))
        model.post_processor.post_process_batch(batch)  # what anomalib test / predict do, per image path
        assert bool(batch.pred_label[0]) == expected, path
        for name, runtime in runtimes.items():
            assert bool(runtime.predict(str(path), category=category)["pred_label"][0]) == expected, (name, path)
        checked += 1
        # Without a category, the exported model is anomalib's usual global one.
        assert bool(runtimes["openvino"].inferencer.predict(str(path)).pred_label[0]) == (
            raw > thresholds.global_thresholds.image
        )
    assert checked >= len(files) - 2


def test_an_attached_thresholds_file_relabels_a_checkpoint_without_retraining(trained, tmp_path: Path) -> None:
    model, _, work = trained
    (checkpoint,) = work.rglob("model.ckpt")
    edited = model.post_processor.thresholds()
    edited.categories["grass"] = Thresholds(image=1e-9, pixel=1e-9)  # every grass image is anomalous now
    path = edited.to_json(tmp_path / THRESHOLDS_FILE)
    loaded = UniAS.load_from_checkpoint(checkpoint, thresholds=path)
    assert loaded.post_processor.thresholds() == edited
    untouched = UniAS.load_from_checkpoint(checkpoint)
    assert untouched.post_processor.thresholds() == model.post_processor.thresholds()


def test_a_thresholds_file_is_refused_for_training_not_ignored(tmp_path: Path, demo_root: Path) -> None:
    path = CategoryThresholds(Thresholds(1.0, 1.0)).to_json(tmp_path / THRESHOLDS_FILE)
    model = UniAS(**TINY_UNIAS, thresholds=path, visualizer=False)
    datamodule = UniASDemo(root=demo_root, train_batch_size=4, eval_batch_size=8, num_workers=0)
    engine = Engine(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(UniASArgumentError, match=r"UniAS argument thresholds: a thresholds file labels a trained"):
        engine.fit(model=model, datamodule=datamodule)
    assert engine.trainer.global_step == 0


def test_a_setting_the_checkpoint_fixes_cannot_be_overridden_on_load(trained) -> None:
    _, _, work = trained
    (checkpoint,) = work.rglob("model.ckpt")
    with pytest.raises(UniASArgumentError, match=r"image_size=\(64, 128\) cannot override the checkpoint's"):
        UniAS.load_from_checkpoint(checkpoint, image_size=(64, 128))
    assert UniAS.load_from_checkpoint(checkpoint, input_size=(64, 64)).model.input_size == (64, 64)  # the same
