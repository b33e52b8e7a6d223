"""A small declarative validator for the config's sections (frozen dataclasses), without pydantic.

A section is a frozen dataclass deriving :class:`Section` whose ``rules`` name, field by field, how a
value read from YAML becomes the field's value; a field without a key in the file takes its default,
one without a default is required, and any other key is refused. Rules are plain callables
``rule(value, loc) -> value`` raising :class:`Invalid` (the key path ``loc``, a kind, one message);
the containers (:class:`Maybe`, :class:`Many`, :class:`Table`, :class:`Nested`) are classes so that
``errors.allowed_keys`` can walk them. The first problem ends the validation: fields in their
declared order, then the unknown keys in the file's order, then the section's own ``check`` (the
order, kinds and wording of pydantic's errors, which this replaced: the messages stay the same).

The coercions are YAML's and pydantic's lax mode: a number may be written as a string (``"1.5"``),
a boolean as ``yes``/``off``/``1``, a list for a tuple; a string is never a number and a number
never a string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from monitor.config.duration import DurationError, parse_duration
from monitor.config.secret import Secret

Loc = tuple[Any, ...]
Rule = Callable[[Any, Loc], Any]
S = TypeVar("S", bound="Section")

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_NOT_TEXT = "Input should be a valid string"
_NOT_BOOL = "Input should be a valid boolean, unable to interpret input"
_INT_TEXT = re.compile(r"[+-]?\d+(?:_\d+)*(?:\.0*)?")


class Invalid(ValueError):
    """The first problem found: where (``loc``, keys and 0-based list positions), its kind, one line."""

    def __init__(self, loc: Loc, kind: str, msg: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}" if loc else msg)
        self.loc = loc
        self.kind = kind
        self.msg = msg


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """A config section: its fields, ``rules`` for them, ``keys`` (a field written under another key,
    such as ``for``), ``check`` (rules across fields). ``written`` holds the fields the file set."""

    rules: ClassVar[dict[str, Rule]] = {}
    keys: ClassVar[dict[str, str]] = {}
    written: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def check(self) -> None:
        """Rules across fields, run once every field is valid: raise ValueError with one line."""

    @classmethod
    def model_validate(cls: type[S], data: Any) -> S:
        """The section from a mapping as read from YAML (``${VAR}`` already expanded), or :class:`Invalid`
        (pydantic's name, kept: tests and docstrings build configs with ``Config.model_validate``)."""
        return validate_section(cls, data, ())


def key_of(cls: type[Section], name: str) -> str:
    """The key a file writes for field ``name``."""
    return cls.keys.get(name, name)


def section_fields(cls: type[Section]) -> list[str]:
    return [f.name for f in fields(cls) if f.name != "written"]


def validate_section(cls: type[S], data: Any, loc: Loc) -> S:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise Invalid(loc, "model_type", f"Input should be a valid dictionary or instance of {cls.__name__}")
    values: dict[str, Any] = {}
    known: set[Any] = set()
    for f in fields(cls):
        if f.name == "written":
            continue
        key = key_of(cls, f.name)
        known.update((key, f.name))
        present = key if key in data else f.name if f.name in data else None
        if present is not None:
            values[f.name] = cls.rules[f.name](data[present], (*loc, present))
        elif f.default is MISSING:
            raise Invalid((*loc, key), "missing", "Field required")
    for key in data:
        if not isinstance(key, str):
            raise Invalid((*loc, key), "invalid_key", "Keys should be strings")
        if key not in known:
            raise Invalid((*loc, key), "extra_forbidden", "Extra inputs are not permitted")
    section = cls(**values, written=frozenset(values))
    try:
        section.check()
    except ValueError as exc:
        raise Invalid(loc, "value_error", str(exc)) from None
    return section


@dataclass(frozen=True, slots=True)
class Nested:
    """A section inside a section."""

    section: type[Section]

    def __call__(self, value: Any, loc: Loc) -> Any:
        return validate_section(self.section, value, loc)


@dataclass(frozen=True, slots=True)
class Maybe:
    """Nothing (``null``, an empty value) or what ``rule`` accepts."""

    rule: Rule

    def __call__(self, value: Any, loc: Loc) -> Any:
        return None if value is None else self.rule(value, loc)


@dataclass(frozen=True, slots=True)
class Many:
    """A list (a tuple once valid) of what ``rule`` accepts, at least ``min_items`` of them."""

    rule: Rule
    min_items: int = 0

    def __call__(self, value: Any, loc: Loc) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple | set | frozenset):
            raise Invalid(loc, "tuple_type", "Input should be a valid tuple")
        items = tuple(self.rule(item, (*loc, i)) for i, item in enumerate(value))
        if len(items) < self.min_items:
            raise Invalid(loc, "too_short", _too_short("Tuple", self.min_items, len(items)))
        return items


@dataclass(frozen=True, slots=True)
class Table:
    """A mapping of names to what ``rule`` accepts, at least ``min_items`` of them."""

    rule: Rule
    min_items: int = 0

    def __call__(self, value: Any, loc: Loc) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(loc, "dict_type", "Input should be a valid dictionary")
        table: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Invalid((*loc, key), "invalid_key", "Keys should be strings")
            table[key] = self.rule(item, (*loc, key))
        if len(table) < self.min_items:
            raise Invalid(loc, "too_short", _too_short("Dictionary", self.min_items, len(table)))
        return table


def _too_short(what: str, least: int, got: int) -> str:
    return f"{what} should have at least {least} item{'s' if least != 1 else ''} after validation, not {got}"


@dataclass(frozen=True, slots=True)
class Bounded:
    """A number from ``rule`` within bounds (checked in pydantic's order: below, then above)."""

    rule: Rule
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None

    def __call__(self, value: Any, loc: Loc) -> Any:
        number = self.rule(value, loc)
        if self.lt is not None and not number < self.lt:
            raise Invalid(loc, "less_than", f"Input should be less than {self.lt}")
        if self.ge is not None and not number >= self.ge:
            raise Invalid(loc, "greater_than_equal", f"Input should be greater than or equal to {self.ge}")
        if self.gt is not None and not number > self.gt:
            raise Invalid(loc, "greater_than", f"Input should be greater than {self.gt}")
        return number


@dataclass(frozen=True, slots=True)
class Matching:
    """A string matching ``pattern`` (``$`` is the end of the text, not before a final newline)."""

    pattern: str

    def __call__(self, value: Any, loc: Loc) -> str:
        found = text(value, loc)
        if re.search(self.pattern.removesuffix("$") + r"\Z", found) is None:
            raise Invalid(loc, "string_pattern_mismatch", f"String should match pattern '{self.pattern}'")
        return found


@dataclass(frozen=True, slots=True)
class Then:
    """What ``rule`` accepts, then passed through ``check`` (which raises ValueError with one line)."""

    rule: Rule
    check: Callable[[Any], Any]

    def __call__(self, value: Any, loc: Loc) -> Any:
        found = self.rule(value, loc)
        try:
            return self.check(found)
        except ValueError as exc:
            raise Invalid(loc, "value_error", str(exc)) from None


@dataclass(frozen=True, slots=True)
class OneOf:
    """Exactly one of ``choices`` (strings)."""

    choices: tuple[str, ...]

    def __call__(self, value: Any, loc: Loc) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        raise Invalid(loc, "literal_error", f"Input should be {choices(self.choices)}")


def choices(names: tuple[str, ...]) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'``."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _decoded(value: Any) -> Any:
    """UTF-8 bytes (YAML's ``!!binary``) as the string they spell; other bytes stay bytes (refused)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def text(value: Any, loc: Loc) -> str:
    value = _decoded(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # not UTF-8
        raise Invalid(loc, "string_unicode", f"{_NOT_TEXT}, unable to parse raw data as a unicode string")
    raise Invalid(loc, "string_type", _NOT_TEXT)


def number(value: Any, loc: Loc) -> float:
    value = _decoded(value)
    if isinstance(value, int | float):  # a bool too: true is 1.0, as pydantic's lax mode reads it
        try:
            return float(value)
        except OverflowError:
            raise Invalid(loc, "finite_number", "Input should be a finite number") from None
    if isinstance(value, str | bytes):  # bytes here are not UTF-8
        try:
            return float(value.strip())
        except ValueError:
            raise Invalid(
                loc, "float_parsing", "Input should be a valid number, unable to parse string as a number"
            ) from None
    raise Invalid(loc, "float_type", "Input should be a valid number")


def integer(value: Any, loc: Loc) -> int:
    value = _decoded(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(loc, "finite_number", "Input should be a finite number")
        if not value.is_integer():
            raise Invalid(
                loc, "int_from_float", "Input should be a valid integer, got a number with a fractional part"
            )
        return int(value)
    if isinstance(value, str | bytes):  # bytes here are not UTF-8
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            return int(value.strip().partition(".")[0])
        raise Invalid(
            loc, "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
        )
    raise Invalid(loc, "int_type", "Input should be a valid integer")


def boolean(value: Any, loc: Loc) -> bool:
    value = _decoded(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise Invalid(loc, "bool_parsing", _NOT_BOOL)
    if isinstance(value, bytes):
        raise Invalid(loc, "bool_parsing", _NOT_BOOL)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, int) and abs(value) < 2**63:
        raise Invalid(loc, "bool_parsing", _NOT_BOOL)
    raise Invalid(loc, "bool_type", "Input should be a valid boolean")


def path(value: Any, loc: Loc) -> Path:
    if isinstance(value, str):
        return Path(value)
    raise Invalid(loc, "path_type", "Input is not a valid path")


def secret(value: Any, loc: Loc) -> Secret:
    return Secret(text(value, loc))


def duration(value: Any, loc: Loc) -> float:
    """Seconds (:mod:`monitor.config.duration`)."""
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise Invalid(loc, "value_error", str(exc)) from None
