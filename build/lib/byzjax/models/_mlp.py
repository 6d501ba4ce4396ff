"""The MLP of El Mhamdi et al. 2021 (Fashion-MNIST / MNIST): 784-100-ReLU-10.

79,510 parameters."""

from __future__ import annotations

import flax.linen as nn
import numpy as np

from byzjax.models._layers import dense

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected: flatten, ``Dense(hidden)``, ReLU, ``Dense(num_classes)``.

    ByzantineMomentum's ``simples-full``: 784-100-10, 79,510
    parameters on 28x28x1 inputs. No BatchNorm, no dropout: ``train`` is
    accepted for a uniform interface and ignored. PyTorch default
    initialisation (:mod:`byzjax.models._layers`).

    Attributes:
      num_classes: output logits.
      hidden: hidden width (100).

    Shapes: ``x`` float ``[b, H, W, C]`` (or ``[b, d]``) -> logits ``[b, num_classes]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = MLP()
      >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
      >>> model.apply(variables, jnp.zeros((2, 28, 28, 1))).shape
      (2, 10)
    """

    num_classes: int = 10
    hidden: int = 100

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(dense(self.hidden, int(np.prod(x.shape[1:])))(x))
        return dense(self.num_classes, self.hidden)(x)
