"""Hostile config files: any value of a full config broken, or raw YAML garbage: loads or fails in one line.

Extends tests/test_config.py (which replaces whole top-level sections): here every nested leaf of a
complete config is mutated, keys are deleted, and the file text itself is cut or corrupted. The error
is always one ``ConfigError`` line starting with the file's path and never echoes a secret.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tree_paths import paths

from monitor.config.model import Config, ConfigError, load_config

KEY, SECRET, TOKEN, HOOK_PW = (
    "cfgKEY9f3a1c77d2",
    "cfgSECRET4be0d9a8e6",
    "cfgTOKEN71aa03c5",
    "cfgHOOKPW0c93d1ee",
)
FULL: dict[str, Any] = {
    "exchange": {"kind": "binance", "rest_url": "http://127.0.0.1:1", "snapshot_interval": "30s",
                 "quote": "USDT", "stablecoins": ["USDT", "USDC"]},
    "accounts": [
        {"name": "main", "api_key": KEY, "api_secret": SECRET, "cross": True, "isolated": ["BTCUSDT"],
         "alerts": {"levels": [{"bar": "margin_call", "routes": ["chat"]}]}},
        {"name": "side", "api_key_file": "k.txt", "api_secret_file": "s.txt", "isolated": "all"},
    ],
    "alerts": {"levels": [{"bar": 1.4, "name": "early", "routes": ["chat"], "repeat": "10m"},
                          {"bar": "liquidation"}],
               "hysteresis": 0.02, "for": "5s", "distance": {"within": 0.05}, "stale_after": "30s"},
    "notify": {"routes": {"chat": {"urls": [f"json://u:{HOOK_PW}@127.0.0.1:1/x"], "max_per_window": 5}}},
    "http": {"listen": "127.0.0.1:9108", "token": TOKEN},
    "log": {"format": "json", "level": "info"},
    "shard": "0/2",
}  # fmt: skip

hostile = st.sampled_from(
    ["1e5", "NaN", "-inf", "", " ", "-1", "0", "1" * 400, "${UNSET_VAR_FOR_TEST}", "\x00", "é" * 3, "5 m",
     "https://", "127.0.0.1:99999", "../../etc/passwd", "[", "{a: 1}", "*alias"]
) | st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)  # fmt: skip
values = st.recursive(
    hostile,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(data)))
        node: Any = data
        try:
            for key in path[:-1]:
                node = node[key]
            if isinstance(node, dict) and draw(st.booleans()):
                del node[path[-1]]
            else:
                node[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped this path
    return data


def check_outcome(path: Path) -> Config | None:
    """Load ``path``: a Config, or None after checking the error is one clean line."""
    try:
        return load_config(path)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(f"{path}: ") and "\n" not in text and "Traceback" not in text, text
        assert not any(s in text for s in (KEY, SECRET, TOKEN, HOOK_PW)), text
        return None


def test_full_config_is_valid() -> None:
    """The unmutated document loads (so the mutations below start from a valid config)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(FULL))
        config = load_config(path)
    assert config.accounts[0].api_key is not None and config.http.token is not None
    assert KEY not in repr(config) and SECRET not in repr(config) and TOKEN not in repr(config)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated_configs())
def test_any_broken_value_loads_or_fails_in_one_line(tmp_path: Path, data: dict[str, Any]) -> None:
    """Any nested value replaced or deleted: a valid Config or one line naming the file, no secret echoed."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    config = check_outcome(path)
    if config is not None:
        assert len(config.accounts) >= 1 and config.notify.routes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 2000), junk=st.text(max_size=20), at=st.integers(0, 2000))
def test_corrupted_yaml_text_loads_or_fails_in_one_line(tmp_path: Path, cut: int, junk: str, at: int) -> None:
    """The file cut short or with junk spliced in (tabs, colons, anchors, NULs) fails in one clean line."""
    text = yaml.safe_dump(FULL)
    text = text[:cut] if cut < len(text) else text
    at = min(at, len(text))
    path = tmp_path / "config.yaml"
    path.write_bytes((text[:at] + junk + text[at:]).encode("utf-8", "surrogatepass"))
    check_outcome(path)


def test_binary_and_huge_files_fail_in_one_line(tmp_path: Path) -> None:
    """A binary file, a non-UTF-8 file and a deeply nested document each fail with one line."""
    path = tmp_path / "config.yaml"
    for content in (b"\x89PNG\r\n\x1a\n\x00\x00", "accounts: [\xff]".encode("latin-1"), b"[" * 5000):
        path.write_bytes(content)
        assert check_outcome(path) is None


def test_unprintable_key_in_an_env_error_stays_on_one_line(tmp_path: Path) -> None:
    """A key holding a newline, above an unset ${VAR}, is shown as its repr: the error stays one line."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**FULL, "exchange": {"a\nb": "${UNSET_VAR_FOR_TEST}"}}))
    assert check_outcome(path) is None
    with pytest.raises(ConfigError, match=r"exchange\.'a\\nb': environment variable UNSET_VAR_FOR_TEST"):
        load_config(path)


ENV_SECRET = "cfgENVSECRET5d1e9b"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_value_from_the_environment_is_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    """Any leaf replaced by ``${VAR}`` whose value is a secret (and wrong for that key): the error shows
    the reference as written, never the value it expanded to."""
    monkeypatch.setenv("MM_HOSTILE_SECRET", ENV_SECRET)
    doc = copy.deepcopy(FULL)
    path_keys = data.draw(st.sampled_from(paths(doc)))
    node: Any = doc
    for key in path_keys[:-1]:
        node = node[key]
    node[path_keys[-1]] = data.draw(st.sampled_from(["${MM_HOSTILE_SECRET}", "x${MM_HOSTILE_SECRET}"]))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_config(path)
    except ConfigError as exc:
        assert ENV_SECRET not in str(exc), str(exc)
