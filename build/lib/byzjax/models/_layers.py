"""Layers with PyTorch's default initialisation, shared by the models.

The anchors (ByzantineMomentum, the RESAM experiments' code, ByzFL) are PyTorch
programs whose learning rates were tuned with PyTorch's default initialisation
of ``nn.Linear`` / ``nn.Conv2d``: weights and biases both
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_(a=sqrt(5))``). The
models use the same so those learning rates carry over. Convolutions take an
explicit symmetric padding (PyTorch's ``padding=p``), not Flax's ``"SAME"``,
which pads asymmetrically for stride 2.

Stride-1 convolutions go through :func:`conv_nhwc`, whose gradients are written
as convolutions in XLA's canonical NHWC/HWIO layout (see there).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["torch_uniform", "dense", "conv", "conv_nhwc"]


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
        bias_init=bias_init or torch_uniform(fan_in), name=name,
        conv_general_dilated=conv_nhwc if stride == 1 else None)


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_nhwc(lhs, rhs, window_strides, padding, lhs_dilation=None,
              rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
              batch_group_count=1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` whose gradients are canonical NHWC convolutions.

    A drop-in for ``lax.conv_general_dilated`` (the signature ``nn.Conv``
    calls). For a stride-1, undilated, ungrouped NHWC x HWIO convolution with
    explicit padding it returns the same values, and its ``custom_vjp`` writes
    both gradients as ``b01f x 01io -> b01f`` convolutions with explicit
    transposes: the input gradient convolves the padded output gradient with
    the flipped, in/out-swapped kernel; the weight gradient treats input
    channels as the batch and the batch as the contracted feature axis.
    JAX's own transpose rules emit ``f01b_i01o->01bf`` and ``01oi`` dimension
    labels; XLA:CPU rewrites those to the canonical form at the top level of a
    program but, measured with jax 0.10, not inside a ``while`` loop (the
    simulator's ``lax.scan`` over rounds), where they then run as naive loops
    about 5x slower (``docs/PERFORMANCE.md``, section "models"). Any other
    configuration falls through to ``lax.conv_general_dilated``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((2, 6, 6, 3)); w = jnp.ones((3, 3, 3, 4))
      >>> conv_nhwc(x, w, (1, 1), ((1, 1), (1, 1)),
      ...           dimension_numbers=("NHWC", "HWIO", "NHWC")).shape
      (2, 6, 6, 4)
    """
    kwargs = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                  dimension_numbers=dimension_numbers,
                  feature_group_count=feature_group_count,
                  batch_group_count=batch_group_count, precision=precision,
                  preferred_element_type=preferred_element_type)
    if isinstance(padding, str) and padding.upper() == "VALID":
        padding = ((0, 0),) * (lhs.ndim - 2)
    canonical = (
        lhs.ndim == 4 and rhs.ndim == 4
        and not isinstance(padding, str)
        and all(s == 1 for s in window_strides)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1 and batch_group_count == 1
        and precision is None and preferred_element_type is None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if not canonical:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    pad = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, pad)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, pad):
    return lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=_NHWC)


def _conv_fwd(x, w, pad):
    return _conv(x, w, pad), (x, w)


def _conv_bwd(pad, res, dy):
    x, w = res
    kh, kw = w.shape[:2]
    # Input gradient: dy padded by (k - 1 - lo, k - 1 - hi), flipped kernel.
    w_t = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))  # [kh, kw, out, in]
    dx_pad = ((kh - 1 - pad[0][0], kh - 1 - pad[0][1]),
              (kw - 1 - pad[1][0], kw - 1 - pad[1][1]))
    dx = lax.conv_general_dilated(dy, w_t, (1, 1), dx_pad, dimension_numbers=_NHWC)
    # Weight gradient: channels as batch, batch as the contracted feature.
    lhs = jnp.transpose(x, (3, 1, 2, 0))  # [in, H, W, B]
    rhs = jnp.transpose(dy, (1, 2, 0, 3))  # [Ho, Wo, B, out]
    dw = lax.conv_general_dilated(lhs, rhs, (1, 1), pad, dimension_numbers=_NHWC)
    return dx, jnp.transpose(dw, (1, 2, 0, 3))  # [in, kh, kw, out] -> HWIO


_conv.defvjp(_conv_fwd, _conv_bwd)
