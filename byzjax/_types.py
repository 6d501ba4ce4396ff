"""The types byzjax's prose talks about, as types (in the manner of optax's
``base.py``): a stack of worker vectors, and the three kinds of rule that act
on it. Protocols, so any function with the right signature qualifies.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

#: A pytree of arrays (parameters, updates, one worker's vector).
PyTree = Any
#: A pytree whose leaves all have a leading worker axis: ``[n, *param_shape]``.
Stack = Any


@runtime_checkable
class Aggregator(Protocol):
    """``rule(updates, *, num_byzantine, **hparams) -> pytree[*param_shape]``.

    ``updates`` is a :data:`Stack` of ``n`` rows; ``num_byzantine`` is the
    static declared ``f``; the worker axis is dropped.
    """

    def __call__(self, updates: Stack, *, num_byzantine: int,
                 **hparams: Any) -> PyTree: ...


@runtime_checkable
class PreAggregator(Protocol):
    """``rule(updates, *, num_byzantine, **hparams) -> Stack`` (``[m, ...]``).

    Applied before an :class:`Aggregator`; random ones also take ``key=``.
    """

    def __call__(self, updates: Stack, *, num_byzantine: int,
                 **hparams: Any) -> Stack: ...


@runtime_checkable
class Attack(Protocol):
    """``attack(honest, *, num_byzantine, key=None, **hparams) -> Stack``.

    ``honest`` has ``n - f`` rows; the result has ``num_byzantine`` rows.
    """

    def __call__(self, honest: Stack, *, num_byzantine: int,
                 **hparams: Any) -> Stack: ...
