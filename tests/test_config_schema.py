"""The config's validator (monitor/config/schema.py), pure: each rule's coercions and refusals, the
order in which a section reports its first problem, and secrets that never print."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config.errors import allowed_keys
from monitor.config.model import AlertsConfig, Config
from monitor.config.schema import (
    Bounded,
    Invalid,
    Many,
    Matching,
    Maybe,
    Nested,
    OneOf,
    Rule,
    Section,
    Table,
    Then,
    boolean,
    duration,
    integer,
    number,
    path,
    secret,
    section_fields,
    text,
)
from monitor.config.secret import Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner(Section):
    size: int
    names: tuple[str, ...] = ()

    rules: ClassVar[dict[str, Rule]] = {"size": Bounded(integer, gt=0), "names": Many(text)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outer(Section):
    inner: Inner
    ratio: float = 0.5
    for_: float = 0.0
    table: dict[str, Inner] | None = None

    keys: ClassVar[dict[str, str]] = {"for_": "for"}
    rules: ClassVar[dict[str, Rule]] = {
        "inner": Nested(Inner),
        "ratio": Bounded(number, ge=0, lt=1),
        "for_": duration,
        "table": Maybe(Table(Nested(Inner), min_items=1)),
    }

    def check(self) -> None:
        if self.ratio == 0.25:
            raise ValueError("a quarter is refused")


def problem(rule: Rule, value: Any, loc: tuple[Any, ...] = ("k",)) -> tuple[tuple[Any, ...], str, str]:
    with pytest.raises(Invalid) as info:
        rule(value, loc)
    return info.value.loc, info.value.kind, info.value.msg


def test_a_section_takes_defaults_aliases_and_records_what_was_written() -> None:
    outer = Outer.model_validate({"inner": {"size": "3", "names": ["a", "b"]}, "for": "1m"})
    assert outer == Outer(inner=Inner(size=3, names=("a", "b")), for_=60.0)
    assert outer.written == {"inner", "for_"} and outer.inner.written == {"size", "names"}
    assert Outer.model_validate({"inner": {"size": 1}, "for_": 2}).for_ == 2.0  # the field's own name too


def test_a_section_reports_fields_in_order_then_unknown_keys_then_its_own_check() -> None:
    both = {"zzz": 1, "ratio": 2, "inner": {"size": 1}}
    assert problem(Nested(Outer), both) == (("k", "ratio"), "less_than", "Input should be less than 1")
    assert problem(Nested(Outer), {"zzz": 1, "inner": {"size": 1}})[:2] == (("k", "zzz"), "extra_forbidden")
    assert problem(Nested(Outer), {3: None, "inner": {"size": 1}})[:2] == (("k", 3), "invalid_key")
    assert problem(Nested(Outer), {}) == (("k", "inner"), "missing", "Field required")
    quarter = {"inner": {"size": 1}, "ratio": 0.25}
    assert problem(Nested(Outer), quarter) == (("k",), "value_error", "a quarter is refused")
    assert problem(Nested(Outer), [1])[2] == "Input should be a valid dictionary or instance of Outer"


def test_containers_count_positions_and_keys() -> None:
    assert problem(Many(text), ["a", 1]) == (("k", 1), "string_type", "Input should be a valid string")
    assert Many(text)({"b"}, ()) == ("b",)
    assert (
        problem(Many(text, min_items=1), [])[2] == "Tuple should have at least 1 item after validation, not 0"
    )
    assert problem(Many(text), "ab")[1] == "tuple_type"
    table = Table(Nested(Inner), min_items=1)
    assert problem(table, {"x": {"size": 0}})[:2] == (("k", "x", "size"), "greater_than")
    assert problem(table, {1: {"size": 1}})[:2] == (("k", 1), "invalid_key")
    assert problem(table, {})[2] == "Dictionary should have at least 1 item after validation, not 0"
    assert Maybe(text)(None, ()) is None


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (number, "1.5", 1.5), (number, " 2 ", 2.0), (number, True, 1.0), (number, "1_000", 1000.0),
        (integer, "7", 7), (integer, 7.0, 7), (integer, "1.0", 1), (integer, False, 0),
        (boolean, "yes", True), (boolean, "Off", False), (boolean, 1, True), (boolean, 0.0, False),
        (text, b"abc", "abc"), (path, "a/b", Path("a/b")), (duration, "1h 30m", 5400.0),
        (OneOf(("json", "console")), "json", "json"), (Matching(r"^\d+/\d+$"), "1/2", "1/2"),
    ],
)  # fmt: skip
def test_lax_coercions_people_write(rule: Rule, value: Any, expected: Any) -> None:
    got = rule(value, ())
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("rule", "value", "msg"),
    [
        (number, "abc", "Input should be a valid number, unable to parse string as a number"),
        (number, None, "Input should be a valid number"),
        (integer, 1.5, "Input should be a valid integer, got a number with a fractional part"),
        (integer, "1e3", "Input should be a valid integer, unable to parse string as an integer"),
        (integer, math.inf, "Input should be a finite number"),
        (boolean, "maybe", "Input should be a valid boolean, unable to interpret input"),
        (boolean, 2, "Input should be a valid boolean, unable to interpret input"),
        (boolean, [], "Input should be a valid boolean"),
        (text, 5, "Input should be a valid string"),
        (text, b"\xff", "Input should be a valid string, unable to parse raw data as a unicode string"),
        (OneOf(("auto", "json", "console")), "x", "Input should be 'auto', 'json' or 'console'"),
        (OneOf(("all",)), 1, "Input should be 'all'"),
        (Matching(r"^[a-z]+$"), "abc\n", "String should match pattern '^[a-z]+$'"),
        (Bounded(number, gt=0), math.nan, "Input should be greater than 0"),
        (Bounded(number, ge=0, lt=1), math.nan, "Input should be less than 1"),
        (Bounded(number, ge=0, lt=1), -1, "Input should be greater than or equal to 0"),
        (duration, "soon", "expected a duration such as 30s, 5m or 1h"),
        (Then(text, int), "x", "invalid literal for int() with base 10: 'x'"),
    ],
)
def test_refusals_are_one_line_in_pydantics_words(rule: Rule, value: Any, msg: str) -> None:
    loc, _, got = problem(rule, value)
    assert loc == ("k",) and got == msg


keys = st.text(max_size=6) | st.integers()
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=4) | st.dates(),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=3),
    max_leaves=12,
)  # fmt: skip


@given(value=json_like)
def test_property_every_rule_returns_or_refuses_in_one_line(value: Any) -> None:
    """Whatever YAML can hold: a value or one Invalid line, never another exception."""
    for rule in (number, integer, boolean, text, path, secret, duration, Many(text), Table(integer)):
        try:
            rule(value, ("k",))
        except Invalid as exc:
            assert exc.msg and "\n" not in exc.msg and exc.loc[0] == "k"
    try:
        Config.model_validate(value)
    except Invalid as exc:
        assert exc.msg and "\n" not in exc.msg


@given(x=st.floats(allow_nan=False) | st.integers(-(10**15), 10**15))
def test_property_a_number_written_as_text_reads_as_the_number(x: float) -> None:
    assert number(repr(x), ()) == number(x, ()) == float(x)
    if isinstance(x, int):
        assert integer(str(x), ()) == integer(float(x), ()) == x  # exact: |x| < 2**53


@given(word=st.sampled_from(["1", "on", "t", "true", "y", "yes", "0", "off", "f", "false", "n", "no"]))
def test_property_boolean_words_in_any_case(word: str) -> None:
    truth = word in ("1", "on", "t", "true", "y", "yes")
    assert boolean(word, ()) is boolean(word.upper(), ()) is truth


@given(value=st.text().map(lambda t: f"sk-{t}"))
def test_property_a_secret_never_prints(value: str) -> None:
    held = secret(value, ())
    assert held.get_secret_value() == value and held == Secret(value) and held != Secret(value + "x")
    for shown in (repr(held), str(held), f"{held}", f"{held!r:>40}", repr((held,)), repr({"k": held})):
        assert "sk-" not in shown


def test_every_section_of_the_config_has_a_rule_for_each_field_and_nothing_else() -> None:
    import monitor.config.model as model

    sections = [
        v for v in vars(model).values() if isinstance(v, type) and issubclass(v, Section) and v is not Section
    ]
    assert len(sections) == 12
    for section in sections:
        assert sorted(section.rules) == sorted(section_fields(section)), section.__name__
        assert set(section.keys) <= set(section.rules), section.__name__


def test_allowed_keys_walk_sections_lists_and_tables() -> None:
    assert "for" in allowed_keys(Config, ("alerts",)) and "for_" not in allowed_keys(Config, ("alerts",))
    assert allowed_keys(Config, ("alerts", "levels", 0))[:2] == ["bar", "name"]
    assert allowed_keys(Config, ("notify", "routes", "chat")) == ["urls", "max_per_window", "window"]
    assert allowed_keys(Config, ("accounts", 0, "alerts")) == ["levels", "routes"]
    assert allowed_keys(Config, ("shard",)) == [] and allowed_keys(Config, ("nope",)) == []
    assert AlertsConfig().written == frozenset()
