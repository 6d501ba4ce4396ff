"""A chain of pre-aggregators applied one after another (ByzFL's ``pre_aggregators``).

ByzFL (``RobustAggregator``) composes any list of pre-aggregators before the
aggregator, e.g. static clipping then nearest neighbour mixing: its benchmark's
sample configuration does exactly that. :func:`pre_aggregation_chain` is that
composition as one registered pre-aggregator, so a config names it once::

    preaggregator = "chain"
    preaggregator_kwargs = {"steps": [["static_clipping", {"max_norm": 2.0}],
                                      ["nnm", {}]]}

Every step gets the same ``num_byzantine`` (ByzFL gives every pre-aggregator
the declared ``f``). Steps are deterministic: a random pre-aggregator
(bucketing) has no place in a chain here (its key would have to be split per
step; use it alone).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from byzjax._tree import PyTree
from byzjax.aggregators._base import PREAGGREGATORS

__all__ = ["pre_aggregation_chain", "chain_steps"]


def chain_steps(steps: Any) -> list[tuple[str, dict]]:
    """``steps`` checked: ``[(canonical name, kwargs), ...]``, or ValueError.

    Each step is a ``[name, kwargs]`` pair (a list or tuple; ``kwargs`` a
    mapping, possibly empty) naming a deterministic registered pre-aggregator
    other than ``chain`` itself, with keywords its registry entry accepts.

    Example:
      >>> chain_steps([["clipping", {"max_norm": 2.0}], ["nnm", {}]])
      [('static_clipping', {'max_norm': 2.0}), ('nnm', {})]
      >>> chain_steps([["bucketing", {"bucket_size": 2}]])
      Traceback (most recent call last):
      ...
      ValueError: pre-aggregator 'chain': step 0 'bucketing' is random; use it alone
    """
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise ValueError("pre-aggregator 'chain': steps must be a non-empty list of "
                         f"[name, kwargs] pairs, got {steps!r}")
    out = []
    for i, step in enumerate(steps):
        if (isinstance(step, (str, bytes)) or not isinstance(step, Sequence)
                or len(step) != 2 or not isinstance(step[0], str)
                or not isinstance(step[1], Mapping)):
            raise ValueError(f"pre-aggregator 'chain': step {i} must be a [name, "
                             f"kwargs] pair, got {step!r}")
        entry = PREAGGREGATORS.check_kwargs(step[0], dict(step[1]))
        if entry.name == "chain":
            raise ValueError(f"pre-aggregator 'chain': step {i} is a chain; list "
                             "its steps instead")
        if entry.needs_key:
            raise ValueError(f"pre-aggregator 'chain': step {i} {entry.name!r} is "
                             "random; use it alone")
        out.append((entry.name, dict(step[1])))
    return out


def _chain_rows(num_workers: int, kwargs: Mapping[str, Any]) -> int:
    rows = num_workers
    for name, kw in chain_steps(kwargs["steps"]):
        rows = PREAGGREGATORS.entry(name).output_rows(rows, kw)
    return rows


def _chain_min_workers(f: int) -> int:
    return f + 1


@PREAGGREGATORS.register("chain", aliases=("pre_aggregation_chain",),
                         min_workers=_chain_min_workers,
                         requirement="n > f (and each step's own)",
                         output_rows=_chain_rows,
                         display_name="pre-aggregation chain", short_name="CHAIN",
                         order=20)
def pre_aggregation_chain(updates: PyTree, *, num_byzantine: int,
                          steps: Sequence) -> PyTree:
    """Applies the pre-aggregators ``steps`` in order, each with ``num_byzantine``.

    Args:
      updates: pytree of ``[n, *param_shape]``.
      num_byzantine: static ``f``, given to every step; each step checks its
        own ``(n, f)`` requirement on the rows it receives.
      steps: static list of ``[name, kwargs]`` pairs (:func:`chain_steps`).

    Returns:
      Pytree of ``[m, *param_shape]``, ``m`` the last step's output rows.

    Reference: Allouah et al., "ByzFL: Research Framework for Robust Federated
    Learning", 2025, https://arxiv.org/abs/2505.24802 (``RobustAggregator``'s
    list of pre-aggregators).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> steps = [["static_clipping", {"max_norm": 1.0}], ["nnm", {}]]
      >>> chain = jax.jit(lambda x: pre_aggregation_chain(x, num_byzantine=0,
      ...                                                 steps=steps))
      >>> x = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])}
      >>> chain(x)["w"].round(3).tolist()  # clipped, then each row: mean of all 3
      [[0.3, 0.4], [0.3, 0.4], [0.3, 0.4]]
    """
    for name, kw in chain_steps(steps):
        updates = PREAGGREGATORS.get(name)(updates, num_byzantine=num_byzantine, **kw)
    return updates
