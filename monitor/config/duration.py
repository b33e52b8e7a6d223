"""Durations: the one grammar of the config, the CLI and HTTP silences, and the simulator's scenarios.

A duration is a number of seconds (``30``, ``2.5``, ``"2.5"``) or one or more amounts with a unit
(``ms``, ``s``, ``m``, ``h``, ``d``), spaces allowed around each: ``"30s"``, ``"5 m"``, ``"250ms"``,
``"1h30m"``, ``"1h 30m"``. Never negative, never NaN.

>>> [parse_duration(v) for v in (30, "2.5", "30s", "5 m", "250ms", "1h30m", "1h 30m", "1d")]
[30.0, 2.5, 30.0, 300.0, 0.25, 5400.0, 5400.0, 86400.0]
>>> parse_duration("soon")
Traceback (most recent call last):
...
monitor.config.duration.DurationError: expected a duration such as 30s, 5m or 1h
"""

from __future__ import annotations

import math
import re

__all__ = ["DurationError", "parse_duration"]

_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class DurationError(ValueError):
    """Not a duration; ``negative`` when it was a number below 0 (each caller may word it its way)."""

    def __init__(self, message: str, *, negative: bool = False) -> None:
        super().__init__(message)
        self.negative = negative


def parse_duration(value: object) -> float:
    """Seconds from a duration (see the module docstring); raises :class:`DurationError` otherwise."""
    if isinstance(value, bool):
        raise DurationError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (number := _NUMBER.fullmatch(value)):
        seconds = float(number.group(1))
    elif isinstance(value, str) and value.strip() and _PART.sub("", value) == "":
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    else:
        raise DurationError("expected a duration such as 30s, 5m or 1h")
    if math.isnan(seconds):
        raise DurationError("expected a duration such as 30s, 5m or 1h")
    if seconds < 0:
        raise DurationError("expected a duration ≥ 0", negative=True)
    return seconds
