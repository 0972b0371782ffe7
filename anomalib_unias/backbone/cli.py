"""``anomalib-unias-weights``: put the bundled EfficientNet-Lite ImageNet weights into the Hugging Face cache.

After ``anomalib-unias-weights install``, with ``HF_HUB_OFFLINE=1``, ``timm.create_model(
"tf_efficientnet_lite0", pretrained=True)`` and therefore every timm-based anomalib model (PatchCore,
PaDiM, ... with ``backbone: tf_efficientnet_lite0``) load ImageNet weights on a machine without a model
hub.  UniAS itself does not need this step: it reads the bundled weights directly.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .bundled import BUNDLED_LITE, install_bundled_weights


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the sub-command."""
    parser = argparse.ArgumentParser(
        prog="anomalib-unias-weights",
        description="Put the EfficientNet-Lite ImageNet weights bundled with anomalib-unias into the Hugging Face "
        "cache, so that timm and every timm-based anomalib model can load them offline (HF_HUB_OFFLINE=1).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser(
        "install",
        help="write tf_efficientnet_lite{0,1,2} weights into the Hugging Face hub cache",
        description=install_bundled_weights.__doc__.splitlines()[0],
    )
    install.add_argument("--models", nargs="+", choices=BUNDLED_LITE, default=list(BUNDLED_LITE))
    install.add_argument(
        "--cache-dir",
        help="hub cache directory (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)",
    )
    args = parser.parse_args(argv)

    for path, written in install_bundled_weights(args.models, args.cache_dir):
        print(f"{'wrote' if written else 'already present'}: {path}")
    print(
        "Use them without network: HF_HUB_OFFLINE=1 (plus HF_HUB_CACHE/HF_HOME if you chose another cache), "
        "then e.g. timm.create_model('tf_efficientnet_lite0', pretrained=True) or an anomalib model with "
        "backbone='tf_efficientnet_lite0'.",
    )


if __name__ == "__main__":
    main()
