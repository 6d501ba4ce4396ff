"""ByzFL's models: the same parameter counts and the same outputs as ByzFL's
PyTorch modules (``byzfl.fed_framework.models``, ByzFL 0.0.11) with the weights
copied over.

Needs PyTorch and ByzFL (``pip install -e '.[parity]'``); skipped without them.
The PyTorch modules are built on the ``meta`` device for the counts (nothing
allocated) and for real only for the forward passes, on batches of two.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import models

torch = pytest.importorskip("torch", reason="the parity tests compare with PyTorch")
byzfl_models = pytest.importorskip(
    "byzfl.fed_framework.models", reason="the parity tests compare with ByzFL 0.0.11")

#: byzjax name -> ByzFL class name.
BYZFL_NAMES = {"fc_mnist": "fc_mnist", "cnn_mnist": "cnn_mnist",
               "logreg_mnist": "logreg_mnist", "cnn_cifar": "cnn_cifar",
               "resnet18": "ResNet18", "resnet34": "ResNet34",
               "resnet50": "ResNet50", "resnet101": "ResNet101",
               "resnet152": "ResNet152"}


def torch_model(name, device=None):
    cls = getattr(byzfl_models, BYZFL_NAMES[name])
    if device == "meta":
        with torch.device("meta"):
            return cls()
    torch.manual_seed(0)
    return cls().eval()


def layers_in_call_order(model, shape):
    """The scope paths of the model's Conv / Dense / BatchNorm layers in the
    order they are called, which is PyTorch's registration order for these
    models (``torch.nn.Module.parameters()``)."""
    order = []

    def record(next_fun, args, kwargs, context):
        if (context.method_name == "__call__"
                and isinstance(context.module, (nn.Conv, nn.Dense, nn.BatchNorm))):
            order.append(tuple(context.module.scope.path))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract = jax.eval_shape(model.init, jax.random.key(0),
                                  jnp.zeros((1, *shape)))
    return order, abstract


def lookup(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def put(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def to_flax(array):
    a = array.detach().cpu().numpy()
    if a.ndim == 4:  # Conv2d [O, I, kh, kw] -> HWIO
        a = a.transpose(2, 3, 1, 0)
    elif a.ndim == 2:  # Linear [out, in] -> [in, out]
        a = a.T
    return jnp.asarray(a)


def copy_weights(name, module):
    """byzjax variables holding ``module``'s weights (and running averages)."""
    model = models.get(name)
    order, abstract = layers_in_call_order(model, models.info(name).input_shape)
    params = iter(module.parameters())
    buffers = iter(b for key, b in module.state_dict().items() if "running_" in key)
    variables: dict = {}
    for path in order:
        layer = lookup(abstract["params"], path)
        names = [k for k in ("kernel", "scale", "bias") if k in layer]
        stats = ["mean", "var"] if "scale" in layer else []
        for collection, keys, source in (("params", names, params),
                                         ("batch_stats", stats, buffers)):
            for key in keys:
                value = to_flax(next(source))
                want = lookup(abstract[collection], path)[key]
                assert value.shape == want.shape, (path, key)
                put(variables.setdefault(collection, {}), (*path, key), value)
    assert next(params, None) is None and next(buffers, None) is None
    return model, variables


@pytest.mark.parametrize("name", sorted(BYZFL_NAMES))
def test_parameter_count_is_byzfls(name):
    module = torch_model(name, device="meta")
    assert models.info(name).num_params == sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["fc_mnist", "cnn_mnist", "logreg_mnist",
                                  "cnn_cifar", "resnet18", "resnet50"])
def test_forward_equals_byzfls(name):
    module = torch_model(name)
    model, variables = copy_weights(name, module)
    h, w, c = models.info(name).input_shape
    x = np.random.default_rng(0).normal(size=(2, c, h, w)).astype(np.float32)
    if models.has_batch_stats(name):  # running averages away from 0 / 1
        with torch.no_grad():
            for key, b in module.state_dict().items():
                if "running_" in key:
                    b.copy_(torch.rand_like(b) + 0.5)
        model, variables = copy_weights(name, module)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    got = np.asarray(apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if models.has_batch_stats(name):  # training: each batch's own statistics
        module.train()
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        got, _ = jax.jit(lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"]))(
                variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
