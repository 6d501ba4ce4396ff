"""Fabris (2023) Table 4.1, Little column, with the standard deviation of the
thesis's Little taken over a different axis.

The thesis's Little (its Alg. 17) shifts each Byzantine worker's own vector by
the coordinate-wise standard deviation of the Byzantine workers' vectors
(byzjax's ``a_little_is_enough_own``). Two readings of "the standard deviation
of B_t" that an implementation can take by mistake are tested here:

* ``little_own_scalar``: one standard deviation over every entry of the
  Byzantine workers' stack (``torch.std`` without ``dim``), the same scalar
  subtracted from every coordinate. In the default per-leaf layout that is one
  scalar per parameter tensor; with ``--set base.robust_layout=flat`` one
  scalar for the whole model.
* ``little_own_all``: the coordinate-wise standard deviation over all ``n``
  workers' vectors (honest and Byzantine), not only the Byzantine ones.

They are registered here, as a user registers an attack of their own
(``docs/ARCHITECTURE.md``), only to test whether either reading explains the
table's Little cells (``docs/REPRODUCTION.md``).

``byzjax sweep experiments/isolate_little_std_axis.py`` (the MLP; add
``--set base.model=mnist_cnn`` for the thesis's CNN).
"""

import jax
import jax.numpy as jnp

from byzjax.attacks import ATTACKS
from byzjax.sim import import_file

_table_4_1 = import_file("table_4_1.py", relative_to=__file__)


def _little_own_scalar(honest, *, num_byzantine, byzantine_own=None, eps=1.0,
                       key=None):
    """Each Byzantine row minus ``eps`` times the standard deviation (ddof 1)
    of all entries of the Byzantine rows, one scalar per leaf."""
    del honest, key
    return jax.tree_util.tree_map(
        lambda x: x - eps * jnp.std(x, ddof=1), byzantine_own)


def _little_own_all(honest, *, num_byzantine, byzantine_own=None, eps=1.0,
                    key=None):
    """Each Byzantine row minus ``eps`` times the coordinate-wise standard
    deviation (ddof 1) over all ``n`` rows, honest and Byzantine."""
    del key, num_byzantine

    def leaf(h, b):
        return b - eps * jnp.std(jnp.concatenate([h, b]), axis=0, ddof=1)[None]

    return jax.tree_util.tree_map(leaf, honest, byzantine_own)


for _name, _fn, _order in (("little_own_scalar", _little_own_scalar, 91),
                           ("little_own_all", _little_own_all, 92)):
    if _name not in ATTACKS.names():
        ATTACKS.register(_name, needs_own=True, strength="eps",
                         display_name=_name.replace("_", " "),
                         short_name=_name, order=_order)(_fn)


def get_sweep():
    s = _table_4_1.get_sweep()
    s.name = "t41_little_std_axis"
    s.grid.attack = ["alie_own", "little_own_scalar", "little_own_all"]
    s.grid.aggregator = ["trimmed_mean"]
    s.grid.optimizer = ["resam", "dra", "mra"]
    return s
