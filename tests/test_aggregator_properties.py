"""Properties every registered aggregator (and pre-aggregator) must have.

Parameterised over ``byzjax.aggregators.names()`` at collection time, so a rule
registered later is picked up automatically. Per-rule settings (extra kwargs
and tolerances for iterative rules) live in :data:`SETTINGS`. A rule that
needs the server's own update (registry ``needs_reference``: FLTrust) gets
:data:`SERVER_UPDATE`, a fixed random row, or the honest row itself in the
identical-honest property.

Properties (the definitions in docs/CONVENTIONS.md):

* permutation invariance (tie-free inputs; MoNNA: permutations that keep
  its pivot row in place);
* identical honest rows: every robust rule returns that row whatever the ``f``
  Byzantine rows hold (random, far away, huge, ``+inf``, ``-inf``, ``NaN``);
* finite output with ``f`` non-finite rows (robust rules);
* dtype and leaf shapes ``[*param_shape]`` preserved;
* ``jax.jit`` and ``jax.vmap`` (a batch of stacks) agree with eager calls;
* a second call with the same shapes does not retrace;
* ``f = 0`` is covered by every ``(n, f)`` grid.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators

SHAPES = {"w": (3, 2), "b": (4,)}
DIM = sum(int(np.prod(s)) for s in SHAPES.values())

# Extra kwargs and tolerances per rule. `atol(n, f)` bounds the distance to the
# honest row in the identical-honest property; `perm_atol` the permutation test.
# Centered clipping's fixed point with n-f equal rows at v lies within
# f * radius / (n - f) of v, and it needs ~|v| / radius iterations to get there.
SETTINGS = {
    "centered_clipping": dict(kwargs=dict(radius=0.05, num_iterations=400),
                              atol=lambda n, f: 0.05 * f / (n - f) + 1e-3,
                              perm_atol=1e-4),
    "geometric_median": dict(kwargs={}, atol=lambda n, f: 1e-3, perm_atol=1e-4),
    # FLTrust with the honest row h as the server's update: the h-f honest rows
    # get score 1, a Byzantine row b score t_b = ReLU(cos(b, h)) and weight
    # t_b / (n - f + sum t) on b rescaled to ||h||, which is
    # ||h|| sqrt(2 - 2 t_b) from h; so the output is within
    # f max_t t sqrt(2 - 2t) ||h|| / (n - f) <= 0.545 f ||h|| / (n - f) of h
    # (||h|| < 2 here), not at h: the rule trusts every row that agrees with
    # the server's update.
    "fltrust": dict(kwargs={}, atol=lambda n, f: 0.545 * 2.0 * f / (n - f) + 1e-5,
                    perm_atol=1e-5),
    # MoNNA averages around the pivot row (0): invariant under the
    # permutations that keep it in place.
    "monna": dict(kwargs={}, atol=lambda n, f: 1e-5, perm_atol=1e-5, fixed_row=0),
    # DnC and clipped clustering return the honest row only when the f >= 2
    # Byzantine rows agree: a Byzantine row nearly orthogonal to the top
    # singular direction (DnC), or closer to the honest rows than to the other
    # Byzantine row (clipped clustering), is kept. Their identical-honest check
    # sends identical Byzantine rows (tests/test_aggregators_filtering.py shows
    # a case with different ones).
    "dnc": dict(kwargs={}, atol=lambda n, f: 1e-5, perm_atol=1e-5,
                identical_byzantine=True),
    "clipped_clustering": dict(kwargs={}, atol=lambda n, f: 1e-5, perm_atol=1e-5,
                               identical_byzantine=True),
}
DEFAULT = dict(kwargs={}, atol=lambda n, f: 1e-5, perm_atol=1e-5)
PRE_KWARGS = {"bucketing": dict(bucket_size=2), "static_clipping": dict(max_norm=1.0),
              "chain": dict(steps=[["static_clipping", {"max_norm": 1.0}],
                                   ["nnm", {}]])}

NAMES = aggregators.names()
PRE_NAMES = aggregators.preaggregator_names()


def _setting(name):
    return SETTINGS.get(name, DEFAULT)


def _grid(entry):
    """A few valid static (n, f) pairs per rule: f = 0, 1, 2, odd and even n."""
    out = []
    for f, extra in ((0, 1), (1, 1), (2, 0)):
        n = max(entry.min_workers(f), 2 * f + 1, 1) + extra
        out.append((n, f))
    return tuple(out)


#: The server's own update given to rules that need one (FLTrust).
SERVER_UPDATE = {k: jnp.asarray(np.random.default_rng(12345).normal(size=s),
                                jnp.float32) for k, s in SHAPES.items()}


def _call(entry, stack, f, key=None, reference=None):
    kw = dict(_setting(entry.name)["kwargs"])
    kw.update(PRE_KWARGS.get(entry.name, {}))
    if entry.needs_key:
        kw["key"] = jax.random.key(0) if key is None else key
    if entry.needs_reference:
        kw["reference"] = SERVER_UPDATE if reference is None else reference
    if entry.stateful:
        kw["center"] = jax.tree_util.tree_map(lambda x: jnp.zeros_like(x[0]), stack)
    return entry.fn(stack, num_byzantine=f, **kw)


#: (kind, rule, f) -> how many times :func:`_jitted`'s function was traced.
TRACES: collections.Counter = collections.Counter()


@functools.lru_cache(maxsize=None)
def _jitted(kind, name, f):
    """One compiled function per (rule, f); shapes come from the arguments."""
    entry = aggregators.entry(name)
    if kind == "vmap":
        return jax.jit(jax.vmap(functools.partial(_call, entry, f=f)))

    def fn(x, reference=None):
        TRACES[kind, name, f] += 1  # at trace time only
        return _call(entry, x, f, reference=reference)

    return jax.jit(fn)


def _stack(rng, n, scale=1.0):
    """Continuous random rows (tie-free with probability one)."""
    return {k: jnp.asarray(rng.normal(size=(n,) + s) * scale, jnp.float32)
            for k, s in SHAPES.items()}


def _close(a, b, atol, rtol=1e-5):
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]),
                                   atol=atol, rtol=rtol, err_msg=k)


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(tree))


def _byzantine_rows(rng, f, honest, kind):
    """f rows of the given kind, as a dict of [f, *shape] arrays."""
    out = {}
    for k, s in SHAPES.items():
        shape = (f,) + s
        if kind == "random":
            v = rng.normal(size=shape) * 3.0
        elif kind == "far":
            v = rng.normal(size=shape) * 1e4
        elif kind == "huge":
            v = np.sign(rng.normal(size=shape)) * 1e15
        elif kind == "opposite":
            v = np.broadcast_to(-10.0 * np.asarray(honest[k]), shape)
        elif kind == "mixed":  # every row a different non-finite kind, some partial
            v = rng.normal(size=shape)
            for r in range(f):
                bad = rng.choice([np.inf, -np.inf, np.nan], size=s)
                v[r] = np.where(rng.random(s) < 0.7, bad, v[r]) if r % 2 else bad
        else:
            v = np.full(shape, {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind])
        out[k] = np.asarray(v, np.float32)
    return out


def _with_rows(stack, rows, f):
    return {k: jnp.concatenate([v[:v.shape[0] - f], jnp.asarray(rows[k])]) if f else v
            for k, v in stack.items()}


SEEDS = st.integers(0, 2 ** 31 - 1)


# ------------------------------------------------------------------ aggregators


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, which=st.integers(0, 2))
def test_permutation_invariance(name, seed, which):
    entry = aggregators.entry(name)
    if entry.needs_key:
        pytest.skip("random rule: invariant in distribution only")
    n, f = _grid(entry)[which]
    rng = np.random.default_rng(seed)
    x = _stack(rng, n)
    perm = rng.permutation(n)
    fixed = _setting(name).get("fixed_row")
    if fixed is not None:  # a permutation of the other rows only
        perm = np.concatenate([[fixed], [i for i in perm if i != fixed]])
    fn = _jitted("jit", name, f)
    out = fn(x)
    out_perm = fn({k: v[perm] for k, v in x.items()})
    _close(out, out_perm, atol=_setting(name)["perm_atol"])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, which=st.integers(0, 2),
       kind=st.sampled_from(["random", "far", "huge", "opposite", "inf", "-inf", "nan",
                             "mixed"]))
def test_identical_honest_rows_are_returned(name, seed, which, kind):
    entry = aggregators.entry(name)
    if not entry.robust:
        pytest.skip("not a robust rule")
    n, f = _grid(entry)[which]
    rng = np.random.default_rng(seed)
    honest = {k: rng.normal(size=s) * 0.3 for k, s in SHAPES.items()}
    x = {k: jnp.asarray(np.broadcast_to(v, (n,) + v.shape), jnp.float32)
         for k, v in honest.items()}
    rows = _byzantine_rows(rng, f, honest, kind)
    if _setting(name).get("identical_byzantine") and kind != "mixed":
        rows = {k: np.broadcast_to(v[:1], v.shape) for k, v in rows.items()}
    x = _with_rows(x, rows, f)
    # (a server's update, for a rule that reads one: the honest row; the other
    # rules are called as in the other tests, so they share one compilation)
    reference = ({k: jnp.asarray(v, jnp.float32) for k, v in honest.items()},)
    out = _jitted("jit", name, f)(x, *(reference if entry.needs_reference else ()))
    assert _finite(out), (name, kind)
    _close(out, honest, atol=_setting(name)["atol"](n, f), rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, which=st.integers(1, 2),
       kind=st.sampled_from(["inf", "-inf", "nan", "mixed"]))
def test_non_finite_rows_give_finite_output(name, seed, which, kind):
    entry = aggregators.entry(name)
    if not entry.robust:
        pytest.skip("not a robust rule")
    n, f = _grid(entry)[which]
    rng = np.random.default_rng(seed)
    x = _stack(rng, n)
    bad = _byzantine_rows(rng, f, None, kind)
    x = _with_rows(x, bad, f)
    perm = rng.permutation(n)  # the bad rows anywhere, not only last
    x = {k: v[perm] for k, v in x.items()}
    assert _finite(_jitted("jit", name, f)(x)), (name, kind)


@pytest.mark.parametrize("name", NAMES)
def test_dtype_shapes_jit_and_eager_agree(name):
    entry = aggregators.entry(name)
    rng = np.random.default_rng(0)
    for which, (n, f) in enumerate(_grid(entry)):
        x = _stack(rng, n)
        out = _jitted("jit", name, f)(x)
        assert set(out) == set(SHAPES)
        for k, s in SHAPES.items():
            assert out[k].shape == s, (name, k, out[k].shape)
            assert out[k].dtype == jnp.float32, (name, k, out[k].dtype)
        if which == 1:  # eager runs op by op: once is enough
            _close(out, _call(entry, x, f), atol=_setting(name)["perm_atol"], rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_a_batch_of_stacks(name):
    entry = aggregators.entry(name)
    rng = np.random.default_rng(1)
    n, f = _grid(entry)[1]
    xs = [_stack(rng, n) for _ in range(3)]
    batch = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *xs)
    out = _jitted("vmap", name, f)(batch)
    for i, x in enumerate(xs):
        one = _jitted("jit", name, f)(x)
        _close({k: v[i] for k, v in out.items()}, one,
               atol=max(_setting(name)["perm_atol"], 1e-5), rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_no_retrace_on_second_call(name):
    entry = aggregators.entry(name)
    n, f = _grid(entry)[1]
    # The other tests' compiled function (traced here or by one of them).
    fn = _jitted("jit", name, f)
    rng = np.random.default_rng(2)
    fn(_stack(rng, n))
    traces = TRACES["jit", name, f]
    assert traces >= 1
    fn(_stack(rng, n, scale=2.0))  # new values, same shapes: no retrace
    assert TRACES["jit", name, f] == traces


@pytest.mark.parametrize("name", NAMES)
def test_too_many_byzantine_fails_at_trace_time(name):
    entry = aggregators.entry(name)
    f = 2
    n = entry.min_workers(f) - 1
    if n < 1:
        pytest.skip("accepts any n")
    with pytest.raises(ValueError, match=str(n)):
        fn = jax.jit(functools.partial(_call, entry, f=f))
        fn(_stack(np.random.default_rng(3), n))


def test_every_rule_is_registered_once_with_aliases():
    for name in NAMES:
        entry = aggregators.entry(name)
        assert entry.name == name
        for alias in entry.aliases:
            assert aggregators.entry(alias).name == name
    assert "mean" in NAMES and not aggregators.entry("mean").robust


# -------------------------------------------------------------- pre-aggregators


def _pre_rows(name, n):
    if name == "bucketing":
        return -(-n // PRE_KWARGS["bucketing"]["bucket_size"])
    return n


@pytest.mark.parametrize("name", PRE_NAMES)
def test_pre_aggregator_shapes_jit_vmap_and_no_retrace(name):
    rng = np.random.default_rng(4)
    n, f = 7, 2
    x = _stack(rng, n)
    out = _jitted("jit", name, f)(x)
    traces = TRACES["jit", name, f]
    assert traces >= 1
    for k, s in SHAPES.items():
        assert out[k].shape == (_pre_rows(name, n),) + s
        assert out[k].dtype == jnp.float32
    xs = [x, _stack(rng, n)]
    batch = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *xs)
    outb = _jitted("vmap", name, f)(batch)
    for i, xi in enumerate(xs):
        _close({k: v[i] for k, v in outb.items()}, _jitted("jit", name, f)(xi),
               atol=1e-5)
    # new values, same shapes: no retrace
    assert TRACES["jit", name, f] == traces


@pytest.mark.parametrize("name", PRE_NAMES)
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_deterministic_pre_aggregators_are_permutation_equivariant(name, seed):
    entry = aggregators.PREAGGREGATORS.entry(name)
    if entry.needs_key:
        pytest.skip("random rule")
    rng = np.random.default_rng(seed)
    n, f = 7, 2
    x = _stack(rng, n)
    perm = rng.permutation(n)
    fn = _jitted("jit", name, f)
    out = fn(x)
    _close(fn({k: v[perm] for k, v in x.items()}),
           {k: v[perm] for k, v in out.items()}, atol=1e-5)


@pytest.mark.parametrize("name", PRE_NAMES)
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, kind=st.sampled_from(["inf", "-inf", "nan", "mixed", "huge"]))
def test_pre_aggregation_then_trimmed_mean_stays_finite(name, seed, kind):
    # At most f non-finite rows in, then the robust rule must still be finite.
    rng = np.random.default_rng(seed)
    n, f = 9, 2
    x = _with_rows(_stack(rng, n), _byzantine_rows(rng, f, None, kind), f)
    perm = rng.permutation(n)
    x = {k: v[perm] for k, v in x.items()}
    pre = _jitted("jit", name, f)(x)
    assert _finite(aggregators.trimmed_mean(pre, num_byzantine=f)), (name, kind)
