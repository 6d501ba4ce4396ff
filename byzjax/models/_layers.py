"""Layers with PyTorch's default initialisation, shared by the models.

The anchors (ByzantineMomentum, seed 002's RESAM code, ByzFL) are PyTorch
programs whose learning rates were tuned with PyTorch's default initialisation
of ``nn.Linear`` / ``nn.Conv2d``: weights and biases both
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_(a=sqrt(5))``). The
models use the same so those learning rates carry over. Convolutions take an
explicit symmetric padding (PyTorch's ``padding=p``), not Flax's ``"SAME"``,
which pads asymmetrically for stride 2.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["torch_uniform", "dense", "conv"]


def torch_uniform(fan_in: int):
    """Initializer ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's default).

    Example:
      >>> import jax
      >>> w = torch_uniform(4)(jax.random.key(0), (1000,))
      >>> bool((abs(w) <= 0.5).all())
      True
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense(features: int, fan_in: int, *, name: str | None = None) -> nn.Dense:
    """``nn.Dense`` initialised like ``torch.nn.Linear(fan_in, features)``."""
    return nn.Dense(features, kernel_init=torch_uniform(fan_in),
                    bias_init=torch_uniform(fan_in), name=name)


def conv(features: int, in_features: int, kernel: int, *, stride: int = 1,
         padding: int = 0, use_bias: bool = True, kernel_init=None,
         bias_init=None, name: str | None = None) -> nn.Conv:
    """``nn.Conv`` like ``torch.nn.Conv2d(in, features, kernel, stride, padding)``."""
    fan_in = in_features * kernel * kernel
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride),
        padding=((padding, padding), (padding, padding)), use_bias=use_bias,
        kernel_init=kernel_init or torch_uniform(fan_in),
        bias_init=bias_init or torch_uniform(fan_in), name=name)
