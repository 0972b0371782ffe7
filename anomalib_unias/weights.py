"""Backbone weights: kept importable for users; the code lives in :mod:`anomalib_unias.backbone`."""

from .backbone import (
    BUNDLED_LITE,
    HUB_TIMEOUT_S,
    WeightsMismatchError,
    WeightsUnavailableError,
    bundled_state_dict,
    bundled_weights_file,
    check_backbone_name,
    create_backbone,
    hub_weights_file,
    install_bundled_weights,
    load_weights,
    read_state_dict,
)

__all__ = [
    "BUNDLED_LITE",
    "HUB_TIMEOUT_S",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "bundled_state_dict",
    "bundled_weights_file",
    "check_backbone_name",
    "create_backbone",
    "hub_weights_file",
    "install_bundled_weights",
    "load_weights",
    "read_state_dict",
]
