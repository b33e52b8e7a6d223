"""Loading scenario files: YAML parsing, model validation, checks across keys, one-line errors.

Every problem becomes one :class:`~monitor.sim.scenario.ScenarioError` line
``FILE: key.path: problem``, raised before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from monitor.sim.scenario import (
    BUNDLED_DIR,
    Account,
    Event,
    Scenario,
    ScenarioError,
    located_error,
    split_symbol,
)


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "required key missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"expected one of {expected}, got {err.get('input')!r}"
    if kind == "string_pattern_mismatch":
        return f"invalid name {err.get('input')!r}"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def parse_scenario(data: object, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario given as plain data (the parsed YAML); raises :class:`ScenarioError`."""
    if not isinstance(data, dict):
        raise located_error(source, (), "expected a mapping with prices, accounts and timeline")
    try:
        scenario = Scenario.model_validate({**data, "source": source, "base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if isinstance(p, str | int) and p != "[key]")
        raise located_error(source, loc, _message(first)) from None
    _check(scenario)
    scenario.ticks()
    return scenario


def resolve_scenario(name_or_path: str | Path) -> Path:
    """A scenario file: a path as given, else a bundled scenario by name (``crash`` etc.)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    return BUNDLED_DIR / f"{name_or_path}.yaml"


def bundled_scenarios() -> list[str]:
    """Names of the scenarios shipped in the package."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (or a bundled scenario name); raises :class:`ScenarioError`."""
    file = resolve_scenario(path)
    source = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(top)"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ScenarioError(f"{source}: {where}: YAML syntax error: {problem}") from None
    return parse_scenario(data, source=source, base_dir=file.parent)


def _check(s: Scenario) -> None:
    """Checks across keys: symbols split, assets priced, names unique, references resolve."""
    src = s.source
    for symbol in s.prices:
        if symbol not in s.symbols and split_symbol(symbol, s.quote) is None:
            raise located_error(src, ("prices", symbol), "cannot tell base from quote: add it under symbols")
    priced = {s.quote} | {s.symbol_info(sym).base for sym in s.prices if s.symbol_info(sym).quote == s.quote}
    if s.accounts and "BTC" not in priced:
        raise located_error(src, ("prices",), f"needs BTC{s.quote}: account totals are reported in BTC")
    names: set[str] = set()
    keys: set[str] = set()
    for i, account in enumerate(s.accounts):
        if account.name in names:
            raise located_error(src, ("accounts", i, "name"), f"duplicate account name {account.name!r}")
        if account.api_key in keys:
            raise located_error(src, ("accounts", i, "api_key"), "duplicate api_key")
        names.add(account.name)
        keys.add(account.api_key)
        _check_account(s, i, account, priced)
    for j, path in enumerate(s.timeline.paths):
        sym = path.ramp or path.symbol
        if sym is not None and sym not in s.prices:
            raise located_error(
                src, ("timeline", "paths", j, path.kind_key), f"unknown symbol {sym} (not in prices)"
            )
    for j, event in enumerate(s.timeline.events):
        _check_event(s, j, event)
    for j, fault in enumerate(s.timeline.faults):
        if fault.account is not None and fault.account not in names:
            raise located_error(
                src, ("timeline", "faults", j, "account"), f"unknown account {fault.account!r}"
            )
        if fault.symbol is not None and fault.symbol not in s.prices:
            raise located_error(src, ("timeline", "faults", j, "symbol"), f"unknown symbol {fault.symbol}")


def _check_account(s: Scenario, i: int, account: Account, priced: set[str]) -> None:
    src = s.source
    seen: set[str] = set()
    for k, bal in enumerate(account.cross):
        if bal.asset in seen:
            raise located_error(src, ("accounts", i, "cross", k, "asset"), f"duplicate {bal.asset}")
        seen.add(bal.asset)
        if bal.asset not in priced:
            raise located_error(
                src, ("accounts", i, "cross", k, "asset"), f"no price for {bal.asset}{s.quote}"
            )
    pairs: set[str] = set()
    for k, pair in enumerate(account.isolated):
        loc: tuple[str | int, ...] = ("accounts", i, "isolated", k)
        if pair.symbol in pairs:
            raise located_error(src, (*loc, "symbol"), f"duplicate pair {pair.symbol}")
        pairs.add(pair.symbol)
        if pair.symbol not in s.prices:
            raise located_error(src, (*loc, "symbol"), f"unknown symbol {pair.symbol} (not in prices)")
        info = s.symbol_info(pair.symbol)
        if pair.base.asset != info.base:
            raise located_error(src, (*loc, "base", "asset"), f"expected {info.base} for {pair.symbol}")
        if pair.quote.asset != info.quote:
            raise located_error(src, (*loc, "quote", "asset"), f"expected {info.quote} for {pair.symbol}")


def _check_event(s: Scenario, j: int, event: Event) -> None:
    src = s.source
    loc: tuple[str | int, ...] = ("timeline", "events", j)
    try:
        account = s.account(event.account)
    except KeyError:
        raise located_error(src, (*loc, "account"), f"unknown account {event.account!r}") from None
    if event.symbol is not None:
        pair = next((p for p in account.isolated if p.symbol == event.symbol), None)
        if pair is None:
            raise located_error(src, (*loc, "symbol"), f"{event.account} has no isolated pair {event.symbol}")
        if event.asset is not None and event.asset not in (pair.base.asset, pair.quote.asset):
            raise located_error(src, (*loc, "asset"), f"{event.asset} is not an asset of {event.symbol}")
    elif event.asset is not None and event.asset not in {b.asset for b in account.cross}:
        priced = {s.quote} | {
            s.symbol_info(sym).base for sym in s.prices if s.symbol_info(sym).quote == s.quote
        }
        if event.asset not in priced:
            raise located_error(src, (*loc, "asset"), f"no price for {event.asset}{s.quote}")
    if event.type == "trade":
        pair = next((p for p in account.isolated if p.symbol == event.symbol), None)
        quote = pair.quote.asset if pair is not None else s.quote
        if event.asset == quote:
            raise located_error(src, (*loc, "asset"), f"trade needs the base asset, not the quote {quote}")
