"""ByzFL's conventions in the simulator: its data distributions against NumPy
references written from ByzFL 0.0.11's ``DataDistributor``, weight decay at the
server (PyTorch SGD's ``weight_decay``), the multi-step learning rate
(``MultiStepLR``) and the split among honest workers only."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from byzjax import data, sim
from byzjax.sim import _run
from tests import helpers as H

LABELS = np.random.default_rng(3).integers(0, 4, 103)


# ------------------------------------------------ ByzFL's DataDistributor
def byzfl_extreme(labels, idx, k):
    """``extreme_niid_idx``: ``(label, index)`` pairs sorted, ``array_split``."""
    pairs = sorted(zip(labels[idx], idx))
    return np.array_split(np.array([i for _, i in pairs], int), k)


def test_iid_is_byzfls_shuffle_and_array_split():
    s = data.split("iid", LABELS, num_workers=5, seed=1)
    assert s.counts.tolist() == [len(a) for a in np.array_split(LABELS, 5)]
    every = np.concatenate([s.shard(i) for i in range(5)])
    assert sorted(every.tolist()) == list(range(LABELS.size))


def test_extreme_niid_with_index_order_is_byzfls():
    s = data.split("label_sorted", LABELS, num_workers=4, seed=1,
                   within_class="index")
    want = byzfl_extreme(LABELS, np.arange(LABELS.size), 4)
    for i in range(4):
        assert s.shard(i).tolist() == want[i].tolist()
    shuffled = data.split("label_sorted", LABELS, num_workers=4, seed=1)
    for i in range(4):  # the default: the same labels, other examples
        assert sorted(LABELS[shuffled.shard(i)]) == sorted(LABELS[want[i]])


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_gamma_similarity_with_index_order_is_byzfls(gamma):
    k, seed = 4, 2
    s = data.split("gamma_similarity", LABELS, num_workers=k, seed=seed,
                   gamma=gamma, within_class="index")
    # ByzFL: the first int(N * gamma) of its (shuffled) indices dealt i.i.d.,
    # the rest by extreme_niid; byzjax's shuffled indices are its first draw.
    perm = np.random.default_rng(seed).permutation(LABELS.size)
    cut = int(LABELS.size * gamma)
    iid = np.array_split(perm[:cut], k)
    niid = byzfl_extreme(LABELS, perm[cut:], k)
    for i in range(k):
        assert sorted(s.shard(i).tolist()) == sorted(
            np.concatenate([iid[i], niid[i]]).tolist())


def test_dirichlet_cuts_are_byzfls():
    # ByzFL: per class, proportions p ~ Dirichlet(alpha 1_k) cut at
    # int(cumsum(p)[:-1] * count); replay byzjax's draws through that rule.
    k, seed, alpha = 3, 4, 0.5
    s = data.split("dirichlet", LABELS, num_workers=k, seed=seed, alpha=alpha)
    rng = np.random.default_rng(seed)
    want = np.zeros((k, 4), int)
    for c in range(4):
        idx = rng.permutation(np.flatnonzero(LABELS == c))
        p = rng.dirichlet(np.full(k, alpha))
        for i, part in enumerate(np.split(idx, (np.cumsum(p)[:-1] * idx.size)
                                          .astype(int))):
            want[i, c] = part.size
    got = np.array([np.bincount(LABELS[s.shard(i)], minlength=4) for i in range(k)])
    np.testing.assert_array_equal(got, want)


def test_split_among_honest_workers_gives_byzantine_workers_copies():
    # ByzFL divides the data among its honest clients only.
    images, labels = np.zeros((70, 4, 4, 1), np.uint8), np.zeros(70, np.int32)
    pair = (data.Dataset(images, labels, 10, "synthetic"),
            data.Dataset(images[:10], labels[:10], 10, "synthetic"))
    config = H.tiny_config(split="iid", split_among="honest", num_attackers=2)
    sd = _run.load_sim_data(sim.resolve(config), dataset=pair)
    counts = np.asarray(sd.worker_counts).tolist()
    assert counts == [14] * 7  # 70 over 5 honest; workers 5, 6 copy 0, 1
    rows = np.asarray(sd.worker_indices)
    assert (rows[5] == rows[0]).all() and (rows[6] == rows[1]).all()
    assert len(set(rows[:5].ravel().tolist())) == 70
    plain = H.tiny_config(split="iid", num_attackers=2)
    assert _run.data_key(sim.resolve(config)) != _run.data_key(sim.resolve(plain))


# ------------------------------------------------- the training algorithm
def test_byzfl_training_options_match_step_by_step_reference():
    # weight decay at the server and MultiStepLR, together (one compile)
    config = H.tiny_config(weight_decay_point="server", weight_decay=0.05,
                           lr_schedule="multistep", lr_milestones="1,2",
                           lr_decay_factor=0.5)
    data_ = H.make_data(config.num_workers)
    model = H.TinyMLP()
    key = jax.random.key(5)
    program = sim.make_program(config, data_, model)
    hp = H.traced_hparams(config)
    state = program.init(key, hp)
    step = jax.jit(program.round_step)
    for _ in range(3):
        state, _ = step(state, hp)
    want = H.reference_rounds(config, data_, model, key, rounds=3)
    np.testing.assert_allclose(H.flat_params(state.params), want, rtol=1e-5,
                               atol=1e-5)
    plain = H.tiny_config(weight_decay=config.weight_decay)
    assert not np.allclose(H.reference_rounds(plain, data_, model, key, rounds=3),
                           want, atol=1e-5)


@pytest.mark.parametrize("overrides,field", [
    (dict(lr_milestones="5"), "lr_milestones"),
    (dict(lr_decay_factor=0.5), "lr_decay_factor"),
    (dict(label_sort_order="index"), "label_sort_order"),
    (dict(weight_decay=0.0, weight_decay_point="server"), "weight_decay_point"),
])
def test_byzfl_fields_unread_are_reported(overrides, field):
    with pytest.warns(sim.IgnoredFieldWarning, match=field):
        spec = sim.resolve(H.tiny_config(**overrides))
    assert field in spec.ignored


@pytest.mark.parametrize("overrides,message", [
    (dict(lr_schedule="multistep", lr_milestones="5,2"),
     "lr_milestones must be comma-separated increasing integers"),
    (dict(lr_decay_factor=0.0), "lr_decay_factor must be in (0, 1]"),
    (dict(label_sort_order="sorted"), "label_sort_order"),
    (dict(split_among="byzantine"), "split_among"),
    (dict(weight_decay_point="server", server_protocol="guanyu", num_servers=3),
     "weight_decay_point 'server' is implemented for server_protocol 'single'"),
])
def test_byzfl_fields_bad_values_are_refused(overrides, message):
    with pytest.raises(sim.ConfigError, match=message.replace("(", r"\(")
                       .replace(")", r"\)").replace("]", r"\]")):
        sim.resolve(H.tiny_config(**overrides))


def test_train_fraction_holds_out_byzfls_validation_set():
    images, labels = np.zeros((50, 4, 4, 1), np.uint8), np.zeros(50, np.int32)
    pair = (data.Dataset(images, labels, 10, "synthetic"),
            data.Dataset(images[:10], labels[:10], 10, "synthetic"))
    config = H.tiny_config(split="iid", train_fraction=0.8)
    sd = _run.load_sim_data(sim.resolve(config), dataset=pair)
    counts = np.asarray(sd.worker_counts)
    assert counts.sum() == 40  # int(0.8 * 50), as ByzFL's random_split
    held = data.hold_out(50, 10, seed=config.split_seed)
    used = np.asarray(sd.worker_indices)[np.asarray(sd.worker_indices) >= 0]
    assert not set(used.tolist()) & set(held.tolist())
