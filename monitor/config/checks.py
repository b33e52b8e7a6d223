"""What one value of the config must look like, beyond its type: URLs, asset and symbol names, bars,
``HOST:PORT``, shard specs. Each check takes the typed value and returns it (or its normal form) or
raises ValueError with what was expected; ``bar`` and ``symbols`` are whole rules (any YAML value in).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from monitor.config.schema import Invalid, number, text
from monitor.config.secret import Secret

_BARS = ("normal", "margin_call", "liquidation")


def url(value: str) -> str:
    if not re.match(r"^(https?|wss?)://[^\s/]+", value):
        raise ValueError("expected a URL such as https://api.binance.com or ws://127.0.0.1:8080")
    return value.rstrip("/")


def asset(value: str) -> str:
    if not re.fullmatch(r"[A-Z0-9]{2,12}", value):
        raise ValueError("expected an asset name such as USDT")
    return value


def bar(value: Any, loc: tuple[Any, ...]) -> str | float:
    """A bar's name or a margin level (a string is a name: ``"1.5"`` is refused, as before)."""
    if isinstance(value, bytes | str):
        name = text(value, loc)
        if name not in _BARS:
            raise Invalid(
                loc, "value_error", "expected normal, margin_call, liquidation or a number such as 1.25"
            )
        return name
    if not isinstance(value, int | float):  # a bool is a number here, as pydantic read it
        raise Invalid(
            loc, "value_error", "expected normal, margin_call, liquidation or a number such as 1.25"
        )
    level = number(value, loc)
    if not 0 < level < 1000:
        raise Invalid(loc, "value_error", "expected a margin level > 0")
    return level


def symbols(value: Any, loc: tuple[Any, ...]) -> Literal["all"] | tuple[str, ...]:
    """``all`` or a list of symbols such as BTCUSDT."""
    if value == "all" and isinstance(value, str):
        return "all"
    if not isinstance(value, list | tuple):
        raise Invalid(loc, "value_error", "expected all or symbols such as BTCUSDT")
    if not all(isinstance(s, str) and re.fullmatch(r"[A-Z0-9]{4,20}", s) for s in value):
        raise Invalid(loc, "value_error", "expected symbols such as BTCUSDT")
    return tuple(value)


def listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:9108")
    return value


def http_url(value: Secret) -> Secret:
    if not re.match(r"^https?://[^\s/]+", value.get_secret_value()):
        raise ValueError("expected an http(s) URL such as https://hc-ping.com/<uuid>")
    return value


def shard_spec(value: str) -> str:
    from monitor.config.shard import parse_shard

    parse_shard(value)  # ShardError is a ValueError: reported as shard: <reason>
    return value
