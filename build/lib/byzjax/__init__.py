"""byzjax: Byzantine-resilient distributed learning in JAX.

Subpackages:
  aggregators: robust aggregation rules over a leading worker axis.
  attacks: Byzantine attacks (honest rows in, Byzantine rows out).
  optim: optax GradientTransformations (RESAM, DRA, MRA, D-SGD, stages).
  data, models, sim: the simulator (datasets, Flax models, compiled rounds).
"""

from byzjax import aggregators, attacks, optim

__version__ = "0.1.0"
__all__ = ["aggregators", "attacks", "optim", "__version__"]
