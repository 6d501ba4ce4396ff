"""The Flax models: parameter counts as the papers give them, shapes, BatchNorm,
dropout, references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import models

PAPER_COUNTS = {
    "mlp": 79_510,
    "mnist_cnn": 176_050,
    "cifar_cnn": 1_310_922,
    "wide_resnet": 36_489_290,
}

INIT_RNGS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def dropout_key(seed):
    # "rbg" keys: compiling threefry dropout masks takes ~10 s per model here.
    return jax.random.key(seed, impl="rbg")


def abstract_variables(model, shape):
    return jax.eval_shape(lambda: model.init(INIT_RNGS, jnp.zeros((1, *shape)),
                                             train=False))


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts_match_spec(name):
    model = models.get(name, num_classes=10)
    shape = models.info(name).input_shape
    variables = abstract_variables(model, shape)  # nothing allocated
    by_hand = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(
        variables["params"]))
    assert by_hand == PAPER_COUNTS[name]
    assert models.param_count(variables) == PAPER_COUNTS[name]
    assert models.count_params(model, shape) == PAPER_COUNTS[name]
    assert models.info(name).num_params == PAPER_COUNTS[name]
    assert ("batch_stats" in variables) == models.has_batch_stats(name)


def test_cifar100_variants():
    # ByzantineMomentum's CIFAR-100 CNN: dense layer of 256.
    conv_and_bn = 1_310_922 - (8192 * 128 + 128) - (128 * 10 + 10)
    want = conv_and_bn + 8192 * 256 + 256 + 256 * 100 + 100
    cnn100 = models.count_params(models.get("cifar_cnn", num_classes=100), (32, 32, 3))
    assert cnn100 == want
    wrn100 = models.count_params(models.get("wide_resnet", num_classes=100),
                                 (32, 32, 3))
    assert wrn100 == 36_489_290 + 640 * 90 + 90


def test_wide_resnet_structure():
    variables = abstract_variables(models.get("wide_resnet"), (32, 32, 3))
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    kernels = [x for p, x in leaves if jax.tree_util.keystr(p).endswith("['kernel']")]
    convs = [k for k in kernels if k.ndim == 4]
    assert len(convs) == 1 + 3 * 4 * 2 + 3  # stem, 12 blocks x 2, 3 shortcuts
    assert sum(k.shape[:2] == (1, 1) for k in convs) == 3
    assert sorted({k.shape[-1] for k in convs}) == [16, 160, 320, 640]
    conv_biases = sum(k.shape[-1] for k in convs)
    assert conv_biases == 10_096  # the biases that make 36,479,194 -> 36,489,290
    out = jax.eval_shape(lambda v, x: models.get("wide_resnet").apply(v, x),
                         variables, jnp.zeros((2, 32, 32, 3)))
    assert out.shape == (2, 10)


# Behaviour tests run jitted (one compile, not one per op), on variables filled
# from NumPy (compiling ``init``'s random number generation costs seconds per
# model on this CPU), and the CIFAR CNN on 8x8 inputs (its dense layer then sees
# 2*2*128 inputs). Initialisation itself is tested on the MLP.
SMALL_SHAPES = {"mlp": (28, 28, 1), "mnist_cnn": (28, 28, 1), "cifar_cnn": (8, 8, 3)}


def init(model, x, seed=0):
    """Variables of ``model`` for inputs like ``x``: shapes from eval_shape, values
    from NumPy (params ~ N(0, 1/fan_in), BN scale ~ 1 + N(0, 0.1^2), running
    mean 0, running var 1)."""
    rng = np.random.default_rng(seed)
    abstract = abstract_variables(model, x.shape[1:])

    def fill(path, leaf):
        key = jax.tree_util.keystr(path)
        if "batch_stats" in key:
            fill_value = 1.0 if key.endswith("['var']") else 0.0
            value = np.full(leaf.shape, fill_value)
        elif key.endswith("['scale']"):
            value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
        else:
            fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 100
            value = rng.normal(size=leaf.shape) / np.sqrt(fan_in)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize("name", sorted(SMALL_SHAPES))
def test_forward_shapes_and_eval_determinism(name):
    shape = SMALL_SHAPES[name]
    model = models.get(name, num_classes=7)
    x = normal(2, (3, *shape))
    variables = init(model, x[:1])
    apply = jax.jit(model.apply)  # train defaults to False
    y1 = apply(variables, x)
    y2 = apply(variables, x)
    assert y1.shape == (3, 7) and y1.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert np.all(np.isfinite(np.asarray(y1)))


def test_tiny_wide_resnet_runs_in_training_mode():
    model = models.get("wide_resnet", depth=10, widen_factor=1, dropout_rate=0.3)
    x = normal(0, (4, 8, 8, 3))
    v = init(model, x)
    logits, state = jax.jit(lambda v, x: model.apply(
        v, x, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key(5)})
    )(v, x)
    assert logits.shape == (4, 10)
    before = jax.tree_util.tree_leaves(v["batch_stats"])
    after = jax.tree_util.tree_leaves(state["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError, match="6k\\+4"):
        jax.eval_shape(lambda: models.get("wide_resnet", depth=12).init(INIT_RNGS, x))


def test_batchnorm_and_dropout_in_training_mode():
    model = models.get("cifar_cnn")
    x = normal(3, (4, 8, 8, 3))
    v = init(model, x[:1])

    @jax.jit
    def train_apply(key):
        return model.apply(v, x, train=True, mutable=["batch_stats"],
                           rngs={"dropout": key})

    logits_a, state_a = train_apply(dropout_key(10))
    logits_b, _ = train_apply(dropout_key(11))
    logits_a2, _ = train_apply(dropout_key(10))
    assert logits_a.shape == (4, 10)
    assert not np.allclose(logits_a, logits_b)  # dropout depends on the key
    np.testing.assert_array_equal(np.asarray(logits_a), np.asarray(logits_a2))
    old = v["batch_stats"]["BatchNorm_0"]["mean"]
    new = state_a["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(old, new)  # running averages updated
    with pytest.raises(Exception):  # dropout needs its RNG in training
        model.apply(v, x, train=True, mutable=["batch_stats"])


# The CIFAR CNN without dropout in training mode, compiled once for two tests.
CIFAR_NO_DROPOUT = models.get("cifar_cnn", dropout_rate=0.0)
cifar_train_apply = jax.jit(lambda v, x: CIFAR_NO_DROPOUT.apply(
    v, x, train=True, mutable=["batch_stats"]))


def test_vmap_over_workers_uses_each_workers_batch_statistics():
    xs = normal(4, (2, 2, 8, 8, 3)) * jnp.array(
        [1.0, 5.0])[:, None, None, None, None]
    v = init(CIFAR_NO_DROPOUT, xs[0, :1])
    batched, stats = jax.jit(jax.vmap(cifar_train_apply, in_axes=(None, 0)))(v, xs)
    for i in range(2):
        single, single_stats = cifar_train_apply(v, xs[i])
        np.testing.assert_allclose(batched[i], single, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(stats["batch_stats"]["BatchNorm_0"]["var"][i],
                                   single_stats["batch_stats"]["BatchNorm_0"]["var"],
                                   rtol=1e-4)
    # Running var = 0.9 * 1 + 0.1 * batch var; worker 1's inputs are 5x larger.
    batch_var = (np.asarray(stats["batch_stats"]["BatchNorm_0"]["var"]) - 0.9) / 0.1
    assert np.all(batch_var[1] > 2 * batch_var[0])


def test_unknown_model_and_inputs():
    with pytest.raises(ValueError, match="unknown model .resnet.; known: cifar_cnn, "
                       "cnn_cifar, cnn_mnist, fc_mnist, logreg_mnist, mlp"):
        models.get("resnet")
    assert models.get("WRN").depth == 28
    assert models.input_shape("fashion_mnist") == (28, 28, 1)
    assert models.input_shape("cifar10") == (32, 32, 3)
    assert models.uses_dropout("wide_resnet") and not models.uses_dropout("mnist_cnn")
    assert not models.has_batch_stats("mlp")


# ------------------------------------------------------ NumPy loop references
def np_dense(x, p):
    out = np.zeros((x.shape[0], p["kernel"].shape[1]))
    for i in range(x.shape[0]):
        for j in range(p["kernel"].shape[1]):
            out[i, j] = np.dot(x[i], p["kernel"][:, j]) + p["bias"][j]
    return out


def np_conv(x, p, pad):
    """Cross-correlation, stride 1, symmetric zero padding; loops over offsets."""
    k = np.asarray(p["kernel"], np.float64)  # [kh, kw, cin, cout]
    kh, kw = k.shape[:2]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, w, k.shape[3]))
    for a in range(kh):
        for b in range(kw):
            out += np.einsum("nhwc,cd->nhwd", x[:, a:a + h, b:b + w, :], k[a, b])
    return out + np.asarray(p["bias"])


def np_pool(x):
    n, h, w, c = x.shape
    out = np.full((n, h // 2, w // 2, c), -np.inf)
    for a in range(2):
        for b in range(2):
            out = np.maximum(out, x[:, a:2 * (h // 2):2, b:2 * (w // 2):2, :])
    return out


def np_bn_train(x, p, eps=1e-5):
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))  # biased, over batch and space
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"], mean, var


def relu(x):
    return np.maximum(x, 0)


def to_np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def test_mlp_matches_numpy():
    model = models.get("mlp")
    x = np.random.default_rng(0).normal(size=(3, 28, 28, 1)).astype(np.float32)
    v = jax.jit(lambda x: model.init(INIT_RNGS, x))(jnp.asarray(x))  # the real init
    p = to_np(v["params"])
    h = relu(np_dense(x.reshape(3, -1).astype(np.float64), p["Dense_0"]))
    want = np_dense(h, p["Dense_1"])
    np.testing.assert_allclose(jax.jit(model.apply)(v, jnp.asarray(x)), want,
                               rtol=1e-4, atol=1e-4)
    # PyTorch default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1 / np.sqrt(784)
    assert np.abs(p["Dense_0"]["kernel"]).max() <= bound
    assert np.abs(p["Dense_0"]["kernel"]).max() > 0.9 * bound
    assert np.abs(p["Dense_0"]["bias"]).max() > 0.5 * bound


def test_mnist_cnn_matches_numpy():
    model = models.get("mnist_cnn")
    x = np.random.default_rng(1).normal(size=(2, 28, 28, 1)).astype(np.float32)
    v = init(model, jnp.asarray(x))
    p = to_np(v["params"])
    h = np_pool(relu(np_conv(x.astype(np.float64), p["Conv_0"], 0)))
    assert h.shape == (2, 12, 12, 20)
    h = np_pool(relu(np_conv(h, p["Conv_1"], 0)))
    assert h.shape == (2, 4, 4, 20)
    h = relu(np_dense(h.reshape(2, -1), p["Dense_0"]))
    want = np_dense(h, p["Dense_1"])
    np.testing.assert_allclose(jax.jit(model.apply)(v, jnp.asarray(x)), want,
                               rtol=1e-4, atol=1e-4)


def test_cifar_cnn_training_step_matches_numpy():
    """ReLU before BN, batch statistics, padding 1, pools (dropout off here)."""
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
    v = init(CIFAR_NO_DROPOUT, jnp.asarray(x[:1]))
    p = to_np(v["params"])
    h = x.astype(np.float64)
    means = []
    for i, bn in enumerate(range(4)):
        h, m, _ = np_bn_train(relu(np_conv(h, p[f"Conv_{i}"], 1)), p[f"BatchNorm_{bn}"])
        means.append(m)
        if i % 2 == 1:
            h = np_pool(h)
    h = relu(np_dense(h.reshape(2, -1), p["Dense_0"]))
    want = np_dense(h, p["Dense_1"])
    got, state = cifar_train_apply(v, jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    old = np.asarray(v["batch_stats"]["BatchNorm_0"]["mean"], np.float64)
    np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"],
                               0.9 * old + 0.1 * means[0], rtol=1e-4, atol=1e-5)
