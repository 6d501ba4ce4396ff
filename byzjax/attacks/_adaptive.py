"""Adaptive ("optimal") attack strength against a given aggregator.

For a one-parameter attack family (ALIE ``gbar - eps * sigma``, FOE
``(1 - eps) gbar``) the attacker picks ``eps`` to maximise the damage
``||F(honest ++ byzantine(eps)) - gbar||`` (Euclidean over all leaves
together) against the aggregator ``F`` in use. Two searches:

- ``search="grid"`` (default): the most damaging of fixed candidates, all
  evaluated at once with :func:`jax.vmap` (one trace of the aggregator, one
  compiled batched program).
- ``search="line"``: ByzFL's line search (``Optimal_ALittleIsEnough``,
  ``Optimal_InnerProductManipulation``, byzfl 0.0.11), evaluation after
  evaluation in one :func:`jax.lax.fori_loop`, over ByzFL's ``tau``, so that
  the row sent is ByzFL's.

References:
  Baruch et al. 2019, https://arxiv.org/abs/1902.06156;
  Xie et al. 2020, https://arxiv.org/abs/1903.03936;
  El-Mhamdi, Guerraoui, Rouault, "Distributed Momentum for Byzantine-resilient
  Stochastic Gradient Descent", ICLR 2021, https://arxiv.org/abs/2003.00010
  (``line_maximize`` over the attack factor).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import aggregators
from byzjax._registry import Keyword
from byzjax._tree import PyTree, num_rows
from byzjax.attacks._base import ATTACKS, honest_mean

__all__ = ["adaptive", "adaptive_alie", "adaptive_foe", "DEFAULT_CANDIDATES",
           "LINE_SEARCH_DEFAULTS", "line_search", "server_view"]

#: Default candidate strengths: 16 values from 0 to 16 (ByzantineMomentum's
#: default budget is 16 evaluations).
DEFAULT_CANDIDATES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0,
                      5.0, 6.0, 8.0, 11.0, 16.0)

#: ByzFL's line search (``Optimal_ALittleIsEnough``,
#: ``Optimal_InnerProductManipulation``, byzfl 0.0.11): ``evals`` damage
#: evaluations, the first at ``start``, first step ``delta``, contraction
#: ``ratio``. The defaults of ``adaptive(..., search="line")``.
LINE_SEARCH_DEFAULTS = {"evals": 20, "start": 0.0, "delta": 10.0, "ratio": 0.8}

_BASES = ("a_little_is_enough", "fall_of_empires")


def _resolve_base(base, rule: str = "adaptive") -> tuple[Callable[..., PyTree],
                                                          str | None]:
    """Returns ``(fn, registry name or None)``."""
    if callable(base):
        return base, None
    entry = ATTACKS.entry(base)
    if entry.name not in _BASES:
        raise ValueError(
            f"{rule}: base must be 'alie' or 'foe' (or a callable taking eps=), "
            f"got {base!r}"
        )
    return entry.fn, entry.name


def _concrete(value) -> float | None:
    """``value`` as a Python float, or None when it is traced."""
    if isinstance(value, jax.core.Tracer):
        return None
    return float(np.asarray(value))


def _line_options(rule, evals, start, delta, ratio) -> tuple[int, Any, Any, Any]:
    """ByzFL's checks of the line-search options (concrete values only)."""
    d = LINE_SEARCH_DEFAULTS
    evals = d["evals"] if evals is None else evals
    start = d["start"] if start is None else start
    delta = d["delta"] if delta is None else delta
    ratio = d["ratio"] if ratio is None else ratio
    if isinstance(evals, bool) or not isinstance(evals, (int, np.integer)) \
            or evals <= 0:
        raise ValueError(f"{rule}: evals must be a positive Python int (the "
                         f"line search's damage evaluations), got {evals!r}")
    for name, value in (("start", start), ("delta", delta), ("ratio", ratio)):
        if isinstance(value, (bool, str)):
            raise ValueError(f"{rule}: {name} must be a number, got {value!r}")
        v = _concrete(value)
        if v is None:
            continue
        if not math.isfinite(v):
            raise ValueError(f"{rule}: {name} must be finite, got {value!r}")
        if name == "delta" and v == 0:
            raise ValueError(f"{rule}: delta must be a non-zero number (the "
                             "line search's first step), got 0")
        if name == "ratio" and not 0.5 < v < 1:
            raise ValueError(f"{rule}: ratio must be in (0.5, 1) exclusive, "
                             f"got {value!r}")
    return int(evals), start, delta, ratio


def line_search(objective: Callable[[jax.Array], jax.Array], *, evals: int,
                start, delta, ratio) -> tuple[jax.Array, jax.Array]:
    """ByzFL's line search maximising a scalar ``objective``: ``(best_x, best_y)``.

    Evaluates ``objective(start)``, then ``evals - 1`` proposals
    ``best_x + delta``, one after another (one :func:`jax.lax.fori_loop`, one
    trace of ``objective``). A proposal is accepted if ``y > best_y``
    (strictly: a tie keeps the earlier point; a NaN, on either side, is never
    better). Expansion phase: while proposals are accepted the step doubles;
    at the first rejection it is multiplied by ``ratio`` and the contraction
    phase begins, where the step is multiplied by ``ratio`` after every
    proposal, accepted or not. Every step has the sign of ``delta``: the
    search never goes back past a point it accepted. ``x``, ``delta`` and
    ``ratio`` are carried in the default float dtype (float32 unless x64 is
    on; ByzFL's Python floats are float64).

    Example:
      >>> import jax.numpy as jnp
      >>> x, y = line_search(lambda t: -(t - 3.0) ** 2, evals=20, start=0.0,
      ...                    delta=10.0, ratio=0.8)
      >>> round(float(x), 2)  # 0, 10 (worse), 8, 6.4 (worse), 5.12 (better), ...
      5.12
    """
    dtype = jnp.result_type(float)
    x0 = jnp.asarray(start, dtype)
    r = jnp.asarray(ratio, dtype)

    def step(i, carry):
        best_x, best_y, step_, expanding = carry
        first = i == 0
        x = jnp.where(first, best_x, best_x + step_)
        y = jnp.asarray(objective(x), dtype)
        improved = y > best_y
        accept = first | improved
        step_ = jnp.where(first, step_,
                          jnp.where(expanding & improved, 2 * step_, step_ * r))
        return (jnp.where(accept, x, best_x), jnp.where(accept, y, best_y),
                step_, expanding & accept)

    init = (x0, jnp.asarray(-jnp.inf, dtype), jnp.asarray(delta, dtype),
            jnp.asarray(True))
    best_x, best_y, _, _ = jax.lax.fori_loop(0, evals, step, init)
    return best_x, best_y


def _resolve_aggregator(aggregator):
    """Returns ``(fn, name or None, needs_key)``."""
    if callable(aggregator):
        return aggregator, None, False
    entry = aggregators.AGGREGATORS.entry(aggregator)
    return entry.fn, entry.name, entry.needs_key


def _needs_reference(name) -> bool:
    return name is not None and aggregators.AGGREGATORS.entry(name).needs_reference


def _resolve_preaggregator(preaggregator):
    """Returns ``(fn, name or None, needs_key)``."""
    if preaggregator is None:
        return None, None, False
    if callable(preaggregator):
        return preaggregator, None, False
    entry = aggregators.PREAGGREGATORS.entry(preaggregator)
    return entry.fn, entry.name, entry.needs_key


def tree_distance(a: PyTree, b: PyTree) -> jax.Array:
    """Euclidean distance between two pytrees of one structure (float32 sums)."""
    sq = sum(jnp.sum(jnp.square((x - y).astype(jnp.float32)))
             for x, y in zip(jax.tree_util.tree_leaves(a),
                             jax.tree_util.tree_leaves(b)))
    return jnp.sqrt(sq)


def server_view(honest: PyTree, *, num_byzantine: int, aggregator,
                aggregator_kwargs: dict | None = None, preaggregator=None,
                preaggregator_kwargs: dict | None = None, key=None,
                rule: str = "adaptive") -> Callable[[PyTree], PyTree]:
    """What an omniscient attacker knows of the server: ``byzantine -> F(...)``.

    Returns a function of the Byzantine rows (leaves ``[num_byzantine, ...]``)
    that stacks them after the honest rows, applies the server's optional
    pre-aggregator and its aggregator, and returns the aggregate (leaves
    ``[*param_shape]``). ``aggregator_kwargs["num_byzantine"]``, if given, is
    the *declared* ``f`` the rules are told; names are checked against
    ``(n, f)`` before tracing. Shared by the adaptive and optimised attacks.
    Random server rules draw from the attacker's ``key`` (a random
    pre-aggregator gets ``key``, a random aggregator ``fold_in(key, 1)``): the
    attacker knows the rules, not the server's draws.
    """
    n = num_rows(honest) + num_byzantine
    agg_fn, agg_name, agg_needs_key = _resolve_aggregator(aggregator)
    pre_fn, pre_name, pre_needs_key = _resolve_preaggregator(preaggregator)
    if pre_needs_key and key is None:
        raise ValueError(
            f"{rule}: the pre-aggregator {pre_name!r} is random and needs key="
        )
    if agg_needs_key and key is None:
        raise ValueError(
            f"{rule}: the aggregator {agg_name!r} is random and needs key="
        )
    # The attacker's own draws of the server's random choices.
    agg_key = {"key": jax.random.fold_in(key, 1)} if agg_needs_key else {}
    agg_kwargs = dict(aggregator_kwargs or {})
    f_declared = agg_kwargs.pop("num_byzantine", num_byzantine)
    if _needs_reference(agg_name) and "reference" not in agg_kwargs:
        raise ValueError(
            f"{rule}: aggregator {agg_name!r} needs the server's own update; "
            "pass it as aggregator_kwargs={'reference': g0}")
    pre_kwargs = dict(preaggregator_kwargs or {})
    m = n
    if pre_name is not None:
        aggregators.PREAGGREGATORS.check(pre_name, num_workers=n,
                                         num_byzantine=f_declared)
    if agg_name is not None and pre_fn is None:
        aggregators.check(agg_name, num_workers=m, num_byzantine=f_declared)

    def serve(byzantine: PyTree) -> PyTree:
        stack = jax.tree_util.tree_map(
            lambda h, b: jnp.concatenate([h, b.astype(h.dtype)], axis=0),
            honest, byzantine)
        if pre_fn is not None:
            extra = {"key": key} if pre_needs_key else {}
            stack = pre_fn(stack, num_byzantine=f_declared, **extra, **pre_kwargs)
            if agg_name is not None:
                aggregators.check(agg_name, num_workers=num_rows(stack),
                                  num_byzantine=f_declared)
        return agg_fn(stack, num_byzantine=f_declared, **agg_key, **agg_kwargs)

    return serve


def adaptive(
    honest: PyTree,
    *,
    num_byzantine: int,
    aggregator: str | Callable[..., PyTree],
    base: str | Callable[..., PyTree] = "alie",
    candidates: Any = None,
    aggregator_kwargs: dict | None = None,
    num_workers: int | None = None,
    preaggregator: str | Callable[..., PyTree] | None = None,
    preaggregator_kwargs: dict | None = None,
    return_eps: bool = False,
    key: jax.Array | None = None,
    batch_size: int | None = None,
    search: Literal["grid", "line"] = "grid",
    evals: int | None = None,
    start: float | jax.Array | None = None,
    delta: float | jax.Array | None = None,
    ratio: float | jax.Array | None = None,
    rule: str = "adaptive",
    **base_kwargs,
):
    """ALIE/FOE with ``eps`` chosen to maximise the damage against ``aggregator``.

    For every candidate ``eps`` (all at once, under :func:`jax.vmap`) the
    attacker builds ``honest ++ [byzantine(eps)] * num_byzantine``, applies the
    optional pre-aggregator and the aggregator, and measures
    ``||F(...) - gbar||`` over all leaves; it sends the rows of the most
    damaging candidate (the first one on ties). A non-finite damage (the rule
    returned NaN/inf) counts as ``+inf``, i.e. maximally damaging.

    ``search="line"`` is ByzFL's ``Optimal_ALittleIsEnough`` /
    ``Optimal_InnerProductManipulation`` (byzfl 0.0.11) instead: a sequential
    line search over ByzFL's attack factor ``tau`` (see :func:`line_search`;
    ``evals=20, start=0.0, delta=10.0, ratio=0.8`` by default, with ByzFL's
    checks: ``evals`` a positive int, ``delta`` non-zero, ``ratio`` in
    ``(0.5, 1)``), with the same damage (ByzFL's: the ``num_byzantine``
    copies of the row after the honest rows, the pre-aggregator, then the
    aggregator told the declared ``f``). The row is built from ``tau`` with
    ByzFL's formula, so it is ByzFL's row:

    - ALIE: ``gbar + tau * sigma`` with ``sigma`` the sample standard
      deviation (``ddof=1``, ByzFL's ``np.var(..., ddof=1)`` /
      ``torch.var``), i.e. byzjax's ``eps = -tau`` (exact);
    - FOE: ``-tau * gbar`` (:func:`~byzjax.attacks.inner_product_manipulation`,
      ByzFL's IPM), i.e. byzjax's ``eps = 1 + tau``;
    - a callable base: the search runs over its ``eps`` itself.

    Non-finite damages follow ByzFL's comparison ``prop_y > best_y`` in this
    mode: a NaN damage is never better (and a NaN at ``start`` is never
    replaced), ``+inf`` beats every finite damage but not another ``+inf``;
    ties keep the earlier point. ``tau`` and the step are float32 here (ByzFL
    adds Python floats), so the chosen ``tau`` may differ from ByzFL's in its
    last bits, and a comparison that float32 rounding decides (two damages
    within ~1e-7 of each other, e.g. on the plateau of a clipping rule) may go
    the other way in ByzFL (``tests/test_adaptive_line_search.py`` checks
    byzjax against ByzFL's own outputs).

    Cost of the line search: ``evals`` evaluations one after another (ByzFL's
    20 against the grid's 16). Measured here on XLA:CPU (one jitted call
    after compilation, n = 11, f = 1, 79,510 parameters as ``fc_mnist``, NNM
    then trimmed mean, a shared 2-core machine, ``docs/ATTACKS.md``): about
    60 ms per call, 0.16x the default vmapped grid (375 ms) and 1.2-1.9x the
    grid one candidate at a time (``batch_size=1``: 32-49 ms).

    Cost: by default all candidates run as one :func:`jax.vmap` batch, which
    holds ``len(candidates)`` stacks of ``n`` rows at once. ``batch_size=b``
    evaluates them ``b`` at a time instead (``jax.lax.map(..., batch_size=b)``:
    no Python loop; one trace when ``b`` divides ``len(candidates)``, one
    more for the remainder otherwise). On XLA:CPU this can be much faster for
    matmul-based rules: measured here (n = 15, 79,510 parameters, 16
    candidates, mean aggregator) about 60 ms per call with the full vmap
    against about 5 ms evaluating one candidate at a time.

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of Byzantine rows (the real attackers).
      aggregator: registry name (``"trimmed_mean"``) or a callable
        ``F(stack, *, num_byzantine, **kwargs)``. Names are checked against
        ``(n, f)`` at trace time.
      base: ``"alie"`` or ``"foe"`` (any alias), or a callable
        ``(honest, *, num_byzantine, eps, **base_kwargs) -> rows``.
      candidates: 1-D array of candidate strengths (may be traced; its length
        is static). Default :data:`DEFAULT_CANDIDATES`.
      aggregator_kwargs: keyword arguments of the aggregator. Its
        ``num_byzantine`` entry, if present, is the *declared* ``f`` the
        aggregator is told (default: ``num_byzantine``). For a stateful rule
        (centered clipping) pass ``center=`` here, else the rule's default.
      num_workers: optional static ``n``, checked against
        ``n_honest + num_byzantine``.
      preaggregator: optional pre-aggregation (name or callable) the server
        applies before ``aggregator``; random ones use ``key`` (the same key
        for every candidate).
      preaggregator_kwargs: its keyword arguments.
      return_eps: static; if True also return the chosen ``eps`` (a scalar).
      key: PRNG key, only used by a random pre-aggregator or aggregator.
      batch_size: static; ``None`` (default) evaluates all candidates in one
        vmap batch, an int ``b`` evaluates ``b`` at a time (``1``: a plain
        ``lax.map``, so a rule's ``lax.cond`` -- MoNNA's fast path, the
        comparing rules' overflow rescue -- runs one branch, where a vmap
        runs both).
      search: static; ``"grid"`` (default: the most damaging of
        ``candidates``) or ``"line"`` (ByzFL's line search over ``tau``).
      evals: static positive int, ``search="line"`` only: damage evaluations
        (default 20).
      start: ``search="line"`` only: the first ``tau`` (default 0.0; may be
        traced).
      delta: ``search="line"`` only: the first step, non-zero (default 10.0;
        may be traced).
      ratio: ``search="line"`` only: the step's contraction, in ``(0.5, 1)``
        (default 0.8; may be traced).
      rule: the name error messages give the attack (the registered
        :func:`adaptive_alie` and :func:`adaptive_foe` give theirs).
      **base_kwargs: passed to the base attack (e.g. ``ddof=0`` for ALIE).

    Returns:
      Leaves ``[num_byzantine, *param_shape]``; with ``return_eps=True`` the
      pair ``(rows, eps)``, ``eps`` in byzjax's convention of the base
      (``search="line"``: ``-tau`` for ALIE, ``1 + tau`` for FOE).

    Raises:
      ValueError: bad options, ``candidates`` or ``batch_size`` with
        ``search="line"``, or a line-search option with ``search="grid"``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0], [2.0, 3.0]])}
      >>> rows, eps = attacks.adaptive(
      ...     honest, num_byzantine=1, aggregator="mean", base="foe",
      ...     candidates=jnp.array([0.0, 2.0, 5.0]), return_eps=True)
      >>> float(eps), rows["w"].tolist()
      (5.0, [[-8.0, -12.0]])
      >>> rows, eps = attacks.adaptive(  # ByzFL's line search: gbar + tau sigma
      ...     honest, num_byzantine=1, aggregator="trimmed_mean", base="alie",
      ...     search="line", return_eps=True)
      >>> float(-eps), rows["w"].tolist()  # tau = -eps
      (10.0, [[12.0, 13.0]])
    """
    n_honest = num_rows(honest)
    n = n_honest + num_byzantine
    if num_workers is not None and int(num_workers) != n:
        raise ValueError(
            f"{rule}: num_workers={num_workers} but the attack sees {n_honest} "
            f"honest rows and num_byzantine={num_byzantine} (n = {n})"
        )
    if "eps" in base_kwargs:
        raise ValueError(
            f"{rule} chooses eps itself; pass candidates=jnp.array([...]) "
            "instead of eps"
        )
    if search not in ("grid", "line"):
        raise ValueError(f"{rule}: search must be 'grid' or 'line', got "
                         f"{search!r}")
    line = {"evals": evals, "start": start, "delta": delta, "ratio": ratio}
    if search == "grid":
        given = [k for k, v in line.items() if v is not None]
        if given:
            raise ValueError(f"{rule}: {', '.join(given)} set the line search; "
                             "pass search='line' too, or remove them")
    else:
        given = [k for k, v in (("candidates", candidates),
                                ("batch_size", batch_size)) if v is not None]
        if given:
            raise ValueError(f"{rule}: {' and '.join(given)} set the grid "
                             "search, not search='line' (it takes evals, start, "
                             "delta, ratio); remove them")
    base_fn, base_name = _resolve_base(base, rule)
    serve = server_view(honest, num_byzantine=num_byzantine, aggregator=aggregator,
                        aggregator_kwargs=aggregator_kwargs,
                        preaggregator=preaggregator,
                        preaggregator_kwargs=preaggregator_kwargs, key=key,
                        rule=rule)
    if search == "line":
        return _adaptive_line(honest, num_byzantine, serve, base_fn, base_name,
                              base_kwargs, return_eps,
                              *_line_options(rule, evals, start, delta, ratio))
    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    candidates = jnp.asarray(candidates)
    if candidates.ndim != 1 or candidates.shape[0] == 0:
        raise ValueError(
            f"{rule}: candidates must be a non-empty 1-D array, got shape "
            f"{candidates.shape}"
        )
    if not jnp.issubdtype(candidates.dtype, jnp.floating):
        candidates = candidates.astype(jnp.float32)

    def rows_for(eps):
        return base_fn(honest, num_byzantine=num_byzantine, eps=eps, **base_kwargs)

    if num_byzantine == 0:
        rows = rows_for(candidates[0])
        return (rows, candidates[0]) if return_eps else rows

    gbar = honest_mean(honest)

    def damage(eps):
        dist = tree_distance(serve(rows_for(eps)), gbar)
        return jnp.where(jnp.isfinite(dist), dist, jnp.inf)

    if batch_size is None:
        damages = jax.vmap(damage)(candidates)
    elif int(batch_size) == 1:  # a plain loop: the rule's lax.conds stay branches
        damages = jax.lax.map(damage, candidates)
    else:
        damages = jax.lax.map(damage, candidates, batch_size=int(batch_size))
    eps = candidates[jnp.argmax(damages)]
    rows = rows_for(eps)
    return (rows, eps) if return_eps else rows


def _adaptive_line(honest, num_byzantine, serve, base_fn, base_name,
                   base_kwargs, return_eps, evals, start, delta, ratio):
    """``adaptive(..., search="line")``: ByzFL's line search over ``tau``."""
    if base_name == "a_little_is_enough":
        def rows_for(tau):  # ByzFL's ALIE: gbar + tau * sigma (ddof=1)
            return base_fn(honest, num_byzantine=num_byzantine, tau=tau,
                           **base_kwargs)

        def to_eps(tau):
            return -tau
    elif base_name == "fall_of_empires":
        ipm = ATTACKS.entry("inner_product_manipulation").fn

        def rows_for(tau):  # ByzFL's IPM: -tau * gbar
            return ipm(honest, num_byzantine=num_byzantine, tau=tau, **base_kwargs)

        def to_eps(tau):
            return 1 + tau
    else:
        def rows_for(tau):
            return base_fn(honest, num_byzantine=num_byzantine, eps=tau,
                           **base_kwargs)

        def to_eps(tau):
            return tau
    if num_byzantine == 0:
        tau = jnp.asarray(start, jnp.result_type(float))
        rows = rows_for(tau)
        return (rows, to_eps(tau)) if return_eps else rows
    gbar = honest_mean(honest)
    tau, _ = line_search(lambda t: tree_distance(serve(rows_for(t)), gbar),
                         evals=evals, start=start, delta=delta, ratio=ratio)
    rows = rows_for(tau)
    return (rows, to_eps(tau)) if return_eps else rows


#: The keywords :func:`adaptive` adds to the adaptive attacks' entries (their
#: functions pass ``**kwargs`` on), checked before tracing.
_LINE_KEYWORDS = {
    "search": Keyword("search", "str", choices=("grid", "line"), default="grid"),
    "evals": Keyword("evals", "int", low=1, optional=True, default=None),
    "start": Keyword("start", "float", traced=True, optional=True, default=None),
    "delta": Keyword("delta", "float", traced=True, optional=True, default=None),
    "ratio": Keyword("ratio", "float", low=0.5, high=1, low_open=True,
                     high_open=True, traced=True, optional=True, default=None),
}


@ATTACKS.register("adaptive_alie", adaptive=True, keywords=_LINE_KEYWORDS,
                  min_workers=lambda f: f + 2,
                  requirement="n >= f + 2 (the standard deviation needs 2 honest rows)",
                  aliases=("optimal_alie", "adaptive_little"),
                  display_name="A Little Is Enough (adaptive)",
                  short_name="ALIE (adaptive)", order=13)
def adaptive_alie(honest: PyTree, *, num_byzantine: int, aggregator,
                  **kwargs):
    """:func:`adaptive` with ``base="alie"`` (registry name ``"adaptive_alie"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[0.0], [2.0], [4.0]])}
      >>> attacks.adaptive_alie(honest, num_byzantine=1, aggregator="mean",
      ...                       candidates=jnp.array([0.0, 1.0]))
      {'w': Array([[0.]], dtype=float32)}
    """
    return adaptive(honest, num_byzantine=num_byzantine, aggregator=aggregator,
                    base="a_little_is_enough", rule="adaptive_alie", **kwargs)


@ATTACKS.register("adaptive_foe", adaptive=True, keywords=_LINE_KEYWORDS,
                  aliases=("optimal_foe", "adaptive_empire"),
                  display_name="Fall of Empires (adaptive)",
                  short_name="FOE (adaptive)", order=14)
def adaptive_foe(honest: PyTree, *, num_byzantine: int, aggregator, **kwargs):
    """:func:`adaptive` with ``base="foe"`` (registry name ``"adaptive_foe"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[1.0], [3.0]])}
      >>> attacks.adaptive_foe(honest, num_byzantine=1, aggregator="mean",
      ...                      candidates=jnp.array([0.5, 3.0]))
      {'w': Array([[-4.]], dtype=float32)}
    """
    return adaptive(honest, num_byzantine=num_byzantine, aggregator=aggregator,
                    base="fall_of_empires", rule="adaptive_foe", **kwargs)
