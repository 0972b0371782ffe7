"""Export: the model's export hooks (:class:`UniASExportMixin`) and its INT8 quantisation.

The OpenVINO FP32, FP16 and INT8 models of a UniAS model can also come from ONE export (``benchmarks/``).

anomalib's ``to_openvino`` re-runs the dynamo ONNX export (about a minute for a tiny model on two
cores) for every compression type.  :func:`export_openvino_precisions` runs anomalib's ``to_openvino``
once (FP32: pre-processing, model and post-processing in one graph) and derives the other precisions
from that model the way anomalib does after its conversion:

* FP16: ``ov.save_model(model, compress_to_fp16=True)`` (anomalib's ``CompressionType.FP16``);
* INT8: ``nncf.quantize`` post-training quantisation (anomalib's ``CompressionType.INT8_PTQ`` calls it
  with NNCF's defaults and the data module's validation images); here the calibration images are
  given explicitly, and :data:`INT8_VARIANTS` offers variants that keep parts of the graph in FP32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anomalib.models.components.base.export_mixin import ExportMixin

from .errors import UniASArgumentError
from .post_processor import UniASPostProcessor
from .thresholds import THRESHOLDS_FILE

if TYPE_CHECKING:
    import openvino as ov
    from anomalib.data.datamodules.base.image import AnomalibDataModule
    from anomalib.models.components import AnomalibModule

# NNCF and OpenVINO load only when a function here runs: the model imports this module for the names below.

INT8_VARIANTS = {
    "head-int8": "only the trained head in INT8: backbone, feature preparation and map tail kept in FP32",
    "map-fp32": "cosine distances, map fusion and normalisation kept in FP32",
    "matmul-fp32": "attention and FFN matrix products kept in FP32 (convolutions INT8)",
    "anomalib": "NNCF defaults, as anomalib's INT8_PTQ",
}
"""INT8 post-training quantisation variants of :func:`quantize_int8` and what each keeps in FP32."""
Int8Variant = Literal[tuple(INT8_VARIANTS)]  # type: ignore[valid-type]
"""What UniAS's ``int8_variant`` may be: a key of :data:`INT8_VARIANTS`."""
INT8_CALIBRATION_IMAGES = 300
"""Calibration images for anomalib's ``INT8_PTQ`` (NNCF's default subset size)."""


def calibration_images(datamodule: AnomalibDataModule | None, limit: int = INT8_CALIBRATION_IMAGES) -> list[np.ndarray]:
    """Up to ``limit`` training images of ``datamodule``, each ``(1, 3, H, W)``: what ``INT8_PTQ`` calibrates on.

    Training images are normal ones (anomalib takes the validation set, which is the test set by default).

    Raises:
        UniASArgumentError: no data module (anomalib's ``export`` without ``--data``).
    """
    if datamodule is None:
        msg = "INT8_PTQ needs a data module for calibration: add --data <datamodule> (e.g. --data UniASDemo)."
        raise UniASArgumentError(msg)
    datamodule.setup("fit")
    images: list[np.ndarray] = []
    for batch in datamodule.train_dataloader():
        images += [image[None].numpy() for image in batch.image]
        if len(images) >= limit:
            break
    return images[:limit]


def write_torch_atomically(export: Callable[[str], Path], export_root: str | Path, model_file_name: str) -> Path:
    """Run anomalib's Torch ``export(file name)`` under a temporary name and rename the file when complete.

    An export that fails (e.g. on an object that cannot be pickled) leaves no partial ``.pt`` behind, and an
    earlier export of the same name stays intact.
    """
    temporary = f"{model_file_name}.partial"
    try:
        written = export(temporary)
    except BaseException:
        (Path(export_root) / "weights" / "torch" / f"{temporary}.pt").unlink(missing_ok=True)  # anomalib's layout
        raise
    return written.replace(written.with_name(f"{model_file_name}.pt"))


class UniASExportMixin(ExportMixin):
    """Anomalib's export hooks for UniAS: thresholds beside the model, opset 18, atomic Torch files, INT8 variants.

    ``thresholds.json`` is written beside every exported model, ONNX defaults to opset 18, an export that fails
    leaves no partial Torch file, and ``INT8_PTQ`` quantises as the model's ``int8_variant`` says.
    :class:`~anomalib_unias.UniAS` lists it before ``AnomalibModule``, whose base holds anomalib's own mixin.
    """

    int8_variant: Int8Variant
    post_processor: Any

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Anomalib's ONNX export with opset 18 by default (older opsets go through a failing converter)."""
        kwargs.setdefault("opset_version", 18)
        return self._write_thresholds(super().to_onnx(export_root, model_file_name, input_size, **kwargs))

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Anomalib's Torch export, with ``thresholds.json`` beside the model; no partial file where it fails."""
        written = write_torch_atomically(partial(super().to_torch, export_root), export_root, model_file_name)
        return self._write_thresholds(written)

    def to_openvino(self, *args: Any, **kwargs: Any) -> Path:
        """Anomalib's OpenVINO export, with ``thresholds.json`` beside the model."""
        return self._write_thresholds(super().to_openvino(*args, **kwargs))

    def _post_training_quantization_ov(self, model: ov.Model, datamodule: AnomalibDataModule | None = None) -> ov.Model:
        """Anomalib's ``INT8_PTQ``: :func:`quantize_int8` of the ``int8_variant`` kind on :func:`calibration_images`."""
        return quantize_int8(model, calibration_images(datamodule), variant=self.int8_variant)

    def _write_thresholds(self, model_path: Path) -> Path:
        """Write the per-category thresholds beside an exported model (:mod:`anomalib_unias.thresholds`)."""
        if isinstance(self.post_processor, UniASPostProcessor):
            self.post_processor.thresholds().to_json(Path(model_path).parent / THRESHOLDS_FILE)
        return model_path


def anomaly_map_ops(model: ov.Model) -> list[str]:
    """Friendly names of the ops that turn reconstructions and targets into the outputs.

    That is everything downstream of the per-level cosine similarities (their ``ReduceL2`` norms and the
    ``ReduceSum`` of the products, plus those products): ``1 - cos``, resizing, Gaussian smoothing, the
    product of the levels, the image score and the post-processor's normalisation and thresholding.

    Raises:
        UniASArgumentError: the graph has no cosine similarity (not a UniAS model).
    """
    ops = model.get_ordered_ops()
    seeds = [op for op in ops if op.get_type_name() in {"ReduceL2", "ReduceSum"}]
    if not seeds:
        msg = "No cosine similarity (ReduceL2/ReduceSum) found in the graph; is this a UniAS export?"
        raise UniASArgumentError(msg)
    names: set[str] = set()
    stack = list(seeds)
    stack += [
        inp.get_source_output().get_node()
        for op in seeds
        if op.get_type_name() == "ReduceSum"
        for inp in op.inputs()
        if inp.get_source_output().get_node().get_type_name() == "Multiply"
    ]
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in names or op.get_type_name() == "Result":
            continue
        names.add(op.get_friendly_name())
        stack += [target.get_node() for output in op.outputs() for target in output.get_target_inputs()]
    return sorted(names)


HEAD_INPUT_WEIGHTS = ("model.head.pixel_decoder.input_proj.", "model.head.pixel_decoder.laterals.")
"""Names (prefixes) of the weights of the head's first convolutions, which read the prepared backbone features."""


def backbone_ops(model: ov.Model) -> list[str]:
    """Friendly names of the ops that compute the head's inputs and the reconstruction targets.

    That is everything upstream of the head's first convolutions (the pixel decoder's input projections, found by
    their weights' names, :data:`HEAD_INPUT_WEIGHTS`): the pre-processing, the frozen backbone and the feature
    preparation (the targets are its blurred taps).

    Raises:
        UniASArgumentError: no such convolution in the graph (not a UniAS export).
    """
    ops = model.get_ordered_ops()
    seeds = [
        op
        for op in ops
        for value in op.inputs()
        if value.get_source_output().get_node().get_type_name() == "Constant"
        and value.get_source_output().get_node().get_friendly_name().startswith(HEAD_INPUT_WEIGHTS)
    ]
    if not seeds:
        msg = "No pixel-decoder input convolution found in the graph; is this a UniAS export?"
        raise UniASArgumentError(msg)
    names: set[str] = set()
    stack = [value.get_source_output().get_node() for op in seeds for value in op.inputs()]
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in names or op.get_type_name() in ("Constant", "Parameter"):
            continue
        names.add(op.get_friendly_name())
        stack += [value.get_source_output().get_node() for value in op.inputs()]
    return sorted(names)


def quantize_int8(model: ov.Model, images: Sequence[np.ndarray], variant: str = "anomalib") -> ov.Model:
    """INT8 post-training quantisation of an OpenVINO UniAS model with NNCF.

    Args:
        model: The FP32 model (left unchanged; a copy is quantised).
        images: Calibration inputs as fed to the model, each ``(N, 3, H, W)`` float32 in [0, 1]; all are
            used (NNCF's ``subset_size``).
        variant: One of :data:`INT8_VARIANTS`.
    """
    import nncf  # noqa: PLC0415

    if variant not in INT8_VARIANTS:
        msg = f"Unknown INT8 variant {variant!r}; choose from {list(INT8_VARIANTS)}."
        raise UniASArgumentError(msg)
    if not images:
        msg = "INT8 quantisation needs at least one calibration image."
        raise UniASArgumentError(msg)
    kwargs: dict[str, Any] = {}
    if variant == "map-fp32":
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=anomaly_map_ops(model), validate=False)
    elif variant == "head-int8":
        ignored = anomaly_map_ops(model) + backbone_ops(model)
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
    elif variant == "matmul-fp32":
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=["MatMul", "ScaledDotProductAttention"], validate=False)
    return nncf.quantize(model.clone(), nncf.Dataset(list(images)), subset_size=len(images), **kwargs)


def export_openvino_precisions(
    model: AnomalibModule,
    export_root: str | Path,
    calibration_images: Sequence[np.ndarray] = (),
    input_size: tuple[int, int] | None = None,
    int8_variants: Iterable[str] = ("anomalib",),
    onnx_kwargs: dict[str, Any] | None = None,
) -> tuple[dict[str, Path], dict[str, float]]:
    """Export ``model`` once with anomalib's ``to_openvino`` and save its FP16 and INT8 versions.

    Args:
        model: The UniAS model (trained or not) on CPU; any anomalib model works for FP32/FP16.
        export_root: Output folder; the models go to ``<export_root>/weights/openvino/<name>.xml``.
        calibration_images: Inputs for INT8 calibration (see :func:`quantize_int8`); no INT8 model when empty.
        input_size: ``None`` for anomalib's default dynamic (N, 3, H, W) input, else a fixed (H, W) with a
            dynamic batch.
        int8_variants: :data:`INT8_VARIANTS` to save; ``"anomalib"`` is saved as ``int8``, another
            variant ``v`` as ``int8-v``.
        onnx_kwargs: Passed to ``torch.onnx.export`` (e.g. ``{"optimize": False}`` for a faster export).

    Returns:
        The model files by name (``fp32``, ``fp16``, ``int8``, ...) and the seconds each one took.
    """
    import openvino as ov  # noqa: PLC0415

    start = time.perf_counter()
    fp32 = model.to_openvino(export_root, "fp32", input_size=input_size, onnx_kwargs=onnx_kwargs)
    paths, seconds = {"fp32": fp32}, {"fp32": time.perf_counter() - start}
    ov_model = ov.Core().read_model(fp32)
    start = time.perf_counter()
    paths["fp16"] = fp32.with_name("fp16.xml")
    ov.save_model(ov_model, paths["fp16"], compress_to_fp16=True)
    seconds["fp16"] = time.perf_counter() - start
    for variant in int8_variants if calibration_images else ():
        name = "int8" if variant == "anomalib" else f"int8-{variant}"
        start = time.perf_counter()
        paths[name] = fp32.with_name(f"{name}.xml")
        ov.save_model(quantize_int8(ov_model, calibration_images, variant), paths[name], compress_to_fp16=False)
        seconds[name] = time.perf_counter() - start
    return paths, seconds
