"""Fabris (2023) Table 4.1, Little column, with the trimmed mean as the thesis
prints it (its Alg. 12): ``1/(n - 2f) sum_{q in [f, n - f]} m_(q)`` over the
sorted values, a closed range of ``n - 2f + 1`` positions divided by
``n - 2f``. Counted from 1 (``cwtm_thesis_one``: positions ``f .. n - f``,
one more value from the low end) or from 0 (``cwtm_thesis_zero``: one more
from the high end). byzjax's ``trimmed_mean`` averages the ``n - 2f`` middle
values; these two rules exist only to test whether the printed form explains
the table's Little cells (``docs/REPRODUCTION.md``). They are registered here,
as a user registers a rule of their own (``docs/ARCHITECTURE.md``).

``byzjax sweep experiments/isolate_cwtm_as_printed.py`` (the MLP; add
``--set base.model=mnist_cnn`` for the thesis's CNN).
"""

import jax
import jax.numpy as jnp

from byzjax.aggregators import AGGREGATORS
from byzjax.sim import import_file

_table_4_1 = import_file("table_4_1.py", relative_to=__file__)


def _as_printed(first: int):
    """The printed trimmed mean, its closed range starting at sorted
    position ``f - first`` (0-indexed)."""

    def rule(updates, *, num_byzantine):
        def leaf(x):
            n, f = x.shape[0], num_byzantine
            start = f - first
            kept = jnp.sort(x, axis=0)[start:start + n - 2 * f + 1]
            return kept.sum(0) / (n - 2 * f)

        return jax.tree_util.tree_map(leaf, updates)

    return rule


for _name, _first in (("cwtm_thesis_one", 1), ("cwtm_thesis_zero", 0)):
    if _name not in AGGREGATORS.names():
        AGGREGATORS.register(_name, display_name=f"trimmed mean as printed, "
                             f"counted from {_first}", short_name=_name.upper(),
                             order=90 + _first)(_as_printed(_first))


def get_sweep():
    s = _table_4_1.get_sweep()
    s.name = "t41_cwtm_thesis"
    s.grid.attack = ["alie"]
    s.grid.aggregator = ["cwtm_thesis_one", "cwtm_thesis_zero"]
    return s
