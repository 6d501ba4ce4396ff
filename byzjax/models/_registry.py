"""The model registry: names, factories and what the simulator must know."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from byzjax._registry import normalize_name
from byzjax.data import info as data_info
from byzjax.models._cnn import CifarCNN, MnistCNN
from byzjax.models._mlp import MLP
from byzjax.models._wrn import WideResNet

__all__ = [
    "ModelInfo",
    "MODELS",
    "get",
    "names",
    "info",
    "has_batch_stats",
    "uses_dropout",
    "input_shape",
    "param_count",
    "count_params",
]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a registered model is and needs.

    Attributes:
      name: registry name.
      factory: ``(num_classes, **kwargs) -> nn.Module``.
      batch_norm: uses BatchNorm: ``init`` returns a ``batch_stats``
        collection; training calls need ``mutable=["batch_stats"]``.
      dropout: uses dropout: training calls need ``rngs={"dropout": key}``.
      input_shape: the ``(H, W, C)`` of the sources' dataset for it.
      num_params: the sources' parameter count on that input with 10 classes
        (as the papers state them; BatchNorm running averages not counted).
      source: where the architecture comes from.
    """

    name: str
    factory: Callable[..., nn.Module]
    batch_norm: bool
    dropout: bool
    input_shape: tuple[int, int, int]
    num_params: int
    source: str


def _cifar_cnn(num_classes: int, **kwargs) -> CifarCNN:
    # ByzantineMomentum's CIFAR-100 variant widens the dense layer to 256.
    kwargs.setdefault("hidden", 256 if num_classes == 100 else 128)
    return CifarCNN(num_classes=num_classes, **kwargs)


#: Every registered model.
MODELS: dict[str, ModelInfo] = {
    m.name: m for m in (
        ModelInfo("mlp", lambda num_classes, **kw: MLP(num_classes=num_classes, **kw),
                  False, False, (28, 28, 1), 79_510,
                  "El Mhamdi et al. 2021 (Fashion-MNIST MLP)"),
        ModelInfo("mnist_cnn",
                  lambda num_classes, **kw: MnistCNN(num_classes=num_classes, **kw),
                  False, False, (28, 28, 1), 176_050,
                  "Fabris 2023 (the MNIST CNN of the RESAM experiments)"),
        ModelInfo("cifar_cnn", _cifar_cnn, True, True, (32, 32, 3), 1_310_922,
                  "El Mhamdi et al. 2021; Fabris 2023 (Fall of Empires' CIFAR CNN)"),
        ModelInfo("wide_resnet",
                  lambda num_classes, **kw: WideResNet(num_classes=num_classes, **kw),
                  True, True, (32, 32, 3), 36_489_290,
                  "El Mhamdi et al. 2021 (WRN-28-10)"),
    )
}

_ALIASES = {"wrn": "wide_resnet", "wrn_28_10": "wide_resnet", "cnn": "mnist_cnn",
            "empire_cnn": "cifar_cnn"}


def _canonical(name: str) -> str:
    key = normalize_name(name)
    key = _ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names())}")
    return key


def names() -> tuple[str, ...]:
    """Registered model names.

    Example:
      >>> names()
      ('cifar_cnn', 'mlp', 'mnist_cnn', 'wide_resnet')
    """
    return tuple(sorted(MODELS))


def info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name`` (aliases: ``wrn``, ``empire_cnn``, ...)."""
    return MODELS[_canonical(name)]


def get(name: str, *, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """A fresh Flax module for ``name``.

    Every model maps float ``[b, H, W, C]`` to logits ``[b, num_classes]`` and
    takes ``train: bool`` (BatchNorm batch statistics and dropout on when True).

    Args:
      name: one of :func:`names`.
      num_classes: output logits.
      **kwargs: module attributes (``hidden``, ``dropout_rate``, ``depth``, ...).

    Example:
      >>> get("mlp", num_classes=10)
      MLP(
          # attributes
          num_classes = 10
          hidden = 100
      )
    """
    return info(name).factory(int(num_classes), **kwargs)


def has_batch_stats(name: str) -> bool:
    """True if ``name`` uses BatchNorm (a ``batch_stats`` collection).

    Example:
      >>> has_batch_stats("cifar_cnn"), has_batch_stats("mlp")
      (True, False)
    """
    return info(name).batch_norm


def uses_dropout(name: str) -> bool:
    """True if ``name`` uses dropout (needs a ``"dropout"`` RNG when training)."""
    return info(name).dropout


def input_shape(dataset_name: str) -> tuple[int, int, int]:
    """The ``(H, W, C)`` of one image of a dataset (``byzjax.data.info``).

    Example:
      >>> input_shape("mnist"), input_shape("cifar100")
      ((28, 28, 1), (32, 32, 3))
    """
    return data_info(dataset_name).image_shape


def param_count(variables) -> int:
    """Number of trainable parameters: sizes of the ``params`` collection only.

    Accepts the output of ``model.init`` (or of ``jax.eval_shape`` on it), or a
    bare ``params`` tree. BatchNorm running averages (``batch_stats``) are not
    parameters.
    """
    if isinstance(variables, dict) and "params" in variables:
        variables = variables["params"]
    return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables)))


def count_params(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Parameter count of ``model`` on per-example input ``shape``, via ``eval_shape``.

    Nothing is allocated or computed, so this is cheap even for WRN-28-10.

    Example:
      >>> count_params(get("mlp"), (28, 28, 1))
      79510
    """
    variables = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                           jnp.zeros((1, *shape)), train=False))
    return param_count(variables)
