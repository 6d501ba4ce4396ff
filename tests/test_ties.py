"""Every registered rule on the inputs attacks really send, against references.

A Little Is Enough and Fall of Empires send ``f`` *identical* rows; honest
gradients of a small model repeat values; tests built on random floats never
tie, which is how a tie bug in MeaMed/Phocas/Bulyan once went unseen. The
strategy here makes ties the normal case:

* honest rows drawn from a small pool of integer-valued rows (so rows repeat
  and coordinates tie), scaled by a power of two (every sum and distance stays
  exact in float32, so ties are ties on both sides of the comparison);
* up to ``f`` identical Byzantine rows: a copy of an honest row, the rounded
  honest mean, a rounded ALIE-like row, a far row, a huge row (coordinate
  rules only: distance rules treat a row whose squared norm overflows float32
  as non-finite by design), ``+inf``, ``-inf`` or ``NaN``;
* the rows shuffled, so no rule can rely on the Byzantine rows coming last.

Each rule's output is compared with its NumPy reference in ``tests/helpers.py``
(written from the definition; ties as ``docs/CONVENTIONS.md`` states them).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators, attacks
from tests import helpers as H

SHAPES = {"a": (2,), "b": (1,)}  # d = 3 over two leaves
D = 3


def _unflatten(x):
    return {"a": x[:, :2], "b": x[:, 2:]}


def _flat_out(tree):
    return np.concatenate([np.asarray(tree["a"], np.float64).reshape(-1),
                           np.asarray(tree["b"], np.float64).reshape(-1)])


BAD_KINDS = ("copy", "mean", "alie", "far", "huge", "inf", "-inf", "nan")


@st.composite
def attack_like(draw, n, f, kinds=BAD_KINDS):
    """``float32[n, D]`` with repeated honest rows and identical Byzantine rows."""
    h = n - f
    pool_size = draw(st.integers(1, h))
    pool = np.array(draw(st.lists(
        st.lists(st.integers(-4, 4), min_size=D, max_size=D),
        min_size=pool_size, max_size=pool_size)), np.float64)
    picks = draw(st.lists(st.integers(0, pool_size - 1), min_size=h, max_size=h))
    honest = pool[picks]
    num_bad = draw(st.integers(0, f))
    kind = draw(st.sampled_from(kinds))
    if kind == "copy":
        bad = honest[draw(st.integers(0, h - 1))]
    elif kind == "mean":
        bad = np.round(honest.mean(0))
    elif kind == "alie":
        sigma = honest.std(0, ddof=1) if h > 1 else np.zeros(D)
        bad = np.round(2 * (honest.mean(0) - 1.5 * sigma)) / 2
    elif kind == "far":
        bad = 64.0 * pool[0] + 128.0
    elif kind == "huge":
        bad = np.full(D, 2.0 ** 40) * draw(st.sampled_from([1.0, -1.0]))
    else:
        bad = np.full(D, {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind])
    # the other f - num_bad Byzantine workers behave honestly (declared f)
    extra = honest[draw(st.lists(st.integers(0, h - 1), min_size=f - num_bad,
                                 max_size=f - num_bad))]
    x = np.concatenate([honest, np.tile(bad, (num_bad, 1)), extra.reshape(-1, D)])
    x = x[np.array(draw(st.permutations(range(n))))]
    scale = 2.0 ** draw(st.integers(-3, 3))
    return (x * scale).astype(np.float32)


# name -> (reference(x, f) -> [D], kinds allowed, absolute tolerance factor)
COORDINATE = BAD_KINDS
DISTANCE = tuple(k for k in BAD_KINDS if k != "huge")


def _clip_rows(x, max_norm):
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        if np.all(np.isfinite(row)):  # non-finite rows become 0
            norm = np.linalg.norm(row)
            out[i] = row * min(1.0, max_norm / norm) if norm > 0 else row
    return out


def _geomed_ref(x, f):
    return H.ref_geomed(x, 100, 1e-6, 1e-6)


#: The server's own update given to a rule that needs one (registry
#: ``needs_reference``: FLTrust): dyadic, so its cosines with the integer rows
#: tie where the rows do.
SERVER_UPDATE = np.array([1.0, -0.5, 0.25])
# DnC with the coordinates it samples under the key the test passes (d = 3 is
# below its subsample size, so: every coordinate, one iteration).
KEY = jax.random.key(0)
DNC_COORDS = np.asarray(aggregators.dnc_coordinates(KEY, D))


REFERENCES = {
    "mean": (lambda x, f: x.mean(0), ("copy", "mean", "alie", "far", "huge"), 1e-6),
    "coordinate_median": (
        lambda x, f: np.array([H.ref_median(c) for c in x.T]), COORDINATE, 1e-6),
    "trimmed_mean": (
        lambda x, f: np.array([H.ref_trimmed(c, f) for c in x.T]), COORDINATE, 1e-6),
    "meamed": (
        lambda x, f: np.array([H.ref_meamed(c, f) for c in x.T]), COORDINATE, 1e-6),
    "phocas": (
        lambda x, f: np.array([H.ref_phocas(c, f) for c in x.T]), COORDINATE, 1e-6),
    "krum": (H.ref_krum, DISTANCE, 1e-6),
    "multi_krum": (H.ref_multi_krum, DISTANCE, 1e-6),
    "mda": (H.ref_mda, DISTANCE, 1e-6),
    "bulyan": (H.ref_bulyan, DISTANCE, 1e-6),
    "geometric_median": (_geomed_ref, DISTANCE, 1e-3),
    "centered_clipping": (lambda x, f: H.ref_cc(x, None, 100.0, 1), DISTANCE, 1e-5),
    "fltrust": (lambda x, f: H.ref_fltrust(x, SERVER_UPDATE), BAD_KINDS, 1e-6),
    "monna": (H.ref_monna, DISTANCE, 1e-6),
    "smea": (H.ref_smea, DISTANCE, 1e-6),
    "caf": (H.ref_caf, DISTANCE, 1e-5),
    # The filtering rules' references list every answer their definition allows
    # when a decision is within rounding of a tie (see tests/helpers.py).
    "dnc": (lambda x, f: H.ref_dnc(x, f, DNC_COORDS, tol=1e-3), BAD_KINDS, 1e-6),
    "signguard": (lambda x, f: H.ref_signguard(x, f, tol=1e-5), BAD_KINDS, 1e-6),
    "clipped_clustering": (lambda x, f: H.ref_clipped_clustering(x, f, tol=1e-5),
                           BAD_KINDS, 1e-6),
}
PRE_REFERENCES = {
    "nnm": (H.ref_nnm, DISTANCE),
    "static_clipping": (lambda x, f: _clip_rows(x, 1.0), DISTANCE),
    "arc": (H.ref_arc, DISTANCE),
    # a one-step chain keeps its step's ties (clipping then NNM turns ties into
    # float32 near-ties: tested on generic rows in tests/test_byzfl_import.py)
    "chain": (H.ref_nnm, DISTANCE),
}
PRE_KWARGS = {"static_clipping": dict(max_norm=1.0),
              "chain": dict(steps=[["nnm", {}]])}


def test_every_registered_rule_has_a_reference():
    assert set(REFERENCES) == set(aggregators.names())
    # bucketing is random (a permutation per call): covered by its own tests
    assert set(PRE_REFERENCES) | {"bucketing"} == set(aggregators.preaggregator_names())


def _cases(name, registry_entry):
    out = []
    for f in (1, 2):
        n = max(registry_entry.min_workers(f), 2 * f + 1) + 1
        out.append((name, n, f))
    return out


CASES = [c for name in sorted(REFERENCES)
         for c in _cases(name, aggregators.entry(name))]
PRE_CASES = [(name, 2 * f + 2, f) for name in sorted(PRE_REFERENCES) for f in (1, 2)]


@functools.lru_cache(maxsize=None)
def _jitted(name, f, pre):
    entry = (aggregators.PREAGGREGATORS if pre else aggregators.AGGREGATORS).entry(name)
    kwargs = dict(PRE_KWARGS.get(name, {}))
    if entry.needs_reference:
        row = _unflatten(SERVER_UPDATE[None].astype(np.float32))
        kwargs["reference"] = {k: jnp.asarray(v[0]) for k, v in row.items()}
    if entry.needs_key and not pre:
        kwargs["key"] = KEY
    return jax.jit(lambda t: entry.fn(t, num_byzantine=f, **kwargs))


@pytest.mark.parametrize("name,n,f", CASES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_rule_matches_reference_on_ties_and_duplicates(name, n, f, data):
    ref, kinds, tol = REFERENCES[name]
    x = data.draw(attack_like(n, f, kinds))
    got = _flat_out(_jitted(name, f, False)(_unflatten(jnp.asarray(x))))
    want = ref(x.astype(np.float64), f)
    scale = np.max(np.abs(x[np.isfinite(x)]), initial=1.0)
    assert np.all(np.isfinite(got)) or name == "mean", (x, got)
    if isinstance(want, list):  # every answer the definition allows
        close = [np.allclose(got, w, rtol=1e-5, atol=tol * scale) for w in want]
        assert any(close), f"{name} n={n} f={f}\n{x}\ngot {got}\nallowed {want}"
        return
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol * scale,
                               err_msg=f"{name} n={n} f={f}\n{x}")


@pytest.mark.parametrize("name,n,f", PRE_CASES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_pre_aggregator_matches_reference_on_ties_and_duplicates(name, n, f, data):
    ref, kinds = PRE_REFERENCES[name]
    x = data.draw(attack_like(n, f, kinds))
    out = _jitted(name, f, True)(_unflatten(jnp.asarray(x)))
    got = H.flatten(out)
    want = ref(x.astype(np.float64), f)
    scale = np.max(np.abs(x[np.isfinite(x)]), initial=1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale,
                               err_msg=f"{name} n={n} f={f}\n{x}")


# A fixed case per rule family that the old "lowest window of least radius"
# selection got wrong (it is the shape of every ALIE/FOE round: identical rows
# on one side of the honest values).

@pytest.mark.parametrize("rule", ["meamed", "phocas"])
def test_identical_byzantine_rows_do_not_push_out_closer_honest_values(rule):
    col = np.array([-1.0, -1.0, 0.0, 0.9, 5.0], np.float32)
    got = aggregators.get(rule)({"w": jnp.asarray(col)[:, None]}, num_byzantine=2)
    want = (0.0 + 0.9 - 1.0) / 3
    np.testing.assert_allclose(got["w"], [want], rtol=1e-6)


def test_bulyan_second_stage_on_identical_rows():
    # 11 rows, f = 2: Bulyan keeps n - 4f = 3 values around the median of the
    # 7 selected. Build the selected set directly through mean_around_median.
    col = np.array([-1.0, -1.0, -1.0, 0.0, 0.9, 1.2, 7.0], np.float32)
    got = aggregators.mean_around_median({"w": jnp.asarray(col)[:, None]}, num_keep=3)
    np.testing.assert_allclose(got["w"], [(0.0 + 0.9 - 1.0) / 3], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(aggregators.names()))
def test_integer_and_bool_stacks_are_rejected_by_every_rule(name):
    entry = aggregators.entry(name)
    n = max(entry.min_workers(1), 3) + 1
    for dtype in (jnp.int32, jnp.bool_):
        x = {"w": jnp.arange(n * 3).reshape(n, 3).astype(dtype)}
        with pytest.raises(TypeError, match=f"{name}: updates must be floating point"):
            entry.fn(x, num_byzantine=1)


@pytest.mark.parametrize("name", sorted(aggregators.preaggregator_names()))
def test_integer_stacks_are_rejected_by_every_pre_aggregator(name):
    x = {"w": jnp.arange(21).reshape(7, 3)}
    kwargs = dict(PRE_KWARGS.get(name, {}))
    if aggregators.PREAGGREGATORS.entry(name).needs_key:
        kwargs.update(key=jax.random.key(0), bucket_size=2)
    with pytest.raises(TypeError, match=f"{name}: updates must be floating point"):
        aggregators.PREAGGREGATORS.entry(name).fn(x, num_byzantine=1, **kwargs)


@pytest.mark.parametrize("name", sorted(aggregators.names()))
def test_empty_stack_is_a_clear_error(name):
    with pytest.raises(ValueError, match=f"{name}: updates need at least one row"):
        aggregators.get(name)({"w": jnp.zeros((0, 3))}, num_byzantine=0)


@pytest.mark.parametrize("name", sorted(attacks.names()))
def test_integer_stacks_are_rejected_by_every_attack(name):
    entry = attacks.ATTACKS.entry(name)
    kwargs = {"key": jax.random.key(0)} if entry.needs_key else {}
    if entry.adaptive:
        kwargs["aggregator"] = "trimmed_mean"
    for dtype in (jnp.int32, jnp.bool_):
        honest = {"w": jnp.arange(12).reshape(4, 3).astype(dtype)}
        with pytest.raises(TypeError, match="updates must be floating point"):
            entry.fn(honest, num_byzantine=1, **kwargs)


def _alie_foe_rounds(seed, count):
    """Float inputs as a round under ALIE or FOE looks: honest rows (half of
    the time rounded, with a duplicated row) and f identical attack rows."""
    rng = np.random.default_rng(seed)
    for trial in range(count):
        for n, f in ((7, 1), (11, 2), (15, 3)):
            honest = rng.normal(size=(n - f, 5))
            if trial % 2:
                honest = np.round(honest * 2) / 2
                honest[1] = honest[0]
            mu, sd = honest.mean(0), honest.std(0, ddof=1)
            bad = mu - 1.5 * sd if trial % 4 < 2 else (1 - 1.1) * mu
            x = np.concatenate([honest, np.tile(bad, (f, 1))])
            yield n, f, x.astype(np.float32)


@pytest.mark.parametrize("name", ["krum", "multi_krum", "mda", "bulyan", "meamed",
                                  "phocas"])
def test_rules_match_reference_on_alie_and_foe_rounds(name):
    ref = REFERENCES[name][0]
    entry = aggregators.entry(name)
    for n, f, x in _alie_foe_rounds(0, 8):
        if n < entry.min_workers(f):
            continue
        # eager, one leaf of width 5: the matmul kernel whose (i, j) and (j, i)
        # entries were seen to differ in the last bit
        got = np.asarray(entry.fn({"w": jnp.asarray(x)}, num_byzantine=f)["w"])
        np.testing.assert_allclose(got, ref(x.astype(np.float64), f), rtol=1e-5,
                                   atol=1e-5, err_msg=f"{name} n={n} f={f}")


def test_gram_is_exactly_symmetric():
    # Two rows that are each other's nearest neighbour share a Krum score only
    # if d2[i, j] == d2[j, i] bit for bit; a matmul does not promise that.
    from byzjax._tree import gram, pairwise_sq_distances

    for _, _, x in _alie_foe_rounds(1, 4):
        tree = {"w": jnp.asarray(x)}
        g = np.asarray(gram(tree))
        assert np.array_equal(g, g.T)
        d2 = np.asarray(pairwise_sq_distances(tree))
        assert np.array_equal(d2, d2.T)
