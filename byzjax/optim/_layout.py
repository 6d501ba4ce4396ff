"""The layout a stage sees a worker's vector in: its pytree, or one flat row.

Every rule of byzjax works on any pytree whose leaves carry the worker axis
(distances over all leaves together, ``byzjax/_tree.py``), so a stage can be
run on the tree as it comes (``layout="tree"``, the default: each leaf is
reduced on its own and the per-leaf sums are added) or on one ``[n, d]``
array per message, the leaves of each row raveled and concatenated
(``layout="flat"``), which is how ByzFL and the PyTorch libraries hold a
worker's vector (``torch.cat`` of the flattened parameters).

The two layouts compute the same function. Coordinate-wise rules (means,
medians, trimmed means, clipping factors applied) give the same bits; rules
that sum over coordinates (distances, norms: Krum, NNM, the geometric median,
clipping's norms) add the same numbers in another order, so their results
differ in the last bits, and a training run drifts from there as runs on two
machines do. What the flat layout buys: one array instead of one per leaf,
so XLA compiles one reduction, one Gram matmul and one sort where the tree
layout compiles one per leaf. Measured on this project's 2-core CPU
(``docs/PERFORMANCE.md``): ByzFL's ``cnn_mnist`` (8 leaves, 431,080
parameters), clipping, NNM and the geometric median under an adaptive attack's
line search, the round program compiled in 11.4 s against 19.4 s and its steps
ran 14% faster. The price: one copy of the stack per wrapped stage.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from byzjax._types import PyTree
from byzjax.optim._worker import MomentPair

__all__ = ["LAYOUTS", "flatten_rows", "ravel_rows", "unravel_rows"]

#: The layouts :func:`byzjax.optim.stages` accepts.
LAYOUTS = ("tree", "flat")


def _row_leaves(stack: PyTree):
    leaves, treedef = jax.tree_util.tree_flatten(stack)
    if not leaves:
        raise ValueError("flatten_rows: the stack has no leaves")
    n = leaves[0].shape[0] if jnp.ndim(leaves[0]) else None
    return leaves, treedef, n


def ravel_rows(stack: PyTree):
    """``[n, d]``: each row's leaves raveled in tree order and concatenated.

    A :class:`~byzjax.optim.MomentPair` is raveled field by field (its two
    moments stay two stacks).

    Args:
      stack: pytree with leaves ``[n, *param_shape]`` (or a ``MomentPair`` of
        two such pytrees).

    Returns:
      ``[n, d]`` array with ``d`` the total number of parameters (a
      ``MomentPair`` of two for a pair), in the leaves' promoted dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"a": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.array([5.0, 6.0])}
      >>> ravel_rows(x).tolist()
      [[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]]
    """
    if isinstance(stack, MomentPair):
        return MomentPair(ravel_rows(stack.m), ravel_rows(stack.v))
    leaves, _, n = _row_leaves(stack)
    return jnp.concatenate([jnp.reshape(x, (n, -1)) for x in leaves], axis=1)


def unravel_rows(flat, like: PyTree) -> PyTree:
    """The inverse of :func:`ravel_rows` for the structure of ``like``.

    Args:
      flat: ``[m, d]`` rows or one ``[d]`` vector (an aggregate), or a
        ``MomentPair`` of them.
      like: pytree with the parameters' structure; only its leaves' shapes
        after the first axis (``like`` is a stack, leaves ``[n, *param_shape]``)
        and dtypes are read.

    Returns:
      Pytree of ``like``'s structure with leaves ``[m, *param_shape]`` (or
      ``[*param_shape]`` for a vector), in ``like``'s dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"a": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.array([5.0, 6.0])}
      >>> unravel_rows(jnp.array([2.0, 3.0, 5.5]), x)
      {'a': Array([2., 3.], dtype=float32), 'b': Array(5.5, dtype=float32)}
    """
    if isinstance(flat, MomentPair):
        pair = like if isinstance(like, MomentPair) else MomentPair(like, like)
        return MomentPair(unravel_rows(flat.m, pair.m), unravel_rows(flat.v, pair.v))
    leaves, treedef, _ = _row_leaves(like)
    lead = flat.shape[:-1]
    out, start = [], 0
    for x in leaves:
        shape = jnp.shape(x)[1:]
        size = math.prod(shape)
        piece = flat[..., start:start + size]
        out.append(jnp.reshape(piece, lead + shape).astype(jnp.asarray(x).dtype))
        start += size
    return jax.tree_util.tree_unflatten(treedef, out)


def _ravel_params(params: PyTree):
    """``[d]``: the parameters (no worker axis) as one vector, in tree order."""
    return None if params is None else ravel_pytree(params)[0]


def flatten_rows(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Runs a worker-axis stage on each row raveled into one vector.

    ``update(stack, state, params, **extra)`` ravels the stack's rows into
    ``[n, d]`` (:func:`ravel_rows`), the parameters into ``[d]``, and any
    extra argument with the parameters' structure (an aggregator's
    ``reference=``, FLTrust's server update); ``inner`` runs on those; its
    output goes back to the stack's structure: ``[m, d]`` rows (an attack, a
    pre-aggregation) to leaves ``[m, *param_shape]``, a ``[d]`` aggregate to
    ``[*param_shape]``. ``init(params)`` gives ``inner`` the raveled
    parameters, so a stateful rule's state (the previous aggregate of
    centered clipping, an attack's history) is one vector too. See the module
    docstring for what changes (the order of sums over coordinates) and what
    it buys (compile time and speed for models of many leaves); it is
    ``optax.flatten`` for updates that carry a worker axis.

    Args:
      inner: a ``GradientTransformation`` on stacks with leaves
        ``[n, *param_shape]`` (an attack, pre-aggregation or aggregation
        stage, or a chain of them).

    Returns:
      A ``GradientTransformation`` with the same input and output structure
      as ``inner``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.flatten_rows(optim.aggregate("krum", num_byzantine=1))
      >>> g = {"a": jnp.array([[0.0], [0.1], [0.2], [0.1], [9.0]]),
      ...      "b": jnp.array([[[1.0]], [[1.0]], [[1.1]], [[1.0]], [[-9.0]]])}
      >>> params = {"a": jnp.zeros(1), "b": jnp.zeros((1, 1))}
      >>> out, _ = tx.update(g, tx.init(params), params)
      >>> out["a"].tolist(), out["b"].tolist()
      ([0.10000000149011612], [[1.0]])
    """

    def init_fn(params):
        return inner.init(_ravel_params(params))

    def update_fn(updates, state, params=None, **extra):
        template = updates.m if isinstance(updates, MomentPair) else updates
        treedef = jax.tree_util.tree_structure(template)
        if params is not None:
            if jax.tree_util.tree_structure(params) != treedef:
                raise ValueError(
                    "flatten_rows: params and the updates' rows have different "
                    f"structures ({jax.tree_util.tree_structure(params)} vs "
                    f"{treedef})")
        flat_extra = {k: (_ravel_params(v) if v is not None
                          and jax.tree_util.tree_structure(v) == treedef else v)
                      for k, v in extra.items()}
        out, state = inner.update(ravel_rows(updates), state,
                                  _ravel_params(params), **flat_extra)
        return unravel_rows(out, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
