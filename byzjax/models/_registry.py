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
from byzjax.models._byzfl import (
    RESNET_LAYOUTS,
    CnnCifar,
    CnnMnist,
    FcMnist,
    LogRegMnist,
    ResNet,
)
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
      output: what the model returns: ``"logits"``, ``"log_softmax"``
        (log-probabilities) or ``"sigmoid"`` (ByzFL's ``logreg_mnist``). The
        simulator's loss is the softmax cross-entropy of the output in every
        case (PyTorch's ``CrossEntropyLoss``), which is also PyTorch's
        ``NLLLoss`` of a ``"log_softmax"`` output.
    """

    name: str
    factory: Callable[..., nn.Module]
    batch_norm: bool
    dropout: bool
    input_shape: tuple[int, int, int]
    num_params: int
    source: str
    output: str = "logits"


def _cifar_cnn(num_classes: int, **kwargs) -> CifarCNN:
    # ByzantineMomentum's CIFAR-100 variant widens the dense layer to 256.
    kwargs.setdefault("hidden", 256 if num_classes == 100 else 128)
    return CifarCNN(num_classes=num_classes, **kwargs)


#: Parameter counts of ByzFL's ResNets on CIFAR-10 (PyTorch's, with BatchNorm
#: scale and bias, without running averages).
_RESNET_COUNTS = {"resnet18": 11_173_962, "resnet34": 21_282_122,
                  "resnet50": 23_520_842, "resnet101": 42_512_970,
                  "resnet152": 58_156_618}


def _resnet(name: str) -> Callable[..., nn.Module]:
    block, num_blocks = RESNET_LAYOUTS[name]
    return lambda num_classes, **kw: ResNet(block=block, num_blocks=num_blocks,
                                            num_classes=num_classes, **kw)


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
        ModelInfo("fc_mnist", lambda num_classes, **kw: FcMnist(
            num_classes=num_classes, **kw), False, False, (28, 28, 1), 79_510,
            "ByzFL 0.0.11 (fc_mnist)", "log_softmax"),
        ModelInfo("cnn_mnist", lambda num_classes, **kw: CnnMnist(
            num_classes=num_classes, **kw), False, False, (28, 28, 1), 431_080,
            "ByzFL 0.0.11 (cnn_mnist); ByzantineMomentum's simples-conv",
            "log_softmax"),
        ModelInfo("logreg_mnist", lambda num_classes, **kw: LogRegMnist(
            num_classes=num_classes, **kw), False, False, (28, 28, 1), 7_850,
            "ByzFL 0.0.11 (logreg_mnist)", "sigmoid"),
        ModelInfo("cnn_cifar", lambda num_classes, **kw: CnnCifar(
            num_classes=num_classes, **kw), False, False, (32, 32, 3), 2_324_630,
            "ByzFL 0.0.11 (cnn_cifar)"),
        *(ModelInfo(name, _resnet(name), True, False, (32, 32, 3), count,
                    f"ByzFL 0.0.11 (ResNet{name[6:]}); He et al. 2016")
          for name, count in _RESNET_COUNTS.items()),
    )
}

_ALIASES = {"wrn": "wide_resnet", "wrn_28_10": "wide_resnet", "cnn": "mnist_cnn",
            "empire_cnn": "cifar_cnn",
            "simples_conv": "cnn_mnist"}


def _canonical(name: str) -> str:
    key = normalize_name(name)
    key = _ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names())}")
    return key


def names() -> tuple[str, ...]:
    """Registered model names.

    Example:
      >>> names()  # doctest: +NORMALIZE_WHITESPACE
      ('cifar_cnn', 'cnn_cifar', 'cnn_mnist', 'fc_mnist', 'logreg_mnist', 'mlp',
       'mnist_cnn', 'resnet101', 'resnet152', 'resnet18', 'resnet34', 'resnet50',
       'wide_resnet')
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
