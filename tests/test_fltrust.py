"""FLTrust (Cao, Fang, Liu, Gong, NDSS 2021): the rule against its NumPy
reference (``tests/helpers.py``), its properties, the registry's
``needs_reference`` capability through ``optim.aggregate``, and the
simulator's server data (config ``server_data_size``): held out of every
worker's shard, reaching the program, refused where it cannot work."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators, analysis, attacks, optim, parallel, report, sim
from byzjax import data as bdata
from tests import helpers as H
from tests.helpers import TinyMLP, tiny_config

D = 5


def _tree(x):
    """``[..., 5]`` -> two leaves ``[..., 3]`` and ``[..., 2]``."""
    x = jnp.asarray(x, jnp.float32)
    return {"a": x[..., :3], "b": x[..., 3:]}


def _flat(tree):
    return np.concatenate([np.asarray(tree["a"], np.float64),
                           np.asarray(tree["b"], np.float64)], axis=-1)


_FLTRUST = jax.jit(lambda x, r: aggregators.fltrust(x, reference=r))
_SCORES = jax.jit(lambda x, r: aggregators.fltrust_scores(x, reference=r))


def fltrust(x, g0):
    return _flat(_FLTRUST(_tree(x), _tree(g0)))


# ------------------------------------------------------------------ reference
@st.composite
def rows_and_reference(draw):
    """Integer-valued rows (repeats, zero rows, ties) and a reference, some
    rows non-finite or huge."""
    n = draw(st.sampled_from([1, 4, 9]))  # few shapes: few compilations
    ints = st.integers(-3, 3)
    x = np.array(draw(st.lists(st.lists(ints, min_size=D, max_size=D),
                               min_size=n, max_size=n)), np.float64)
    g0 = np.array(draw(st.lists(ints, min_size=D, max_size=D)), np.float64)
    for i in range(n):
        kind = draw(st.sampled_from(["plain"] * 4 + ["repeat", "inf", "nan",
                                                     "far"]))
        if kind == "repeat":
            x[i] = x[draw(st.integers(0, n - 1))]
        elif kind == "inf":
            x[i, draw(st.integers(0, D - 1))] = draw(st.sampled_from([np.inf,
                                                                      -np.inf]))
        elif kind == "nan":
            x[i, draw(st.integers(0, D - 1))] = np.nan
        elif kind == "far":
            x[i] *= 2.0 ** draw(st.integers(10, 40))
    scale = 2.0 ** draw(st.integers(-4, 4))
    return (x * scale).astype(np.float32), (g0 * scale).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(case=rows_and_reference())
def test_matches_the_numpy_reference(case):
    x, g0 = case
    got = fltrust(x, g0)
    want = H.ref_fltrust(x, g0)
    assert np.all(np.isfinite(got))
    norm = np.linalg.norm(g0.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(norm, 1.0),
                               err_msg=f"{x}\n{g0}")
    np.testing.assert_allclose(np.asarray(_SCORES(_tree(x), _tree(g0))),
                               H.ref_fltrust_scores(x, g0), rtol=1e-5, atol=1e-6)


def test_fixed_case_by_hand():
    # g0 = (3, 4, 0, 0, 0), ||g0|| = 5. Row 0 is parallel (score 1), row 1 at
    # 90 degrees (0), row 2 opposite (0), row 3 = (4, 3, 0, 0, 0): cos 24/25.
    x = np.array([[6, 8, 0, 0, 0], [4, -3, 0, 0, 0], [-3, -4, 0, 0, 0],
                  [4, 3, 0, 0, 0]], np.float32)
    g0 = np.array([3, 4, 0, 0, 0], np.float32)
    want = (1.0 * np.array([3, 4, 0, 0, 0]) + 0.96 * np.array([4, 3, 0, 0, 0])) / 1.96
    np.testing.assert_allclose(fltrust(x, g0), want, rtol=1e-6)


# ----------------------------------------------------------------- properties
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_permutation_invariance_and_norm_bound(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([3, 8]))  # few shapes: few compilations
    x = rng.normal(size=(n, D)).astype(np.float32)
    g0 = rng.normal(size=D).astype(np.float32)
    out = fltrust(x, g0)
    np.testing.assert_allclose(fltrust(x[rng.permutation(n)], g0), out,
                               rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(out) <= np.linalg.norm(g0) * (1 + 1e-5)
    # each row's own length does not matter, only its direction
    scaled = x * rng.uniform(0.01, 100.0, size=(n, 1)).astype(np.float32)
    np.testing.assert_allclose(fltrust(scaled, g0), out, rtol=1e-4, atol=1e-5)
    # the reference sets the length
    np.testing.assert_allclose(fltrust(x, 4.0 * g0), 4.0 * out, rtol=1e-5,
                               atol=1e-5)


def test_rows_along_the_reference_give_the_reference():
    # All honest, each along g0 with its own length: the output is g0 itself.
    g0 = np.array([0.5, -1.0, 2.0, 0.0, 0.25], np.float32)
    x = np.outer([0.1, 1.0, 3.0, 70.0], g0).astype(np.float32)
    np.testing.assert_allclose(fltrust(x, g0), g0, rtol=1e-6)
    # and rows pointing away from it change nothing
    bad = np.concatenate([x, -5.0 * x[:2]])
    np.testing.assert_allclose(fltrust(bad, g0), g0, rtol=1e-6)


@pytest.mark.parametrize("case", ["all_away", "zero_reference", "nan_reference",
                                  "inf_reference", "all_non_finite", "zero_rows"])
def test_no_trusted_row_gives_no_update(case):
    g0 = np.array([1.0, 2.0, 0.0, -1.0, 0.5], np.float32)
    x = np.stack([-g0, np.array([2.0, -1.0, 0.0, 0.0, 0.0], np.float32), -3 * g0])
    if case == "zero_reference":
        x, g0 = -x, np.zeros(D, np.float32)
    elif case == "nan_reference":
        x, g0 = -x, np.where(np.arange(D) == 2, np.nan, g0).astype(np.float32)
    elif case == "inf_reference":
        x, g0 = -x, np.full(D, np.inf, np.float32)
    elif case == "all_non_finite":
        x = np.array([[np.inf] * D, [np.nan] * D, [1.0, -np.inf, 0, 0, 0]],
                     np.float32)
    elif case == "zero_rows":
        x = np.zeros((3, D), np.float32)
    out = fltrust(x, g0)
    assert np.array_equal(out, np.zeros(D)), out


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), bad=st.integers(0, 8))
def test_any_number_of_non_finite_rows_leaves_the_output_finite(seed, bad):
    rng = np.random.default_rng(seed)
    n = 9
    x = rng.normal(size=(n, D)).astype(np.float32)
    g0 = rng.normal(size=D).astype(np.float32)
    rows = rng.permutation(n)[:bad]
    for i in rows:
        x[i, rng.integers(0, D, size=2)] = rng.choice([np.inf, -np.inf, np.nan],
                                                       size=2)
    out = fltrust(x, g0)
    assert np.all(np.isfinite(out))
    keep = np.setdiff1d(np.arange(n), rows)
    np.testing.assert_allclose(out, H.ref_fltrust(x[keep], g0), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("row_scale,ref_scale", [(1e20, 1.0), (1e37, 1.0),
                                                 (1.0, 1e37), (3e37, 1e30)])
def test_huge_rows_and_reference_match_float64(row_scale, ref_scale):
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(6, D)) * row_scale).astype(np.float32)
    g0 = (rng.normal(size=D) * ref_scale).astype(np.float32)
    got = fltrust(x, g0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, H.ref_fltrust(x, g0), rtol=2e-5,
                               atol=1e-6 * ref_scale)


@pytest.mark.parametrize("scale", [1e20, 3e38])
def test_a_huge_byzantine_row_does_not_silence_small_honest_rows(scale):
    # Honest rows near 1e-3 (the reference among them) and one finite row at
    # `scale` pointing elsewhere: honest scores stay as they are, so the
    # output stays the honest direction.
    rng = np.random.default_rng(11)
    g0 = (rng.normal(size=D) * 1e-3).astype(np.float32)
    honest = (g0 + rng.normal(size=(5, D)) * 1e-4).astype(np.float32)
    bad = np.sign(rng.normal(size=(1, D))).astype(np.float32) * np.float32(scale)
    x = np.concatenate([honest, bad])
    got = fltrust(x, g0)
    np.testing.assert_allclose(got, H.ref_fltrust(x, g0), rtol=2e-5, atol=1e-9)
    scores = np.asarray(_SCORES(_tree(x), _tree(g0)))
    np.testing.assert_allclose(scores[:5], H.ref_fltrust_scores(honest, g0),
                               rtol=1e-5)
    assert np.all(scores[:5] > 0.5)


def test_the_rescue_branch_agrees_with_the_plain_one():
    # An inf row sends the other rows through the branch measuring each row
    # at its own power of two: same answer as the plain branch without it.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, D)).astype(np.float32)
    g0 = rng.normal(size=D).astype(np.float32)
    with_inf = x.copy()
    with_inf[2] = np.inf
    np.testing.assert_allclose(fltrust(with_inf, g0),
                               fltrust(np.delete(x, 2, axis=0), g0),
                               rtol=1e-6, atol=1e-7)


def test_jit_vmap_and_no_retrace():
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(4, 6, D)).astype(np.float32)
    refs = rng.normal(size=(4, D)).astype(np.float32)
    batched = jax.jit(jax.vmap(lambda x, r: aggregators.fltrust(x, reference=r)))(
        _tree(xs), _tree(refs))
    for i in range(4):
        np.testing.assert_allclose(_flat(batched)[i], fltrust(xs[i], refs[i]),
                                   rtol=1e-5, atol=1e-6)
    eager = aggregators.fltrust(_tree(xs[0]), reference=_tree(refs[0]))
    np.testing.assert_allclose(_flat(eager), fltrust(xs[0], refs[0]),
                               rtol=1e-5, atol=1e-6)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(x, r):
        return aggregators.fltrust(x, reference=r)

    fn(_tree(xs[0]), _tree(refs[0]))
    fn(_tree(xs[1]), _tree(refs[1]))  # new values, traced reference: no retrace


def test_bad_reference_is_one_line():
    x = _tree(np.ones((3, D)))
    with pytest.raises(ValueError, match="fltrust: reference must have the tree "
                       "structure") as info:
        aggregators.fltrust(x, reference={"a": jnp.ones(3)})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"shape of one row of updates, \(3,\), "
                       r"got \(1, 3\)"):
        aggregators.fltrust(x, reference={"a": jnp.ones((1, 3)), "b": jnp.ones(2)})
    with pytest.raises(TypeError, match="reference must be floating point"):
        aggregators.fltrust(x, reference={"a": jnp.ones(3, jnp.int32),
                                          "b": jnp.ones(2)})
    with pytest.raises(TypeError, match="reference"):
        aggregators.fltrust(x)


# ------------------------------------------------------------------- registry
def test_registry_declares_the_reference_capability():
    entry = aggregators.entry("fltrust")
    assert entry.needs_reference and not entry.needs_key and not entry.stateful
    assert not aggregators.entry("trimmed_mean").needs_reference
    assert "reference" not in entry.keywords
    with pytest.raises(ValueError, match="reference is passed by the caller"):
        aggregators.AGGREGATORS.check_kwargs("fltrust", {"reference": 1.0})


def test_optim_aggregate_passes_the_reference_through_a_chain():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, D)).astype(np.float32)
    g0 = rng.normal(size=D).astype(np.float32)
    params = _tree(np.zeros(D))
    tx = optax.chain(*optim.stages("dsgd", num_workers=5, num_byzantine=1,
                                   aggregator="fltrust", attack="sign_flip",
                                   learning_rate=1.0))
    step, _ = tx.update(_tree(x), tx.init(params), params, reference=_tree(g0))
    attacked = x.copy()
    attacked[4] = -x[:4].mean(0)
    np.testing.assert_allclose(-_flat(step), H.ref_fltrust(attacked, g0),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs the server's own update"):
        tx.update(_tree(x), tx.init(params), params)
    with pytest.raises(ValueError, match="moment pairs"):
        optim.stages("mra", num_workers=5, num_byzantine=1, aggregator="fltrust")


def test_tools_without_a_server_update_refuse_it_in_one_line():
    honest = _tree(np.ones((4, D)))
    with pytest.raises(ValueError, match="needs the server's own update"):
        attacks.adaptive_alie(honest, num_byzantine=1, aggregator="fltrust")
    with pytest.raises(ValueError, match="needs the server's own update"):
        analysis.estimate_lambda("fltrust", num_workers=5, num_byzantine=1,
                                 dim=3, key=jax.random.key(0), num_restarts=1,
                                 num_steps=1)
    with pytest.raises(ValueError, match="needs the server's own update"):
        parallel.robust_data_parallel_step(
            lambda p, b: jnp.mean(b @ p), optax.sgd(0.1),
            mesh=parallel.make_mesh(1), num_byzantine=0, aggregator="fltrust")


# ------------------------------------------------------------------ simulator
def test_the_root_dataset_is_held_out_of_every_shard():
    config = tiny_config(aggregator="fltrust", server_data_size=100)
    d = sim.load_sim_data(config)
    root = np.asarray(d.server_indices)
    assert root.shape == (100,) and len(set(root.tolist())) == 100
    counts = np.asarray(d.worker_counts)
    shards = [np.asarray(d.worker_indices)[i, :c] for i, c in enumerate(counts)]
    used = np.concatenate(shards)
    assert used.min() >= 0 and not set(root.tolist()) & set(used.tolist())
    # deterministic from split_seed, and no server data without the field
    again = sim.load_sim_data(config)
    assert np.array_equal(np.asarray(again.server_indices), root)
    other = sim.load_sim_data(tiny_config(aggregator="fltrust",
                                          server_data_size=100, split_seed=1))
    assert not np.array_equal(np.asarray(other.server_indices), root)
    assert sim.load_sim_data(tiny_config()).server_indices is None


#: Small learnable images for TinyMLP (4x4, its 3 classes).
_SMALL = (bdata.make_synthetic(num_examples=600, image_shape=(4, 4, 1),
                               num_classes=H.CLASSES),
          bdata.make_synthetic(num_examples=100, split="test",
                               image_shape=(4, 4, 1), num_classes=H.CLASSES))


def _record(**overrides):
    config = tiny_config(aggregator="fltrust", **overrides)
    data = sim.load_sim_data(config, dataset=_SMALL)
    (rec,) = sim.run_group(config, seeds=[0], data=data, model=TinyMLP(),
                           progress=False)
    return rec


def test_server_data_size_reaches_the_program():
    # 100 root examples, a batch of 5 drawn from them each round; 4: all four
    a = _record(server_data_size=100)
    b = _record(server_data_size=4)
    for rec in (a, b):
        assert np.all(np.isfinite(rec["metrics"]["test_accuracy"]))
        assert np.all(np.isfinite(rec["metrics"]["train_loss"]))
        assert not rec["diverged"]
    assert a["final_params_sha256"] != b["final_params_sha256"]
    assert a["run_id"] != b["run_id"]
    assert a["config"]["server_data_size"] == 100


def test_the_reference_is_the_servers_gradient_on_its_root_data():
    # One round of D-SGD with fltrust and no attack, computed by hand from
    # the program's own pieces: the step is -lr * FLTrust(grads; g_server).
    from byzjax.sim import _kit

    config = tiny_config(aggregator="fltrust", server_data_size=4, attack="none",
                         optimizer="dsgd", clip_norm=0.0, weight_decay=0.0,
                         batch_size=5, learning_rate=0.5, beta=0.99)
    spec = sim.resolve(config)
    d = sim.load_sim_data(spec, dataset=_SMALL)
    model = TinyMLP()
    program = sim.make_program(spec, d, model)
    hp = H.traced_hparams(config)
    state = program.init(jax.random.key(0), hp)
    new, _ = jax.jit(lambda s, h: program.round_step(s, h, diagnostics=False))(
        state, hp)
    grad = H.cross_entropy_grad(model)
    _, k_batch, _ = jax.random.split(state.key, 3)
    idx = _kit.sample_batch_indices(k_batch, d.worker_indices, d.worker_counts, 5)
    x = _kit.normalize(d.train_images[idx], d)
    rows = [H.flat_params(grad(state.params, x[i], d.train_labels[idx][i]))
            for i in range(7)]
    root = d.server_indices  # 4 <= batch_size: all of it
    g0 = H.flat_params(grad(state.params, _kit.normalize(d.train_images[root], d),
                            d.train_labels[root]))
    want = H.flat_params(state.params) - 0.5 * H.ref_fltrust(np.stack(rows), g0)
    np.testing.assert_allclose(H.flat_params(new.params), want, rtol=1e-4,
                               atol=1e-5)


REFUSED = [
    (dict(aggregator="fltrust"), "aggregator fltrust needs server data: set "
     "server_data_size > 0"),
    (dict(aggregator="fltrust", server_data_size=10, server_protocol="guanyu",
          num_servers=3, num_workers=9, num_byzantine=2),
     "aggregator fltrust needs one correct server"),
    (dict(aggregator="fltrust", server_data_size=10, num_byzantine_servers=1),
     "aggregator fltrust needs one correct server"),
    (dict(aggregator="fltrust", server_data_size=10, optimizer="mra"),
     "sends moment pairs"),
    (dict(aggregator="fltrust", server_data_size=10, attack="adaptive_alie"),
     "which the attack does not see"),
    (dict(aggregator="fltrust", server_data_size=10, attack="rop"),
     "follows the server's aggregate"),
    (dict(server_data_size=-1), "server_data_size must be an integer >= 0"),
]


@pytest.mark.parametrize("overrides,message", REFUSED)
def test_bad_server_data_is_one_config_error_before_data(monkeypatch, overrides,
                                                        message):
    def forbidden(*args, **kwargs):
        raise AssertionError("data loaded before the error")

    monkeypatch.setattr(bdata, "load_train_test", forbidden)
    with pytest.raises(sim.ConfigError, match=message) as info:
        sim.run_group(tiny_config(**overrides), seeds=[0], model=TinyMLP(),
                      progress=False)
    assert "\n" not in str(info.value)


def test_server_data_larger_than_the_training_set_is_refused():
    with pytest.raises(sim.ConfigError, match="leaves no training data"):
        sim.load_sim_data(tiny_config(aggregator="fltrust", server_data_size=600),
                          dataset=_SMALL)


def test_data_without_server_examples_is_refused_by_the_program():
    config = tiny_config(aggregator="fltrust", server_data_size=100)
    with pytest.raises(sim.ConfigError, match="the data has 0 server examples"):
        sim.make_program(config, H.make_data(7), TinyMLP())


def test_a_sweep_loads_server_data_for_the_groups_that_need_it(tmp_path):
    # A sweep loads the data once for groups that read the same data; a group
    # with server data reads other data (root examples held out of the shards).
    import ml_collections

    from byzjax.sim import _schedule

    sweep = ml_collections.ConfigDict({
        "name": "s", "base": tiny_config(), "seeds": [0],
        "grid": {"aggregator": ["trimmed_mean", "fltrust"]},
        "overrides": [({"aggregator": "fltrust"}, {"server_data_size": 8})]})
    out = str(tmp_path / "out")
    summary = _schedule.run_sweep(sweep, out, progress=False, log=lambda *a: None)
    assert summary["runs"] == 2
    records = report.load_runs(out)
    assert sorted(r["config"]["aggregator"] for r in records) == ["fltrust",
                                                                  "trimmed_mean"]
