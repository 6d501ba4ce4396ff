"""The peer-to-peer program: every honest node holds its own model (no server).

One round, all nodes in one traced function (``docs/PEER_TO_PEER.md``):

1. every node computes its gradient at its own parameters on its own batch
   (the round kit's sampling, loss and ``grad_strategy``, as at a server);
2. the run's worker stage (clipping, momentum: RESAM at the node; D-SGD has
   none) over the node axis, then the run's server stage -- the local step
   ``theta_i - lr m_i`` -- applied by every node to its own parameters
   (``vmap``);
3. exchange (``gossip_steps`` times): every node sends its vector (its
   model, as in Farhadkhani et al.'s ``peerToPeer.py``), the Byzantine
   nodes craft theirs with the run's attack stage -- once from every honest
   vector, or per receiver from what that receiver hears
   (``attack_per_receiver``) -- and every honest node aggregates what it
   hears, itself included, with the run's robust stage (pre-aggregation and
   aggregation), ``vmap`` ped over the receivers of each
   :class:`~byzjax.topology.ReceiverGroup` (receivers hearing the same
   numbers of honest and Byzantine nodes: no padding reaches a rule). The
   aggregate is the node's new model.

The stages are the ones :func:`byzjax.optim.stages` builds for a parameter
server (:func:`~byzjax.sim._kit.stages_for`), built for ``n`` rows (worker,
server and a shared attack) and for each receiver's view (robust and a
per-receiver attack); each receiver keeps its own robust state (centered
clipping's center, a random rule's key) and, per receiver, its own attack
state.

Byzantine nodes hold no model. An attack that reads their own vectors
(``label_flip``, ``none``, the ``*_own`` attacks) has them follow the
protocol from the honest nodes' mean model: a gradient there on their own
(flipped) batch, their own momentum, the local step. Their rows are the last
``b`` of every stack, as at a server.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from byzjax import aggregators, attacks, topology
from byzjax._tree import pairwise_sq_distances, sum_rows, weighted_rows
from byzjax.sim._diagnostics import (
    byzantine_selection,
    explain_metrics,
    first_moments,
    honest_variance_to_norm,
    pipeline_selection_weights,
)
from byzjax.sim._kit import (
    Program,
    SimData,
    SimState,
    flip_byzantine_labels,
    has_convolutions,
    init_variables,
    labels_num_classes,
    make_evaluate,
    make_loss_fn,
    map_workers,
    nanmean,
    normalize,
    program_of,
    resolve_grad_strategy,
    sample_batch_indices,
    stages_for,
    tree_all_finite,
)
from byzjax.sim._spec import RunSpec

__all__ = ["make_p2p_program", "P2P_METRICS", "consensus_distance",
           "receiver_groups_of"]

#: The per-chunk metrics of a peer-to-peer run beside ``test_accuracy`` (the
#: honest nodes' mean) and ``test_loss`` (their mean).
P2P_METRICS = ("test_accuracy_min", "test_accuracy_max", "consensus_distance")


def _rows(tree, idx):
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


def _view(tree, ids):
    """``_rows(tree, ids)`` for a 1-d traced ``ids`` of static length, as a
    stack of single-row dynamic slices: a rule reading row ``i`` of the view
    then reads ``tree[ids[i]]`` in place (XLA fuses the slice into the rule's
    loop) instead of a gathered copy. Same values; measured on XLA:CPU (21
    receivers of 21 rows of 79,510 in a ``lax.map``, trimmed mean): 12 ms
    against 24 ms CPU with the gather."""
    return jax.tree_util.tree_map(lambda x: jnp.stack(
        [jax.lax.dynamic_index_in_dim(x, ids[j], keepdims=False)
         for j in range(ids.shape[0])]), tree)


def _row_mean(tree):
    """The mean over the leading axis of every leaf, as an unrolled sum of
    rows (``sum_rows``) in at least float32: ``x.mean(0)`` over a short
    leading axis is slow on XLA:CPU (21 rows of 79,510: 17 ms against 0.9 ms,
    measured)."""
    def leaf(x):
        acc = jnp.promote_types(x.dtype, jnp.float32)
        return (sum_rows(x.astype(acc)) / x.shape[0]).astype(x.dtype)

    return jax.tree_util.tree_map(leaf, tree)


def _cat(a, b, axis=0):
    return jax.tree_util.tree_map(
        lambda x, y: jnp.concatenate([x, y.astype(x.dtype)], axis=axis), a, b)


def _broadcast(tree, n):
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree)


def consensus_distance(params) -> jax.Array:
    """``sqrt((1/h) sum_i ||theta_i - theta_bar||^2)`` over all leaves.

    The honest nodes' root-mean-square distance from their mean model
    (Koloskova et al. 2020's consensus distance, square-rooted: in the
    parameters' unit).

    Args:
      params: pytree with leaves ``[h, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> consensus_distance({"w": jnp.array([[0.0, 0.0], [2.0, 0.0]])})
      Array(1., dtype=float32)
    """
    total: float | jax.Array = 0.0
    for x in jax.tree_util.tree_leaves(params):
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        total = total + jnp.mean(jnp.sum((x - x.mean(0)) ** 2, axis=1))
    return jnp.sqrt(total)


def receiver_groups_of(spec: RunSpec) -> tuple[topology.ReceiverGroup, ...]:
    """The run's :class:`~byzjax.topology.ReceiverGroup` s (host, static).

    Example:
      >>> from byzjax import sim
      >>> c = sim.get_config()
      >>> c.topology, c.num_workers, c.num_byzantine = "ring", 6, 1
      >>> [g.num_inputs for g in receiver_groups_of(sim.resolve(c))]
      [3, 3]
    """
    return topology.topology_groups(
        spec.topology or "complete", num_nodes=spec.num_workers,
        num_byzantine_nodes=spec.num_attackers, degree=spec.topology_degree,
        probability=spec.topology_probability, seed=spec.topology_seed)


def make_p2p_program(spec: RunSpec, data: SimData, model, *,
                     byzantine_gradients: bool | None = None) -> Program:
    """The :class:`~byzjax.sim.Program` of peer-to-peer learning (``topology``).

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` with a ``topology``.
      data: :class:`~byzjax.sim.SimData`; node ``i`` samples worker ``i``'s
        shard.
      model: a Flax linen module (as for a parameter server).
      byzantine_gradients: compute the Byzantine nodes' gradients. ``None``
        (default): only when the attack reads their own vectors.

    Returns:
      A :class:`~byzjax.sim.Program` whose :class:`~byzjax.sim.SimState`
      holds every honest node's parameters (leaves ``[h, *param_shape]``),
      BatchNorm statistics (per node) and optimiser states. ``run_chunk``'s
      metrics: ``test_accuracy`` / ``test_loss`` (the honest nodes' mean),
      :data:`P2P_METRICS`, the round diagnostics and the per-chunk ones.

    Example (tiny synthetic data; ``tests/test_p2p.py`` runs it)::

        program = make_p2p_program(spec, data, model)
        state, metrics = jax.jit(program.train)(jax.random.key(0), spec.hparams)
    """
    n, b = spec.num_workers, spec.num_attackers
    h = n - b
    groups = receiver_groups_of(spec)
    redraw = spec.topology == "random_subset"
    others = topology.random_subset_others(n, b)
    per_receiver = bool(spec.attack_per_receiver) and b > 0
    b_eval = spec.eval_every
    label_flip = spec.attack == "label_flip" and b > 0
    num_classes = labels_num_classes(data)
    eval_size = spec.eval_size or int(data.test_labels.shape[0])
    sample_shape = tuple(data.train_images.shape[1:])
    variables = jax.eval_shape(lambda k: init_variables(model, k, sample_shape),
                               jax.random.key(0))
    has_bn = "batch_stats" in variables
    entry = attacks.entry(spec.attack) if b else None
    reads_own = bool(entry and (entry.data_level or entry.needs_own))
    if byzantine_gradients is None:
        byzantine_gradients = reads_own
    # Whether anything reads the Byzantine nodes' own models and vectors.
    # When nothing does (the attack replaces their rows before any receiver
    # hears them), their rows start from zeros, not from the honest mean: the
    # same honest results, and XLA:CPU fuses the stack of node parameters into
    # its readers instead of writing it (measured).
    byzantine_own = reads_own or byzantine_gradients
    n_grads = n if byzantine_gradients else h
    grad_fn = jax.grad(make_loss_fn(model, has_bn=has_bn), has_aux=True)
    grad_strategy = resolve_grad_strategy(
        spec.grad_strategy, num_workers=n_grads, backend=jax.default_backend(),
        convolutional=has_convolutions(variables["params"]))
    weights_fn = pipeline_selection_weights(
        aggregator=spec.aggregator, num_byzantine=int(spec.num_byzantine),
        aggregator_kwargs=dict(spec.aggregator_kwargs),
        preaggregator=spec.preaggregator or None,
        preaggregator_kwargs=dict(spec.preaggregator_kwargs))

    def view_stages(hp, key, g):
        kb = int(g.byzantine.shape[1])
        return stages_for(spec, hp, key, num_workers=g.num_inputs,
                          num_attackers=kb if per_receiver else 0)

    def receiver_keys(key, g):
        return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.asarray(
            g.receivers))

    # ------------------------------------------------------------ state
    def init(key, hp):
        k_model, k_tx, k_run = jax.random.split(key, 3)
        v = init_variables(model, k_model, sample_shape,
                           init_seed=spec.init_seed)
        params = v["params"]
        full = stages_for(spec, hp, k_tx)
        ws = full.worker.init(params)
        ss = _broadcast(full.server.init(params), n)
        rs, ats = [], []
        for gi, g in enumerate(groups):
            keys = receiver_keys(jax.random.fold_in(k_tx, gi + 1), g)
            rs.append(jax.vmap(lambda k, g=g: view_stages(hp, k, g).robust.init(
                params))(keys))
            if per_receiver:
                ats.append(jax.vmap(lambda k, g=g: view_stages(
                    hp, k, g).attack.init(params))(keys))
        at = tuple(ats) if per_receiver else full.attack.init(params)
        return SimState(_broadcast(params, h),
                        _broadcast(v.get("batch_stats", {}), h),
                        (ws, at, tuple(rs), ss), k_run,
                        jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))

    # ------------------------------------------------------------ one round
    # node i's row in the groups' aggregates concatenated in group order
    node_order = np.argsort(np.concatenate([g.receivers for g in groups]))
    nan = jnp.float32(jnp.nan)

    def receiver_stats(view, agg, kh, kb, diag_on, explain):
        """One receiver's round diagnostics (distance and cosine of its
        aggregate to the mean of the honest rows it heard) and, when
        ``explain``, the Byzantine share its rule selected."""
        def dist_cos():
            hbar = _row_mean(_rows(view, slice(0, kh)))
            la = [x.ravel() for x in jax.tree_util.tree_leaves(agg)]
            lh = [x.ravel() for x in jax.tree_util.tree_leaves(hbar)]
            d2 = sum(jnp.sum((a - c) ** 2) for a, c in zip(la, lh))
            dot = sum(jnp.sum(a * c) for a, c in zip(la, lh))
            na = jnp.sqrt(sum(jnp.sum(a * a) for a in la))
            nc = jnp.sqrt(sum(jnp.sum(c * c) for c in lh))
            return (jnp.sqrt(d2).astype(jnp.float32),
                    jnp.clip(dot / jnp.maximum(na * nc, 1e-12), -1, 1
                             ).astype(jnp.float32))

        if diag_on is False:
            dc = (nan, nan)
        elif diag_on is True:
            dc = dist_cos()
        else:
            dc = jax.lax.cond(diag_on, dist_cos, lambda: (nan, nan))
        if weights_fn is None or not kb or explain is False:
            sel = (nan, nan)
        else:
            def selection():
                w = weights_fn(first_moments(view))
                return tuple(jnp.asarray(v, jnp.float32)
                             for v in byzantine_selection(w, kh))
            sel = (selection() if explain is True
                   else jax.lax.cond(explain, selection, lambda: (nan, nan)))
        return dc + sel

    agg_kwargs = dict(spec.aggregator_kwargs)
    f_declared = int(spec.num_byzantine)
    # A rule whose output is a weighted mean of rows chosen by their distances
    # (aggregators.DISTANCE_WEIGHTS: MoNNA around the receiver's own vector),
    # no pre-aggregation, one vector per Byzantine node: every receiver's
    # weights from one distance matrix of the vectors sent, all aggregates one
    # [h, P] @ [P, d] matmul; no view is gathered.
    by_distances = (spec.preaggregator is None and not per_receiver
                    and jax.eval_shape(lambda: aggregators.distance_weights(
                        spec.aggregator, jnp.zeros((3, 3)), jnp.ones(3, bool),
                        num_byzantine=0, **agg_kwargs)) is not None)

    def exchange_by_distances(pool, k_view, diag_on, explain):
        shaped = pool
        # Every leaf as [P, d] for all the matmuls below: read in one layout,
        # XLA:CPU writes the pool once instead of once per layout (measured).
        pool = jax.tree_util.tree_map(lambda x: x.reshape(x.shape[0], -1), pool)
        d2, finite = pairwise_sq_distances(pool, with_finite=True, rescale=True)
        size = int(d2.shape[0])
        ws, hs, sel, wt = [], [], [], []
        for g in groups:
            kh, kb = int(g.honest.shape[1]), int(g.byzantine.shape[1])
            hon_ids = (topology.random_subset_views(
                k_view, num_honest=h, num_others=others) if redraw
                else jnp.asarray(g.honest))
            ids = jnp.concatenate([hon_ids, h + jnp.asarray(g.byzantine,
                                                            jnp.int32)], axis=1)

            def weights(row):
                out = aggregators.distance_weights(
                    spec.aggregator, d2[row][:, row], finite[row],
                    num_byzantine=f_declared, **agg_kwargs)
                assert out is not None
                return out

            w = jax.vmap(weights)(ids)  # [g, m]
            onehot = jax.nn.one_hot(ids, size, dtype=w.dtype)  # [g, m, P]
            ws.append(jnp.einsum("gm,gmp->gp", w, onehot))
            hs.append(onehot[:, :kh].mean(1))
            if weights_fn is None or not kb or explain is False:
                nans = jnp.full((w.shape[0],), jnp.nan, jnp.float32)
                sel.append(nans)
                wt.append(nans)
            else:
                s_, t_ = jax.vmap(lambda r, kh=kh: byzantine_selection(r, kh))(w)
                sel.append(s_)
                wt.append(t_)
        order = jnp.asarray(node_order)
        W = jnp.concatenate(ws)[order]  # [h, P], node order
        H = jnp.concatenate(hs)[order]
        touched = jnp.any((W > 0) & ~finite[None, :], axis=1)
        new_honest = weighted_rows(pool, W, keep=finite, nan_rows=touched)
        new_honest = jax.tree_util.tree_map(
            lambda a, x: a.reshape((h,) + x.shape[1:]).astype(x.dtype),
            new_honest, shaped)
        stats = [jnp.full((h,), jnp.nan, jnp.float32)] * 2
        if diag_on is not False:
            def dist_cos():
                hbar = weighted_rows(pool, H, clean=False)
                la = [x.reshape(h, -1) for x in jax.tree_util.tree_leaves(
                    new_honest)]
                lh = [x.reshape(h, -1) for x in jax.tree_util.tree_leaves(hbar)]
                d = sum(jnp.sum((a - c) ** 2, 1) for a, c in zip(la, lh))
                dot = sum(jnp.sum(a * c, 1) for a, c in zip(la, lh))
                na = jnp.sqrt(sum(jnp.sum(a * a, 1) for a in la))
                nc = jnp.sqrt(sum(jnp.sum(c * c, 1) for c in lh))
                return [jnp.sqrt(d).astype(jnp.float32),
                        jnp.clip(dot / jnp.maximum(na * nc, 1e-12), -1, 1
                                 ).astype(jnp.float32)]

            stats = (dist_cos() if diag_on is True else jax.lax.cond(
                diag_on, dist_cos, lambda: stats))
        sel_all = jnp.concatenate(sel)[order]
        wt_all = jnp.concatenate(wt)[order]
        return new_honest, stats + [sel_all, wt_all]

    def exchange(vectors, at, rs, hp, full_attack, k_view, mean_params,
                 receiver_params, diag_on, explain):
        """One exchange: every honest node aggregates what it hears.

        Receiver by receiver in a compiled ``lax.map`` (no Python loop over
        nodes), each reading its own view inside the loop (:func:`_view`: row
        ``i`` of the view is read in place from the pool, not gathered into a
        copy): measured on XLA:CPU (21 receivers of 21 rows of 79,510),
        materialising all views at once for a ``vmap`` cost 88 ms CPU against
        33 ms (trimmed mean, with a gathered copy per receiver; 12 ms read in
        place), and ``vmap`` turns a rule's data-dependent branches
        (``lax.cond``: the overflow rescue of the comparing rules, MoNNA's
        fallback) into both branches (MoNNA: 567 vs 97 ms).
        """
        honest, byz_own = _rows(vectors, slice(0, h)), _rows(vectors, slice(h, n))
        # every vector a receiver may hear, in one array: the honest ones and
        # the Byzantine ones (as crafted once, or their own for an attack per
        # receiver). The attack stage replaces only the last b rows, so its
        # output is that array (no second copy of the stack).
        pool = vectors
        if b and not per_receiver:
            pool, at = full_attack.update(vectors, at, mean_params)
        if by_distances:
            new_honest, stats = exchange_by_distances(pool, k_view, diag_on,
                                                      explain)
            return _cat(new_honest, byz_own), at, rs, stats
        new_rs, new_at, stats, aggs = [], [], [], []
        for gi, g in enumerate(groups):
            tx = view_stages(hp, jax.random.key(0), g)
            kh, kb = int(g.honest.shape[1]), int(g.byzantine.shape[1])
            if redraw:
                hon_ids = topology.random_subset_views(
                    k_view, num_honest=h, num_others=others)
            else:
                hon_ids = jnp.asarray(g.honest)
            attack_here = per_receiver and kb > 0

            def one(xs, tx=tx, kh=kh, kb=kb, attack_here=attack_here):
                ids, at_g, rs_g, mine = xs
                # [1 + k_h + k_b, ...]: itself, honest neighbours, Byzantine
                view = _view(pool, ids)
                if attack_here:
                    view, at_g = tx.attack.update(view, at_g, mine)
                agg, rs_g = tx.robust.update(view, rs_g, mine)
                return agg, at_g, rs_g, receiver_stats(view, agg, kh, kb,
                                                       diag_on, explain)

            ids = jnp.concatenate([hon_ids, h + jnp.asarray(g.byzantine,
                                                            jnp.int32)], axis=1)
            xs = (ids, at[gi] if per_receiver else None, rs[gi],
                  _rows(receiver_params, jnp.asarray(g.receivers)))
            agg, at_g, rs_g, st = jax.lax.map(one, xs)
            aggs.append(agg)
            new_rs.append(rs_g)
            stats.append(st)
            if per_receiver:
                new_at.append(at_g)
        # The groups' aggregates in node order: one static gather (XLA:CPU's
        # scatter is far slower); one group of every node is already in order.
        new_honest = aggs[0] if len(aggs) == 1 else _rows(
            jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *aggs),
            jnp.asarray(node_order))
        new_honest = jax.tree_util.tree_map(lambda a, x: a.astype(x.dtype),
                                            new_honest, honest)
        stats = [jnp.concatenate([st[k] for st in stats]) for k in range(4)]
        at = tuple(new_at) if per_receiver else at
        return _cat(new_honest, byz_own), at, tuple(new_rs), stats

    def round_step(state: SimState, hp, diagnostics=True, explain=False):
        full = stages_for(spec, hp, jax.random.key(0))
        key, k_batch, k_drop = jax.random.split(state.key, 3)
        k_view = jax.random.fold_in(k_batch, n + 1)
        idx = sample_batch_indices(k_batch, data.worker_indices,
                                   data.worker_counts, spec.batch_size)[:n_grads]
        x = normalize(data.train_images[idx], data)
        y = data.train_labels[idx]
        if label_flip:
            y = flip_byzantine_labels(y, num_honest=h, num_classes=num_classes)
        drop_keys = jax.random.split(k_drop, n)[:n_grads]
        mean_params = _row_mean(state.params)
        mean_stats = _row_mean(state.batch_stats)
        # Byzantine nodes (when computed) follow the protocol from the mean.
        start = (mean_params, mean_stats) if byzantine_own else jax.tree_util.tree_map(
            jnp.zeros_like, (mean_params, mean_stats))
        node_params = _cat(state.params, _broadcast(start[0], n - h))
        node_stats = _cat(state.batch_stats, _broadcast(start[1], n - h))
        grads, (losses, new_stats) = map_workers(
            lambda xs: grad_fn(*xs, hp["weight_decay"]),
            (_rows(node_params, slice(0, n_grads)),
             _rows(node_stats, slice(0, n_grads)), x, y, drop_keys),
            strategy=grad_strategy)
        if n_grads < n:
            grads = _cat(grads, jax.tree_util.tree_map(
                lambda g: jnp.zeros((n - n_grads,) + g.shape[1:], g.dtype), grads))
        ws, at, rs, ss = state.opt_state
        sent, ws = full.worker.update(grads, ws, mean_params)
        steps, ss = jax.vmap(full.server.update)(sent, ss, node_params)
        vectors = optax.apply_updates(node_params, steps)  # the local steps
        stats: list = []
        for s in range(spec.gossip_steps):
            last = s == spec.gossip_steps - 1  # diagnostics of the last one
            honest_sent = _rows(vectors, slice(0, h))
            vectors, at, rs, stats = exchange(
                vectors, at, rs, hp, full.attack, jax.random.fold_in(k_view, s),
                mean_params, state.params, diagnostics if last else False,
                explain if last else False)
        params = _rows(vectors, slice(0, h))
        batch_stats = (_rows(new_stats, slice(0, h)) if has_bn
                       else state.batch_stats)
        train_loss = losses[:h].mean()
        finite = jnp.isfinite(train_loss) & tree_all_finite(params)
        t = state.round + 1
        diverged = jnp.where((state.diverged_round < 0) & ~finite, t,
                             state.diverged_round)
        dist, cos, sel, wt = stats

        def spread():
            return jnp.sqrt(jnp.max(pairwise_sq_distances(honest_sent)))

        if diagnostics is True:
            hs = spread()
        elif diagnostics is False:
            hs = nan
        else:
            hs = jax.lax.cond(diagnostics, spread, lambda: nan)
        agg_dist = dist.mean()
        diag = {"agg_dist": agg_dist, "honest_spread": hs,
                "resilience": agg_dist / jnp.maximum(hs, 1e-12),
                "cosine": cos.mean()}

        def ratio(sent, _):
            return {"var_norm_ratio": honest_variance_to_norm(
                _rows(first_moments(sent), slice(0, h)))}

        # (receivers hearing no Byzantine node are NaN: left out)
        chosen = {"byz_selected": jnp.nanmean(sel), "byz_weight": jnp.nanmean(wt)}
        metrics = {"train_loss": train_loss, **diag,
                   **explain_metrics(explain, lambda s, a: {**ratio(s, a),
                                                            **chosen}, sent, None)}
        return SimState(params, batch_stats, (ws, at, rs, ss), key, t,
                        diverged), metrics

    # ------------------------------------------------------------ evaluation
    evaluate = make_evaluate(model, data, eval_size=eval_size, has_bn=has_bn)

    def run_chunk(state, hp):
        state, rm = jax.lax.scan(
            lambda s, i: round_step(s, hp, explain=i == b_eval - 1), state,
            jnp.arange(b_eval))
        acc, loss, class_acc = jax.vmap(evaluate)(state.params, state.batch_stats)
        metrics = {k: nanmean(v) for k, v in rm.items()}
        metrics.update(test_accuracy=acc.mean(), test_loss=loss.mean(),
                       test_class_accuracy=class_acc.mean(0),  # over nodes
                       test_accuracy_min=acc.min(), test_accuracy_max=acc.max(),
                       consensus_distance=consensus_distance(state.params),
                       round=state.round, diverged_round=state.diverged_round)
        return state, metrics

    return program_of(init, run_chunk, round_step, evaluate, spec.num_evals)

