"""Robust aggregation rules over a leading worker axis.

Every aggregator has the signature ``rule(updates, *, num_byzantine, **hparams)``
where ``updates`` is a pytree with leaves ``[n, *param_shape]``; it returns a
pytree with leaves ``[*param_shape]``. ``n`` and ``num_byzantine`` are static
Python ints; float hyper-parameters may be traced (vmappable).

Pre-aggregators (``nnm``, ``bucketing``, ``static_clipping``, ``arc``, and
``chain``: several in order, as ByzFL composes them) keep a leading worker
axis. Random rules (the aggregator ``dnc``, the pre-aggregator ``bucketing``)
also take a PRNG ``key=`` (registry ``entry.needs_key``).

Look rules up by name::

    >>> from byzjax import aggregators
    >>> agg = aggregators.get("mean")
"""

from byzjax._types import Aggregator, PreAggregator
from byzjax.aggregators import (
    _bulyan,
    _centered_clipping,
    _chain,
    _coordinate,
    _filtering,
    _fltrust,
    _geomed,
    _krum,
    _mda,
    _nnm,
    _preagg,
    _selection,
    _spectral,
)
from byzjax.aggregators._base import AGGREGATORS, PREAGGREGATORS
from byzjax.aggregators._bulyan import bulyan as bulyan
from byzjax.aggregators._bulyan import bulyan_selection as bulyan_selection
from byzjax.aggregators._centered_clipping import centered_clipping as centered_clipping
from byzjax.aggregators._chain import chain_steps as chain_steps
from byzjax.aggregators._chain import pre_aggregation_chain as pre_aggregation_chain
from byzjax.aggregators._coordinate import coordinate_median as coordinate_median
from byzjax.aggregators._coordinate import meamed as meamed
from byzjax.aggregators._coordinate import mean_around_median as mean_around_median
from byzjax.aggregators._coordinate import phocas as phocas
from byzjax.aggregators._coordinate import trimmed_mean as trimmed_mean
from byzjax.aggregators._filtering import clipped_clustering as clipped_clustering
from byzjax.aggregators._filtering import dnc as dnc
from byzjax.aggregators._filtering import dnc_coordinates as dnc_coordinates
from byzjax.aggregators._filtering import signguard as signguard
from byzjax.aggregators._fltrust import fltrust as fltrust
from byzjax.aggregators._fltrust import fltrust_scores as fltrust_scores
from byzjax.aggregators._geomed import geometric_median as geometric_median
from byzjax.aggregators._krum import krum as krum
from byzjax.aggregators._krum import krum_scores as krum_scores
from byzjax.aggregators._krum import multi_krum as multi_krum
from byzjax.aggregators._mda import (
    minimum_diameter_averaging as minimum_diameter_averaging,
)
from byzjax.aggregators._mda import minimum_diameter_subset as minimum_diameter_subset
from byzjax.aggregators._mean import mean
from byzjax.aggregators._nnm import monna as monna
from byzjax.aggregators._nnm import monna_weights as monna_weights
from byzjax.aggregators._nnm import (
    monna_weights_from_distances as monna_weights_from_distances,
)
from byzjax.aggregators._nnm import nearest_neighbour_mixing as nearest_neighbour_mixing
from byzjax.aggregators._nnm import (
    nearest_neighbour_weights as nearest_neighbour_weights,
)
from byzjax.aggregators._preagg import (
    adaptive_robust_clipping as adaptive_robust_clipping,
)
from byzjax.aggregators._preagg import arc_num_clipped as arc_num_clipped
from byzjax.aggregators._preagg import bucketing as bucketing
from byzjax.aggregators._preagg import static_clipping as static_clipping
from byzjax.aggregators._selection import DISTANCE_WEIGHTS as DISTANCE_WEIGHTS
from byzjax.aggregators._selection import SELECTION_RULES as SELECTION_RULES
from byzjax.aggregators._selection import distance_weights as distance_weights
from byzjax.aggregators._selection import has_selection as has_selection
from byzjax.aggregators._selection import selection_weights as selection_weights
from byzjax.aggregators._spectral import SMEA_MAX_SUBSETS as SMEA_MAX_SUBSETS
from byzjax.aggregators._spectral import SMEA_MAX_WORK as SMEA_MAX_WORK
from byzjax.aggregators._spectral import (
    covariance_bound_agnostic_filter as covariance_bound_agnostic_filter,
)
from byzjax.aggregators._spectral import (
    smallest_maximum_eigenvalue_averaging as smallest_maximum_eigenvalue_averaging,
)

__all__ = [
    "AGGREGATORS",
    "PREAGGREGATORS",
    "Aggregator",
    "PreAggregator",
    "get",
    "names",
    "check",
    "entry",
    "get_preaggregator",
    "preaggregator_names",
    "mean",
]
for _module in (_bulyan, _centered_clipping, _chain, _coordinate, _filtering, _fltrust,
                _geomed, _krum, _mda, _nnm, _preagg, _selection, _spectral):
    __all__ += list(_module.__all__)
del _module


def get(name: str):
    """Returns the aggregator registered as ``name`` (e.g. ``"trimmed_mean"``)."""
    return AGGREGATORS.get(name)


def entry(name: str):
    """Returns the registry entry (function and requirements) of ``name``."""
    if name in AGGREGATORS:
        return AGGREGATORS.entry(name)
    return PREAGGREGATORS.entry(name)


def names() -> tuple[str, ...]:
    """Canonical names of all registered aggregators."""
    return AGGREGATORS.names()


def check(name: str, *, num_workers: int, num_byzantine: int):
    """Raises ``ValueError`` unless aggregator ``name`` accepts ``(n, f)``."""
    return AGGREGATORS.check(name, num_workers=num_workers, num_byzantine=num_byzantine)


def get_preaggregator(name: str):
    """Returns the pre-aggregator registered as ``name`` (e.g. ``"nnm"``)."""
    return PREAGGREGATORS.get(name)


def preaggregator_names() -> tuple[str, ...]:
    """Canonical names of all registered pre-aggregators."""
    return PREAGGREGATORS.names()
