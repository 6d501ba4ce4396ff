"""ByzFL's models (``byzfl.fed_framework.models``, ByzFL 0.0.11), layer for layer.

ByzFL (Allouah et al., "ByzFL: Research Framework for Robust Federated
Learning", EPFL, 2025, https://arxiv.org/abs/2505.24802) defines its models in
PyTorch; each class here computes what the PyTorch module of the same name
computes, on NHWC inputs instead of NCHW:

* the same layers, parameter counts, activations and pooling;
* the same **outputs**: ``fc_mnist`` and ``cnn_mnist`` end in ``log_softmax``
  (log-probabilities), ``logreg_mnist`` in a ``sigmoid``, the others in logits
  (``ModelInfo.output`` says which). byzjax's loss (softmax cross-entropy of
  the outputs) is PyTorch's ``CrossEntropyLoss`` of them, which equals ByzFL's
  default ``NLLLoss`` exactly when the outputs are log-probabilities
  (``log_softmax`` of log-probabilities is themselves);
* the same **flatten order**: a convolutional model flattens its last feature
  map in PyTorch's ``[C, H, W]`` order (a transpose before the reshape), so a
  PyTorch state dict copies over with kernels transposed and nothing permuted
  (``tests/test_byzfl_models.py`` copies the weights and compares outputs).

Initialisation: PyTorch's defaults (:mod:`byzjax.models._layers`), BatchNorm
scale 1 and bias 0.

BatchNorm (the ResNets): in training each worker normalises with its own
mini-batch's statistics, as each ByzFL client does (its model is in ``train``
mode). At evaluation byzjax uses running averages updated from the honest
workers' mean batch statistics (:mod:`byzjax.models._cnn`). ByzFL's server
never updates its running averages (it only loads aggregated gradients into
its parameters and stays in ``eval`` mode), so ByzFL evaluates with the
initial ones (mean 0, variance 1): evaluated ResNet accuracies are not
comparable between the two (``docs/BYZFL.md``). Running-average momentum 0.9
(PyTorch ``momentum=0.1``), epsilon 1e-5.

References: He, Zhang, Ren, Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016, https://arxiv.org/abs/1512.03385 (the ResNets, in
the CIFAR layout ByzFL uses: 3x3 stem, no max-pool, 4x4 average pool).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from byzjax.models._cnn import _pool
from byzjax.models._layers import conv, dense

__all__ = ["FcMnist", "CnnMnist", "LogRegMnist", "CnnCifar", "ResNet",
           "RESNET_LAYOUTS"]


def _flatten_nchw(x):
    """``[b, H, W, C]`` -> ``[b, C*H*W]`` in PyTorch's ``x.view(b, -1)`` order."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape((x.shape[0], -1))


class FcMnist(nn.Module):
    """ByzFL's ``fc_mnist``: 784-100-ReLU-10, log-softmax output (79,510 parameters).

    Shapes: ``x`` float ``[b, 28, 28, 1]`` -> log-probabilities ``[b, 10]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> v = jax.eval_shape(FcMnist().init, jax.random.key(0), x)
      >>> jax.eval_shape(FcMnist().apply, v, x).shape
      (2, 10)
    """

    num_classes: int = 10
    hidden: int = 100

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1))  # C = 1: NHWC and NCHW orders agree
        x = nn.relu(dense(self.hidden, x.shape[-1])(x))
        return nn.log_softmax(dense(self.num_classes, self.hidden)(x))


class CnnMnist(nn.Module):
    """ByzFL's ``cnn_mnist`` (ByzantineMomentum's ``simples-conv``): 431,080 parameters.

    ``Conv(1, 20, 5)``-ReLU-MaxPool2-``Conv(20, 50, 5)``-ReLU-MaxPool2-
    flatten (PyTorch order, 50*4*4 = 800)-``Linear(800, 500)``-ReLU-
    ``Linear(500, 10)``-log-softmax. Valid (unpadded) convolutions.

    Shapes: ``x`` float ``[b, 28, 28, 1]`` -> log-probabilities ``[b, 10]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> v = jax.eval_shape(CnnMnist().init, jax.random.key(0), x)
      >>> jax.eval_shape(CnnMnist().apply, v, x).shape
      (2, 10)
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = _pool(nn.relu(conv(20, x.shape[-1], 5)(x)))
        x = _pool(nn.relu(conv(50, 20, 5)(x)))
        x = _flatten_nchw(x)
        x = nn.relu(dense(500, x.shape[-1])(x))
        return nn.log_softmax(dense(self.num_classes, 500)(x))


class LogRegMnist(nn.Module):
    """ByzFL's ``logreg_mnist``: ``sigmoid(Linear(784, 10)(x))`` (7,850 parameters).

    The output is the sigmoid itself, as in ByzFL (so byzjax's softmax
    cross-entropy of it is PyTorch's ``CrossEntropyLoss`` of it).

    Shapes: ``x`` float ``[b, 28, 28, 1]`` -> values in (0, 1) ``[b, 10]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> v = jax.eval_shape(LogRegMnist().init, jax.random.key(0), x)
      >>> jax.eval_shape(LogRegMnist().apply, v, x).shape
      (2, 10)
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1))
        return nn.sigmoid(dense(self.num_classes, x.shape[-1])(x))


class CnnCifar(nn.Module):
    """ByzFL's ``cnn_cifar``: 2,324,630 parameters, logits.

    Three ``5x5`` convolutions with padding 2 (20, 100, 200 channels), each
    ReLU then MaxPool2 (32 -> 16 -> 8 -> 4), flatten (PyTorch order,
    200*4*4 = 3200), ``Linear(3200, 512)``-ReLU-``Linear(512, 256)``-ReLU-
    ``Linear(256, 10)``.

    Shapes: ``x`` float ``[b, 32, 32, 3]`` -> logits ``[b, 10]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> v = jax.eval_shape(CnnCifar().init, jax.random.key(0), x)
      >>> jax.eval_shape(CnnCifar().apply, v, x).shape
      (2, 10)
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        in_ch = x.shape[-1]
        for width in (20, 100, 200):
            x = _pool(nn.relu(conv(width, in_ch, 5, padding=2)(x)))
            in_ch = width
        x = _flatten_nchw(x)
        x = nn.relu(dense(512, x.shape[-1])(x))
        x = nn.relu(dense(256, 512)(x))
        return dense(self.num_classes, 256)(x)


def _bn(train: bool, name: str | None = None) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, name=name)


class _BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool):
        in_planes = x.shape[-1]
        out = nn.relu(_bn(train)(conv(self.planes, in_planes, 3, stride=self.stride,
                                      padding=1, use_bias=False)(x)))
        out = _bn(train)(conv(self.planes, self.planes, 3, padding=1,
                              use_bias=False)(out))
        return nn.relu(out + _shortcut(x, self.planes * self.expansion,
                                       self.stride, train))


class _Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool):
        in_planes = x.shape[-1]
        out = nn.relu(_bn(train)(conv(self.planes, in_planes, 1, use_bias=False)(x)))
        out = nn.relu(_bn(train)(conv(self.planes, self.planes, 3, stride=self.stride,
                                      padding=1, use_bias=False)(out)))
        out = _bn(train)(conv(self.planes * 4, self.planes, 1, use_bias=False)(out))
        return nn.relu(out + _shortcut(x, self.planes * self.expansion,
                                       self.stride, train))


def _shortcut(x, out_planes: int, stride: int, train: bool):
    """Identity, or ``1x1`` convolution (stride) + BatchNorm when the shape changes."""
    if stride == 1 and x.shape[-1] == out_planes:
        return x
    return _bn(train)(conv(out_planes, x.shape[-1], 1, stride=stride,
                           use_bias=False)(x))


#: ByzFL's ResNets: name -> (block, blocks per stage).
RESNET_LAYOUTS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """ByzFL's ``ResNet18`` ... ``ResNet152`` (the CIFAR layout), logits.

    ``Conv3x3(64)``-BN-ReLU, four stages of ``block`` (64, 128, 256, 512
    planes; strides 1, 2, 2, 2; ``num_blocks`` blocks each), ``4x4`` average
    pooling, flatten, ``Linear(512 * expansion, num_classes)``. Convolutions
    without bias; ``1x1`` convolution + BN shortcuts where the shape changes.
    ResNet18: 11,173,962 parameters (BatchNorm scale and bias counted, running
    averages not). BatchNorm: module docstring.

    Attributes:
      block: ``"basic"`` (ResNet18/34) or ``"bottleneck"`` (ResNet50/101/152).
      num_blocks: blocks per stage (:data:`RESNET_LAYOUTS`).
      num_classes: output logits (ByzFL always builds 10).

    Shapes: ``x`` float ``[b, 32, 32, 3]`` -> logits ``[b, num_classes]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = ResNet(block="basic", num_blocks=(2, 2, 2, 2))
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> v = jax.eval_shape(model.init, jax.random.key(0), x)
      >>> jax.eval_shape(model.apply, v, x).shape
      (2, 10)
    """

    block: str = "basic"
    num_blocks: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        block = {"basic": _BasicBlock, "bottleneck": _Bottleneck}[self.block]
        x = nn.relu(_bn(train)(conv(64, x.shape[-1], 3, padding=1,
                                    use_bias=False)(x)))
        for planes, stride, count in zip((64, 128, 256, 512), (1, 2, 2, 2),
                                         self.num_blocks):
            for i in range(count):
                x = block(planes, stride if i == 0 else 1)(x, train)
        x = nn.avg_pool(x, (4, 4), strides=(4, 4))
        x = _flatten_nchw(x)
        return dense(self.num_classes, x.shape[-1])(x)
