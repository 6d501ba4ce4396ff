"""The aggregator and pre-aggregator registries and shared checks."""

from __future__ import annotations

from byzjax._registry import Registry
from byzjax._tree import check_num_byzantine, num_rows

AGGREGATORS = Registry("aggregator")
PREAGGREGATORS = Registry("pre-aggregator")


def validate(rule: str, updates, num_byzantine: int, *, min_workers=None,
             requirement=None) -> int:
    """Static check at trace time; returns ``n`` (the worker count)."""
    n = num_rows(updates)
    check_num_byzantine(rule, n, num_byzantine, min_workers=min_workers,
                        requirement=requirement)
    return n
