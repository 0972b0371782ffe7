"""Export through anomalib's unchanged path: ``Engine.export``, the ``anomalib export`` CLI, OpenVINOInferencer.

One tiny UniAS is trained for two steps on the demo data (validation fits the post-processor's
thresholds), then exported once in-process (OpenVINO FP32, anomalib's default dynamic input size) and
once through the real CLI in a subprocess (OpenVINO INT8 PTQ calibrated on the demo data module), the
two running in parallel.  FP16 is the FP32 model saved with ``compress_to_fp16=True``, which is exactly
what anomalib's ``CompressionType.FP16`` does after the conversion.  Exports take about a minute each on
two cores, so everything is shared through module-scoped fixtures (the whole file: ~2.5 min).

Run ``pytest tests/test_export.py -s`` to see the measured FP32/FP16/INT8 differences.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
import torch
from anomalib.data import InferenceBatch, NumpyImageBatch
from anomalib.data.utils import read_image
from anomalib.deploy import OpenVINOInferencer, TorchInferencer
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from sklearn.metrics import average_precision_score

from anomalib_unias import UniAS
from anomalib_unias import export as export_module
from anomalib_unias.anomaly_map import Fusion
from anomalib_unias.data import UniASDemo
from anomalib_unias.fusion_selection import CHECKPOINT_KEY, checkpoint_entry
from anomalib_unias.normal_maps import NormalMapStatistics, nearest_category

from .tiny import TINY_UNIAS

pytestmark = pytest.mark.slow  # spawns interpreters: left out by `pytest -m "not slow"`

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = TINY_UNIAS
OUTPUTS = {"pred_score", "pred_label", "anomaly_map", "pred_mask"}
CLI_TIMEOUT_S = 900
CLI_MAIN = "from anomalib.cli.cli import main; main()"  # what the `anomalib` console script runs


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def demo(work: Path) -> UniASDemo:
    datamodule = UniASDemo(root=work / "demo", train_batch_size=8, eval_batch_size=8, num_workers=0)
    datamodule.prepare_data()
    return datamodule


@pytest.fixture(scope="module")
def checkpoint(work: Path, demo: UniASDemo) -> Path:
    """A real checkpoint: two training steps, then validation fits thresholds and min/max."""
    seed_everything(0)
    model = UniAS(**TINY)
    engine = Engine(
        max_epochs=1,
        limit_train_batches=2,
        default_root_dir=work / "train",
        logger=False,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
    )
    engine.fit(model, datamodule=demo)
    path = Path(engine.trainer.checkpoint_callback.best_model_path)
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def cli_int8(work: Path, demo: UniASDemo, checkpoint: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    """Start ``anomalib export ... --compression_type INT8_PTQ --data UniASDemo`` in the background.

    ``--model.pre_trained false``: the CLI first builds the model from its (default) init args before
    ``Engine.export`` loads the checkpoint; offline, the default B4 weights cannot be fetched.
    """
    export_root = work / "cli_int8"
    log = work / "cli_int8.log"
    executable = Path(sys.executable).with_name("anomalib")
    command = [str(executable)] if executable.is_file() else [sys.executable, "-c", CLI_MAIN]
    command += [
        "export",
        "--model", "anomalib_unias.UniAS",
        "--model.pre_trained", "false",
        "--ckpt_path", str(checkpoint),
        "--export_type", "openvino",
        "--compression_type", "INT8_PTQ",
        "--data", "anomalib_unias.data.UniASDemo",
        "--data.root", str(demo.root),
        "--data.num_workers", "0",
        "--export_root", str(export_root),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env["HF_HUB_OFFLINE"] = "1"
    with log.open("w") as stream:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=stream, stderr=subprocess.STDOUT)
    yield process, export_root / "weights" / "openvino" / "model.xml", log
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def fp32_xml(work: Path, checkpoint: Path, cli_int8: tuple) -> Path:
    """anomalib's unchanged path: ``Engine.export(export_type="openvino", ckpt_path=...)``, default input size."""
    del cli_int8  # started first so that both exports run at the same time
    model = UniAS(**TINY, pre_trained=False)
    path = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=work / "fp32").export(
        model, export_type="openvino", ckpt_path=checkpoint, export_root=work / "fp32"
    )
    assert path is not None
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def torch_pt(work: Path, checkpoint: Path) -> Path:
    """``Engine.export(export_type="torch")``: the whole AnomalibModule pickled into ``model.pt``."""
    model = UniAS(**TINY, pre_trained=False)
    path = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=work / "pt").export(
        model, export_type="torch", ckpt_path=checkpoint, export_root=work / "pt"
    )
    assert path is not None
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def fp16_xml(work: Path, fp32_xml: Path) -> Path:
    """``CompressionType.FP16`` = the converted model saved with ``compress_to_fp16=True`` (anomalib's code)."""
    path = work / "fp16" / "model.xml"
    ov.save_model(ov.Core().read_model(fp32_xml), path, compress_to_fp16=True)
    return path


@pytest.fixture(scope="module")
def eager(checkpoint: Path) -> UniAS:
    """The checkpoint as ``Engine.export`` loads it, in eval mode."""
    return UniAS.load_from_checkpoint(checkpoint).eval()


@pytest.fixture(scope="module")
def image_files(work: Path, demo: UniASDemo) -> list[Path]:
    """Demo test images of every category (normal and defective, 256 x 256) and a 300 x 200 JPG copy."""
    files = [
        demo.root / category / "test" / defect / "000.png"
        for category in ("brick", "grass", "gravel")
        for defect in ("good", "texture", "scratch")
    ]
    resized = work / "resized_300x200.jpg"
    cv2.imwrite(str(resized), cv2.resize(cv2.imread(str(files[1])), (300, 200), interpolation=cv2.INTER_AREA))
    return [*files, resized]


@pytest.fixture(scope="module")
def references(eager: UniAS, image_files: list[Path]) -> list[InferenceBatch]:
    """PyTorch eager on the same files: ``AnomalibModule.forward`` = pre-processor, model, post-processor."""
    with torch.inference_mode():
        return [eager(read_image(path, as_tensor=True)[None]) for path in image_files]


# OpenVINO's CPU plugin runs float models in bfloat16 by default on CPUs with AVX-512 BF16 or AMX (seen here:
# maps off by up to 9 % of their range); f32 is what reproduces the checkpoint (see the README's export section).
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _predict(xml: Path, files: list[Path], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> list[NumpyImageBatch]:
    monkeypatch.chdir(cwd)  # OpenVINOInferencer creates ./openvino_cache
    inferencer = OpenVINOInferencer(xml, device="CPU", config=F32)
    return [inferencer.predict(path) for path in files]


def _differences(outputs: list[NumpyImageBatch], references: list[InferenceBatch]) -> dict[str, float]:
    """Largest differences over the images; maps relative to each reference map's range."""
    pairs = list(zip(outputs, references, strict=True))
    ref_scores = np.concatenate([ref.pred_score.numpy() for ref in references])
    out_scores = np.concatenate([out.pred_score for out in outputs])
    ref_maps = np.concatenate([ref.anomaly_map.numpy().ravel() for ref in references])
    out_maps = np.concatenate([out.anomaly_map.ravel() for out in outputs])
    return {
        "map_rel": max(
            float(np.abs(out.anomaly_map.squeeze() - ref.anomaly_map.numpy().squeeze()).max())
            / float(ref.anomaly_map.max() - ref.anomaly_map.min())
            for out, ref in pairs
        ),
        "score_rel": float(np.abs(out_scores - ref_scores).max() / (ref_scores.max() - ref_scores.min())),
        "map_corr": float(np.corrcoef(out_maps, ref_maps)[0, 1]),
        "score_corr": float(np.corrcoef(out_scores, ref_scores)[0, 1]),
        "labels_equal": float(np.mean([np.array_equal(out.pred_label, ref.pred_label.numpy()) for out, ref in pairs])),
        "mask_agreement": float(
            np.mean([np.mean(out.pred_mask.squeeze() == ref.pred_mask.numpy().squeeze()) for out, ref in pairs])
        ),
    }


def _mask(image_path: Path) -> np.ndarray:
    """The demo image's ground truth at the model's input size (nearest neighbour), all zero for a good image."""
    size = TINY["input_size"]
    if image_path.parent.name == "good":
        return np.zeros(size, dtype=bool)
    mask_path = image_path.parents[2] / "ground_truth" / image_path.parent.name / f"{image_path.stem}_mask.png"
    return cv2.resize(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE), size[::-1], interpolation=cv2.INTER_NEAREST) > 0


def _assert_sane(outputs: list[NumpyImageBatch], input_size: tuple[int, int]) -> None:
    for out in outputs:
        assert out.anomaly_map.shape == (1, 1, *input_size)
        assert out.pred_mask.squeeze().shape == input_size
        assert out.pred_score.shape == out.pred_label.shape == (1,)
        assert np.isfinite(out.anomaly_map).all()
        assert np.isfinite(out.pred_score).all()
        assert (out.anomaly_map >= 0).all()
        assert (out.anomaly_map < 1).all()


def test_checkpoint_has_fitted_post_processing(eager: UniAS) -> None:
    post = eager.post_processor
    for value in (post.image_threshold, post.pixel_threshold, post.image_min, post.image_max, post.pixel_min):
        assert torch.isfinite(value)
        assert value > 0


def test_exported_graph_holds_pre_and_post_processing(fp32_xml: Path) -> None:
    """Dynamic (N, 3, H, W) input resized inside the graph, ImageNet normalisation, normalised outputs."""
    model = ov.Core().read_model(fp32_xml)
    shape = model.input(0).get_partial_shape()
    assert shape.rank.get_length() == 4
    assert shape[1].get_length() == 3
    assert shape[0].is_dynamic
    assert shape[2].is_dynamic
    assert shape[3].is_dynamic
    outputs = {output.get_any_name(): output for output in model.outputs}
    assert set(outputs) == OUTPUTS
    assert str(outputs["anomaly_map"].get_partial_shape()) == "[?,1,64,64]"
    assert outputs["pred_label"].get_element_type() == ov.Type.boolean
    assert outputs["pred_mask"].get_element_type() == ov.Type.boolean
    ops = model.get_ordered_ops()
    resized = [str(op.get_output_partial_shape(0)) for op in ops if op.get_type_name() == "Interpolate"]
    assert "[?,3,64,64]" in resized, "no resize of the input image to 64 x 64 in the graph"
    # OpenVINO folds the division by the std into the first convolution; the mean subtraction stays.  Lite0's
    # weights expect (x - 0.5) / 0.5 (timm's pretrained_cfg), not ImageNet's statistics.
    constants = [op.get_data().ravel() for op in ops if op.get_type_name() == "Constant" and op.get_output_size() == 1]
    three = [np.abs(c) for c in constants if c.size == 3]
    assert any(np.allclose(c, 0.5, atol=1e-6) for c in three), "no Lite0 mean (0.5) in the graph"
    assert not any(np.allclose(c, [0.485, 0.456, 0.406], atol=1e-6) for c in three), "ImageNet mean in the graph"


def test_inferencer_reads_files_like_read_image_as_tensor(image_files: list[Path]) -> None:
    """OpenVINOInferencer reads ``np.array(PIL) / 255.0``; ``read_image(as_tensor=True)`` scales in float32."""
    for path in image_files:
        numpy_image = OpenVINOInferencer.pre_process(read_image(path, as_tensor=False))
        tensor_image = read_image(path, as_tensor=True)[None].numpy()
        assert numpy_image.shape == tensor_image.shape
        assert np.abs(numpy_image - tensor_image).max() <= 6e-8  # one float32 ulp at most


def test_openvino_fp32_matches_pytorch_on_files_of_any_size(
    fp32_xml: Path,
    image_files: list[Path],
    references: list[InferenceBatch],
    eager: UniAS,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outputs = _predict(fp32_xml, image_files, work, monkeypatch)
    _assert_sane(outputs, TINY["input_size"])
    diff = _differences(outputs, references)
    print(f"\nOpenVINO FP32 vs PyTorch eager: {diff}")
    assert diff["map_rel"] <= 1e-4
    assert diff["score_rel"] <= 1e-4
    assert diff["labels_equal"] == 1
    for out, ref in zip(outputs, references, strict=True):
        ref_map = ref.anomaly_map.numpy().squeeze()
        decided = np.abs(ref_map - 0.5) > 1e-4 * (ref_map.max() - ref_map.min())  # masks may differ only at 0.5
        assert np.array_equal(out.pred_mask.squeeze()[decided], ref.pred_mask.numpy().squeeze()[decided])
        # the normalisation s / (s + t) with the fitted threshold t and thresholding at 0.5 are in the graph
        assert np.array_equal(out.pred_mask.squeeze(), out.anomaly_map.squeeze() > 0.5)
        assert np.array_equal(out.pred_label, out.pred_score > 0.5)
    with torch.inference_mode():
        raw = eager.model(eager.pre_processor(read_image(image_files[-1], as_tensor=True)[None]))
    threshold = eager.post_processor.pixel_threshold
    expected = (raw.anomaly_map / (raw.anomaly_map + threshold)).numpy()
    assert np.abs(outputs[-1].anomaly_map - expected).max() <= 1e-5


def test_openvino_fp16_runs_close_to_fp32(
    fp16_xml: Path,
    image_files: list[Path],
    references: list[InferenceBatch],
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ov.Core().read_model(fp16_xml)
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in model.get_ops())
    outputs = _predict(fp16_xml, image_files, work, monkeypatch)
    _assert_sane(outputs, TINY["input_size"])
    diff = _differences(outputs, references)
    print(f"\nOpenVINO FP16 vs PyTorch eager: {diff}")
    assert diff["map_corr"] > 0.999
    assert diff["map_rel"] < 0.05


def test_cli_int8_ptq_export_runs(
    cli_int8: tuple[subprocess.Popen, Path, Path],
    fp32_xml: Path,
    image_files: list[Path],
    references: list[InferenceBatch],
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process, xml, log = cli_int8
    try:
        returncode = process.wait(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"anomalib export did not finish in {CLI_TIMEOUT_S} s; log: {log}")
    assert returncode == 0, log.read_text()[-3000:]
    assert xml.is_file()
    model = ov.Core().read_model(xml)
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    # The default variant (head-int8) keeps the backbone, the feature preparation and the map tail in FP32: every
    # such op of the FP32 graph is in the INT8 graph under its name (an unknown name fails here), none of them
    # reads a quantised input, and the head's convolutions do.
    fp32_model = ov.Core().read_model(fp32_xml)
    kept = export_module.anomaly_map_ops(fp32_model) + export_module.backbone_ops(fp32_model)
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    assert not set(kept) - set(ops), f"FP32 ops missing from the INT8 graph: {sorted(set(kept) - set(ops))}"
    quantised = {
        name
        for name, op in ops.items()
        for value in op.inputs()
        if value.get_source_output().get_node().get_type_name() == "FakeQuantize"
    }
    assert not quantised & set(kept), f"backbone or map-tail ops with INT8 inputs: {sorted(quantised & set(kept))}"
    assert sum(ops[name].get_type_name() == "Convolution" for name in quantised) >= 10  # the head's convolutions
    outputs = _predict(xml, image_files, work, monkeypatch)
    _assert_sane(outputs, TINY["input_size"])
    diff = _differences(outputs, references)
    print(f"\nOpenVINO INT8 (anomalib INT8_PTQ) vs PyTorch eager: {diff}")
    # The tolerance the deployed-accuracy table claims: within 1 pAP point of eager PyTorch (here on the nine demo
    # test images with their masks, at model resolution).
    pixel_ap = {}
    maps = {"eager": [r.anomaly_map.numpy() for r in references], "int8": [o.anomaly_map for o in outputs]}
    for name, runtime_maps in maps.items():
        pixel_ap[name] = 100 * average_precision_score(
            np.concatenate([_mask(path).ravel() for path in image_files[:9]]),
            np.concatenate([m.ravel() for m in runtime_maps[:9]]),
        )
    print(f"pixel AP eager {pixel_ap['eager']:.2f}, INT8 {pixel_ap['int8']:.2f}")
    assert abs(pixel_ap["int8"] - pixel_ap["eager"]) <= 1.0
    assert diff["map_corr"] > 0.99  # 0.998 measured on this machine


def test_torch_export_predicts_through_torch_inferencer(
    torch_pt: Path,
    fp32_xml: Path,
    image_files: list[Path],
    references: list[InferenceBatch],
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """anomalib's TorchInferencer on files of several sizes and on a batch: equal to eager and to OpenVINO.

    ``model.pt`` is unpickled (arbitrary code): anomalib asks for ``TRUST_REMOTE_CODE=1`` to load it.
    """
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")
    inferencer = TorchInferencer(torch_pt, device="cpu")
    outputs = [inferencer.predict(path) for path in image_files]
    for out, ref in zip(outputs, references, strict=True):
        assert not out.anomaly_map.requires_grad
        scale = float(ref.anomaly_map.max() - ref.anomaly_map.min())
        assert float((out.anomaly_map - ref.anomaly_map).abs().max()) <= 1e-6 * scale
        assert torch.equal(out.pred_label, ref.pred_label)
    scores = torch.cat([out.pred_score for out in outputs])
    ref_scores = torch.cat([ref.pred_score for ref in references])
    assert float((scores - ref_scores).abs().max()) <= 1e-6 * float(ref_scores.max() - ref_scores.min())
    batch = torch.stack([read_image(path, as_tensor=True) for path in image_files[:4]])
    batched = inferencer.predict(batch)
    assert batched.anomaly_map.shape[0] == 4
    assert torch.allclose(batched.anomaly_map, torch.cat([out.anomaly_map for out in outputs[:4]]), atol=1e-6)
    openvino = _predict(fp32_xml, image_files, work, monkeypatch)
    for out, ov_out in zip(outputs, openvino, strict=True):
        assert np.abs(out.anomaly_map.numpy().squeeze() - ov_out.anomaly_map.squeeze()).max() <= 1e-4


def test_eval_inference_builds_no_autograd_graph(eager: UniAS) -> None:
    images = torch.rand(2, 3, 80, 96)
    output = eager(images)  # no torch.no_grad() here: the model switches gradients off itself in eval mode
    for value in (output.anomaly_map, output.pred_score):
        assert not value.requires_grad
        assert value.grad_fn is None


def test_non_finite_pixels_are_anomalous_in_pytorch_and_openvino(
    fp32_xml: Path, eager: UniAS, image_files: list[Path], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = read_image(image_files[0], as_tensor=True)
    image[:, 10, 10] = float("nan")
    with torch.inference_mode():
        torch_output = eager(image[None])
    monkeypatch.chdir(work)
    ov_output = OpenVINOInferencer(fp32_xml, device="CPU", config=F32).predict(image.numpy().transpose(1, 2, 0))
    assert bool(torch_output.pred_label[0])
    assert bool(ov_output.pred_label[0])
    assert float(torch_output.pred_score[0]) == pytest.approx(1.0)
    assert float(ov_output.pred_score[0]) == pytest.approx(1.0)


def test_an_int8_variant_the_exporter_does_not_implement_is_refused_naming_those_it_does() -> None:
    with pytest.raises(ValueError, match="int8_variant='int8'") as refused:
        UniAS(**TINY_UNIAS, pre_trained=False, int8_variant="int8")
    assert all(variant in str(refused.value) for variant in export_module.INT8_VARIANTS)


def test_a_fusion_chosen_by_auto_is_the_exported_map(
    work: Path, checkpoint: Path, image_files: list[Path], references: list[InferenceBatch], monkeypatch
) -> None:
    """A ``map_fusion="auto"`` checkpoint whose choice is the mean of strides 16+8 exports that map, not the paper's.

    The choice is written into a copy of the trained checkpoint as ``FusionChoice`` writes it; ``Engine.export``
    loads the copy (``load_from_checkpoint``), and OpenVINO's map must equal the eager map of the loaded model.
    """
    chosen = Fusion("mean", (16, 8))
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    stored["hyper_parameters"]["map_fusion"] = "auto"
    stored[CHECKPOINT_KEY] = checkpoint_entry(chosen, {chosen: 0.5})
    auto_checkpoint = work / "auto_fusion.ckpt"
    torch.save(stored, auto_checkpoint)
    eager_auto = UniAS.load_from_checkpoint(auto_checkpoint).eval()
    assert eager_auto.model.head.anomaly_map.fusion == chosen
    xml = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=work / "auto").export(
        UniAS(**TINY, pre_trained=False), export_type="openvino", ckpt_path=auto_checkpoint, export_root=work / "auto"
    )
    with torch.inference_mode():
        auto_references = [eager_auto(read_image(path, as_tensor=True)[None]) for path in image_files]
    outputs = _predict(xml, image_files, work, monkeypatch)
    assert _differences(outputs, auto_references)["map_rel"] <= 1e-4
    assert _differences(outputs, references)["map_corr"] < 0.99  # the paper's product map is another map


@pytest.mark.parametrize("reading", ["z-score", "ratio"])
def test_a_map_read_against_normal_images_is_the_exported_map(
    work: Path, checkpoint: Path, image_files: list[Path], monkeypatch, reading: str
) -> None:
    """A checkpoint whose ``auto`` choice is read against two categories' normal maps exports that map.

    The statistics (two categories, each image's nearest by its descriptor) are written into a copy of the trained
    checkpoint as ``FusionChoice`` writes them; OpenVINO's map must equal the eager map of the loaded model, which
    picks a different category for different images.
    """
    eager = UniAS.load_from_checkpoint(checkpoint).eval()
    images = [eager.pre_processor.transform(read_image(path, as_tensor=True)[None]) for path in image_files]
    chosen = Fusion("mean", (16, 8), against_normal=True, normal_reading=reading)
    maps, descriptors = eager.model.maps_and_descriptors(torch.cat(images), [chosen.as_read()])
    generator = torch.Generator().manual_seed(0)
    statistics = NormalMapStatistics(
        ("first", "last"),
        descriptors[[0, -1]],
        maps[0][[0, -1]] * torch.rand(2, 1, *maps[0].shape[-2:], generator=generator),
        0.5 + torch.rand(2, 1, *maps[0].shape[-2:], generator=generator),
    ).read_as(reading)
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    stored["hyper_parameters"]["map_fusion"] = "auto"
    stored[CHECKPOINT_KEY] = checkpoint_entry(chosen, {chosen: 0.5}, statistics)
    normal_checkpoint = work / f"normal_maps_{reading}.ckpt"
    torch.save(stored, normal_checkpoint)
    loaded = UniAS.load_from_checkpoint(normal_checkpoint).eval()
    assert loaded.model.head.anomaly_map.fusion == chosen and loaded.model.normal_maps.active
    assert set(nearest_category(descriptors, statistics.prototypes).tolist()) == {0, 1}
    root = work / f"normal_{reading}"
    xml = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=root).export(
        UniAS(**TINY, pre_trained=False), export_type="openvino", ckpt_path=normal_checkpoint, export_root=root
    )
    with torch.inference_mode():
        references = [loaded(read_image(path, as_tensor=True)[None]) for path in image_files]
    outputs = _predict(xml, image_files, work, monkeypatch)
    assert _differences(outputs, references)["map_rel"] <= 1e-4
