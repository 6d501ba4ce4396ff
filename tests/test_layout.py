"""The flat layout (``byzjax.optim.flatten_rows``, ``layout="flat"``, config
``robust_layout``): every rule, pre-aggregator and attack computes the same
function on one ``[n, d]`` row per worker as on the worker's pytree.

On rows of small integers every sum over coordinates is exact in float32, in
any order, so the two layouts must agree exactly up to the rules' own float
arithmetic on those sums; on continuous rows only the last bits may move. The
inputs are what attacks send (``tests/test_ties.py``): repeated honest rows,
identical Byzantine rows, huge and non-finite rows.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators, optim, sim
from tests.helpers import TinyMLP, make_data, tiny_config
from tests.test_ties import attack_like

KEY = jax.random.key(0)


def as_tree(x):
    """Columns of ``[n, 3]`` as a two-leaf tree: ``a`` ``[n, 1, 1]``, ``b`` ``[n, 2]``
    (raveled in tree order, the flat row is ``x`` itself)."""
    x = jnp.asarray(x, jnp.float32)
    return {"a": x[:, :1].reshape(-1, 1, 1), "b": x[:, 1:]}


PARAMS = {"a": jnp.zeros((1, 1)), "b": jnp.zeros(2)}
REFERENCE = {"a": jnp.array([[1.0]]), "b": jnp.array([-0.5, 0.25])}
PRE_KWARGS = {"bucketing": dict(bucket_size=2), "static_clipping": dict(max_norm=1.0),
              "chain": dict(steps=[["static_clipping", {"max_norm": 1.0}],
                                   ["nnm", {}]])}


def _grid_n(entry, f):
    return max(entry.min_workers(f), 2 * f + 1) + 1


@functools.lru_cache(maxsize=None)
def _both(kind, name, f):
    """One jitted function per rule: its output in the tree and flat layouts."""
    if kind == "aggregator":
        entry = aggregators.entry(name)
        tx = optim.aggregate(name, num_byzantine=f,
                             key=KEY if entry.needs_key else None)
        extra = {"reference": REFERENCE} if entry.needs_reference else {}
    else:
        tx = optim.pre_aggregate(name, num_byzantine=f, key=KEY,
                                 **PRE_KWARGS.get(name, {}))
        extra = {}
    flat = optim.flatten_rows(tx)

    def fn(x):
        tree = as_tree(x)
        a, _ = tx.update(tree, tx.init(PARAMS), PARAMS, **extra)
        b, _ = flat.update(tree, flat.init(PARAMS), PARAMS, **extra)
        return a, b

    return jax.jit(fn)


def _assert_same(a, b, exact=False):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.shape == y.shape and x.dtype == y.dtype
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5,
                                       atol=1e-5, equal_nan=True)


F = 2


@pytest.mark.parametrize("name", aggregators.names())
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_every_aggregator_is_the_same_function_flat(name, data):
    x = data.draw(attack_like(_grid_n(aggregators.entry(name), F), F))
    a, b = _both("aggregator", name, F)(x)
    _assert_same(a, b)


@pytest.mark.parametrize("name", aggregators.preaggregator_names())
@settings(max_examples=12, deadline=None)
@given(x=attack_like(7, F))
def test_every_pre_aggregator_is_the_same_function_flat(name, x):
    a, b = _both("pre", name, F)(x)
    _assert_same(a, b)


@pytest.mark.parametrize("name", ["mean", "trimmed_mean", "coordinate_median"])
def test_coordinate_wise_rules_give_the_same_bits(name):
    x = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    a, b = _both("aggregator", name, F)(x)
    _assert_same(a, b, exact=True)


def test_flat_rows_round_trip_keeps_shapes_dtypes_and_moment_pairs():
    stack = {"k": jnp.arange(24.0).reshape(2, 3, 4), "b": jnp.ones((2, 1)),
             "s": jnp.array([7.0, 8.0])}
    flat = optim.ravel_rows(stack)
    assert flat.shape == (2, 14)
    chex.assert_trees_all_equal(optim.unravel_rows(flat, stack), stack)
    pair = optim.MomentPair(stack, jax.tree_util.tree_map(lambda v: v * 2, stack))
    fp = optim.ravel_rows(pair)
    assert isinstance(fp, optim.MomentPair) and fp.v.shape == (2, 14)
    back = optim.unravel_rows(optim.MomentPair(fp.m[0], fp.v[0]), pair)
    assert isinstance(back, optim.MomentPair)
    chex.assert_trees_all_equal(back.v, jax.tree_util.tree_map(lambda v: v[0] * 2,
                                                               stack))


@pytest.mark.parametrize("attack,kwargs,rules", [
    ("alie", {}, ("krum", "nnm")), ("foe", {}, ("krum", "nnm")),
    ("sign_flip", {}, ("krum", "nnm")),
    ("adaptive_alie", {"search": "line"}, ("krum", "nnm")),
    ("adaptive_foe", {}, ("krum", "nnm")), ("min_max", {}, ("krum", "nnm")),
    # ROP's rows are irrational (a unit vector times z), so the two layouts'
    # sums may differ in the last bit; on these integer inputs NNM and Krum
    # meet exact ties (equal neighbour distances, equal scores) that such a
    # bit breaks either way. A rule continuous in its inputs keeps the
    # comparison to the last bits while ROP still follows its server copy.
    ("rop", {}, ("trimmed_mean", None))])
def test_attacks_and_their_server_view_are_the_same_function_flat(attack, kwargs,
                                                                   rules):
    """Whole pipelines (attack, NNM, Krum), tree against flat, three rounds:
    adaptive attacks search against the rules in the layout they are given,
    ROP follows its copy of the server's aggregate."""
    n, f = 9, 2
    aggregator, preaggregator = rules
    trees = {}
    for layout in optim.LAYOUTS:
        tx = optax.chain(*optim.stages(
            "resam", num_workers=n, num_byzantine=f, beta=0.9,
            aggregator=aggregator, preaggregator=preaggregator, attack=attack,
            attack_kwargs=kwargs, layout=layout, key=KEY))
        state = tx.init(PARAMS)
        outs = []
        for t in range(3):
            g = as_tree(np.random.default_rng(t).integers(-4, 5, (n, 3)))
            u, state = jax.jit(tx.update)(g, state, PARAMS)
            outs.append(u)
        trees[layout] = outs
    _assert_same(trees["tree"], trees["flat"])


def test_mra_moment_pairs_run_flat():
    n, f = 7, 1
    outs = {}
    for layout in optim.LAYOUTS:
        tx = optax.chain(*optim.stages("mra", num_workers=n, num_byzantine=f,
                                       aggregator="geometric_median",
                                       attack="alie", layout=layout))
        g = as_tree(np.random.default_rng(1).normal(size=(n, 3)))
        outs[layout], _ = tx.update(g, tx.init(PARAMS), PARAMS)
    _assert_same(outs["tree"], outs["flat"])


def test_an_unknown_layout_is_refused_in_one_line():
    with pytest.raises(ValueError, match="layout must be one of 'tree', 'flat'"):
        optim.stages("dsgd", num_workers=5, num_byzantine=1, layout="rows")


def _run(**overrides):
    config = tiny_config(**overrides)
    rec, = sim.run_group(config, seeds=[0], data=make_data(config.num_workers),
                         model=TinyMLP(), progress=False)
    return rec


def test_robust_layout_reaches_the_program_and_its_run_id():
    overrides = dict(aggregator="geometric_median", preaggregator="nnm",
                     num_rounds=4, eval_every=2)
    tree, flat = _run(**overrides), _run(robust_layout="flat", **overrides)
    # the same training to rounding; the flat run is its own run (another id)
    np.testing.assert_allclose(tree["metrics"]["train_loss"],
                               flat["metrics"]["train_loss"], rtol=1e-4)
    assert tree["run_id"] != flat["run_id"]
    assert flat["config"]["robust_layout"] == "flat"
    assert "robust_layout" not in sim.run_id(sim.resolve(tiny_config()), 0, {})


def test_robust_layout_is_unread_in_peer_to_peer_learning():
    config = tiny_config(topology="complete", aggregator="monna", num_workers=7,
                         num_byzantine=1, robust_layout="flat")
    with pytest.warns(sim.IgnoredFieldWarning, match="robust_layout"):
        spec = sim.resolve(config)
    assert spec.robust_layout == "tree" and "robust_layout" in spec.ignored


def test_flat_attack_is_one_trace():
    """A second call with new values does not retrace the flat stages."""
    traces = []
    tx = optim.flatten_rows(optim.byzantine_attack("alie", num_workers=5,
                                                   num_byzantine=1))

    @jax.jit
    def step(g):
        traces.append(1)
        return tx.update(g, tx.init(PARAMS), PARAMS)[0]

    step(as_tree(np.ones((5, 3))))
    step(as_tree(np.zeros((5, 3))))
    assert len(traces) == 1


@pytest.mark.parametrize("options", [
    dict(aggregator="centered_clipping", attack="alie"),  # state: the last aggregate
    dict(aggregator="trimmed_mean", attack="alie", attack_point="gradient",
         clip_norm=1.0),
    dict(aggregator="dnc", preaggregator="bucketing",
         preaggregator_kwargs={"bucket_size": 2}, attack="foe"),  # random rules
])
def test_stateful_random_and_gradient_point_pipelines_run_flat(options):
    n, f = 9, 2
    outs = {}
    for layout in optim.LAYOUTS:
        tx = optax.chain(*optim.stages("resam", num_workers=n, num_byzantine=f,
                                       beta=0.5, layout=layout, key=KEY, **options))
        state = tx.init(PARAMS)
        outs[layout] = []
        for t in range(3):
            g = as_tree(np.random.default_rng(10 + t).integers(-4, 5, (n, 3)))
            u, state = jax.jit(tx.update)(g, state, PARAMS)
            outs[layout].append(u)
    _assert_same(outs["tree"], outs["flat"])
