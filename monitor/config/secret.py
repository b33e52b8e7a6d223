"""A secret value of the config (API key, token, notification URL) that never prints itself.

>>> key = Secret("hunter2-key")
>>> key, str(key), f"{key}", key.get_secret_value()
(Secret('**********'), '**********', '**********', 'hunter2-key')
>>> Secret("a") == Secret("a"), Secret("a") == Secret("b"), bool(Secret(""))
(True, False, False)
"""

from __future__ import annotations

from typing import Final

_MASK: Final = "**********"


class Secret:
    """A string kept out of ``repr``, ``str`` and formatting; ``get_secret_value()`` hands it out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
