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


def refuse(name: str, value: object, rule: str, works: str) -> NoReturn:
    """Raise :class:`UniASArgumentError` naming the argument, its value, the rule it breaks and a value that works."""
    msg = f"UniAS argument {name}={value!r}: {rule}. A value that works: {works}."
    raise UniASArgumentError(msg)
