"""timm's pretrained weights through the Hugging Face cache, and what to do when the hub is out of reach.

The local cache is tried first without any network access; only if the file is missing is the hub
contacted, after a quick reachability check (``HF_HUB_OFFLINE`` set, or no answer within
:data:`HUB_TIMEOUT_S`), so that an offline machine fails at once with a message listing the fixes
(:class:`WeightsUnavailableError`) instead of retrying for about 47 s inside ``huggingface_hub``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import timm

from ..errors import UniASError

HUB_TIMEOUT_S = 3.0
"""Seconds to wait for the Hugging Face endpoint before declaring it unreachable."""

HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
"""The files timm asks a hub repo for, in order."""


class WeightsUnavailableError(UniASError, RuntimeError):
    """Pretrained weights are needed but neither bundled, cached, nor downloadable."""


def hub_weights_file(name: str) -> Path:
    """Local path of timm's Hugging Face weights for ``name``: from the cache, else downloaded.

    Mirrors timm's choice of file (``hf_hub_filename``, else ``model.safetensors`` then
    ``pytorch_model.bin``) but never lets ``huggingface_hub`` retry an unreachable hub.

    Raises:
        WeightsUnavailableError: timm has no hub weights for ``name``, or they are not cached and the
            hub is unreachable.
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache  # noqa: PLC0415
    from huggingface_hub.errors import EntryNotFoundError  # noqa: PLC0415

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        msg = (
            f"timm has no pretrained weights on the Hugging Face hub for backbone '{name}' (see "
            f"timm.list_models(pretrained=True)).{fixes_message(name, None)}"
        )
        raise WeightsUnavailableError(msg)
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILENAMES
    for filename in filenames:
        # A pure cache lookup: hf_hub_download(local_files_only=True) would still fetch a registry from
        # the hub to build its headers (3 s against a silent network with huggingface_hub 2.4).
        cached = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(cached, str):
            return Path(cached)
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else unreachable_reason(constants.ENDPOINT)
    if reason:
        msg = (
            f"Pretrained weights for backbone '{name}' (Hugging Face repo '{repo_id}') are not in the local "
            f"Hugging Face cache ({constants.HF_HUB_CACHE}) and cannot be downloaded: {reason}."
            f"{fixes_message(name, repo_id)}"
        )
        raise WeightsUnavailableError(msg)
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision or None))
        except EntryNotFoundError:  # the repo lacks this file: try the next one, as timm does
            continue
        except Exception as error:  # the hub answered the probe but does not serve the file
            first_line = str(error).splitlines()[0] if str(error) else ""
            msg = (
                f"Pretrained weights for backbone '{name}' (Hugging Face repo '{repo_id}') could not be downloaded "
                f"from {constants.ENDPOINT} ({type(error).__name__}: {first_line}); "
                f"a proxy or firewall that answers in the hub's place causes this too.{fixes_message(name, repo_id)}"
            )
            raise WeightsUnavailableError(msg) from error
    msg = (
        f"{constants.ENDPOINT} answered, but served none of {list(filenames)} of the Hugging Face repo "
        f"'{repo_id}' for backbone '{name}'; a proxy or firewall that answers in the hub's place does this too."
        f"{fixes_message(name, repo_id)}"
    )
    raise WeightsUnavailableError(msg)


def unreachable_reason(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached within :data:`HUB_TIMEOUT_S` (``None`` if it answers).

    Uses huggingface_hub's own HTTP session, so proxies and CA settings apply as for downloads.  The
    request runs in a daemon thread with a hard deadline because the
    client's timeouts apply per phase (a silent server took 2 x 3 s: TCP connect, then TLS handshake) and
    not at all to DNS resolution.  An HTTP error status (a proxy that answers every address with 404, a
    captive portal) counts as unreachable too.
    """
    from huggingface_hub import get_session  # noqa: PLC0415

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            status = get_session().head(endpoint, timeout=HUB_TIMEOUT_S).status_code
        except Exception as error:  # noqa: BLE001 (whatever the transport raises means "not reachable")
            outcome.append(f"{endpoint} is unreachable ({type(error).__name__}: {error})")
            return
        answer = f"{endpoint} answered HTTP {status} instead of the hub (a proxy or captive portal?)"
        outcome.append(None if status < 400 else answer)

    thread = threading.Thread(target=probe, name="hf-hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S)
    return outcome[0] if outcome else f"{endpoint} did not answer within {HUB_TIMEOUT_S:g} s"


def fixes_message(name: str, repo_id: str | None) -> str:
    """The list of ways out appended to every :class:`WeightsUnavailableError` for backbone ``name``."""
    lines = [
        " Fixes (any one):",
        "  - pass a local weights file: weights='/path/to/model.safetensors' (timm's state dict for "
        f"'{name}'" + (f", e.g. model.safetensors from https://huggingface.co/{repo_id}" if repo_id else "") + ");",
        "  - use a backbone whose ImageNet weights ship with this package and work offline: "
        "tf_efficientnet_lite0, tf_efficientnet_lite1 or tf_efficientnet_lite2;",
        "  - pre_trained=False for random backbone weights (frozen random features make poor anomaly maps);",
    ]
    if repo_id:
        lines[1:1] = ["  - connect to the internet (and unset HF_HUB_OFFLINE) and run again: timm downloads once;"]
        lines.append(
            "  - fill the Hugging Face cache: `hf download " + repo_id + "` on a connected machine and copy "
            f"its cache folder models--{repo_id.replace('/', '--')} here, or run `anomalib-unias-weights install` "
            "for the bundled Lite weights (then HF_HUB_OFFLINE=1 serves them to any timm/anomalib model)."
        )
    return "\n".join(lines)
