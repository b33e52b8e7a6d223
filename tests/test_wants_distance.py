"""``AlertPolicy.wants_distance`` is asked on every evaluation: it keeps a count of the per-unit
configs with a distance rule instead of looking at every one (1,000 units: ~36 µs each time)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.alerts.policy import AlertPolicy
from monitor.alerts.rules import DistanceRule, LevelRule, PolicyConfig

LEVELS = (LevelRule("margin_call", 1.3, ("hook",)),)
PLAIN = PolicyConfig(levels=LEVELS)
DISTANCE = PolicyConfig(levels=LEVELS, distance=DistanceRule(within=0.05, routes=("hook",)))
CONFIGS = st.sampled_from([None, PLAIN, DISTANCE])


@given(
    default=st.sampled_from([PLAIN, DISTANCE]),
    initial=st.dictionaries(
        st.sampled_from(["cross:a", "cross:b", "cross:c"]), st.sampled_from([PLAIN, DISTANCE])
    ),
    changes=st.lists(st.tuples(st.sampled_from(["cross:a", "cross:b", "cross:c", "cross:d"]), CONFIGS)),
)
def test_wants_distance_is_whether_any_config_has_a_distance_rule(
    default: PolicyConfig,
    initial: dict[str, PolicyConfig],
    changes: list[tuple[str, PolicyConfig | None]],
) -> None:
    policy = AlertPolicy(default, initial)
    configs = dict(initial)
    for unit, config in [(None, None), *changes]:
        if unit is not None:
            policy.configure_unit(unit, config)
            if config is None:
                configs.pop(unit, None)
            else:
                configs[unit] = config
        every = [default, *configs.values()]
        assert policy.wants_distance == any(c.distance is not None for c in every)
        assert all(policy.config_for(u) is c for u, c in configs.items())
