"""Load only the Apprise plugins for the schemes the daemon uses (about 12 MiB less than all ~130).

Apprise imports every plugin module the first time any scheme is looked up. Before the first
lookup, :func:`prepare` sets Apprise's plugin manager up with nothing loaded (``load_modules`` on an
empty directory, a public call) and then registers, scheme by scheme, the one plugin class that
serves it (``NotificationManager.add``). The module for a scheme is found by reading the plugin
sources' ``protocol`` / ``secure_protocol`` assignments as text, and confirmed after import by the
class's own ``schemas()``. Anything unexpected (a scheme no module declares, a module that does not
confirm it, an Apprise whose manager already loaded) falls back to Apprise's normal load of every
plugin, so delivery is always real Apprise, only sometimes with more memory.

>>> sorted(declared_schemes('    protocol = "json"\\n    secure_protocol = ("jsons", "x")\\n'))
['json', 'jsons', 'x']
"""

from __future__ import annotations

import importlib
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import structlog

__all__ = ["declared_schemes", "prepare"]

log = structlog.get_logger("monitor.notify.plugins")

_ASSIGN = re.compile(r"^\s+(?:secure_)?protocol\s*=\s*(\([^)]*\)|\"[^\"]*\"|'[^']*')", re.M)
_WORD = re.compile(r"[\"']([A-Za-z0-9_+.-]+)[\"']")
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"scoped": None, "index": None, "done": set()}


def declared_schemes(source: str) -> set[str]:
    """The schemes a plugin source declares in its ``protocol`` / ``secure_protocol`` assignments."""
    return {w.lower() for m in _ASSIGN.finditer(source) for w in _WORD.findall(m.group(1))}


def _index() -> dict[str, str]:
    """scheme -> plugin module name (``json`` -> ``custom_json``), from the sources, no import."""
    import apprise.plugins

    root = Path(apprise.plugins.__file__).parent
    index: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith(("_", "base")) or not re.fullmatch(r"[a-z0-9_]+", name):
            continue
        for source in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            for scheme in declared_schemes(source.read_text(encoding="utf-8", errors="replace")):
                index.setdefault(scheme, name)
    return index


def _plugin_class(module_name: str, scheme: str) -> Any:
    module = importlib.import_module(f"apprise.plugins.{module_name}")
    for attr in dir(module):
        cls = getattr(module, attr)
        if not isinstance(cls, type) or not hasattr(cls, "app_id"):
            continue
        schemas = getattr(cls, "schemas", None)
        if callable(schemas) and scheme in schemas(cls):
            return cls
    return None


def prepare(scheme: str) -> None:
    """Make ``scheme`` known to Apprise, loading its plugin only (or, if that cannot be done, all)."""
    from apprise.manager_plugins import NotificationManager

    manager: Any = NotificationManager  # untyped; a singleton: every call returns Apprise's one
    mgr: Any = manager()
    scheme = scheme.lower()
    with _LOCK:
        if scheme in _STATE["done"]:
            return
        if _STATE["scoped"] is None:
            # Scoped only if nothing has looked a scheme up yet (else Apprise loaded them all).
            _STATE["scoped"] = not bool(mgr)
            if _STATE["scoped"]:
                with tempfile.TemporaryDirectory(prefix="apprise-none-") as empty:
                    mgr.load_modules(path=empty, name="monitor.apprise_none")
                _STATE["index"] = _index()
        _STATE["done"].add(scheme)
        if not _STATE["scoped"] or scheme in mgr:
            return
        module_name = _STATE["index"].get(scheme)
        cls = _plugin_class(module_name, scheme) if module_name else None
        if cls is None:
            log.warning("apprise_plugins_all", scheme=scheme, reason="no plugin module declares it")
            _full_load(mgr)
            return
        for other in [s for s in cls.schemas(cls) if s in mgr]:
            mgr.remove(other, unload=False)
        if not mgr.add(cls):
            _full_load(mgr)
        else:
            _STATE["done"].update(cls.schemas(cls))


def _full_load(mgr: Any) -> None:
    """Apprise's own behaviour: every plugin (drops the scoped set-up)."""
    _STATE["scoped"] = False
    mgr.unload_modules()
    mgr.load_modules()
