"""One-line config errors a trader can act on: where, what was found, what was expected, a hint.

Positions in lists count from 1 and carry the item's name when it has one, so the second rung reads
``alerts.levels[2] (bar margin_call)`` and the first account ``accounts[1] (main)``. The offending
value is shown as written in the file (``${VAR}`` unexpanded), only when it is a scalar and never
under a key that may hold a secret. Unknown keys get "did you mean …?" from the keys allowed there.

>>> where(("alerts", "levels", 1, "repeat"), {"alerts": {"levels": [{"bar": 1.5}, {"bar": "margin_call"}]}})
'alerts.levels[2] (bar margin_call).repeat'
>>> decimal_comma_hint({"bar": 1, 3: None})
'`{bar: 1,3}` reads as two keys, bar: 1 and 3: a decimal comma; write bar: 1.3'
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from monitor.config.schema import Invalid, Many, Maybe, Nested, Section, Table, key_of, section_fields

# a key whose value may be a secret (or hold one, as a notification URL may hold a bot token)
SECRET_KEYS = frozenset({"api_key", "api_secret", "token", "urls", "url"})  # url: heartbeat.url
_COMMA_NUMBER = re.compile(r"^\s*\d+,\d+\s*$")
SHOWN_MAX = 40


def _key(key: Any) -> str:
    """A key as shown in an error: itself when printable and short, else its (cut) repr."""
    text = str(key)
    return text if text.isprintable() and len(text) <= 64 else repr(text[:64])


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _name_of(item: Any) -> str:
    """An item's own name, for a list position: an account's ``name``, a rung's ``bar``."""
    if not isinstance(item, dict):
        return ""
    if isinstance(item.get("name"), str) and item["name"].isprintable() and len(item["name"]) <= 64:
        return f" ({item['name']})"
    bar = item.get("bar")
    if isinstance(bar, str | int | float) and not isinstance(bar, bool) and len(str(bar)) <= 20:
        return f" (bar {bar})"
    return ""


def where(loc: tuple[Any, ...], raw: Any, *, name_last: bool = True) -> str:
    """A key path as people count: 1-based list positions, each with its item's name when known
    (not for the last item when ``name_last`` is false: its name is what is broken)."""
    out = ""
    node = raw
    for n, part in enumerate(loc, start=1):
        if isinstance(part, int) and isinstance(node, list):
            named = name_last or n < len(loc)
            out += f"[{part + 1}]{_name_of(_child(node, part)) if named else ''}"
        else:
            out += f".{_key(part)}" if out else _key(part)
        node = _child(node, part)
    return out


def value_at(loc: tuple[Any, ...], raw: Any) -> Any:
    node = raw
    for part in loc:
        node = _child(node, part)
    return node


def shown(loc: tuple[Any, ...], raw: Any) -> str:
    """``, got VALUE`` for a scalar as written in the file; empty for secrets, lists and mappings."""
    if any(str(part) in SECRET_KEYS for part in loc):
        return ""
    parent = value_at(loc[:-1], raw) if loc else None
    if not isinstance(parent, dict | list) or (isinstance(parent, dict) and loc[-1] not in parent):
        return ""
    value = value_at(loc, raw)
    scalars = isinstance(value, list) and all(isinstance(v, str | int | float) for v in value)
    if scalars and 0 < len(value) <= 5:
        listed = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value)
        return f", got [{listed}]" if len(listed) <= SHOWN_MAX else ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "nothing (an empty value)"
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = repr(value if len(value) <= SHOWN_MAX else value[:SHOWN_MAX] + "…")
    else:
        return ""
    return f", got {text}"


def decimal_comma_hint(mapping: Any) -> str | None:
    """A flow mapping ``{bar: 1,3}`` loads as ``{bar: 1, 3: None}``: say so (rather than
    "Keys should be strings")."""
    if not isinstance(mapping, dict):
        return None
    keys = list(mapping)
    for i, key in enumerate(keys):
        if isinstance(key, int) and not isinstance(key, bool) and mapping[key] is None and i > 0:
            before = keys[i - 1]
            value = mapping[before]
            if isinstance(value, int) and not isinstance(value, bool):
                return (
                    f"`{{{before}: {value},{key}}}` reads as two keys, {before}: {value} and {key}: "
                    f"a decimal comma; write {before}: {value}.{key}"
                )
    return None


def _section_at(root: type[Section], loc: tuple[Any, ...]) -> type[Section] | None:
    """The config section found at ``loc`` (for the keys allowed there)."""
    rule: Any = Nested(root)
    for part in loc:
        rule = _present(rule)
        if isinstance(rule, Nested):
            section = rule.section
            name = next((n for n in section_fields(section) if part in (n, key_of(section, n))), None)
            if name is None:
                return None
            rule = section.rules[name]
        elif isinstance(rule, Many | Table):
            rule = rule.rule
        else:
            return None
    rule = _present(rule)
    return rule.section if isinstance(rule, Nested) else None


def _present(rule: Any) -> Any:
    """The rule a value given there must pass (inside any ``Maybe``)."""
    while isinstance(rule, Maybe):
        rule = rule.rule
    return rule


def allowed_keys(root: type[Section], loc: tuple[Any, ...]) -> list[str]:
    """The keys a config file may write at ``loc`` (``for`` where the field is ``for_``)."""
    section = _section_at(root, loc)
    return [] if section is None else [key_of(section, n) for n in section_fields(section)]


def near_miss(root: type[Section], loc: tuple[Any, ...]) -> str:
    """`` (did you mean `hysteresis`?)`` for an unknown key close to an allowed one, else empty."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    match = difflib.get_close_matches(loc[-1], allowed_keys(root, loc[:-1]), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def describe(error: Invalid, raw: Any, root: type[Section]) -> str:
    """The first problem as ``key.path: problem, got VALUE (hint)``, against the file as written."""
    loc = error.loc
    path = where(loc, raw)
    msg = " ".join(error.msg.split())
    kind = error.kind
    if kind == "invalid_key":
        hint = decimal_comma_hint(value_at(loc[:-1], raw))
        problem = hint or f"keys must be names, got {_key(loc[-1])!r}"
        parent = where(loc[:-1], raw, name_last=False)
        return f"{parent}: {problem}" if parent else problem
    if kind == "extra_forbidden":
        return f"{path}: unknown key{near_miss(root, loc)}"  # never its value: it may be a secret
    if kind == "missing":
        return f"{path}: required key is missing"
    got = shown(loc, raw)
    value = value_at(loc, raw)
    if isinstance(value, str) and _COMMA_NUMBER.match(value) and not any(str(p) in SECRET_KEYS for p in loc):
        got += f" (a decimal comma? write {value.strip().replace(',', '.')})"
    return f"{path}: {msg}{got}" if path else msg
