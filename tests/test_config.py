"""Config loading: defaults, env and file secrets, and one-line errors naming file, key and problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config.duration import parse_duration
from monitor.config.model import ConfigError, load_config, loose_permissions, read_secret

ROOT = Path(__file__).resolve().parent.parent

MINIMAL: dict[str, Any] = {
    "accounts": [{"name": "a", "api_key": "k" * 8, "api_secret": "s" * 8}],
    "notify": {"routes": {"chat": {"urls": ["json://127.0.0.1:1/x"]}}},
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_bundled_config_loads() -> None:
    """The repository's default config.yaml is valid and points at the simulator."""
    config = load_config(ROOT / "config.yaml")
    assert config.exchange.kind == "simulator"
    assert config.accounts[0].name == "demo"
    assert config.http.host == "127.0.0.1"
    assert config.state_dir.is_absolute()


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    """Only accounts and routes are required; everything else has production defaults."""
    config = load_config(write(tmp_path, MINIMAL))
    assert config.exchange.rest_url == "https://api.binance.com"
    assert config.exchange.stream_url == "wss://stream.binance.com:9443"
    assert config.alerts.levels is None  # the exchange's own bars are fetched at start
    assert config.alerts.stale_after == 30.0
    assert config.state_dir == (tmp_path / "state").resolve()


def test_env_reference_is_expanded_and_kept_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR}` takes the environment's value, which never shows in the config's repr."""
    monkeypatch.setenv("MM_TEST_KEY", "very-secret-key-123")
    data = {**MINIMAL, "accounts": [{"name": "a", "api_key": "${MM_TEST_KEY}", "api_secret": "x" * 8}]}
    config = load_config(write(tmp_path, data))
    key = config.accounts[0].api_key
    assert key is not None and key.get_secret_value() == "very-secret-key-123"
    assert "very-secret-key-123" not in repr(config)


def test_unset_env_reference_is_one_line_error(tmp_path: Path) -> None:
    """An unset `${VAR}` names the key path and the variable."""
    data = {**MINIMAL, "accounts": [{"name": "a", "api_key": "${MM_SURELY_UNSET_VAR}", "api_secret": "x"}]}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    where = f"{tmp_path / 'config.yaml'}: accounts[1] (a).api_key"
    assert str(info.value) == f"{where}: environment variable MM_SURELY_UNSET_VAR is not set"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"exchange": {"kind": "kraken"}}, "exchange.kind: Input should be 'simulator' or 'binance'"),
        ({"exchange": {"colour": "red"}}, "exchange.colour: unknown key"),
        ({"alerts": {"hysteresis": -1}}, "alerts.hysteresis: Input should be greater than or equal to 0"),
        ({"alerts": {"for": "soon"}}, "alerts.for: expected a duration such as 30s, 5m or 1h"),
        ({"alerts": {"levels": [{"bar": "panic"}]}}, "alerts.levels[1] (bar panic).bar"),
        ({"alerts": {"levels": [{"bar": 1.3, "routes": ["phone"]}]}}, "unknown route 'phone'"),
        ({"http": {"listen": "everywhere"}}, "http.listen: expected HOST:PORT"),
        ({"notify": {"routes": {}}}, "notify.routes"),
        ({"accounts": []}, "accounts"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, patch: dict[str, Any], expected: str) -> None:
    """Each kind of mistake gives one line with the key path and what was expected."""
    message = _error_for(tmp_path, {**MINIMAL, **patch})
    assert expected in message
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "config.yaml"))


def test_missing_credentials_and_duplicates(tmp_path: Path) -> None:
    """An account needs a key and secret, and names must be unique."""
    assert "api_key" in _error_for(tmp_path, {**MINIMAL, "accounts": [{"name": "a", "api_secret": "x"}]})
    twice = [{"name": "a", "api_key": "k", "api_secret": "s"}] * 2
    assert "unique" in _error_for(tmp_path, {**MINIMAL, "accounts": twice})


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    """Broken YAML names the line; a missing file says so."""
    assert "invalid YAML at line 2, column 4" in _error_for(tmp_path, "a: 1\nb: : : x\n")
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_error_never_echoes_a_secret(tmp_path: Path) -> None:
    """A wrong-typed secret is reported by key only, never by value."""
    data = {**MINIMAL, "accounts": [{"name": "a", "api_key": ["sekrit-value-999"], "api_secret": "s"}]}
    message = _error_for(tmp_path, data)
    assert "accounts[1] (a).api_key" in message
    assert "sekrit-value-999" not in message


def test_secret_file_and_permissions(tmp_path: Path) -> None:
    """A secret file is read relative to the config; world-readable files are flagged."""
    secret = tmp_path / "secret.txt"
    secret.write_text("file-secret\n")
    secret.chmod(0o600)
    assert read_secret(None, Path("secret.txt"), "accounts.0.api_secret_file", tmp_path / "c.yaml") == (
        "file-secret"
    )
    assert not loose_permissions(secret)
    secret.chmod(0o644)
    assert loose_permissions(secret)
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(None, Path("missing.txt"), "accounts.0.api_secret_file", tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), (2, 2), ("250ms", 0.25)]
)
def test_durations(text: object, seconds: float) -> None:
    """Durations accept numbers and s/m/h/ms suffixes."""
    assert parse_duration(text) == seconds


def test_config_and_scenarios_share_one_duration_grammar() -> None:
    """A config duration and a scenario duration read the same input as the same seconds (both
    grammars of before: "30 s" from the config's, "1h30m" and "2.5" from the scenarios')."""
    from pydantic import TypeAdapter

    from monitor.config.schema import duration
    from monitor.sim.scenario import Seconds

    scenario = TypeAdapter(Seconds)
    for text, seconds in (("30 s", 30), ("1h30m", 5400), ("1h 30m", 5400), ("2.5", 2.5), (90, 90)):
        assert duration(text, ()) == scenario.validate_python(text) == seconds
    for bad in ("soon", "1 fortnight", "-5", True, float("nan")):
        with pytest.raises(ValueError):
            duration(bad, ())
        with pytest.raises(ValueError):
            scenario.validate_python(bad)


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
json_tree = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    key=st.sampled_from(["exchange", "accounts", "alerts", "notify", "http", "log", "state_dir", "bogus"]),
    value=json_tree,
)
def test_hostile_configs_fail_with_one_line(tmp_path: Path, key: str, value: Any) -> None:
    """Any value in any section either loads or fails with exactly one ConfigError line."""
    try:
        load_config(write(tmp_path, {**MINIMAL, key: value}))
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text and "Traceback" not in text


def _error_for(tmp_path: Path, data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    return str(info.value)


# -- mistakes people make, and the line that tells them what to do ----------------------------------

BASE_TEXT = "accounts: [{name: main, api_key: kkkkkkkk, api_secret: ssssssss}]\n"
NOTIFY_TEXT = "notify: {routes: {chat: {urls: ['json://127.0.0.1:1/x']}}}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alerts: {levels: [{bar: normal}, {bar: 1,3}]}",
         "alerts.levels[2]: `{bar: 1,3}` reads as two keys, bar: 1 and 3: a decimal comma; write bar: 1.3"),
        ("alerts:\n  levels:\n    - bar: 1,3",
         "alerts.levels[1] (bar 1,3).bar: expected normal, margin_call, liquidation or a number such as "
         "1.25, got '1,3' (a decimal comma? write 1.3)"),
        ("alerts: {hysterisis: 0.1}", "alerts.hysterisis: unknown key (did you mean `hysteresis`?)"),
        ("alerts: {stale_afer: 30s}", "alerts.stale_afer: unknown key (did you mean `stale_after`?)"),
        ("alerts: {levels: [{bar: normal}, {bar: margin_call, repeat: soon}]}",
         "alerts.levels[2] (bar margin_call).repeat: expected a duration such as 30s, 5m or 1h, got 'soon'"),
        ("alerts: {levels: [{bar: 1.3, routes: [phone]}]}",
         "alerts.levels[1] (bar 1.3).routes: unknown route 'phone'; notify.routes has ['chat']"),
        ("exchange: {kind: kraken}", "exchange.kind: Input should be 'simulator' or 'binance', got 'kraken'"),
        ("exchange: {snapshot_interval: 5 minutes}",
         "exchange.snapshot_interval: expected a duration such as 30s, 5m or 1h, got '5 minutes'"),
        ("alerts: {hysteresis: 2}", "alerts.hysteresis: Input should be less than 1, got 2"),
        ("http: {listen: everywhere}",
         "http.listen: expected HOST:PORT such as 127.0.0.1:9108, got 'everywhere'"),
        ("http: {enabled: maybe}",
         "http.enabled: Input should be a valid boolean, unable to interpret input, got 'maybe'"),
        ("log: {levl: debug}", "log.levl: unknown key (did you mean `level`?)"),
        ("colour: red", "colour: unknown key"),
    ],
)  # fmt: skip
def test_mistakes_name_the_place_the_value_and_a_fix(tmp_path: Path, text: str, expected: str) -> None:
    """Each common mistake: one line with a countable position, the value as written, and a hint."""
    path = tmp_path / "config.yaml"
    path.write_text(BASE_TEXT + NOTIFY_TEXT + text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {expected}"


def test_second_account_is_counted_from_one_and_named(tmp_path: Path) -> None:
    """A mistake in the second account names it as people count it, with its name."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts:\n  - {name: main, api_key: k, api_secret: s}\n  - {name: side, api_key: k, api_secret: s,"
        " isolated: [btcusdt]}\n" + NOTIFY_TEXT
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = ": accounts[2] (side).isolated: expected symbols such as BTCUSDT, got ['btcusdt']"
    assert str(info.value).endswith(expected)


@pytest.mark.parametrize(
    "text",
    [
        "accounts: [{name: a, api_key: kkkkkkkk, api_secert: TOPSECRET-1}]",
        "accounts: [{name: a, api_key: [TOPSECRET-1], api_secret: s}]",
        "accounts: [{name: a, api_key: kkkkkkkk, api_secret: s}]\nhttp: {token: [TOPSECRET-1]}",
        "accounts: [{name: a, api_key: kkkkkkkk, api_secret: s}]\nhttp: {tokn: TOPSECRET-1}",
    ],
)
def test_a_secret_is_never_the_value_shown(tmp_path: Path, text: str) -> None:
    """Under a secret key, or a near-miss of one, the value is never echoed (only the key)."""
    path = tmp_path / "config.yaml"
    path.write_text(text + "\n" + NOTIFY_TEXT.replace("json://127.0.0.1:1/x", "json://u:TOPSECRET-2@h/x"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "TOPSECRET" not in str(info.value)


ALLOWED = {
    "exchange": ["kind", "scenario", "rest_url", "stream_url", "quote", "stablecoins", "snapshot_interval"],
    "alerts": ["levels", "hysteresis", "resolved", "distance", "stale_after", "blind_routes"],
    "http": ["enabled", "listen", "token"],
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(sorted(ALLOWED)), data=st.data())
def test_property_one_typo_in_a_key_suggests_a_key_allowed_there(
    tmp_path: Path, section: str, data: st.DataObject
) -> None:
    """A key with one letter dropped or doubled is refused with "did you mean" a key valid at that place."""
    key = data.draw(st.sampled_from(ALLOWED[section]))
    at = data.draw(st.integers(0, len(key) - 1))
    typo = data.draw(st.sampled_from([key[:at] + key[at + 1 :], key[:at] + key[at] + key[at:]]))
    message = _error_for(tmp_path, {**MINIMAL, section: {typo: None}})
    assert message.endswith(f"{section}.{typo}: unknown key (did you mean `{key}`?)") or (
        "did you mean `" in message and message.split("`")[1] in ALLOWED[section] + ["for", "ws_api_url"]
    ), message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 6), data=st.data())
def test_property_rung_positions_count_from_one(tmp_path: Path, count: int, data: st.DataObject) -> None:
    """With n rungs and a bad `repeat` on rung k, the error names `alerts.levels[k]` counted from 1."""
    bad = data.draw(st.integers(0, count - 1))
    rungs: list[dict[str, Any]] = [{"bar": round(2.0 - i * 0.1, 1)} for i in range(count)]
    rungs[bad]["repeat"] = "often"
    message = _error_for(tmp_path, {**MINIMAL, "alerts": {"levels": rungs}})
    assert f": alerts.levels[{bad + 1}] (bar {rungs[bad]['bar']}).repeat: " in message
    assert message.endswith("got 'often'")


def test_inert_settings_examples_in_docstrings() -> None:
    """The worked examples of monitor/config/notes.py and monitor/config/errors.py hold."""
    import doctest

    import monitor.config.errors
    import monitor.config.notes

    assert doctest.testmod(monitor.config.notes).failed == 0
    assert doctest.testmod(monitor.config.errors).failed == 0


@pytest.mark.parametrize(
    ("patch", "note"),
    [
        ({"exchange": {"kind": "binance", "scenario": "crash"}},
         "exchange.scenario: does nothing with exchange.kind binance (only the simulator replays one)"),
        ({"exchange": {"kind": "simulator", "rest_url": "https://api.binance.com"}},
         "exchange.rest_url: does nothing with exchange.kind simulator (the simulator has its own URLs)"),
        ({"alerts": {"resolved": False, "levels": [{"bar": 1.5, "resolved": True}]}},
         "alerts.levels[1] (bar 1.5).resolved: does nothing while alerts.resolved is false"),
        ({"alerts": {"default_routes": ["chat"], "blind_routes": ["chat"],
                     "levels": [{"bar": 1.5, "routes": ["chat"]}]}},
         "alerts.default_routes: does nothing (every rung, distance and blind alert names its routes)"),
        ({"notify": {"routes": {"chat": {"urls": ["json://h/x"], "window": "5m"}}}},
         "notify.routes.chat.window: does nothing without max_per_window (no flood control here)"),
        ({"http": {"enabled": False, "listen": "0.0.0.0:9108"}},
         "http.listen: does nothing while http.enabled is false"),
        ({"accounts": [{"name": "a", "api_key": "k", "api_secret": "s", "cross": False}]},
         "accounts[1] (a): watches nothing (cross is false and isolated is empty)"),
    ],
)  # fmt: skip
def test_settings_that_do_nothing_are_noted(tmp_path: Path, patch: dict[str, Any], note: str) -> None:
    """`check` notes a written setting that has no effect; the shipped config has none."""
    from monitor.config.notes import inert_settings

    assert inert_settings(load_config(write(tmp_path, {**MINIMAL, **patch}))) == [note]
    assert inert_settings(load_config(ROOT / "config.yaml")) == []


def test_a_route_name_from_the_environment_is_shown_as_its_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown route named through ${VAR}: the error names the variable, never its value."""
    monkeypatch.setenv("MM_ROUTE_SECRET", "hunter2-route")
    data = {**MINIMAL, "alerts": {"levels": [{"bar": 1.3, "routes": ["${MM_ROUTE_SECRET}"]}]}}
    message = _error_for(tmp_path, data)
    assert "hunter2" not in message
    assert message.endswith(
        "alerts.levels[1] (bar 1.3).routes: unknown route '${MM_ROUTE_SECRET}'; notify.routes has ['chat']"
    )
