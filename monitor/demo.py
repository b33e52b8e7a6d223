"""What the embedded simulator's scenario is about to do, said once at ready (no I/O but the scenario).

The daemon on ``exchange.kind: simulator`` prints, when it is ready, a line such as
``replaying a 40 % crash; first alert in ~10 s; Ctrl-C to stop``. Both numbers come from the
scenario itself: the largest peak-to-trough fall of any price path, and the time at which a watched
unit's margin level first reaches the top rung of the configured ladder, found by replaying the
timeline in the simulator's own engine (its own valuation) without a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from monitor.config.model import Config, LevelConfig
from monitor.sim import Event, Fault, Scenario, ScenarioError, load_scenario
from monitor.sim.engine import SimExchange
from monitor.sim.scenario import ScenarioBars
from monitor.watch.ladder import policy_for_unit

STEP = 0.5  # real seconds between two samples of the replay
HORIZON = 300.0  # real seconds replayed at most
CRASH = 0.25  # a fall at least this deep is called a crash


@dataclass(frozen=True, slots=True)
class Preview:
    """``move``: the scenario's price move in words; ``alerts_at``: real seconds after the simulator
    starts at which a unit reaches its top rung (within :data:`HORIZON`)."""

    move: str
    alerts_at: tuple[float, ...]

    def line(self, elapsed: float) -> str:
        """The ready line, ``elapsed`` real seconds after the simulator started.

        >>> Preview("a 40 % crash", (12.0, 102.0)).line(2.4)
        'replaying a 40 % crash; first alert in ~10 s; Ctrl-C to stop'
        >>> Preview("prices standing", ()).line(2.0)
        'replaying prices standing; no alert expected in the next 5 min; Ctrl-C to stop'
        """
        ahead = [t - elapsed for t in self.alerts_at if t >= elapsed]
        if ahead:
            when = f"first alert in ~{max(1, round(ahead[0]))} s"
        elif self.alerts_at:
            when = "alerts already under way"
        else:
            when = f"no alert expected in the next {round(HORIZON / 60)} min"
        return f"replaying {self.move}; {when}; Ctrl-C to stop"


def deepest_fall(scenario: Scenario) -> tuple[str, Decimal]:
    """The symbol whose price falls most from a running peak, and that fall (0.4 = 40 %)."""
    peaks: dict[str, Decimal] = {}
    worst: tuple[str, Decimal] = ("", Decimal(0))
    for tick in scenario.ticks():
        peak = peaks[tick.symbol] = max(peaks.get(tick.symbol, tick.price), tick.price)
        fall = 1 - tick.price / peak if peak > 0 else Decimal(0)
        if fall > worst[1]:
            worst = (tick.symbol, fall)
    return worst


def describe_move(scenario: Scenario) -> str:
    """``a 40 % crash``, ``a 22 % drop``, or ``prices standing``."""
    _, fall = deepest_fall(scenario)
    if fall < Decimal("0.01"):
        return "prices standing"
    return f"a {fall * 100:.0f} % {'crash' if fall >= Decimal(str(CRASH)) else 'drop'}"


def _top(config: Config, bars: ScenarioBars, levels: tuple[LevelConfig, ...] | None) -> float | None:
    """The highest bar of the ladder resolved against one unit's bars (None: no rung applies)."""
    values = {n: float(getattr(bars, n)) for n in ("normal", "margin_call", "liquidation")}
    policy = policy_for_unit(config.alerts, values, config.route_names(), levels=levels)
    return max((rule.bar for rule in policy.levels), default=None)


def _top_bars(config: Config, scenario: Scenario) -> dict[tuple[str, str | None], float]:
    """(account, pair or None) → the highest bar of its ladder, for every watched unit."""
    tops: dict[tuple[str, str | None], float] = {}
    names = {a.name for a in scenario.accounts}
    for account in config.accounts:
        if account.name not in names:
            continue
        spec = scenario.account(account.name)
        levels = account.alerts.levels if account.alerts else None
        if account.cross and spec.cross and (bar := _top(config, spec.effective_bars, levels)) is not None:
            tops[(account.name, None)] = bar
        for pair in spec.isolated:
            wanted = account.isolated == "all" or pair.symbol in account.isolated
            if pair.enabled and wanted and (bar := _top(config, pair.effective_bars, levels)) is not None:
                tops[(account.name, pair.symbol)] = bar
    return tops


class _Replay(SimExchange):
    """The simulator's engine replaying quietly: account events change the books without the
    ``sim_event`` log line (the daemon's log must not show a deposit that did not happen), and
    faults, which move no level, are skipped."""

    def apply_event(self, event: Event) -> None:
        self.emit(self.state.apply(event))

    def inject_fault(self, fault: Fault) -> None:
        return None


def first_alerts(config: Config, scenario: Scenario) -> tuple[float, ...]:
    """Real seconds after start at which some unit's level goes from above to at or below its top
    bar (plus ``alerts.for``), replaying the timeline for up to :data:`HORIZON` real seconds."""
    tops = _top_bars(config, scenario)
    speed = scenario.timeline.speed
    engine = _Replay(scenario, realtime=True, clock=lambda: 0.0)
    below: dict[tuple[str, str | None], bool] = {}
    found: list[float] = []
    for n in range(int(HORIZON / STEP) + 1):
        now = n * STEP
        engine.run_until(now * speed)
        crossed = False
        for (name, symbol), bar in tops.items():
            state = engine.state
            acc = state.accounts[name]
            value = state.cross_level(acc) if symbol is None else state.pair_level(acc.pairs[symbol])
            level = value.margin_level
            is_below = level is not None and level <= Decimal(str(bar))
            crossed |= is_below and not below.get((name, symbol), False)
            below[(name, symbol)] = is_below
        if crossed:
            found.append(now + config.alerts.for_)
    return tuple(found)


def preview(config: Config, config_path: Path) -> Preview | None:
    """The preview of the configured simulator scenario; None for a real exchange or a bad file."""
    if config.exchange.kind != "simulator":
        return None
    local = config_path.parent / config.exchange.scenario
    try:
        scenario = load_scenario(local if local.is_file() else config.exchange.scenario)
    except ScenarioError:
        return None  # the daemon reports it with one line when it starts the simulator
    return Preview(describe_move(scenario), first_alerts(config, scenario))
