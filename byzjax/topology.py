"""Who hears whom in peer-to-peer learning: graphs over nodes, receiver views.

Nodes ``0 .. n-1``; by the simulator's convention the honest nodes are
``0 .. h-1`` and the Byzantine ones ``h .. n-1`` (``docs/PEER_TO_PEER.md``).
Honest node ``i`` aggregates its own vector and those of its neighbours.

A fixed graph (:func:`graph`) is a symmetric boolean adjacency ``[n, n]``
without self-loops, built once on the host (NumPy, seeded); its honest rows
are the padded adjacency :func:`padded_adjacency` (``int32[h, max_deg]`` node
ids and a mask). Aggregators need a fixed number of inputs, so a padded slot
never reaches one: :func:`receiver_groups` groups the honest receivers by
how many honest and Byzantine vectors they hear (static, from the fixed
graph) and the simulator runs each group as one ``vmap`` over its receivers.
A receiver's view is ordered ``[itself, honest neighbours, Byzantine
neighbours]``, so its own vector is row 0 (MoNNA's pivot) and the Byzantine
rows come last, as in a parameter server's stack.

``random_subset`` is the rule of Farhadkhani et al.'s code
(``peerToPeer.py``): at every exchange each honest node hears itself,
``n - 2b - 1`` other honest nodes drawn uniformly without replacement
(``b`` the real number of Byzantine nodes) and all ``b`` Byzantine nodes:
``n - b`` vectors. It is drawn on the device (:func:`random_subset_views`).

References:
  Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, "Robust Collaborative
  Learning with Linear Gradient Overhead", ICML 2023,
  https://arxiv.org/abs/2209.10931.
  Koloskova, Loizou, Boreiri, Jaggi, Stich, "A Unified Theory of
  Decentralized SGD with Changing Topology and Local Updates", ICML 2020,
  https://arxiv.org/abs/2003.10422 (ring, torus, consensus distance).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TOPOLOGIES", "FIXED_TOPOLOGIES", "graph", "padded_adjacency",
           "ReceiverGroup", "receiver_groups", "random_subset_views",
           "random_subset_others", "topology_groups"]

#: Every topology name; ``random_subset`` is drawn again at every exchange.
TOPOLOGIES = ("complete", "random_subset", "ring", "torus", "regular",
              "erdos_renyi")
#: The topologies that are one fixed graph.
FIXED_TOPOLOGIES = ("complete", "ring", "torus", "regular", "erdos_renyi")


def _torus_shape(n: int) -> tuple[int, int]:
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def _random_regular(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    # The pairing model with rejection (uniform over d-regular graphs); for
    # dense graphs the complement of a sparse one.
    if d > (n - 1) // 2:
        comp = _random_regular(n, n - 1 - d, rng)
        return ~comp & ~np.eye(n, dtype=bool)
    for _ in range(10_000):
        stubs = rng.permutation(np.repeat(np.arange(n), d)).reshape(-1, 2)
        a, b = stubs[:, 0], stubs[:, 1]
        if np.any(a == b):
            continue
        adj = np.zeros((n, n), bool)
        if np.any(adj[a, b]):
            continue
        keys = np.minimum(a, b) * n + np.maximum(a, b)
        if len(np.unique(keys)) != len(keys):
            continue
        adj[a, b] = adj[b, a] = True
        return adj
    raise ValueError(f"topology regular: no {d}-regular graph on {n} nodes found "
                     "by the pairing model; choose another topology_degree")


def graph(name: str, *, num_nodes: int, degree: int = 0,
          probability: float = 0.5, seed: int = 0) -> np.ndarray:
    """The adjacency of a fixed topology: ``bool[n, n]``, symmetric, no self-loops.

    * ``complete``: everyone hears everyone.
    * ``ring``: node ``i`` hears ``i +- 1, ..., i +- degree/2`` (mod ``n``);
      ``degree`` even, default 2.
    * ``torus``: a ``r x c`` grid with wrap-around (``r * c = n``, ``r`` the
      largest divisor of ``n`` up to ``sqrt(n)``, both at least 3): the 4
      nodes up, down, left and right.
    * ``regular``: a uniformly random ``degree``-regular graph (seeded).
    * ``erdos_renyi``: each pair an edge with ``probability`` (seeded).

    Args:
      name: one of :data:`FIXED_TOPOLOGIES`.
      num_nodes: static ``n``.
      degree: the ring's or regular graph's degree (0: the ring's 2).
      probability: the Erdos-Renyi edge probability.
      seed: the random graphs' seed (``numpy.random.default_rng``).

    Raises:
      ValueError: one line, naming the topology and what to change.

    Example:
      >>> graph("ring", num_nodes=5).sum(1).tolist()
      [2, 2, 2, 2, 2]
      >>> bool(graph("regular", num_nodes=8, degree=3, seed=1).sum(1).max() == 3)
      True
    """
    n = int(num_nodes)
    if name not in FIXED_TOPOLOGIES:
        raise ValueError(f"unknown fixed topology {name!r}; choose one of "
                         f"{', '.join(FIXED_TOPOLOGIES)}")
    idx = np.arange(n)
    if name == "complete":
        return ~np.eye(n, dtype=bool)
    if name == "ring":
        k = degree or 2
        if k % 2 or not 2 <= k <= n - 1:
            raise ValueError(f"topology ring: degree must be even and in [2, n-1] "
                             f"= [2, {n - 1}], got topology_degree={degree}")
        adj = np.zeros((n, n), bool)
        for s in range(1, k // 2 + 1):
            adj[idx, (idx + s) % n] = adj[idx, (idx - s) % n] = True
        return adj
    if name == "torus":
        r, c = _torus_shape(n)
        if r < 3:
            raise ValueError(f"topology torus: num_workers={n} is not r * c with "
                             "r, c >= 3 (e.g. 9, 12, 16, 20, 25)")
        a, b = idx // c, idx % c
        adj = np.zeros((n, n), bool)
        for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            adj[idx, ((a + da) % r) * c + (b + db) % c] = True
        return adj
    rng = np.random.default_rng(seed)
    if name == "regular":
        if not 1 <= degree <= n - 1 or (n * degree) % 2:
            raise ValueError(f"topology regular: topology_degree must be in [1, "
                             f"{n - 1}] with n * degree even, got {degree}")
        return _random_regular(n, degree, rng)
    upper = np.triu(rng.random((n, n)) < probability, 1)
    return upper | upper.T


def padded_adjacency(adjacency: np.ndarray, num_honest: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The honest nodes' neighbour lists: ``(int32[h, max_deg], bool[h, max_deg])``.

    Row ``i`` holds node ``i``'s neighbours in increasing id order, then
    padding (id 0, mask False).

    Example:
      >>> nb, mask = padded_adjacency(graph("ring", num_nodes=4), 2)
      >>> nb.tolist(), bool(mask.all())
      ([[1, 3], [0, 2]], True)
    """
    rows = [np.flatnonzero(adjacency[i]) for i in range(num_honest)]
    width = max([len(r) for r in rows] + [0])
    nb = np.zeros((num_honest, width), np.int32)
    mask = np.zeros((num_honest, width), bool)
    for i, r in enumerate(rows):
        nb[i, :len(r)], mask[i, :len(r)] = r, True
    return nb, mask


class ReceiverGroup(NamedTuple):
    """Honest receivers hearing the same numbers of honest and Byzantine nodes.

    Attributes:
      receivers: ``int32[g]`` honest node ids.
      honest: ``int32[g, 1 + k_h]``: each receiver's own id, then its ``k_h``
        honest neighbours (ids ``< h``).
      byzantine: ``int32[g, k_b]``: its Byzantine neighbours as indices
        ``0 .. b-1`` into the Byzantine nodes (node id ``h + j``).
    """

    receivers: np.ndarray
    honest: np.ndarray
    byzantine: np.ndarray

    @property
    def num_inputs(self) -> int:
        """Vectors each receiver aggregates (itself included)."""
        return int(self.honest.shape[1] + self.byzantine.shape[1])


def receiver_groups(neighbours: np.ndarray, mask: np.ndarray, num_honest: int
                    ) -> tuple[ReceiverGroup, ...]:
    """The padded adjacency as groups of equal composition (static shapes).

    Args:
      neighbours, mask: :func:`padded_adjacency`'s output.
      num_honest: ``h``; ids ``>= h`` are Byzantine.

    Returns:
      Groups in increasing ``(k_h, k_b)`` order; every honest node is in one.

    Example:
      >>> nb, mask = padded_adjacency(graph("ring", num_nodes=5), 4)
      >>> [(g.receivers.tolist(), g.byzantine.tolist())
      ...  for g in receiver_groups(nb, mask, 4)]
      [([0, 3], [[0], [0]]), ([1, 2], [[], []])]
    """
    by_kind: dict[tuple[int, int], list] = {}
    for i in range(num_honest):
        ids = neighbours[i][mask[i]]
        hon = [i] + sorted(int(j) for j in ids if j < num_honest)
        byz = sorted(int(j) - num_honest for j in ids if j >= num_honest)
        by_kind.setdefault((len(hon), len(byz)), []).append((i, hon, byz))
    groups = []
    for key in sorted(by_kind):
        rows = by_kind[key]
        groups.append(ReceiverGroup(
            np.array([r[0] for r in rows], np.int32),
            np.array([r[1] for r in rows], np.int32).reshape(len(rows), key[0]),
            np.array([r[2] for r in rows], np.int32).reshape(len(rows), key[1])))
    return tuple(groups)


def random_subset_others(num_nodes: int, num_byzantine_nodes: int) -> int:
    """Other honest nodes each node hears under ``random_subset``: ``n - 2b - 1``.

    Example:
      >>> random_subset_others(26, 5)
      15
    """
    return int(num_nodes) - 2 * int(num_byzantine_nodes) - 1


def random_subset_views(key: jax.Array, *, num_honest: int, num_others: int
                        ) -> jax.Array:
    """One draw of the ``random_subset`` rule: ``int32[h, 1 + num_others]``.

    Row ``i`` is ``i`` then ``num_others`` distinct honest ids other than
    ``i``, uniformly without replacement (one key per receiver, split from
    ``key``), as ``random.sample`` in ``peerToPeer.py``.

    Example:
      >>> import jax
      >>> v = random_subset_views(jax.random.key(0), num_honest=5, num_others=2)
      >>> v.shape, v[:, 0].tolist()
      ((5, 3), [0, 1, 2, 3, 4])
    """
    h = int(num_honest)

    def one(k, i):
        others = jax.random.permutation(k, h - 1)[:num_others]
        others = others + (others >= i)  # skip the receiver's own id
        return jnp.concatenate([i[None], others]).astype(jnp.int32)

    keys = jax.random.split(key, h)
    return jax.vmap(one)(keys, jnp.arange(h, dtype=jnp.int32))


def topology_groups(name: str, *, num_nodes: int, num_byzantine_nodes: int,
                    degree: int = 0, probability: float = 0.5, seed: int = 0
                    ) -> tuple[ReceiverGroup, ...]:
    """The receiver groups of a topology (``random_subset``: one group whose
    honest ids are placeholders, drawn again at every exchange).

    Raises:
      ValueError: as :func:`graph`, or ``random_subset`` with ``n - 2b - 1 < 0``.

    Example:
      >>> [g.num_inputs for g in topology_groups("random_subset", num_nodes=26,
      ...                                        num_byzantine_nodes=5)]
      [21]
    """
    n, b = int(num_nodes), int(num_byzantine_nodes)
    h = n - b
    if name == "random_subset":
        others = random_subset_others(n, b)
        if others < 0:
            raise ValueError(f"topology random_subset: each node hears n - 2b - 1 "
                             f"= {others} other honest nodes; need num_workers >= "
                             f"2 * num_attackers + 1 = {2 * b + 1}")
        base = np.arange(h, dtype=np.int32)[:, None]
        return (ReceiverGroup(np.arange(h, dtype=np.int32),
                              np.tile(base, (1, 1 + others)),
                              np.tile(np.arange(b, dtype=np.int32), (h, 1))),)
    adj = graph(name, num_nodes=n, degree=degree, probability=probability,
                seed=seed)
    return receiver_groups(*padded_adjacency(adj, h), h)
