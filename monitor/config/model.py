"""The one typed configuration object, loaded from ``config.yaml`` and validated before any network call.

Secrets may be written literally, as ``${ENV_VAR}`` references, or read from files
(``api_key_file`` / ``api_secret_file``). Every error is one line naming the file, the key path and
what was expected (:class:`ConfigError`); unknown keys are errors.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from monitor.config import checks
from monitor.config.errors import describe, where
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
    text,
)
from monitor.config.secret import Secret

EXIT_CONFIG = 78  # sysexits EX_CONFIG: systemd's RestartPreventExitStatus keeps a broken config from looping

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration problem, rendered as one line: ``FILE: key.path: what was expected``."""


_names = Many(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeConfig(Section):
    """Where the data comes from: the embedded simulator (default) or Binance."""

    kind: Literal["simulator", "binance"] = "simulator"
    scenario: str = "crash"
    rest_url: str = "https://api.binance.com"
    stream_url: str = "wss://stream.binance.com:9443"
    ws_api_url: str = "wss://ws-api.binance.com:443/ws-api/v3"
    risk_stream_url: str = "wss://margin-stream.binance.com"
    quote: str = "USDT"
    # Stablecoins are valued at market (USDCUSDT ...) and tried as price bridges; `pinned` fixes an
    # asset at exactly 1 on purpose. `stablecoins` pinned them before 0.x: old configs still load.
    stablecoins: tuple[str, ...] = ("USDT", "USDC", "FDUSD")
    pinned: tuple[str, ...] = ()
    snapshot_interval: float = 60.0
    resync_interval: float = 30.0

    rules: ClassVar[dict[str, Rule]] = {
        "kind": OneOf(("simulator", "binance")),
        "scenario": text,
        **dict.fromkeys(("rest_url", "stream_url", "ws_api_url", "risk_stream_url"), Then(text, checks.url)),
        "quote": Then(text, checks.asset),
        "stablecoins": _names,
        "pinned": _names,
        "snapshot_interval": duration,
        "resync_interval": duration,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelConfig(Section):
    """One rung of the alert ladder: a bar (the exchange's bar name or a number) and its routes."""

    bar: str | float
    name: str | None = None
    routes: tuple[str, ...] = ()
    repeat: float | None = None
    resolved: bool = True

    rules: ClassVar[dict[str, Rule]] = {
        "bar": checks.bar,
        "name": Maybe(text),
        "routes": _names,
        "repeat": Maybe(duration),
        "resolved": boolean,
    }

    @property
    def label(self) -> str:
        return self.name or (self.bar if isinstance(self.bar, str) else f"level_{self.bar:g}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DistanceRuleConfig(Section):
    """Alert when a uniform move of ``within`` (a fraction, 0.05 = 5 %) would liquidate."""

    within: float
    routes: tuple[str, ...] = ()
    repeat: float | None = None

    rules: ClassVar[dict[str, Rule]] = {
        "within": Bounded(number, gt=0, lt=1),
        "routes": _names,
        "repeat": Maybe(duration),
    }


_levels = Maybe(Many(Nested(LevelConfig)))


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertsConfig(Section):
    levels: tuple[LevelConfig, ...] | None = None
    hysteresis: float = 0.02
    for_: float = 0.0
    resolved: bool = True
    distance: DistanceRuleConfig | None = None
    stale_after: float = 30.0
    blind_routes: tuple[str, ...] | None = None
    default_routes: tuple[str, ...] = ()
    restore_target: str = "normal"

    keys: ClassVar[dict[str, str]] = {"for_": "for"}
    rules: ClassVar[dict[str, Rule]] = {
        "levels": _levels,
        "hysteresis": Bounded(number, ge=0, lt=1),
        "for_": duration,
        "resolved": boolean,
        "distance": Maybe(Nested(DistanceRuleConfig)),
        "stale_after": duration,
        "blind_routes": Maybe(_names),
        "default_routes": _names,
        "restore_target": text,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountAlertsOverride(Section):
    levels: tuple[LevelConfig, ...] | None = None
    routes: tuple[str, ...] | None = None

    rules: ClassVar[dict[str, Rule]] = {"levels": _levels, "routes": Maybe(_names)}


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountConfig(Section):
    name: str
    api_key: Secret | None = None
    api_secret: Secret | None = None
    api_key_file: Path | None = None
    api_secret_file: Path | None = None
    cross: bool = True
    isolated: Literal["all"] | tuple[str, ...] = ()
    allow_trading_keys: bool = False
    alerts: AccountAlertsOverride | None = None

    rules: ClassVar[dict[str, Rule]] = {
        "name": Matching(r"^[A-Za-z0-9_.-]{1,64}$"),
        "api_key": Maybe(secret),
        "api_secret": Maybe(secret),
        "api_key_file": Maybe(path),
        "api_secret_file": Maybe(path),
        "cross": boolean,
        "isolated": checks.symbols,
        "allow_trading_keys": boolean,
        "alerts": Maybe(Nested(AccountAlertsOverride)),
    }

    def check(self) -> None:
        if (self.api_key is None) == (self.api_key_file is None):
            raise ValueError("give exactly one of api_key or api_key_file")
        if (self.api_secret is None) == (self.api_secret_file is None):
            raise ValueError("give exactly one of api_secret or api_secret_file")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig(Section):
    urls: tuple[Secret, ...]
    max_per_window: int | None = None
    window: float = 60.0

    rules: ClassVar[dict[str, Rule]] = {
        "urls": Many(secret, min_items=1),
        "max_per_window": Maybe(Bounded(integer, gt=0)),
        "window": duration,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyConfig(Section):
    routes: dict[str, RouteConfig]
    timeout: float = 10.0
    sends: Literal["auto", "threads", "process"] = "auto"

    rules: ClassVar[dict[str, Rule]] = {
        "routes": Table(Nested(RouteConfig), min_items=1),
        "timeout": duration,
        "sends": OneOf(("auto", "threads", "process")),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig(Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"

    rules: ClassVar[dict[str, Rule]] = {
        "format": OneOf(("auto", "json", "console")),
        "level": OneOf(("debug", "info", "warning", "error")),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig(Section):
    enabled: bool = True
    listen: str = "127.0.0.1:9108"
    token: Secret | None = None

    rules: ClassVar[dict[str, Rule]] = {
        "enabled": boolean,
        "listen": Then(text, checks.listen),
        "token": Maybe(secret),
    }

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatConfig(Section):
    """A dead man's switch (monitor.ops.heartbeat): GET ``url`` every ``every`` while all is well."""

    url: Secret
    every: float = 60.0
    timeout: float = 10.0

    rules: ClassVar[dict[str, Rule]] = {
        "url": Then(secret, checks.http_url),
        "every": Bounded(duration, gt=0),
        "timeout": Bounded(duration, gt=0),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(Section):
    exchange: ExchangeConfig = ExchangeConfig()
    accounts: tuple[AccountConfig, ...]
    alerts: AlertsConfig = AlertsConfig()
    notify: NotifyConfig
    state_dir: Path = Path("state")
    log: LogConfig = LogConfig()
    http: HttpConfig = HttpConfig()
    heartbeat: HeartbeatConfig | None = None
    shard: str | None = None

    rules: ClassVar[dict[str, Rule]] = {
        "exchange": Nested(ExchangeConfig),
        "accounts": Many(Nested(AccountConfig), min_items=1),
        "alerts": Nested(AlertsConfig),
        "notify": Nested(NotifyConfig),
        "state_dir": path,
        "log": Nested(LogConfig),
        "http": Nested(HttpConfig),
        "heartbeat": Maybe(Nested(HeartbeatConfig)),
        "shard": Maybe(Then(Matching(r"^\d+/\d+$"), checks.shard_spec)),
    }

    def check(self) -> None:
        names = [a.name for a in self.accounts]
        dupes = sorted(n for n, count in Counter(names).items() if count > 1)  # not names.count: O(n²)
        if dupes:
            raise ValueError(f"account names must be unique, repeated: {', '.join(dupes)}")
        known = set(self.notify.routes)
        wanted: list[tuple[str, str]] = []
        for i, level in enumerate(self.alerts.levels or (), start=1):
            wanted += [(f"alerts.levels[{i}] (bar {level.bar}).routes", r) for r in level.routes]
        if self.alerts.distance:
            wanted += [("alerts.distance.routes", r) for r in self.alerts.distance.routes]
        wanted += [("alerts.blind_routes", r) for r in self.alerts.blind_routes or ()]
        wanted += [("alerts.default_routes", r) for r in self.alerts.default_routes]
        for a, account in enumerate(self.accounts, start=1):
            override = account.alerts
            at = f"accounts[{a}] ({account.name})"
            if override and override.routes:
                wanted += [(f"{at}.alerts.routes", r) for r in override.routes]
            for i, level in enumerate((override.levels if override else None) or (), start=1):
                wanted += [(f"{at}.alerts.levels[{i}] (bar {level.bar}).routes", r) for r in level.routes]
        for at, route in wanted:
            if route not in known:
                raise ValueError(f"{at}: unknown route {route!r}; notify.routes has {sorted(known)}")

    def route_names(self) -> tuple[str, ...]:
        return tuple(self.notify.routes)

    def configures(self, unit: str) -> bool:
        """Whether a unit id (``cross:<account>`` or ``isolated:<account>:<SYMBOL>``) can be watched
        under this config: its account is listed, with ``cross`` on or the pair in ``isolated``
        (any pair under ``isolated: all``). False for a unit whose account left the config: its saved
        alert state is dropped at start. An account listed but not loaded (blind) keeps its units.

        >>> config = Config.model_validate({"accounts": [{"name": "a", "api_key": "k", "api_secret": "s",
        ...     "isolated": ["BTCUSDT"]}], "notify": {"routes": {"r": {"urls": ["json://x"]}}}})
        >>> [config.configures(u) for u in ("cross:a", "isolated:a:BTCUSDT", "isolated:a:ETHUSDT", "cross:b")]
        [True, True, False, False]
        """
        kind, _, rest = unit.partition(":")
        name, symbol = rest.rpartition(":")[::2] if kind == "isolated" else (rest, "")
        account = next((a for a in self.accounts if a.name == name), None)
        if account is None:
            return False
        if kind == "cross":
            return account.cross
        return kind == "isolated" and (account.isolated == "all" or symbol in account.isolated)


def _expand_env(
    node: Any, loc: tuple[Any, ...], missing: list[tuple[tuple[Any, ...], str]], used: dict[str, str]
) -> Any:
    """Replace ``${VAR}`` in every string with the environment's value (recording what is unset,
    and in ``used`` each value substituted, so no error line can carry one)."""
    if isinstance(node, dict):
        return {k: _expand_env(v, (*loc, k), missing, used) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, (*loc, i), missing, used) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                missing.append((loc, f"environment variable {match.group(1)} is not set"))
                return ""
            used[match.group(1)] = value
            return value

        return _ENV_REF.sub(sub, node)
    return node


# libyaml's parser when PyYAML was built with it: a config of 1,000 accounts parses in ~24 ms instead
# of ~200 ms. The same safe constructor, so the same values; an error has the same line and column,
# though libyaml words some problems differently ("did not find expected '-' indicator")
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)  # a safe loader: plain data only


def load_config(path: str | Path) -> Config:
    """Read, expand and validate a config file, or raise :class:`ConfigError` with one line."""
    path = Path(path)
    try:
        raw = _load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    missing: list[tuple[tuple[Any, ...], str]] = []
    used: dict[str, str] = {}
    expanded = _expand_env(raw, (), missing, used)
    if missing:
        loc, problem = missing[0]
        raise ConfigError(f"{path}: {where(loc, raw)}: {problem}")
    try:
        config = Config.model_validate(expanded)
    except Invalid as exc:
        line = describe(exc, raw, Config)
        for name, value in sorted(used.items(), key=lambda item: -len(item[1])):
            if len(value) >= 3:  # a value from the environment may be a secret: name the variable
                line = line.replace(value, f"${{{name}}}")
        raise ConfigError(f"{path}: {line}") from None
    base = path.parent
    return replace(config, state_dir=(base / config.state_dir).resolve())


def read_secret(value: Secret | None, file: Path | None, what: str, config_path: Path) -> str:
    """The secret's value, from the literal/env value or from its file (relative to the config)."""
    if value is not None:
        secret = value.get_secret_value().strip()
    else:
        assert file is not None
        target = file if file.is_absolute() else config_path.parent / file
        try:
            secret = target.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{config_path}: {what}: cannot read {target}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{config_path}: {what}: {target} is not UTF-8 text") from None
    if not secret:
        raise ConfigError(f"{config_path}: {what}: is empty")
    return secret


def loose_permissions(path: Path) -> bool:
    """True when a config or secret file can be read by users other than its owner's group."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH)


def _literal(value: Any) -> bool:
    """A string written out in the file, not (only) ``${ENV_VAR}`` references."""
    return isinstance(value, str) and bool(_ENV_REF.sub("", value).strip())


def holds_secret(config: Config, config_path: Path) -> bool:
    """Whether the config file itself holds a secret: a Binance key or secret, an ``http.token`` or a
    notification URL (which may carry a token) written literally rather than as ``${ENV_VAR}``.
    The simulator's demo keys and ``console://`` are not secrets.
    """
    try:
        raw = _load_yaml(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return True  # cannot tell: assume it does
    if not isinstance(raw, dict):
        return True
    values: list[Any] = []
    if config.exchange.kind == "binance":
        for account in raw.get("accounts") or []:
            if isinstance(account, dict):
                values += [account.get("api_key"), account.get("api_secret")]
    http = raw.get("http")
    if isinstance(http, dict):
        values.append(http.get("token"))
    heartbeat = raw.get("heartbeat")
    if isinstance(heartbeat, dict):
        values.append(heartbeat.get("url"))  # a ping URL is a credential (anyone can ping with it)
    routes = (raw.get("notify") or {}).get("routes") if isinstance(raw.get("notify"), dict) else None
    for route in (routes or {}).values() if isinstance(routes, dict) else ():
        urls = route.get("urls") if isinstance(route, dict) else None
        values += [u for u in urls or () if not (isinstance(u, str) and u.startswith("console://"))]
    return any(_literal(v) for v in values)


def exposed_files(config: Config, config_path: Path) -> list[Path]:
    """The config file (when it holds a secret, :func:`holds_secret`) and every ``*_file`` secret
    that other users can read (to be warned about)."""
    # the file is parsed again (holds_secret) only when others can read it: start-up reads it once
    files = [config_path] if loose_permissions(config_path) and holds_secret(config, config_path) else []
    for account in config.accounts:
        for file in (account.api_key_file, account.api_secret_file):
            if file is not None:
                files.append(file if file.is_absolute() else config_path.parent / file)
    return [f for f in files if loose_permissions(f)]
