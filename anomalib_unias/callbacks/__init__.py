"""The Lightning callbacks UniAS adds to every run (``UniAS.configure_callbacks``), one per file.

* :class:`LastCheckpoint` (:mod:`.last_checkpoint`): ``last.ckpt`` after every epoch, for an exact resume.
* :class:`EpochProgressLine` (:mod:`.epoch_progress`): one line per epoch when the progress bar is off.
* :class:`CategoryTableLogger` (:mod:`.category_table`): the per-category table after testing.
* :class:`FusionChoice` (:mod:`.fusion_choice`): ``map_fusion: auto`` chooses the map on validation data.
* :class:`WorkingResolutionFromData` (:mod:`.working_resolution`): ``image_size: auto`` resolved from the data.

They report through ``logging`` (first process only); the package's logger gets a handler at INFO level
where the application configured none (``anomalib_unias/__init__.py``, as Lightning does for its own), so
the lines show in the CLI and in a plain Python script alike.
"""

from .category_table import CategoryTableLogger
from .epoch_progress import EpochProgressLine
from .fusion_choice import FusionChoice
from .last_checkpoint import LastCheckpoint
from .working_resolution import WorkingResolutionFromData

__all__ = ["CategoryTableLogger", "EpochProgressLine", "FusionChoice", "LastCheckpoint", "WorkingResolutionFromData"]
