"""Flax models of the sources' experiments, by name.

Every model maps float images ``[b, H, W, C]`` to logits ``[b, num_classes]``
and is called as ``model.init(key, x)`` / ``model.apply(variables, x,
train=..., rngs=..., mutable=...)``; the simulator vmaps over workers outside.

>>> from byzjax import models
>>> model = models.get("mnist_cnn", num_classes=10)
>>> models.count_params(model, models.input_shape("mnist"))
176050
>>> models.has_batch_stats("cifar_cnn"), models.uses_dropout("cifar_cnn")
(True, True)

| name | architecture (R ReLU, P MaxPool2, D Dropout) | parameters |
|---|---|---|
| ``mlp`` | 784-100-R-10 | 79,510 |
| ``mnist_cnn`` | C20(5x5)-R-P-C20(5x5)-R-P-L500-R-L10 | 176,050 |
| ``cifar_cnn`` | 2x(C64-R-BN)-P-D-2x(C128-R-BN)-P-D-L128-R-D-L10 | 1,310,922 |
| ``wide_resnet`` | WRN-28-10 | 36,489,290 |
| ``fc_mnist`` | ByzFL: 784-100-R-10, log-softmax | 79,510 |
| ``cnn_mnist`` | ByzFL: C20(5x5)-R-P-C50(5x5)-R-P-L500-R-L10, log-softmax | 431,080 |
| ``logreg_mnist`` | ByzFL: sigmoid(L10) | 7,850 |
| ``cnn_cifar`` | ByzFL: 3x(C(5x5, pad 2)-R-P)-L512-R-L256-R-L10 | 2,324,630 |
| ``resnet18`` ... ``resnet152`` | ByzFL's CIFAR ResNets | 11,173,962 (18) |

BatchNorm and dropout under per-worker vectorisation (documented in
:mod:`byzjax.models._cnn`): each worker normalises with its own batch statistics
in training; running averages are server state, updated from the mean over
workers; each worker has its own dropout key, split from the round key.
"""

from byzjax.models import _registry
from byzjax.models._byzfl import CnnCifar, CnnMnist, FcMnist, LogRegMnist, ResNet
from byzjax.models._cnn import CifarCNN, MnistCNN
from byzjax.models._mlp import MLP
from byzjax.models._registry import MODELS as MODELS
from byzjax.models._registry import ModelInfo as ModelInfo
from byzjax.models._registry import count_params as count_params
from byzjax.models._registry import get as get
from byzjax.models._registry import has_batch_stats as has_batch_stats
from byzjax.models._registry import info as info
from byzjax.models._registry import input_shape as input_shape
from byzjax.models._registry import names as names
from byzjax.models._registry import param_count as param_count
from byzjax.models._registry import uses_dropout as uses_dropout
from byzjax.models._wrn import WideResNet

__all__ = list(_registry.__all__) + ["MLP", "MnistCNN", "CifarCNN", "WideResNet",
                                     "FcMnist", "CnnMnist", "LogRegMnist",
                                     "CnnCifar", "ResNet"]
