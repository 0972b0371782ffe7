"""Fixes for anomalib 2.7 behaviours that make runs irreproducible, mis-reported or fail.

The plugin hook (``anomalib_plugin_hook``) applies them right after anomalib has imported the module
they patch (entry-point group ``anomalib_plugin_hook.fixes``, the entry point's name is that module):

* :func:`fix_cli` (``anomalib.cli.cli``):

  - anomalib's CLI accepts ``--seed_everything`` (our configs set 133) and its help says it seeds
    "before classes instantiation", but it never calls ``seed_everything``: two identical commands
    trained different models.  The fix seeds exactly as Lightning's own ``LightningCLI`` does (an int
    seeds with that value, ``True`` draws a random seed and records it in the saved config, ``False``
    leaves the generators alone), before the model and the data are built;
  - ``anomalib test|predict|validate|export --model UniAS --ckpt_path X`` builds UniAS with the settings stored
    in X (backbone, input size, widths; no download), so any UniAS checkpoint can be tested.
* :func:`fix_engine` (``anomalib.engine.engine``): ``Engine.train(ckpt_path=X)`` (and ``anomalib train
  --ckpt_path X``) resumed training from X and then *tested X* again, so the printed metrics were those
  of the checkpoint resumed from: the fix tests the model training ended with.  X is resolved before the
  new run's folder is made: anomalib points ``latest`` at that empty folder first, so resuming from
  ``.../latest/.../last.ckpt`` read the new folder and failed.  ``Engine.export(model,
  ckpt_path=X)`` rebuilt the model from X alone; for UniAS it keeps the given model's ``int8_variant``.

* :func:`fix_image_reading` (the anomalib modules that read image files: ``anomalib.data.utils`` and its
  ``image`` module, ``anomalib.data.predict`` (``anomalib predict``), the datasets' base, the OpenVINO and Torch
  inferencers, the visualiser): their ``read_image`` reads 16-bit and float images as training does
  (:func:`~anomalib_unias.data.reading.read_image_for_anomalib`), instead of turning them white or black.

``ANOMALIB_PLUGINS_DISABLE=1`` turns the hook, and with it these fixes, off.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

from lightning.pytorch import seed_everything

from .architecture import Architecture
from .checkpointing import FIXED_BY_CHECKPOINT, read_hyper_parameters
from .errors import UniASArgumentError


def fix_cli(module: ModuleType) -> None:
    """Seed before instantiation, and build UniAS from its checkpoint's settings in test/predict/validate."""
    cli_class = module.AnomalibCLI
    original = cli_class.before_instantiate_classes

    def before_instantiate_classes(self: Any) -> None:
        original(self)
        subcommand_config = self.config.get(str(self.subcommand), self.config)
        _use_checkpoint_settings(str(self.subcommand), subcommand_config)
        _refuse_bad_unias_arguments(str(self.subcommand), subcommand_config)
        seed = subcommand_config.get("seed_everything", None)
        if seed is None or seed is False:
            return
        subcommand_config["seed_everything"] = seed_everything(None if seed is True else int(seed), workers=True)

    before_instantiate_classes.__doc__ = original.__doc__
    cli_class.before_instantiate_classes = before_instantiate_classes


CHECKPOINT_ARGUMENTS = (*FIXED_BY_CHECKPOINT, "map_fusion", "map_strides")
"""The UniAS arguments that shape the state dict or what it is fed, and the map its thresholds were fitted on:
taken from the checkpoint; the rest stay the command line's."""


def _use_checkpoint_settings(subcommand: str, config: Any) -> None:
    """``anomalib test|predict|validate|export --model UniAS --ckpt_path X``: take the model's settings from X.

    anomalib builds the model from the command line (defaults for anything not given: B4 at 224 with
    paper widths, downloading ImageNet weights) and only then loads the checkpoint's tensors, which fail
    to fit any checkpoint trained with other settings.  A UniAS checkpoint stores every constructor
    argument; those that shape the state dict (:data:`CHECKPOINT_ARGUMENTS`) replace the command
    line's, with ``pre_trained=False`` (the backbone's weights are in the checkpoint), as ``anomalib
    export`` does through ``load_from_checkpoint``; others (e.g. ``int8_variant``) stay the command line's.
    """
    if subcommand not in ("test", "predict", "validate", "export"):
        return
    ckpt_path, model = config.get("ckpt_path"), config.get("model")
    if not ckpt_path or model is None or not _is_unias(model.get("class_path")):
        return
    init_args = model.get("init_args")
    stored = read_hyper_parameters(ckpt_path)
    for key in CHECKPOINT_ARGUMENTS:
        if key in stored:
            value = stored[key]
            init_args[key] = list(value) if isinstance(value, tuple) else value
    init_args["pre_trained"] = False
    init_args["weights"] = None


def _refuse_bad_unias_arguments(subcommand: str, config: Any) -> None:
    """Check UniAS's arguments before jsonargparse builds the model, and exit like an argparse error.

    A refusal raised inside the constructor reaches the user at the end of a ~180-line traceback of
    jsonargparse's Union handling; here it is the one line they read, with exit status 2.
    """
    model = config.get("model") if hasattr(config, "get") else None
    if model is None or not _is_unias(model.get("class_path")):
        return
    from .arguments import check_normalization  # noqa: PLC0415
    from .backbone import check_backbone_name  # noqa: PLC0415
    from .components.optimizer import OptimizerRecipe  # noqa: PLC0415
    from .resolution import WorkingResolution  # noqa: PLC0415

    args = dict(vars(model.get("init_args")))
    try:
        check_backbone_name(str(args["backbone"]))
        Architecture.from_arguments(args)
        OptimizerRecipe(**{field.name: args[field.name] for field in fields(OptimizerRecipe)})
        for check in (check_normalization, WorkingResolution.of):
            check(**{key: args[key] for key in inspect.signature(check).parameters})
        if args.get("thresholds"):
            _check_thresholds_file(subcommand, args["thresholds"])
    except ValueError as error:
        print(f"anomalib {subcommand}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_thresholds_file(subcommand: str, path: str | Path) -> None:
    """``--model.thresholds``: refused on train (validation fits the thresholds); read (and so checked) elsewhere.

    Raises:
        ValueError: naming the argument or the file's problem.
    """
    from .thresholds import CategoryThresholds  # noqa: PLC0415

    if subcommand in ("train", "fit"):
        msg = (
            f"UniAS argument thresholds={str(path)!r}: a thresholds file labels a trained model (test, predict, "
            "export); training fits the thresholds on validation. Train without it, then pass it to anomalib "
            "test/predict/export with --ckpt_path."
        )
        raise UniASArgumentError(msg)
    CategoryThresholds.from_json(path)


def _is_unias(class_path: str | None) -> bool:
    if not class_path or "." not in class_path:
        return False
    from .lightning_model import UniAS  # noqa: PLC0415 (this module is imported by anomalib's own import)

    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, UniAS)


def fix_engine(module: ModuleType) -> None:
    """``Engine.train(ckpt_path=X)`` tests the final model; ``Engine.export`` keeps UniAS's deployment settings."""
    _test_final_model_after_resume(module)
    _keep_deployment_settings_on_export(module)


def _keep_deployment_settings_on_export(module: ModuleType) -> None:
    """Make ``Engine.export(model, ckpt_path=X)`` keep a UniAS model's ``int8_variant``.

    anomalib rebuilds the model from X alone (``load_from_checkpoint``), dropping what the command line
    said about deployment (``--model.int8_variant``); for UniAS the checkpoint is loaded here with the
    given model's ``int8_variant`` and exported as that model.
    """
    engine_class = module.Engine
    original = engine_class.export

    @functools.wraps(original)  # the CLI reads the signature (and so anomalib's own) to build its arguments
    def export(self: Any, model: Any, *args: Any, ckpt_path: str | Path | None = None, **kwargs: Any) -> Any:
        from .lightning_model import UniAS  # noqa: PLC0415

        if ckpt_path and isinstance(model, UniAS):
            model = UniAS.load_from_checkpoint(ckpt_path, int8_variant=model.int8_variant)
            ckpt_path = None
        return original(self, model, *args, ckpt_path=ckpt_path, **kwargs)

    engine_class.export = export


def _test_final_model_after_resume(module: ModuleType) -> None:
    """Make ``Engine.train(ckpt_path=X)`` resume from X as it was when called and test the model as trained."""
    engine_class = module.Engine
    original = engine_class.train

    def train(
        self: Any,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        test_dataloaders: Any = None,
        datamodule: Any = None,
        ckpt_path: str | Path | None = None,
    ) -> Any:
        # Resolved now, while ``latest`` still points at the run the checkpoint came from.
        ckpt_path = Path(ckpt_path).resolve() if ckpt_path else None
        if not ckpt_path or model.learning_type in {module.LearningType.ZERO_SHOT, module.LearningType.FEW_SHOT}:
            return original(self, model, train_dataloaders, val_dataloaders, test_dataloaders, datamodule, ckpt_path)
        # anomalib's Engine.train, except that ``trainer.test`` gets no ckpt_path: it tests the weights in memory.
        self._setup_workspace(
            model, train_dataloaders, val_dataloaders, test_dataloaders, datamodule, versioned_dir=True
        )
        self._setup_trainer(model)
        self.trainer.fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path)
        return self.trainer.test(model, test_dataloaders, datamodule=datamodule)

    train.__doc__ = original.__doc__
    engine_class.train = train


def fix_image_reading(module: ModuleType) -> None:
    """Make ``module.read_image`` read images as UniAS's training does (16-bit and float files included).

    The deployment entry points call the ``read_image`` they imported into their own module, so each such
    module is fixed by name (``pyproject.toml``'s ``anomalib_plugin_hook.fixes``).
    """
    from .data.reading import read_image_for_anomalib  # noqa: PLC0415

    if hasattr(module, "read_image"):
        module.read_image = read_image_for_anomalib
