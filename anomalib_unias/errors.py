"""The error UniAS raises for an argument it cannot run with, and the one way its message is written."""

from __future__ import annotations

from typing import NoReturn


class UniASArgumentError(ValueError):
    """An argument value UniAS cannot run with."""


def refuse(name: str, value: object, rule: str, works: str) -> NoReturn:
    """Raise :class:`UniASArgumentError` naming the argument, its value, the rule it breaks and a value that works."""
    msg = f"UniAS argument {name}={value!r}: {rule}. A value that works: {works}."
    raise UniASArgumentError(msg)
