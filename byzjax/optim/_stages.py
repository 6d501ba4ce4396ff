"""Server-side stages: attack, pre-aggregation, aggregation, MRA, server momentum.

The attack and pre-aggregation stages keep the leading worker axis; the
aggregation stage removes it, after which stock optax transforms apply. A
:class:`~byzjax.optim.MomentPair` (MRA) flows through every stage field by field.

References:
  El-Mhamdi, Guerraoui, Rouault, ICLR 2021, https://arxiv.org/abs/2003.00010
  (server momentum, "standard formulation").
  Fabris, MSc thesis, Chalmers 2023 (MRA, Alg. 20, and its NaN failure §4.1.2).
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from byzjax import aggregators, attacks
from byzjax._registry import Keyword, check_values
from byzjax._tree import PyTree, num_rows
from byzjax.optim._worker import (
    _KEYWORDS,
    MomentPair,
    _check_num_workers,
    _check_workers,
)

__all__ = [
    "ByzantineAttackState",
    "AttackHistoryState",
    "PreAggregateState",
    "AggregateState",
    "RandomAggregateState",
    "byzantine_attack",
    "pre_aggregate",
    "aggregate",
    "mra_direction",
    "server_momentum",
]


class ByzantineAttackState(NamedTuple):
    """State of :func:`byzantine_attack` for a random attack."""

    key: jax.Array  # PRNG key, split every round


class AttackHistoryState(NamedTuple):
    """State of :func:`byzantine_attack` for an attack that reads the server's
    previous aggregate (registry ``stateful``: ROP)."""

    center: PyTree  # previous aggregate, leaves [*param_shape] (a MomentPair for MRA)
    server: optax.OptState  # the state of the attacker's copy of the server's rule
    key: jax.Array | None  # PRNG key when the attack is random, else None


class PreAggregateState(NamedTuple):
    """State of :func:`pre_aggregate` for a random rule (bucketing)."""

    key: jax.Array  # PRNG key, split every round


class AggregateState(NamedTuple):
    """State of :func:`aggregate` for a stateful rule (centered clipping)."""

    center: PyTree  # previous aggregate, leaves [*param_shape] (a MomentPair for MRA)


class RandomAggregateState(NamedTuple):
    """State of :func:`aggregate` for a random rule (DnC)."""

    key: jax.Array  # PRNG key, split every round


def _split(key):
    new, sub = jax.random.split(key)
    return new, sub


def _attack_needs_key(entry, attack_kwargs) -> bool:
    if entry.needs_key:
        return True
    if not entry.adaptive:
        return False
    pre, agg = attack_kwargs.get("preaggregator"), attack_kwargs.get("aggregator")
    # An adaptive attacker runs the server's rules: random ones need a key.
    return ((isinstance(pre, str) and aggregators.PREAGGREGATORS.entry(pre).needs_key)
            or (isinstance(agg, str) and aggregators.AGGREGATORS.entry(agg).needs_key))


def byzantine_attack(attack: str | Callable[..., PyTree], *, num_workers: int,
                     num_byzantine: int, key: jax.Array | None = None,
                     server: optax.GradientTransformation | None = None,
                     moments: bool = False,
                     **attack_kwargs) -> optax.GradientTransformation:
    """Replaces the last ``num_byzantine`` rows by the attack's output.

    The attack sees the first ``n - f`` rows (the honest ones, by convention) and
    returns ``f`` rows, written into rows ``n-f .. n-1``. Attacks that need the
    Byzantine workers' own rows (``sign_flip_own``) receive the rows being
    replaced as ``byzantine_own``. Data-level attacks (``label_flip``,
    ``none``) leave all rows untouched: the Byzantine workers' corruption
    happened in their data. For a :class:`MomentPair` (MRA) both fields are
    attacked independently (the attacker sends crafted ``mhat`` and ``vhat``
    rows), with independent keys.

    An attack that reads the server's previous aggregate (registry
    ``stateful``: :func:`~byzjax.attacks.relocated_orthogonal_perturbation`)
    receives it as ``center=``. This stage keeps it in
    :class:`AttackHistoryState`: after writing the Byzantine rows it applies
    ``server`` (a copy of the server's robust stage: pre-aggregation and
    aggregation, ``[n, ...] -> [...]``) to its output, and that aggregate is
    next round's ``center`` (zeros at first). Built with the server's rule,
    keywords and key (:func:`stages` does), it computes the server's own
    aggregate whenever the server aggregates this stage's output.

    Args:
      attack: registry name (see :mod:`byzjax.attacks`) or a callable with
        the attack signature ``(honest, *, num_byzantine, key, **kwargs)``.
      num_workers: static ``n``.
      num_byzantine: static number of attacking rows (the *real* ``f``).
      key: PRNG key; required when the attack is random (``gaussian``, or an
        adaptive attack against a random pre-aggregator); it then lives in
        :class:`ByzantineAttackState` and is split every round. Ignored
        otherwise (the state is ``optax.EmptyState()``).
      **attack_kwargs: the attack's hyper-parameters (``eps`` may be traced).
        For the adaptive attacks: ``aggregator=``, ``aggregator_kwargs=`` (put
        the declared ``num_byzantine`` there if it differs from the real one),
        ``candidates=``, ...
      server: the server's robust stage, required by (and only used for) a
        stateful attack.
      moments: static; True when the stage attacks a :class:`MomentPair`
        (MRA) and the attack is stateful (its state then holds a pair of
        centers).

    Returns:
      An ``optax.GradientTransformation`` keeping leaves ``[n, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.byzantine_attack("sign_flip", num_workers=3, num_byzantine=1)
      >>> g = {"w": jnp.array([[1.0], [3.0], [5.0]])}
      >>> out, _ = tx.update(g, tx.init({"w": jnp.zeros(1)}))
      >>> out["w"].ravel().tolist()
      [1.0, 3.0, -2.0]
    """
    _check_num_workers("byzantine_attack", num_workers)
    if not isinstance(num_byzantine, int) or isinstance(num_byzantine, bool) \
            or not 0 <= num_byzantine < num_workers:
        raise ValueError(
            f"byzantine_attack: num_byzantine must be a Python int in [0, "
            f"num_workers={num_workers}), got {num_byzantine!r}"
        )
    stateful = False
    if isinstance(attack, str):
        entry = attacks.entry(attack)
        fn = entry.fn
        data_level, needs_own = entry.data_level, entry.needs_own
        stateful = entry.stateful
        needs_key = _attack_needs_key(entry, attack_kwargs)
        if num_byzantine:
            attacks.ATTACKS.check(entry.name, num_workers=num_workers,
                                  num_byzantine=num_byzantine)
        label = entry.name
    elif callable(attack):
        fn, data_level, needs_own = attack, False, False
        needs_key = key is not None
        label = getattr(attack, "__name__", "attack")
    else:
        raise TypeError(f"byzantine_attack: attack must be a name or a callable, "
                        f"got {attack!r}")
    active = num_byzantine > 0 and not data_level
    needs_key = needs_key and active
    stateful = stateful and active
    if needs_key and key is None:
        raise ValueError(f"byzantine_attack: attack {label!r} is random; pass key=")
    if stateful and server is None:
        raise ValueError(
            f"byzantine_attack: attack {label!r} reads the server's previous "
            "aggregate; pass server= (the server's robust stage, as "
            "byzjax.optim.stages does)")
    num_honest = num_workers - num_byzantine

    def init_fn(params):
        if stateful:
            assert server is not None
            zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
            center = (MomentPair(m=zeros, v=jax.tree_util.tree_map(
                jnp.zeros_like, params)) if moments else zeros)
            return AttackHistoryState(center=center, server=server.init(params),
                                      key=key if needs_key else None)
        return ByzantineAttackState(key=key) if needs_key else optax.EmptyState()

    def _attack_stack(stack, k, center=None):
        honest = jax.tree_util.tree_map(lambda x: x[:num_honest], stack)
        kwargs = dict(attack_kwargs)
        if needs_own:
            kwargs["byzantine_own"] = jax.tree_util.tree_map(
                lambda x: x[num_honest:], stack)
        if stateful:
            kwargs["center"] = center
        byz = fn(honest, num_byzantine=num_byzantine, key=k, **kwargs)
        return jax.tree_util.tree_map(
            lambda x, b: x.at[num_honest:].set(b.astype(x.dtype)), stack, byz)

    def update_fn(updates, state, params=None):
        _check_workers("byzantine_attack", updates, num_workers)
        if not active:
            return updates, state
        sub = None
        is_pair = isinstance(updates, MomentPair)
        if stateful and is_pair != moments:
            raise ValueError(
                f"byzantine_attack({label!r}): got "
                f"{'a MomentPair' if is_pair else 'a plain stack'} but moments="
                f"{moments}; pass moments={is_pair} (MRA sends moment pairs)")
        if needs_key:
            new_key, sub = _split(state.key)
            state = (state._replace(key=new_key) if stateful
                     else ByzantineAttackState(key=new_key))
        center = state.center if stateful else None
        if is_pair:
            km = kv = None
            if sub is not None:
                km, kv = jax.random.split(sub)
            cm, cv = (center.m, center.v) if stateful else (None, None)
            out = MomentPair(m=_attack_stack(updates.m, km, cm),
                             v=_attack_stack(updates.v, kv, cv))
        else:
            out = _attack_stack(updates, sub, center)
        if stateful:
            assert server is not None
            seen, server_state = server.update(out, state.server, params)
            seen = jax.tree_util.tree_map(lambda a, c: a.astype(c.dtype), seen,
                                          state.center)
            state = state._replace(center=seen, server=server_state)
        return out, state

    return optax.GradientTransformation(init_fn, update_fn)


def pre_aggregate(name: str | Callable[..., PyTree], *, num_byzantine: int,
                  key: jax.Array | None = None,
                  **kwargs) -> optax.GradientTransformation:
    """Applies a registered pre-aggregator (NNM, bucketing, static clipping).

    Keeps a leading axis: ``[n, ...] -> [m, ...]`` (``m = n`` except for
    bucketing). ``(n, f)`` is checked against the rule's requirement at trace
    time. For a :class:`MomentPair` the rule is applied to ``m`` and ``v``
    separately, with the same key (so bucketing groups the same workers).

    Args:
      name: registry name (:func:`byzjax.aggregators.get_preaggregator`) or a
        callable ``(updates, *, num_byzantine, [key,] **kwargs)``.
      num_byzantine: static declared ``f``.
      key: PRNG key, required by random rules (it then lives in
        :class:`PreAggregateState` and is split every round); ignored by
        deterministic ones. A callable receives ``key=`` iff a key is given.
      **kwargs: the rule's hyper-parameters.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> pairs = lambda x, *, num_byzantine: {"w": (x["w"] + x["w"][::-1]) / 2}
      >>> tx = optim.pre_aggregate(pairs, num_byzantine=0)
      >>> out, _ = tx.update({"w": jnp.array([[0.0], [2.0]])}, tx.init({}))
      >>> out["w"].ravel().tolist()
      [1.0, 1.0]
    """
    if isinstance(name, str):
        entry = aggregators.PREAGGREGATORS.entry(name)
        fn, needs_key, rule = entry.fn, entry.needs_key, entry.name
    elif callable(name):
        fn, needs_key, rule = name, key is not None, None
    else:
        raise TypeError(f"pre_aggregate: expected a name or a callable, got {name!r}")
    if needs_key and key is None:
        raise ValueError(f"pre_aggregate: {rule!r} is random; pass key=")

    def init_fn(params):
        del params
        return PreAggregateState(key=key) if needs_key else optax.EmptyState()

    def _apply(stack, sub):
        if rule is not None:
            aggregators.PREAGGREGATORS.check(rule, num_workers=num_rows(stack),
                                             num_byzantine=num_byzantine)
        extra = {"key": sub} if needs_key else {}
        return fn(stack, num_byzantine=num_byzantine, **extra, **kwargs)

    def update_fn(updates, state, params=None):
        del params
        sub = None
        if needs_key:
            new_key, sub = _split(state.key)
            state = PreAggregateState(key=new_key)
        if isinstance(updates, MomentPair):
            return MomentPair(m=_apply(updates.m, sub), v=_apply(updates.v, sub)), state
        return _apply(updates, sub), state

    return optax.GradientTransformation(init_fn, update_fn)


def aggregate(name_or_fn: str | Callable[..., PyTree], *, num_byzantine: int,
              moments: bool = False, key: jax.Array | None = None,
              **kwargs) -> optax.GradientTransformation:
    """Removes the worker axis with a (robust) aggregator: ``[n, ...] -> [...]``.

    ``(n, f)`` is checked against the rule's requirement (e.g. Krum's
    ``n >= 2f + 3``) when the update is traced, so a bad configuration fails
    before anything runs. A :class:`MomentPair` input (MRA) is aggregated
    field by field: ``MomentPair(F(mhat), F(vhat))``.

    Stateful rules (registry ``entry.stateful``: centered clipping) keep the
    previous aggregate in :class:`AggregateState` (initially zeros like the
    params) and receive it as ``center=``. Rules that need the server's own
    update (registry ``entry.needs_reference``: FLTrust) receive the
    ``reference=`` given to ``update`` (an extra argument, which
    ``optax.chain`` passes on: ``tx.update(g, state, params, reference=g0)``);
    the transform is then an ``optax.GradientTransformationExtraArgs``.
    Random rules (registry ``entry.needs_key``: DnC) keep a PRNG key in
    :class:`RandomAggregateState`, split every round like bucketing's (a
    :class:`MomentPair` gets the same key for both fields).

    Args:
      name_or_fn: registry name (:func:`byzjax.aggregators.get`) or a callable
        ``F(updates, *, num_byzantine, **kwargs)`` (treated as stateless).
      num_byzantine: static declared ``f``.
      moments: static; set True when the input is a :class:`MomentPair` and
        the rule is stateful (the state then holds a pair of centers). Only
        stateful rules need it.
      key: PRNG key, required by random rules (DnC); ignored by the others.
        A callable receives ``key=`` iff a key is given.
      **kwargs: the rule's hyper-parameters (floats may be traced).

    Returns:
      An ``optax.GradientTransformation`` whose output has leaves ``[*param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.aggregate("mean", num_byzantine=0)
      >>> out, _ = tx.update({"w": jnp.array([[1.0, 2.0], [3.0, 6.0]])},
      ...                    tx.init({"w": jnp.zeros(2)}))
      >>> out
      {'w': Array([2., 4.], dtype=float32)}
    """
    if isinstance(name_or_fn, str):
        entry = aggregators.AGGREGATORS.entry(name_or_fn)
        fn, stateful, rule = entry.fn, entry.stateful, entry.name
        needs_reference = entry.needs_reference
        if needs_reference and moments:
            raise ValueError(f"aggregate: aggregator {entry.name!r} needs the "
                             "server's own update as reference, which has no "
                             "moment pairs (MRA); use another optimiser")
        needs_key = entry.needs_key
    elif callable(name_or_fn):
        fn, stateful, rule = name_or_fn, False, None
        needs_reference = False
        needs_key = key is not None
    else:
        raise TypeError(f"aggregate: expected a name or a callable, got {name_or_fn!r}")
    if needs_key and key is None:
        raise ValueError(f"aggregate: {rule!r} is random; pass key=")
    if needs_key and stateful:
        raise ValueError(f"aggregate: {rule!r} is both random and stateful, which "
                         "this stage does not support")

    def init_fn(params):
        if needs_key:
            return RandomAggregateState(key=key)
        if not stateful:
            return optax.EmptyState()
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        if moments:
            return AggregateState(center=MomentPair(
                m=zeros, v=jax.tree_util.tree_map(jnp.zeros_like, params)))
        return AggregateState(center=zeros)

    def _apply(stack, center, sub=None, reference=None):
        if rule is not None:
            aggregators.check(rule, num_workers=num_rows(stack),
                              num_byzantine=num_byzantine)
        extra = {"center": center} if stateful else {}
        if needs_reference:
            extra["reference"] = reference
        if needs_key:
            extra["key"] = sub
        out = fn(stack, num_byzantine=num_byzantine, **extra, **kwargs)
        if stateful:
            out = jax.tree_util.tree_map(lambda o, c: o.astype(c.dtype), out, center)
        return out

    def update_fn(updates, state, params=None, *, reference=None, **extra_args):
        del params, extra_args
        is_pair = isinstance(updates, MomentPair)
        if needs_reference and (reference is None or is_pair):
            raise ValueError(
                f"aggregate({rule!r}): the rule needs the server's own update: "
                "call update(updates, state, params, reference=g0) with g0 a "
                "tree like the params" + (" (not moment pairs)" if is_pair
                                          else ""))
        if stateful and is_pair != moments:
            raise ValueError(
                f"aggregate({rule!r}): stateful rule got "
                f"{'a MomentPair' if is_pair else 'a plain stack'} but moments="
                f"{moments}; pass moments={is_pair} (MRA sends moment pairs)"
            )
        sub = None
        if needs_key:
            new_key, sub = _split(state.key)
            state = RandomAggregateState(key=new_key)
        if is_pair:
            cm, cv = (state.center.m, state.center.v) if stateful else (None, None)
            out = MomentPair(m=_apply(updates.m, cm, sub), v=_apply(updates.v, cv, sub))
        else:
            out = _apply(updates, state.center if stateful else None, sub,
                         reference)
        if stateful:
            state = AggregateState(center=out)
        return out, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mra_direction(*, eps: float = 1e-8,
                  safeguard: Literal["clamp"] | None = None
                  ) -> optax.GradientTransformation:
    """Turns an aggregated ``MomentPair(m*, v*)`` into MRA's ``m* / sqrt(v* + eps)``.

    ``eps`` is inside the root, as thesis Alg. 20 prints it.

    * ``safeguard=None`` (faithful default): a negative ``v*`` coordinate
      (attacked second moments that the aggregator let through) gives ``NaN``,
      which then spreads into the parameters, reproducing Fabris's §4.1.2
      failure.
    * ``safeguard="clamp"``: ``v*`` is clamped at 0 before the root, and every
      coordinate whose direction is still not finite (``m*`` or ``v*`` NaN or
      infinite, or ``v* + eps = 0``) gets a zero update. The output is then
      always finite. Note the clamp hides the attack rather than rejecting
      the offending rows.

    Args:
      eps: ``>= 0``, float or traced scalar (concrete values are checked).
      safeguard: static, ``None`` or ``"clamp"``.

    Returns:
      A stateless ``optax.GradientTransformation`` mapping a :class:`MomentPair`
      of trees ``[*param_shape]`` to one tree ``[*param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> pair = optim.MomentPair(m={"w": jnp.array([1.0, 1.0])},
      ...                         v={"w": jnp.array([4.0, -1.0])})
      >>> optim.mra_direction(eps=0.0).update(pair, None)[0]
      {'w': Array([0.5, nan], dtype=float32)}
      >>> optim.mra_direction(eps=0.0, safeguard="clamp").update(pair, None)[0]
      {'w': Array([0.5, 0. ], dtype=float32)}
    """
    check_values("mra_direction", _KEYWORDS, eps=eps)
    if safeguard not in (None, "clamp"):
        raise ValueError(f"mra_direction: safeguard must be None or 'clamp', "
                         f"got {safeguard!r}")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def _direction(m, v):
        if safeguard == "clamp":
            q = m / jnp.sqrt(jnp.maximum(v, 0.0) + eps)
            q = jnp.where(jnp.isfinite(q), q, jnp.zeros((), q.dtype))
        else:
            q = m / jnp.sqrt(v + eps)
        return q.astype(m.dtype)

    def update_fn(updates, state, params=None):
        del params
        if not isinstance(updates, MomentPair):
            raise TypeError(
                "mra_direction expects an aggregated byzjax.optim.MomentPair; put it "
                "after aggregate() in a chain whose worker stage is "
                "worker_adam(output='moments')"
            )
        return jax.tree_util.tree_map(_direction, updates.m, updates.v), state

    return optax.GradientTransformation(init_fn, update_fn)


def server_momentum(*, momentum: float, nesterov: bool = False
                    ) -> optax.GradientTransformation:
    """Server momentum after aggregation, ``M <- mu M + F(g)`` (El-Mhamdi et al. 2021).

    ``optax.trace(decay=momentum, nesterov=nesterov)``: with ``nesterov=True``
    it returns ``F(g) + mu M`` with the updated ``M``. Chain it after
    :func:`aggregate` and before ``optax.sgd(lr)`` (or ``optax.scale``).

    Args:
      momentum: ``mu`` in ``[0, 1)``, float or traced scalar (concrete values
        are checked, traced ones are not).
      nesterov: static bool.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.server_momentum(momentum=0.5)
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> u, state = tx.update({"w": jnp.ones(1)}, state)
      >>> u, state = tx.update({"w": jnp.ones(1)}, state)
      >>> u["w"].tolist()
      [1.5]
    """
    check_values("server_momentum", _SERVER_KEYWORDS, momentum=momentum,
                 nesterov=nesterov)
    return optax.trace(decay=momentum, nesterov=nesterov)


_SERVER_KEYWORDS = {
    "momentum": Keyword("momentum", "float", low=0, high=1, high_open=True,
                        traced=True),
    "nesterov": Keyword("nesterov", "bool"),
}
