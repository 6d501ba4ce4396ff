"""Registries that know their rules: keyword specs, checks, names, orders.

Every bad concrete keyword of every registered rule, pre-aggregator and attack
is refused with one line (the cases are generated from the registries, so a
new rule is covered by itself), as are the optimiser factories' bad values.
"""

from __future__ import annotations

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byzjax import aggregators, attacks, optim
from byzjax._registry import (
    Keyword,
    KeywordTypeError,
    Registry,
    at_least,
    greater_than,
    in_range,
)
from byzjax.aggregators import _mean
from byzjax.optim import _pipeline

REGISTRIES = (aggregators.AGGREGATORS, aggregators.PREAGGREGATORS, attacks.ATTACKS)


def bad_values(kw: Keyword):
    """Values ``kw`` must refuse (concrete ones only)."""
    if kw.kind == "bool":
        return ["yes", 1.5]
    if kw.kind == "str":
        return ["no_such_choice", 3] if kw.choices is not None else [3]
    if kw.kind == "any":
        return []
    out = ["three"]
    if kw.low is not None:
        out.append(kw.low if kw.low_open else kw.low - 1)
    if kw.high is not None:
        out.append(kw.high if kw.high_open else kw.high + 1)
    if kw.kind == "int":
        out.append(1.5)
    else:
        out.append(float("nan"))
    return out


CASES = [(reg, name, key, value)
         for reg in REGISTRIES for name in reg.names()
         for key, kw in reg.entry(name).keywords.items() for value in bad_values(kw)]


def test_every_rule_has_bad_value_cases():
    covered = {(reg.kind, name) for reg, name, _, _ in CASES}
    # Every registered rule with a checkable keyword appears.
    for reg in REGISTRIES:
        for name in reg.names():
            if any(kw.kind != "any" for kw in reg.entry(name).keywords.values()):
                assert (reg.kind, name) in covered


def _valid_call(reg, name, key, value):
    """Calls the registered function with one bad keyword and valid rest."""
    entry = reg.entry(name)
    kwargs = {k: kw.default for k, kw in entry.keywords.items() if kw.required}
    if "bucket_size" in kwargs or entry.name == "bucketing":
        kwargs["bucket_size"] = 2
    if entry.name == "static_clipping":
        kwargs["max_norm"] = 1.0
    kwargs[key] = value
    if reg is attacks.ATTACKS:
        honest = {"w": jnp.arange(8.0).reshape(4, 2)}
        if entry.needs_key:
            kwargs["key"] = jax.random.key(0)
        if entry.needs_own:
            kwargs["byzantine_own"] = {"w": jnp.ones((1, 2))}
        if entry.adaptive:
            kwargs["aggregator"] = "mean"
        return entry.fn(honest, num_byzantine=1, **kwargs)
    stack = {"w": jnp.arange(14.0).reshape(7, 2)}
    if entry.needs_key:
        kwargs["key"] = jax.random.key(0)
    return entry.fn(stack, num_byzantine=1, **kwargs)


@pytest.mark.parametrize("reg,name,key,value", CASES,
                         ids=[f"{r.kind}-{n}-{k}-{v!r}" for r, n, k, v in CASES])
def test_bad_keyword_is_refused_in_one_line(reg, name, key, value):
    with pytest.raises(ValueError) as info:
        reg.check_kwargs(name, {key: value})
    message = str(info.value)
    assert "\n" not in message
    assert repr(name) in message and key in message
    with pytest.raises(ValueError) as called:
        _valid_call(reg, name, key, value)
    assert "\n" not in str(called.value) and key in str(called.value)


def test_wrong_type_is_a_type_error_too():
    with pytest.raises(TypeError, match="bucket_size must be an integer >= 1"):
        aggregators.PREAGGREGATORS.check_kwargs("bucketing", {"bucket_size": 2.0})
    assert issubclass(KeywordTypeError, TypeError)
    assert issubclass(KeywordTypeError, ValueError)


def test_messages_name_the_rule_range_and_value():
    with pytest.raises(ValueError, match=r"^aggregator 'centered_clipping': radius "
                       r"must be a number >= 0, got -1.0$"):
        aggregators.AGGREGATORS.check_kwargs("cc", {"radius": -1.0})
    with pytest.raises(ValueError, match="did you mean 'num_neighbours'.*its "
                       "keywords: num_neighbours, squared"):
        aggregators.AGGREGATORS.check_kwargs("krum", {"num_neighbors": 2})
    with pytest.raises(ValueError, match="takes no keywords; remove 'eps'"):
        aggregators.AGGREGATORS.check_kwargs("trimmed_mean", {"eps": 1.0})
    with pytest.raises(ValueError, match="needs the keyword 'bucket_size'"):
        aggregators.PREAGGREGATORS.check_kwargs("bucketing", {})
    with pytest.raises(ValueError, match="passed by the caller"):
        aggregators.AGGREGATORS.check_kwargs("krum", {"num_byzantine": 1})


def test_good_keywords_pass_and_adaptive_attacks_take_more():
    assert aggregators.AGGREGATORS.check_kwargs(
        "centered_clipping", {"radius": 0.0, "method": "gram"}).name == \
        "centered_clipping"
    assert attacks.ATTACKS.check_kwargs("alie", {"eps": -1.5}).name == \
        "a_little_is_enough"  # ByzFL's sign convention: any finite strength
    attacks.ATTACKS.check_kwargs("adaptive_alie", {"candidates": [0.0, 1.0]})
    attacks.ATTACKS.check_kwargs("optimized", {"aggregator": "krum", "z": 1.0})
    with pytest.raises(ValueError, match="has no keyword 'aggregator'"):
        attacks.ATTACKS.check_kwargs("alie", {"aggregator": "krum"})
    # The server's rule is passed by the pipeline, not a user keyword.
    assert "aggregator" not in attacks.entry("adaptive_foe").keywords
    assert "aggregator" not in attacks.entry("optimized").keywords


def test_tracers_are_never_checked_and_a_traced_bad_radius_is_nan():
    x = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0], [100.0, 0.0]])}
    out = jax.jit(lambda r: aggregators.centered_clipping(x, radius=r))(-2.0)
    assert np.all(np.isnan(out["w"]))
    good = jax.jit(lambda r: aggregators.centered_clipping(x, radius=r))(2.0)
    np.testing.assert_allclose(good["w"], [1.0, 1.0 / 3.0], rtol=1e-6)
    clipped = jax.jit(lambda c: aggregators.static_clipping(x, max_norm=c))(-1.0)
    assert np.all(np.isnan(clipped["w"]))
    tx = optim.clip_by_worker_norm(jnp.float32(-1.0))  # a JAX array: not checked
    out, _ = tx.update(x, tx.init({"w": jnp.zeros(2)}))
    assert np.all(np.isnan(out["w"]))


def test_keyword_describe_and_bounds():
    assert Keyword("b", "float", **in_range(0, 1, high_open=True)).describe() == \
        "a number in [0, 1)"
    assert Keyword("s", "int", **at_least(1)).describe() == "an integer >= 1"
    assert Keyword("t", "float", **greater_than(0)).describe() == "a number > 0"
    assert Keyword("k", "int", optional=True).describe() == "an integer, or None"
    kw = Keyword("eps", "float")
    kw.check("attack 'x'", np.float32(2.0))
    kw.check("attack 'x'", np.array(3.0))
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite number"):
            kw.check("attack 'x'", bad)
    with pytest.raises(TypeError):
        Keyword("n", "int").check("r", True)
    with pytest.raises(ValueError, match="kind"):
        Keyword("n", "integer")


def test_register_refuses_bad_and_duplicate_names():
    reg = Registry("thing")

    def rule(x, *, num_byzantine=0, alpha: float = 1.0):
        return x

    for bad in ("", "   ", None, 3):
        with pytest.raises(ValueError, match="non-empty string"):
            reg.register(bad)
    with pytest.raises(ValueError, match="register it as 'my_rule'"):
        reg.register("My-Rule")
    reg.register("one", aliases=("uno",))(rule)
    for name, aliases in (("one", ()), ("two", ("UNO",)), ("uno", ())):
        with pytest.raises(ValueError, match="already registered"):
            reg.register(name, aliases=aliases)
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("three", aliases=("",))
    with pytest.raises(ValueError, match="not a parameter"):
        reg.register("four", keywords={"beta": at_least(0)})(rule)
    assert "four" not in reg and reg.names() == ("one",)


def test_registered_function_checks_stack_n_f_and_keywords():
    x = {"w": jnp.zeros((4, 2))}
    with pytest.raises(ValueError, match="krum needs"):
        aggregators.krum(x, num_byzantine=1)
    with pytest.raises(TypeError, match="Python int"):
        aggregators.trimmed_mean(x, num_byzantine=np.int64(1))
    with pytest.raises(TypeError, match="floating point"):
        aggregators.mean({"w": jnp.zeros((3, 2), jnp.int32)})
    with pytest.raises(ValueError, match="a_little_is_enough needs n >= f \\+ 2"):
        attacks.a_little_is_enough({"w": jnp.zeros((1, 2))}, num_byzantine=1)


def test_wrapper_keeps_signature_and_doctests():
    import inspect

    assert aggregators.mean.__wrapped__ is not aggregators.mean
    assert aggregators.mean.__globals__ is _mean.__dict__
    assert "num_byzantine" in inspect.signature(aggregators.mean).parameters
    names = {t.name.rsplit(".", 1)[-1] for t in doctest.DocTestFinder().find(_mean)}
    assert "mean" in names


def test_names_orders_and_flags_come_from_the_registry():
    for reg in REGISTRIES:
        orders = [reg.entry(n).order for n in reg.names()]
        assert len(set(orders)) == len(orders)
        for name in reg.names():
            e = reg.entry(name)
            assert e.display_name and e.short_name
    assert aggregators.AGGREGATORS.ordered()[:3] == ("mean", "trimmed_mean",
                                                      "coordinate_median")
    assert aggregators.entry("trimmed_mean").short_name == "CWTM"
    assert aggregators.entry("trimmed_mean").display_name == "trimmed mean"
    assert attacks.ATTACKS.ordered()[0] == "none"
    for name in attacks.names():
        e = attacks.entry(name)
        assert e.strength is None or e.strength in e.keywords
    assert attacks.entry("alie").strength == "eps"
    assert attacks.entry("gaussian").strength == "scale"
    assert attacks.entry("sign_flip").strength is None


def test_output_rows_of_pre_aggregators():
    bucketing = aggregators.PREAGGREGATORS.entry("bucketing")
    for n, s in ((10, 3), (9, 3), (5, 1), (4, 8)):
        out = aggregators.bucketing({"w": jnp.zeros((n, 2))}, key=jax.random.key(0),
                                    bucket_size=s)
        assert bucketing.output_rows(n, {"bucket_size": s}) == out["w"].shape[0]
    for name in ("nnm", "static_clipping"):
        assert aggregators.PREAGGREGATORS.entry(name).output_rows(9, {}) == 9


# ----------------------------------------------------------------- optimisers
OPTIM_BAD = [
    (lambda: optim.resam(num_workers=3, num_byzantine=1, beta=1.5), "beta"),
    (lambda: optim.resam(num_workers=3, num_byzantine=1, beta=math.nan), "beta"),
    (lambda: optim.resam(num_workers=3, num_byzantine=1, dampening=-0.5),
     "dampening"),
    (lambda: optim.dra(num_workers=3, num_byzantine=1, b2=1.0), "b2"),
    (lambda: optim.dra(num_workers=3, num_byzantine=1, eps=-1e-8), "eps"),
    (lambda: optim.mra(num_workers=3, num_byzantine=1, b1=-0.1), "b1"),
    (lambda: optim.stages("server_momentum", num_workers=3, num_byzantine=1,
                          beta=2.0), "beta"),
    (lambda: optim.stages("resam", num_workers=3, num_byzantine=1, bta=0.5),
     "did you mean 'beta'"),
    (lambda: optim.worker_momentum(num_workers=3, beta=-0.1), "beta"),
    (lambda: optim.worker_momentum(num_workers=3, beta=0.5, nesterov="yes"),
     "nesterov"),
    (lambda: optim.worker_adam(num_workers=3, b1=1.0), "b1"),
    (lambda: optim.worker_adam(num_workers=3, eps_root=-1.0), "eps_root"),
    (lambda: optim.server_momentum(momentum=1.0), "momentum"),
    (lambda: optim.mra_direction(eps=-1.0), "eps"),
    (lambda: optim.clip_by_worker_norm(-1.0), "max_norm"),
    (lambda: optim.dsgd(num_workers=3, num_byzantine=1, aggregator="cc",
                        aggregator_kwargs={"radius": -1.0}), "radius"),
    (lambda: optim.dsgd(num_workers=5, num_byzantine=1, preaggregator="bucketing",
                        preaggregator_kwargs={"bucket_size": 0}), "bucket_size"),
    (lambda: optim.dsgd(num_workers=3, num_byzantine=1, attack="gaussian",
                        attack_kwargs={"scale": -1.0}), "scale"),
]


@pytest.mark.parametrize("build,what", OPTIM_BAD)
def test_optimiser_factories_refuse_bad_values(build, what):
    with pytest.raises(ValueError, match=what) as info:
        build()
    assert "\n" not in str(info.value)


def test_update_with_none_state_gives_a_hint():
    for tx in (optim.resam(num_workers=3, num_byzantine=1, beta=0.5),
               optim.dsgd(num_workers=3, num_byzantine=1),
               optim.worker_momentum(num_workers=3, beta=0.5),
               optim.worker_adam(num_workers=3)):
        with pytest.raises(TypeError, match="state=None; pass tx.init") as info:
            tx.update({"w": jnp.ones((3, 2))}, None)
        assert "\n" not in str(info.value)
    tx = optax.chain(optim.resam(num_workers=3, num_byzantine=1, beta=0.5),
                     optax.sgd(0.1))
    params = {"w": jnp.zeros(2)}
    u, _ = tx.update({"w": jnp.ones((3, 2))}, tx.init(params), params)
    np.testing.assert_allclose(u["w"], [-0.05, -0.05], rtol=1e-6)


def test_optimiser_entries_and_live_names():
    assert [n for n in optim.optimizer_names()
            if optim.optimizer_entry(n).liubei] == ["dsgd", "resam"]
    assert optim.optimizer_entry("resam").display_name == \
        "momentum at the workers (RESAM)"
    assert set(optim.optimizer_entry("resam").keywords) == {
        "beta", "dampening", "nesterov", "initial_momentum", "bias_correction"}
    with pytest.raises(ValueError, match="already registered"):
        optim.register_optimizer("resam")
    with pytest.raises(ValueError, match="non-empty"):
        optim.register_optimizer("")
    try:
        @optim.register_optimizer("late_sgd", order=-1)
        def _late(*, num_workers: int):
            return None, ()

        assert optim.optimizer_names()[0] == "late_sgd"
        s = optim.stages("late_sgd", num_workers=3, num_byzantine=1)
        assert len(s) == 4
    finally:
        _pipeline.OPTIMIZERS.pop("late_sgd", None)
    assert "late_sgd" not in optim.optimizer_names()
