"""The aggregator and pre-aggregator registries and shared checks."""

from __future__ import annotations

from byzjax._registry import Registry
from byzjax._tree import check_num_byzantine, check_stack

AGGREGATORS = Registry("aggregator")
PREAGGREGATORS = Registry("pre-aggregator")


def validate(rule: str, updates, num_byzantine: int) -> int:
    """Static checks at trace time; returns ``n`` (the worker count).

    The stack must be floating point with ``n >= 1`` rows
    (:func:`byzjax._tree.check_stack`) and ``(n, f)`` must meet the
    requirement ``rule`` was registered with (``n > 2f`` by default), read
    from the registry so that it is declared in one place only.
    """
    n = check_stack(rule, updates)
    for registry in (AGGREGATORS, PREAGGREGATORS):
        if rule in registry:
            registry.check(rule, num_workers=n, num_byzantine=num_byzantine)
            return n
    check_num_byzantine(rule, n, num_byzantine)
    return n
