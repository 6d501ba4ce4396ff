"""Every registered rule, pre-aggregator and attack has the calling convention its
protocol states (``byzjax._types``): the stack as the one positional argument,
``num_byzantine`` and every hyper-parameter keyword-only, ``key=`` where the
registry says the function is random, and the output shape of its kind.

``isinstance(fn, Aggregator)`` cannot check this (a runtime-checkable protocol
accepts any callable), so the signatures are read with :mod:`inspect` and the
shapes with :func:`jax.eval_shape` (traced, nothing compiled)."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import pytest

from byzjax import aggregators, attacks

KW = inspect.Parameter.KEYWORD_ONLY
VAR_KW = inspect.Parameter.VAR_KEYWORD
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY,
              inspect.Parameter.POSITIONAL_OR_KEYWORD)
N, F = 11, 2
STACK = {"w": jax.ShapeDtypeStruct((N, 3), jnp.float32),
         "b": jax.ShapeDtypeStruct((N,), jnp.float32)}
HONEST = {"w": jax.ShapeDtypeStruct((N - F, 3), jnp.float32),
          "b": jax.ShapeDtypeStruct((N - F,), jnp.float32)}
# Hyper-parameters without a default, per function.
REQUIRED = {"bucketing": dict(bucket_size=2), "static_clipping": dict(max_norm=1.0),
            "chain": dict(steps=[("static_clipping", {"max_norm": 1.0}), ("nnm", {})]),
            "adaptive_alie": dict(aggregator="trimmed_mean"),
            "adaptive_foe": dict(aggregator="trimmed_mean"),
            "optimized": dict(aggregator="trimmed_mean", num_steps=1)}


def _check_signature(fn, first):
    params = list(inspect.signature(fn).parameters.values())
    assert params[0].name == first and params[0].kind in POSITIONAL, params[0]
    assert all(p.kind in (KW, VAR_KW) for p in params[1:]), (
        f"hyper-parameters must be keyword-only: {inspect.signature(fn)}")
    names = {p.name for p in params}
    assert "num_byzantine" in names
    return names, any(p.kind == VAR_KW for p in params)


@pytest.mark.parametrize("name", aggregators.names())
def test_aggregator_convention_and_output_shape(name):
    fn = aggregators.get(name)
    names, _ = _check_signature(fn, "updates")
    entry = aggregators.entry(name)
    assert ("key" in names) == entry.needs_key
    assert ("reference" in names) == entry.needs_reference
    kw = dict(REQUIRED.get(name, {}))
    if entry.needs_reference:  # the server's own update: one row
        kw["reference"] = {"w": jnp.ones((3,)), "b": jnp.ones(())}
    if entry.needs_key:
        kw["key"] = jax.random.key(0)
    out = jax.eval_shape(lambda x: fn(x, num_byzantine=F, **kw), STACK)
    assert {k: v.shape for k, v in out.items()} == {"w": (3,), "b": ()}


@pytest.mark.parametrize("name", aggregators.preaggregator_names())
def test_preaggregator_convention_and_output_shape(name):
    fn = aggregators.get_preaggregator(name)
    names, _ = _check_signature(fn, "updates")
    needs_key = "key" in names and inspect.signature(fn).parameters["key"].default \
        is inspect.Parameter.empty
    kw = dict(REQUIRED.get(name, {}))
    if needs_key:
        kw["key"] = jax.random.key(0)
    out = jax.eval_shape(lambda x: fn(x, num_byzantine=F, **kw), STACK)
    rows = out["w"].shape[0]
    assert out["w"].shape == (rows, 3) and out["b"].shape == (rows,) and rows >= 1


@pytest.mark.parametrize("name", attacks.names())
def test_attack_convention_and_output_shape(name):
    fn = attacks.get(name)
    names, var_kw = _check_signature(fn, "honest")
    entry = attacks.entry(name)
    assert "key" in names or var_kw  # every attack accepts key=
    kw = dict(REQUIRED.get(name, {}))
    if entry.needs_key or name in ("adaptive_alie", "adaptive_foe", "optimized"):
        kw["key"] = jax.random.key(0)
    own = {"w": jax.ShapeDtypeStruct((F, 3), jnp.float32),
           "b": jax.ShapeDtypeStruct((F,), jnp.float32)}
    if entry.needs_own or entry.data_level:  # reads the Byzantine rows' own values
        assert "byzantine_own" in names
        out = jax.eval_shape(lambda x, o: fn(x, num_byzantine=F, byzantine_own=o,
                                             **kw), HONEST, own)
    else:
        out = jax.eval_shape(lambda x: fn(x, num_byzantine=F, **kw), HONEST)
    assert {k: v.shape for k, v in out.items()} == {"w": (F, 3), "b": (F,)}
