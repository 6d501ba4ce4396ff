"""Replicated (possibly Byzantine) parameter servers: the pure building blocks.

Two protocols replicate the parameter server so that neither workers nor
servers are trusted:

* GuanYu: El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault (2019), "SGD:
  Decentralized Byzantine Resilience"; asynchronous, each
  node aggregates the first messages of a quorum.
* LiuBei: El Mhamdi, Guerraoui, Guirguis, Rouault (2019/2022), "Fast Machine
  Learning with Byzantine Workers and Servers" (arXiv:1911.07537); synchronous,
  workers pull one model at a time and check it with two filters.

This package holds what does not depend on a model or a training loop (message
delays and quorums, the coordinate-wise median of a quorum, LiuBei's filters,
and, in ``_garfield.py``, LiuBei's filters and pull schedule as the authors'
public code computes them);
the simulator's rounds are in :mod:`byzjax.sim._guanyu` and
:mod:`byzjax.sim._liubei`, and
``docs/SERVERS.md`` describes both protocols and every modelling choice.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from byzjax import servers
    >>> d = servers.sample_delays(jax.random.key(0), num_receivers=2,
    ...                           num_senders=4, num_byzantine_senders=1,
    ...                           distribution="zero")
    >>> servers.quorum_indices(d, 3).tolist()  # Byzantine sender 3 comes first
    [[3, 0, 1], [3, 0, 1]]
"""

from byzjax.servers._functions import (
    DELAY_DISTRIBUTIONS,
    gather_rows,
    lipschitz_coefficient,
    lipschitz_filter,
    models_filter,
    models_filter_threshold,
    quorum_indices,
    quorum_median,
    sample_delays,
    tree_norm,
)
from byzjax.servers._garfield import (
    GARFIELD_HISTORY,
    GARFIELD_KEEP,
    garfield_gathers,
    garfield_lipschitz_threshold,
    garfield_models_bound,
    garfield_pulled_models,
    garfield_record,
    garfield_window,
    upper_median,
)

__all__ = [
    "DELAY_DISTRIBUTIONS",
    "GARFIELD_HISTORY",
    "GARFIELD_KEEP",
    "garfield_gathers",
    "garfield_lipschitz_threshold",
    "garfield_models_bound",
    "garfield_pulled_models",
    "garfield_record",
    "garfield_window",
    "upper_median",
    "gather_rows",
    "lipschitz_coefficient",
    "lipschitz_filter",
    "models_filter",
    "models_filter_threshold",
    "quorum_indices",
    "quorum_median",
    "sample_delays",
    "tree_norm",
]
