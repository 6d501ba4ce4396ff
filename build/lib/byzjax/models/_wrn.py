"""Wide-ResNet (Zagoruyko & Komodakis 2016), WRN-28-10 as in El Mhamdi et al. 2021.

Reference: S. Zagoruyko, N. Komodakis, "Wide Residual Networks", BMVC 2016,
https://arxiv.org/abs/1605.07146. The layout and the parameter count follow the
PyTorch implementation ByzantineMomentum uses (``meliketoy/wide-resnet.pytorch``):
pre-activation blocks ``BN-ReLU-Conv3x3-Dropout-BN-ReLU-Conv3x3(stride)`` plus a
shortcut (identity, or a 1x1 convolution when the shape changes), the stride on
the block's second convolution, **biases on every convolution**, a final
BN-ReLU, global average pooling and one dense layer. Counting parameters as
trainable weights (convolution kernels and biases, BatchNorm scale and bias,
dense weights and bias; not the BatchNorm running averages) gives 36,489,290 for
WRN-28-10 on CIFAR-10, the number El Mhamdi et al. (2021) give; without the
convolution biases it
would be 36,479,194.

Initialisation as that implementation: convolution kernels Xavier-uniform with
gain sqrt(2), convolution biases 0; the dense layer PyTorch's default.
BatchNorm and dropout under per-worker vectorisation: as
:mod:`byzjax.models._cnn` (each worker its own batch statistics and dropout
key; server-side running averages). Running-average momentum 0.9 everywhere
(PyTorch 0.1; the reference's last BatchNorm passes PyTorch ``momentum=0.9``,
almost certainly unintended, not copied).

WRN-28-10 is a GPU/TPU model: one forward/backward pass over a batch of 50 is
seconds on a 2-core CPU.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from byzjax.models._layers import conv, dense

__all__ = ["WideResNet"]

_XAVIER_GAIN_SQRT2 = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")


def _conv(features, in_features, kernel, *, stride=1, padding=0):
    return conv(features, in_features, kernel, stride=stride, padding=padding,
                kernel_init=_XAVIER_GAIN_SQRT2, bias_init=nn.initializers.zeros)


class _WideBlock(nn.Module):
    features: int
    stride: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        def bn(y):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                epsilon=1e-5)(y)

        in_ch = x.shape[-1]
        out = _conv(self.features, in_ch, 3, padding=1)(nn.relu(bn(x)))
        out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
        out = _conv(self.features, self.features, 3, stride=self.stride,
                    padding=1)(nn.relu(bn(out)))
        if self.stride != 1 or in_ch != self.features:
            x = _conv(self.features, in_ch, 1, stride=self.stride)(x)
        return out + x


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 images (module docstring).

    Attributes:
      num_classes: output logits.
      depth: ``6 k + 4`` (28).
      widen_factor: width multiplier (10): stages of 16k, 32k, 64k channels.
      dropout_rate: dropout inside blocks (0.3, the reference's default).

    Shapes: ``x`` float ``[b, H, W, 3]`` -> logits ``[b, num_classes]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = WideResNet()  # WRN-28-10
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> v = jax.eval_shape(model.init, jax.random.key(0), x)  # nothing allocated
      >>> jax.eval_shape(model.apply, v, x).shape
      (2, 10)
    """

    num_classes: int = 10
    depth: int = 28
    widen_factor: int = 10
    dropout_rate: float = 0.3

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 4) % 6:
            raise ValueError(f"Wide-ResNet depth must be 6k+4 (10, 16, 22, 28, ...), "
                             f"got {self.depth}")
        blocks = (self.depth - 4) // 6
        k = self.widen_factor
        x = _conv(16, x.shape[-1], 3, padding=1)(x)
        stages = ((16 * k, 1), (32 * k, 2), (64 * k, 2))
        for stage, (width, stride) in enumerate(stages):
            for b in range(blocks):
                x = _WideBlock(width, stride if b == 0 else 1, self.dropout_rate,
                               name=f"stage{stage + 1}_block{b + 1}")(x, train)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return dense(self.num_classes, x.shape[-1])(x)
