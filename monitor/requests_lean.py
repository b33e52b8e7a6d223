"""Imports ``requests`` without a character-set detector: charset_normalizer (mypyc-compiled) is ~2.6
MiB of a one-account daemon's RSS, for a guess this daemon never needs.

``requests`` is loaded by python-binance at import (``binance/client.py``, the sync client; the
daemon's ``AsyncClient`` sends with aiohttp) and by Apprise, which sends with it. requests uses its
detector only in ``Response.apparent_encoding``, which ``Response.text`` (and ``.json()`` for a body
that is not UTF-8/16/32) consult when the response's ``Content-Type`` names no charset (``text/*``
is ISO-8859-1 and ``application/json`` UTF-8 by the headers alone). Without a detector
(``requests.compat.chardet is None``) ``apparent_encoding`` is ``"utf-8"``: such a body is decoded
as UTF-8 with undecodable bytes replaced, never an error. Apprise's JSON plugin reads only
``Response.content`` (bytes).

So the detectors are hidden while requests is imported first (its own fallback when none is
installed, as monitor/logs.py hides rich from structlog), then made importable again; requests'
warning that it found none is the one warning silenced. Nothing happens when requests is loaded
already. The daemon imports this module before python-binance and Apprise (monitor/cli/__init__.py,
monitor/exchange/rest.py; tests/test_imports.py checks it).
"""

from __future__ import annotations

import sys
import warnings

_DETECTORS = ("charset_normalizer", "chardet")

if "requests" not in sys.modules:
    hidden = [name for name in _DETECTORS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"Unable to find acceptable character detection dependency"
            )
            import requests  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]
