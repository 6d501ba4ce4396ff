"""The aggregator and pre-aggregator registries and shared checks."""

from __future__ import annotations

from byzjax._registry import Registry
from byzjax._tree import check_num_byzantine, check_stack

AGGREGATORS = Registry("aggregator")
PREAGGREGATORS = Registry("pre-aggregator")


def validate(rule: str, updates, num_byzantine: int, *, min_workers=None,
             requirement=None, hint=None) -> int:
    """Static checks at trace time; returns ``n`` (the worker count).

    The stack must be floating point with ``n >= 1`` rows
    (:func:`byzjax._tree.check_stack`) and ``(n, f)`` must meet the rule's
    requirement (``n > 2f`` unless ``min_workers`` says more).
    """
    n = check_stack(rule, updates)
    check_num_byzantine(rule, n, num_byzantine, min_workers=min_workers,
                        requirement=requirement, hint=hint)
    return n
