"""The errors UniAS raises, one family (:class:`UniASError`), and the one way an argument refusal is written."""

from __future__ import annotations

from typing import NoReturn


class UniASError(Exception):
    """Base of every error UniAS raises on purpose: ``except UniASError`` catches them all.

    Each subclass also derives from the built-in error it stands for (``ValueError``, ``OSError``, ...), so
    code that catches those keeps working.
    """


class UniASArgumentError(UniASError, ValueError):
    """An argument value UniAS cannot run with."""


class UniASUsageError(UniASError, TypeError):
    """A UniAS object called with inputs of a kind it cannot work with."""


class UniASFileNotFoundError(UniASError, FileNotFoundError):
    """A file or folder UniAS was pointed at is not there."""


class UniASFileExistsError(UniASError, FileExistsError):
    """A file UniAS would write is there already (UniAS does not overwrite data)."""


class UniASFileError(UniASError, OSError):
    """A file UniAS could not write."""


class UniASRuntimeError(UniASError, RuntimeError):
    """Something UniAS needs did not happen (no images found, a download failed, keys left unconverted)."""


class UniASIndexError(UniASError, IndexError):
    """An index past the end of what it counts."""


def refuse(name: str, value: object, rule: str, works: str) -> NoReturn:
    """Raise :class:`UniASArgumentError` naming the argument, its value, the rule it breaks and a value that works."""
    msg = f"UniAS argument {name}={value!r}: {rule}. A value that works: {works}."
    raise UniASArgumentError(msg)
