"""The convolutional networks of the sources (MNIST CNN, CIFAR CNN).

BatchNorm and dropout under per-worker vectorisation (the CIFAR CNN): the
simulator ``vmap``s the training step over workers, so with ``train=True``
each worker normalises with the statistics of its **own** mini-batch (as ``n``
separate machines would; no cross-worker ``axis_name``). The running averages
used at evaluation (``train=False``) are server-side state in the
``batch_stats`` collection; after a round the simulator replaces them by the
mean over the honest workers of the running averages each computed from the
same previous values, which equals one running-average update with the mean
of the honest workers' batch statistics. Dropout masks come from the
``"dropout"`` RNG stream; the simulator gives each worker its own key, split
from the round key.
Running-average momentum 0.9 (PyTorch's ``momentum=0.1``), epsilon 1e-5.
"""

from __future__ import annotations

import flax.linen as nn

from byzjax.models._layers import conv, dense

__all__ = ["MnistCNN", "CifarCNN"]


def _pool(x):
    """2x2 max-pool, stride 2, of ReLU outputs (odd edges dropped, as VALID).

    Written as reshape + max: on XLA:CPU its gradient is an elementwise fusion,
    while ``reduce_window``'s (``select_and_scatter``) cost about 3x as much in
    the per-worker gradient (``docs/PERFORMANCE.md``, section "models"). Values
    are identical. Gradients differ only on exact ties inside a window (split
    equally here, routed to one element by ``select_and_scatter`` and by
    PyTorch): directly after a ReLU, ties are among zeros, whose gradient the
    ReLU zeroes anyway, so the gradients are equal (tested). The CIFAR CNN
    pools BatchNorm outputs (tied ReLU zeros become tied non-zero values);
    there the gradients of its first block were measured to differ, so it
    keeps :func:`_max_pool`.
    """
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _max_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class MnistCNN(nn.Module):
    """C20(5x5)-ReLU-MaxPool2-C20(5x5)-ReLU-MaxPool2-L500-ReLU-L10.

    The MNIST CNN of Fabris 2023 (as in the RESAM experiments).

    Valid (unpadded) 5x5 convolutions: on 28x28x1 inputs the feature maps are
    24 -> 12 -> 8 -> 4, so the first dense layer sees 4*4*20 = 320 inputs and
    the model has 176,050 parameters. The thesis prints the head as
    L(500)-ReLU-L(500), read here as a typo for L500-ReLU-L10: ten classes need
    ten logits, and that head gives the 176,050 parameters. No
    BatchNorm or dropout; ``train`` is ignored.

    Attributes:
      num_classes: output logits.
      channels: channels of both convolutions (20).
      hidden: width of the dense layer (500).

    Shapes: ``x`` float ``[b, 28, 28, 1]`` -> logits ``[b, num_classes]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = MnistCNN()
      >>> x = jnp.zeros((3, 28, 28, 1))
      >>> v = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only
      >>> jax.eval_shape(model.apply, v, x).shape
      (3, 10)
    """

    num_classes: int = 10
    channels: int = 20
    hidden: int = 500

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = _pool(nn.relu(conv(self.channels, x.shape[-1], 5)(x)))
        x = _pool(nn.relu(conv(self.channels, self.channels, 5)(x)))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(dense(self.hidden, x.shape[-1])(x))
        return dense(self.num_classes, self.hidden)(x)


class CifarCNN(nn.Module):
    """The CIFAR CNN of El Mhamdi et al. 2021 and Fabris 2023 (Fall of Empires' model).

    C64-ReLU-BN-C64-ReLU-BN-MaxPool2-Dropout.25-C128-ReLU-BN-C128-ReLU-BN-
    MaxPool2-Dropout.25-L128-ReLU-Dropout.25-L10, 3x3 convolutions with
    padding 1 (note: ReLU *before* BatchNorm, as in the sources). 1,310,922
    parameters for CIFAR-10 (BatchNorm scale and bias included; running
    averages are in ``batch_stats``, not counted). ByzantineMomentum's
    CIFAR-100 variant uses ``hidden=256`` (:func:`byzjax.models.get` picks it
    for 100 classes). BatchNorm and dropout under vmap: module docstring.

    Attributes:
      num_classes: output logits.
      hidden: width of the dense layer (128).
      dropout_rate: dropout probability (0.25).

    Shapes: ``x`` float ``[b, 32, 32, 3]`` -> logits ``[b, num_classes]``.
    Call with ``train=True``, ``mutable=["batch_stats"]`` and
    ``rngs={"dropout": key}`` to train.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = CifarCNN()
      >>> x = jnp.ones((2, 32, 32, 3))
      >>> v = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only
      >>> train_step = lambda v, x, key: model.apply(
      ...     v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})
      >>> logits, state = jax.eval_shape(train_step, v, x, jax.random.key(1))
      >>> logits.shape, sorted(state)
      ((2, 10), ['batch_stats'])
    """

    num_classes: int = 10
    hidden: int = 128
    dropout_rate: float = 0.25

    @nn.compact
    def __call__(self, x, train: bool = False):
        def bn(y):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                epsilon=1e-5)(y)

        def drop(y):
            return nn.Dropout(self.dropout_rate, deterministic=not train)(y)

        in_ch = x.shape[-1]
        for width in (64, 128):
            x = bn(nn.relu(conv(width, in_ch, 3, padding=1)(x)))
            x = bn(nn.relu(conv(width, width, 3, padding=1)(x)))
            x = drop(_max_pool(x))
            in_ch = width
        x = x.reshape((x.shape[0], -1))
        x = drop(nn.relu(dense(self.hidden, x.shape[-1])(x)))
        return dense(self.num_classes, self.hidden)(x)
