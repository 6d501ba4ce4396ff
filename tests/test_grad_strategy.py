"""Per-worker gradient strategies: every strategy computes the same round."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from byzjax import models, sim
from byzjax.models._cnn import _pool
from byzjax.models._layers import conv_nhwc
from byzjax.sim._kit import map_workers, resolve_grad_strategy
from tests.helpers import flat_params

STRATEGIES = ("vmap", "unrolled", "map", "chunked:2")
NHWC = ("NHWC", "HWIO", "NHWC")


def test_auto_resolves_per_backend_and_model():
    kw = dict(num_workers=15)
    assert resolve_grad_strategy("auto", backend="cpu", **kw) == "unrolled"
    assert resolve_grad_strategy("auto", backend="cpu", convolutional=False,
                                 **kw) == "vmap"
    assert resolve_grad_strategy("auto", backend="gpu", **kw) == "vmap"
    assert resolve_grad_strategy("auto", backend="tpu", **kw) == "vmap"
    assert resolve_grad_strategy("auto", backend="cpu", sharded=True, **kw) == "vmap"
    assert resolve_grad_strategy("auto", backend="cpu", num_workers=200) == \
        "chunked:64"
    assert resolve_grad_strategy(" Unrolled ", backend="gpu", **kw) == "unrolled"
    for bad in ("loop", "chunked", "chunked:0", "chunked:x"):
        with pytest.raises(ValueError, match="unknown grad_strategy"):
            resolve_grad_strategy(bad, backend="cpu", **kw)


def test_bad_grad_strategy_fails_in_validate():
    c = sim.get_config()
    assert c.grad_strategy == "auto"
    c.grad_strategy = "chunked"
    with pytest.raises(ValueError, match="chunked:<c>"):
        sim.validate(c)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_map_workers_matches_a_python_loop(strategy):
    xs = (jnp.arange(15.0).reshape(5, 3), jnp.arange(5))

    def fn(row):
        a, i = row
        return {"s": jnp.sum(a * a) + i, "v": a[::-1] * i}

    got = map_workers(fn, xs, strategy=strategy)
    for i in range(5):
        want = fn((xs[0][i], xs[1][i]))
        np.testing.assert_allclose(got["s"][i], want["s"], rtol=1e-6)
        np.testing.assert_allclose(got["v"][i], want["v"], rtol=1e-6)


# ------------------------------------------------------ the simulator's round
def _data(n, shape, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    num = 12 * n
    labels = rng.integers(0, classes, num + 8).astype(np.int32)
    images = rng.integers(0, 255, (num + 8, *shape)).astype(np.uint8)
    return sim.SimData(
        jnp.asarray(images[:num]), jnp.asarray(labels[:num]),
        jnp.asarray(images[num:]), jnp.asarray(labels[num:]),
        jnp.asarray(np.arange(num).reshape(n, 12), jnp.int32),
        jnp.full((n,), 12, jnp.int32), jnp.full((shape[-1],), 0.5),
        jnp.full((shape[-1],), 0.25))


def _round(model, shape, strategy, n):
    """One simulated round (clipping, worker momentum, mean; cheap to compile)."""
    c = sim.get_config()
    c.num_workers, c.num_byzantine, c.batch_size = n, 1, 2
    c.aggregator, c.attack, c.num_attackers = "mean", "none", 0
    c.optimizer = "resam"
    c.num_rounds = c.eval_every = 1
    c.grad_strategy = strategy
    program = sim.make_program(c, _data(n, shape), model)
    hp = {k: jnp.float32(v) for k, v in sim.hparams_of(c).items()}
    # Default (threefry) keys: "rbg" keys draw different bits under vmap.
    key = jax.random.key(0)
    return jax.jit(program.round_step)(program.init(key, hp), hp)


def _assert_same_rounds(out):
    ref_state, ref_metrics = out["vmap"]
    for s, (state, metrics) in out.items():
        np.testing.assert_allclose(flat_params(state.params),
                                   flat_params(ref_state.params),
                                   rtol=1e-5, atol=1e-5, err_msg=s)
        np.testing.assert_allclose(flat_params(state.batch_stats),
                                   flat_params(ref_state.batch_stats),
                                   rtol=1e-5, atol=1e-5, err_msg=s)
        for k in ("train_loss", "agg_dist", "honest_spread"):
            np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-5,
                                       err_msg=f"{s} {k}")


@pytest.mark.slow
def test_strategies_agree_on_cifar_cnn_with_batchnorm_and_dropout():
    """Per-worker batch statistics and dropout keys under every strategy."""
    model = models.get("cifar_cnn", num_classes=3, hidden=8)
    out = {s: _round(model, (8, 8, 3), s, n=3)
           for s in ("vmap", "unrolled", "chunked:2")}
    _assert_same_rounds(out)
    # Batch statistics moved: the server kept the workers' mean running stats.
    init = models.get("cifar_cnn", num_classes=3, hidden=8).init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    assert not np.allclose(flat_params(out["unrolled"][0].batch_stats),
                           flat_params(init["batch_stats"]))


def test_strategies_agree_on_mnist_cnn():
    model = models.get("mnist_cnn", num_classes=3, channels=4, hidden=16)
    _assert_same_rounds({s: _round(model, (16, 16, 1), s, n=5) for s in STRATEGIES})


def _skip_round(attack, strategy, byzantine_gradients, calls, run=True, bn=False):
    """Three rounds of n = 5, f = 2 (clipping, worker momentum, trimmed mean)."""
    class Counting(nn.Module):  # counts the traced per-worker forward passes
        @nn.compact
        def __call__(self, x, train: bool = False):
            calls.append(x.shape)
            x = x.reshape((x.shape[0], -1))
            x = nn.Dense(6)(x)
            if bn:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
            return nn.Dense(3)(nn.relu(x))

    c = sim.get_config()
    c.num_workers, c.num_byzantine, c.batch_size = 5, 2, 3
    c.aggregator, c.attack, c.optimizer = "trimmed_mean", attack, "resam"
    c.num_rounds = c.eval_every = 3
    c.grad_strategy = strategy
    program = sim.make_program(c, _data(5, (4, 4, 1)), Counting(),
                               byzantine_gradients=byzantine_gradients)
    hp = {k: jnp.float32(v) for k, v in sim.hparams_of(c).items()}
    state = program.init(jax.random.key(1), hp)
    calls.clear()
    step = jax.jit(program.round_step)
    if not run:  # trace only
        return step.lower(state, hp)
    for _ in range(3):
        state, metrics = step(state, hp)
    return state, metrics


@pytest.mark.parametrize("attack, strategy", [
    ("alie", "vmap"), ("sign_flip", "unrolled"), ("inf", "unrolled")])
def test_rounds_skip_the_byzantine_gradients_the_attack_replaces(attack, strategy):
    calls_all, calls_skip = [], []
    full, m_full = _skip_round(attack, strategy, True, calls_all)
    skip, m_skip = _skip_round(attack, strategy, None, calls_skip)
    np.testing.assert_allclose(flat_params(skip.params), flat_params(full.params),
                               rtol=1e-5, atol=1e-6)
    for k in ("train_loss", "agg_dist", "honest_spread"):
        np.testing.assert_allclose(m_skip[k], m_full[k], rtol=1e-5, err_msg=k)
    if strategy == "unrolled":  # one traced pass per worker computed
        assert (len(calls_skip), len(calls_all)) == (3, 5)


def test_batchnorm_rounds_skip_byzantine_gradients_and_average_honest_stats():
    """The running statistics are the honest workers' mean, so skipping the
    Byzantine gradients changes nothing (and the skip applies to BatchNorm)."""
    calls_all, calls_skip = [], []
    full, _ = _skip_round("alie", "unrolled", True, calls_all, bn=True)
    skip, _ = _skip_round("alie", "unrolled", None, calls_skip, bn=True)
    assert (len(calls_skip), len(calls_all)) == (3, 5)
    np.testing.assert_allclose(flat_params(skip.params), flat_params(full.params),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat_params(skip.batch_stats),
                               flat_params(full.batch_stats), rtol=1e-5, atol=1e-6)
    assert not np.allclose(skip.batch_stats["BatchNorm_0"]["mean"], 0.0)  # moved


@pytest.mark.parametrize("attack", ["none", "label_flip", "sign_flip_own"])
def test_rounds_keep_the_byzantine_gradients_an_attack_reads(attack):
    calls = []
    _skip_round(attack, "unrolled", None, calls, run=False)
    assert len(calls) == 5
    _skip_round("alie", "unrolled", None, calls, run=False)
    assert len(calls) == 3  # (the same count can fail)


# ----------------------------------------------------- convolution and pooling
@pytest.mark.parametrize("x_shape, w_shape, pad", [
    ((3, 12, 12, 1), (5, 5, 1, 4), ((0, 0), (0, 0))),
    ((2, 8, 8, 3), (3, 3, 3, 5), ((1, 1), (1, 1))),
    ((2, 9, 7, 3), (3, 2, 3, 4), ((1, 2), (0, 1))),
])
def test_conv_nhwc_matches_lax_values_and_gradients(x_shape, w_shape, pad):
    x = jax.random.normal(jax.random.key(1), x_shape)
    w = jax.random.normal(jax.random.key(2), w_shape)

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(
            x, w, (1, 1), pad, dimension_numbers=NHWC)))

    want = jax.jit(jax.value_and_grad(loss(lax.conv_general_dilated), (0, 1)))(x, w)
    got = jax.jit(jax.value_and_grad(loss(conv_nhwc), (0, 1)))(x, w)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # Strided convolutions fall through to lax (same values).
    strided = conv_nhwc(x, w, (2, 2), pad, dimension_numbers=NHWC)
    np.testing.assert_allclose(strided, lax.conv_general_dilated(
        x, w, (2, 2), pad, dimension_numbers=NHWC), rtol=1e-6)


def test_conv_gradients_compile_the_same_inside_a_loop():
    """XLA:CPU rewrites JAX's transposed convolutions (``f01b_i01o->01bf``) to
    its canonical form at the top level of a program but not inside a
    ``while`` loop, where they run as naive loops; the model's convolutions
    must compile to the same convolutions in both places."""
    model = models.get("mnist_cnn", num_classes=3, channels=4, hidden=16)
    x = jnp.ones((2, 16, 16, 1))
    params = model.init(jax.random.key(0), x)["params"]

    def step(p, _=None):
        g = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x) ** 2))(p)
        return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), None

    def conv_labels(fn):
        hlo = jax.jit(fn).lower(params).compile().as_text()
        return sorted(line.split("dim_labels=")[1].split(",")[0]
                      for line in hlo.splitlines() if " convolution(" in line)

    in_loop = conv_labels(lambda p: lax.scan(step, p, None, length=2)[0])
    assert len(in_loop) >= 5  # 2 forward, 1 input and 2 weight gradients
    assert in_loop == conv_labels(lambda p: step(p)[0])
    assert not any("01bf" in label for label in in_loop)


def test_reshape_pool_matches_reduce_window_pool_after_relu():
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(3), (2, 9, 8, 3))  # odd edge dropped
    np.testing.assert_array_equal(_pool(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
    # After a ReLU many windows hold tied zeros; the gradients still agree.
    x = x - 0.8
    r = jax.random.normal(jax.random.key(4), (2, 4, 4, 3))

    def grad(pool):
        return jax.grad(lambda x: jnp.sum(r * pool(jax.nn.relu(x))))(x)

    assert int(jnp.sum(_pool(jax.nn.relu(x)) == 0)) > 10
    np.testing.assert_allclose(
        grad(_pool), grad(lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))),
        rtol=1e-6)

