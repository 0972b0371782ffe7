"""The Lightning callbacks UniAS adds to every run (``UniAS.configure_callbacks``), one per file.

* :class:`LastCheckpoint` (:mod:`.last_checkpoint`): ``last.ckpt`` after every epoch, for an exact resume.
* :class:`EpochProgressLine` (:mod:`.epoch_progress`): one line per epoch when the progress bar is off.
* :class:`CategoryTablePrinter` (:mod:`.category_table`): the per-category table after testing.

They print to standard output, as Lightning's own test table does: what they report is the result a
user asked for, shown in the CLI and in a plain Python script alike (``logging`` shows INFO only where
the application configures it, as anomalib's CLI does and a script usually does not).
"""

from .category_table import CategoryTablePrinter
from .epoch_progress import EpochProgressLine
from .last_checkpoint import LastCheckpoint

__all__ = ["CategoryTablePrinter", "EpochProgressLine", "LastCheckpoint"]
