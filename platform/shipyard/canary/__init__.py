"""Canary rollouts, in one package.

- :mod:`~shipyard.canary.plan`: the plan (steps, thresholds, warm-up), parsed from the CLI;
- :mod:`~shipyard.canary.analysis`: the routers' typed report and one interval's verdict;
- :mod:`~shipyard.canary.state`: the durable state, the statuses and the transition table;
- :mod:`~shipyard.canary.machine`: the state machine, driven by ``tick()``;
- :mod:`~shipyard.canary.controller`: the in-cluster Ray actor that runs the machine
  (``python -m shipyard.canary.controller``; not imported here, it runs as ``__main__``);
- :mod:`~shipyard.canary.client`: what the CLI does (send a command, wait for the ack).
"""

from shipyard.canary.analysis import (
    Check,
    RouterReport,
    ShadowReport,
    VariantReport,
    Window,
    analyze,
    analyze_shadow,
    compare_answers,
)
from shipyard.canary.machine import Rollout
from shipyard.canary.plan import CanaryPlan, parse_duration, parse_plan
from shipyard.canary.state import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    Decision,
    Event,
    IllegalTransition,
    RolloutState,
    Status,
    new_command,
    transition,
)

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "TRANSITIONS",
    "CanaryPlan",
    "Check",
    "Decision",
    "Event",
    "IllegalTransition",
    "Rollout",
    "RolloutState",
    "RouterReport",
    "ShadowReport",
    "Status",
    "VariantReport",
    "Window",
    "analyze",
    "analyze_shadow",
    "compare_answers",
    "new_command",
    "parse_duration",
    "parse_plan",
    "transition",
]
