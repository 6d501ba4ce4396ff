"""The aggregator and pre-aggregator registries.

A registered rule is wrapped by its registry: the wrapper checks the stack
(:func:`byzjax._tree.check_stack`), the ``(n, f)`` requirement the rule was
registered with and its concrete keyword values before the rule runs, so a
rule never checks (or names) itself.
"""

from __future__ import annotations

from byzjax._registry import Registry

AGGREGATORS = Registry("aggregator")
PREAGGREGATORS = Registry("pre-aggregator")
