"""Peer-to-peer learning (config ``topology``) against NumPy loops and the server.

Properties:

* complete graph, every node hears everyone, no attack: every node's model
  is the parameter-server run's (all nodes start equal and aggregate the
  same vectors; the rules commute with ``theta - lr *``), to 1e-5;
* one round (gradients at each node's own model, momentum, local step,
  exchange, per-node aggregation) equals a NumPy loop over nodes, for a ring
  and for the random-subset rule of Farhadkhani et al.'s code (its draw
  replayed from the same key);
* ``attack_per_receiver``: each receiver's Byzantine vector is crafted from
  what that receiver hears, and reaches only it;
* relabelling the honest nodes by an automorphism of the graph (their
  models, shards and neighbours together) permutes the result;
* bad topologies fail in one line before any data loads.

Programs are compiled once per module (tiny MLP, n <= 6, one round each).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import sim, topology
from byzjax.sim._fields import TOPOLOGY_CHOICES
from byzjax.sim._kit import sample_batch_indices
from tests.helpers import (
    CLASSES,
    TinyMLP,
    cross_entropy_grad,
    flat_params,
    make_data,
    tiny_config,
    traced_hparams,
    unflattener,
)

N = 6


@pytest.fixture(scope="module")
def data():
    return make_data(N)


@pytest.fixture(scope="module")
def grad():
    return cross_entropy_grad(TinyMLP())


def _config(**kw):
    base = dict(num_workers=N, num_byzantine=1, num_attackers=1,
                attack="sign_flip", beta=0.5)
    return tiny_config(**{**base, **kw})


def _node(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _spread_state(state, seed=0):
    """The initial state with every node's model moved apart (nodes differ)."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(
        lambda x: x + jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype),
        state.params)
    return state._replace(params=params)


# ------------------------------------------------------------ NumPy reference
def _local_vectors(config, data, state, grad):
    """Each honest node's vector after its local step, ``[h, d]`` (float64)."""
    hp = sim.hparams_of(config)
    n, b = config.num_workers, config.num_attackers
    unflat = unflattener(_node(state.params, 0))
    _, k_batch, _ = jax.random.split(state.key, 3)
    idx = np.asarray(sample_batch_indices(k_batch, data.worker_indices,
                                          data.worker_counts, config.batch_size))
    images, labels = np.asarray(data.train_images), np.asarray(data.train_labels)
    out = []
    for i in range(n - b):
        theta = flat_params(_node(state.params, i)).astype(np.float64)
        x = (images[idx[i]].astype(np.float32) / 255
             - np.asarray(data.mean)) / np.asarray(data.std)
        g = flat_params(grad(unflat(theta.astype(np.float32)), jnp.asarray(x),
                             jnp.asarray(labels[idx[i]])))
        g = g + hp["weight_decay"] * theta
        g = g * min(1.0, hp["clip_norm"] / np.linalg.norm(g))
        m = (1 - hp["beta"]) * g  # RESAM from m_0 = 0 (EMA form)
        out.append(theta - hp["learning_rate"] * m)
    return np.stack(out), k_batch


def _trimmed_mean(rows, f):
    return np.sort(rows, axis=0)[f:len(rows) - f].mean(0)


def _mean(rows, f):
    return rows.mean(0)


def _monna(rows, f):  # around row 0, ties by index
    d = np.sum((rows - rows[0]) ** 2, axis=1)
    return rows[np.argsort(d, kind="stable")[:len(rows) - f]].mean(0)


def _reference(vectors, views, f, rule, per_receiver=False):
    """Each receiver's aggregate; Byzantine rows sign flip (all, or its view)."""
    out = []
    for i, (hon, nbyz) in enumerate(views):
        rows = vectors[list(hon)]
        flip = -(rows if per_receiver else vectors).mean(0)
        out.append(rule(np.concatenate([rows, np.tile(flip, (nbyz, 1))]), f))
    return np.stack(out)


def _ring_views(h, n):
    adj = topology.graph("ring", num_nodes=n)
    return [([i] + [j for j in np.flatnonzero(adj[i]) if j < h],
             int(np.sum(np.flatnonzero(adj[i]) >= h))) for i in range(h)]


@pytest.mark.parametrize("topo, rule", [("ring", "trimmed_mean"),
                                        ("random_subset", "monna")])
def test_one_round_matches_numpy_loop(topo, rule, data, grad):
    config = _config(topology=topo, aggregator=rule)
    program = sim.make_program(config, data, TinyMLP())
    hp = traced_hparams(config)
    state = _spread_state(program.init(jax.random.key(1), hp))
    new = jax.jit(program.round_step)(state, hp)[0]
    got = np.stack([flat_params(_node(new.params, i)) for i in range(N - 1)])
    vectors, k_batch = _local_vectors(config, data, state, grad)
    h = N - 1
    if topo == "ring":
        views = _ring_views(h, N)
    else:  # the draw the round makes (its first exchange)
        ids = topology.random_subset_views(
            jax.random.fold_in(jax.random.fold_in(k_batch, N + 1), 0),
            num_honest=h, num_others=topology.random_subset_others(N, 1))
        views = [(list(np.asarray(r)), 1) for r in ids]
        assert all(len(set(v)) == len(v) == N - 2 for v, _ in views)
    want = _reference(vectors, views, 1, {"trimmed_mean": _trimmed_mean,
                                          "monna": _monna}[rule])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gossip_steps_repeat_the_exchange(data, grad):
    config = _config(topology="ring", gossip_steps=2)
    program = sim.make_program(config, data, TinyMLP())
    hp = traced_hparams(config)
    state = _spread_state(program.init(jax.random.key(3), hp), seed=3)
    new = jax.jit(program.round_step)(state, hp)[0]
    got = np.stack([flat_params(_node(new.params, i)) for i in range(N - 1)])
    vectors, _ = _local_vectors(config, data, state, grad)
    views = _ring_views(N - 1, N)
    once = _reference(vectors, views, 1, _trimmed_mean)
    np.testing.assert_allclose(got, _reference(once, views, 1, _trimmed_mean),
                               rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def same_example(data):
    """Every node's shard is training example 0: a node's gradient depends on
    its model only, whatever its batch key (for the relabelling test)."""
    return data._replace(worker_indices=jnp.zeros((N, 1), jnp.int32),
                         worker_counts=jnp.ones((N,), jnp.int32))


@pytest.fixture(scope="module")
def per_receiver_round(same_example):
    config = _config(topology="ring", attack_per_receiver=True,
                     aggregator="mean")
    program = sim.make_program(config, same_example, TinyMLP())
    hp = traced_hparams(config)
    return config, program.init(jax.random.key(2), hp), jax.jit(program.round_step)


def test_per_receiver_byzantine_vectors_reach_only_their_receiver(
        per_receiver_round, same_example, grad):
    config, state, step = per_receiver_round
    state = _spread_state(state, seed=1)
    new = step(state, traced_hparams(config))[0]
    got = np.stack([flat_params(_node(new.params, i)) for i in range(N - 1)])
    vectors, _ = _local_vectors(config, same_example, state, grad)
    views = _ring_views(N - 1, N)
    want = _reference(vectors, views, 1, _mean, per_receiver=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the shared vector (crafted from every honest node) gives another answer
    shared = _reference(vectors, views, 1, _mean)
    assert np.abs(shared - want).max() > 1e-3


def test_relabelling_nodes_by_a_graph_automorphism_permutes_the_result(
        per_receiver_round):
    config, state, step = per_receiver_round
    state = _spread_state(state, seed=2)
    h = N - 1
    perm = np.array([h - 1 - i for i in range(h)])  # the ring's reflection
    moved = state._replace(params=jax.tree_util.tree_map(
        lambda x: x[np.argsort(perm)], state.params))  # node perm[i] holds i's
    hp = traced_hparams(config)
    a, b = step(state, hp)[0].params, step(moved, hp)[0].params
    for i in range(h):
        np.testing.assert_allclose(flat_params(_node(b, perm[i])),
                                   flat_params(_node(a, i)), rtol=1e-5,
                                   atol=1e-6)


def test_complete_graph_without_attack_is_the_parameter_server(data):
    config = _config(num_attackers=0, attack="none")
    hp = traced_hparams(config)
    server = sim.make_program(config, data, TinyMLP())
    peers = sim.make_program(_config(num_attackers=0, attack="none",
                                     topology="complete"), data, TinyMLP())
    s, p = server.init(jax.random.key(0), hp), peers.init(jax.random.key(0), hp)
    step_s, step_p = jax.jit(server.round_step), jax.jit(peers.round_step)
    for _ in range(3):
        s, p = step_s(s, hp)[0], step_p(p, hp)[0]
    want = flat_params(s.params)
    for i in range(N):
        np.testing.assert_allclose(flat_params(_node(p.params, i)), want,
                                   rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("fields, field, text", [
    (dict(topology="ring", aggregator="krum"), "topology", "krum needs"),
    (dict(topology="ring", num_byzantine=2, num_workers=9), "topology",
     "at least 2f + 1 = 5"),
    (dict(topology="rign"), "topology", "did you mean 'ring'"),
    (dict(topology="random_subset", num_workers=7, num_byzantine=1,
          num_attackers=4), "num_workers", "need num_workers >= 2 * num_attackers"),
    (dict(topology="torus"), "num_workers", "r * c with r, c >= 3"),
    (dict(topology="regular", topology_degree=3, num_workers=7),
     "topology_degree", "n * degree even"),
    (dict(topology="complete", aggregator="monna",
          aggregator_kwargs={"pivot": 2}), "aggregator_kwargs", "own vector"),
    (dict(topology="complete", optimizer="mra"), "optimizer", "moment pairs"),
    (dict(topology="complete", shard="workers"), "shard", "not supported"),
])
def test_bad_topologies_fail_in_one_line_before_data(fields, field, text):
    config = _config(**fields)
    with pytest.raises(sim.ConfigError) as e:
        sim.resolve(config)  # validation only: no data, no compilation
    assert e.value.field == field
    assert text in str(e.value) and "\n" not in str(e.value)


def test_topology_names_agree_with_the_field_choices():
    assert TOPOLOGY_CHOICES == ("",) + topology.TOPOLOGIES


def test_graphs_are_symmetric_and_seeded():
    for name in topology.FIXED_TOPOLOGIES:
        kw = dict(degree=4) if name == "regular" else {}
        adj = topology.graph(name, num_nodes=12, seed=3, **kw)
        assert (adj == adj.T).all() and not adj.diagonal().any()
        assert (adj == topology.graph(name, num_nodes=12, seed=3, **kw)).all()
    assert topology.graph("torus", num_nodes=12).sum(1).tolist() == [4] * 12
    assert CLASSES  # (the synthetic data's classes; keeps the import used)


def test_monna_pivots():
    """MoNNA around a row (its fast path: distances to the pivot only) is
    NNM's row, also with non-finite rows and pivot; around another rule's
    output it is the mean of the n - f rows nearest to that output."""
    from byzjax import aggregators

    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    x[5] = np.inf
    x[6, 2] = np.nan
    for rows in (x[:5], x):  # all finite; two non-finite rows (one a pivot)
        n = len(rows)
        every = jax.jit(lambda r, n=n: (
            aggregators.nearest_neighbour_mixing(r, num_byzantine=2)["w"],
            jnp.stack([aggregators.monna(r, num_byzantine=2, pivot=p)["w"]
                       for p in range(n)])))  # one compilation per shape
        nnm, got = every({"w": jnp.asarray(rows)})
        np.testing.assert_allclose(got, nnm, rtol=1e-5, atol=1e-6)
    med = np.median(x[:5], axis=0)
    near = np.argsort(((x[:5] - med) ** 2).sum(1), kind="stable")[:3]
    got = aggregators.monna({"w": jnp.asarray(x[:5])}, num_byzantine=2,
                            pivot_aggregator="median")["w"]
    np.testing.assert_allclose(got, x[:5][near].mean(0), rtol=1e-5, atol=1e-6)
