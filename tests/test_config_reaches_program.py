"""Every value a user sets reaches the program, or is refused, or is reported as
unread and left out of the run id: never a run that silently ignores it.

Covers sweeps whose float axes must change results (every float field), the
attack strength (every attack with one), fields a run does not read, sweep-file
mistakes that would run nothing, and programs too large for memory.
"""

from __future__ import annotations

import textwrap
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from byzjax import attacks, cli, sim
from byzjax.sim import _grid, _run, _schedule
from tests.helpers import TinyMLP, make_data, tiny_config


def _sha(config, points):
    """final_params_sha256 of one seed per point, in one program."""
    data = make_data(config.num_workers)
    recs = sim.run_group(config, seeds=[0], hparam_points=points, data=data,
                         model=TinyMLP(), progress=False)
    return [r["final_params_sha256"] for r in recs]


#: For each float field a config that reads it, and two values to sweep. The
#: sentinel fields start at their off value, as a base config leaves them.
FLOAT_CASES = {
    "learning_rate": ({}, (0.1, 0.2)),
    "beta": ({}, (0.5, 0.9)),
    "b1": ({"optimizer": "dra"}, (0.5, 0.9)),
    "b2": ({"optimizer": "dra"}, (0.9, 0.999)),
    "eps": ({"optimizer": "dra"}, (1e-8, 1e-1)),
    "weight_decay": ({}, (0.0, 0.1)),
    "clip_norm": ({"clip_norm": 0.0}, (0.05, 0.5)),
    "attack_eps": ({"attack_eps": -1.0}, (0.5, 1.0)),
}


def test_every_float_field_has_a_case():
    assert set(FLOAT_CASES) == set(sim.FLOAT_HPARAMS)


@pytest.mark.parametrize("field", sorted(FLOAT_CASES))
def test_a_swept_float_field_changes_the_result(field):
    overrides, values = FLOAT_CASES[field]
    config = tiny_config(**overrides)
    a, b = _sha(config, [{field: v} for v in values])
    assert a != b, f"sweeping {field} over {values} computed the same run twice"


@pytest.mark.parametrize("field,optimizer", [("b1", "dsgd"), ("b2", "resam"),
                                             ("eps", "server_momentum"),
                                             ("beta", "dra")])
def test_a_point_setting_an_unread_field_is_refused(field, optimizer):
    config = tiny_config(optimizer=optimizer)
    with pytest.raises(sim.ConfigError, match=f"{field}.*does not read"):
        sim.run_group(config, seeds=[0], hparam_points=[{field: 0.5}],
                      data=make_data(7), model=TinyMLP(), progress=False)


@pytest.mark.parametrize("field,values", [("attack_eps", (-1.0, 1.0)),
                                          ("clip_norm", (0.0, 1.0))])
def test_points_mixing_a_stage_on_and_off_are_refused(field, values):
    with pytest.raises(sim.ConfigError, match="mix"):
        sim.run_group(tiny_config(), seeds=[0],
                      hparam_points=[{field: v} for v in values],
                      data=make_data(7), model=TinyMLP(), progress=False)


def test_points_turning_clipping_off_compile_it_out():
    # base clipping 2.0, every point clip_norm=0: no clipping (not radius 0)
    off = _sha(tiny_config(clip_norm=2.0), [{"clip_norm": 0.0}])
    none = _sha(tiny_config(clip_norm=0.0), [{}])
    assert off == none


# ------------------------------------------------------------ attack strength
def _strength_attacks():
    out = []
    for name in attacks.names():
        if sim._validate.attack_strength(name) is not None:
            out.append(name)
    return out


def test_some_attacks_have_a_strength():
    assert {"a_little_is_enough", "fall_of_empires"} <= set(_strength_attacks())


@pytest.mark.parametrize("attack", _strength_attacks())
def test_attack_eps_reaches_every_attack_with_a_strength(attack):
    from byzjax.sim import _kit

    config = tiny_config(attack=attack, attack_eps=0.5)
    spec = sim.resolve(config)
    honest = {"w": jax.random.normal(jax.random.key(0), (7, 3))}
    outs = []
    for eps in (0.5, 2.0):
        hp = dict(spec.hparams, attack_eps=jnp.float32(eps))
        stages = _kit.stages_for(spec, hp, jax.random.key(1))
        state = stages.attack.init({"w": jnp.zeros(3)})
        sent, _ = stages.attack.update(honest, state, {"w": jnp.zeros(3)})
        outs.append(sent["w"][-2:])
    assert not jnp.allclose(outs[0], outs[1]), f"{attack}: attack_eps ignored"


@pytest.mark.parametrize("attack", ["sign_flip", "label_flip", "none", "inf"])
def test_attack_eps_with_an_attack_without_strength_is_reported(attack):
    config = tiny_config(attack=attack, attack_eps=1.0)
    with pytest.warns(sim.IgnoredFieldWarning, match="attack_eps"):
        spec = sim.resolve(config)
    assert spec.attack_eps is None and spec.config["attack_eps"] == -1.0


def test_attack_eps_and_the_attacks_own_keyword_both_set_is_refused():
    config = tiny_config(attack="alie", attack_eps=1.0)
    config.attack_kwargs = ml_collections.ConfigDict({"eps": 2.0})
    with pytest.raises(sim.ConfigError, match="both set the strength"):
        sim.resolve(config)


# --------------------------------------------------------- unread fields
UNREAD = [
    (dict(optimizer="dsgd", b1=0.5), "b1"),
    (dict(optimizer="resam", mra_safeguard="clamp"), "mra_safeguard"),
    (dict(preaggregator_kwargs={"bucket_size": 3}), "preaggregator_kwargs"),
    (dict(attack="label_flip", attack_eps=1.0), "attack_eps"),
    (dict(server_quorum=3), "server_quorum"),
    (dict(scatter_period=3), "scatter_period"),
    (dict(lr_decay_every=7), "lr_decay_every"),
    (dict(dirichlet_alpha=0.7), "dirichlet_alpha"),
    (dict(num_devices=1), "num_devices"),
    (dict(server_data_size=100), "server_data_size"),  # only FLTrust reads it
]


@pytest.mark.parametrize("overrides,field", UNREAD)
def test_an_unread_field_is_reported_and_left_out_of_the_run_id(overrides, field):
    config = tiny_config(**overrides)
    plain = tiny_config(**{k: v for k, v in overrides.items() if k != field})
    with pytest.warns(sim.IgnoredFieldWarning, match=field):
        spec = sim.resolve(config)
    assert field in spec.ignored
    assert sim.run_id(spec, 0, spec.hparams) == sim.run_id(
        sim.resolve(plain), 0, sim.resolve(plain).hparams)


def test_num_devices_above_the_devices_present_is_refused():
    config = tiny_config(shard="runs", num_devices=jax.device_count() + 1)
    with pytest.raises(sim.ConfigError, match="num_devices"):
        sim.check_environment(sim.resolve(config))


def _sweep_file(tmp_path, body: str) -> str:
    path = tmp_path / "sweep.py"
    path.write_text(textwrap.dedent("""\
        from tests.helpers import tiny_config
        def get_sweep():
            return dict(
                name="s", base=tiny_config(),
        """) + textwrap.indent(textwrap.dedent(body), " " * 8) + "    )\n")
    return str(path)


def test_a_sweep_over_an_unread_field_runs_once(tmp_path):
    path = _sweep_file(tmp_path, """\
        grid={"optimizer": ["dsgd", "resam"]},
        hparams={"b1": [0.5, 0.7, 0.9]},
        seeds=[0, 1],
        """)
    with pytest.warns(sim.IgnoredFieldWarning, match="b1"):
        groups = sim.validate_sweep(sim.load_sweep(path))
    # neither dsgd nor resam reads b1: each runs once per seed
    assert [len(g.run_ids()) for g in groups] == [2, 2]


def test_groups_that_are_the_same_runs_run_once(tmp_path):
    path = _sweep_file(tmp_path, """\
        grid={"optimizer": ["dsgd"], "nesterov": [False, True]},
        """)
    with pytest.warns(sim.IgnoredFieldWarning, match="same runs"):
        groups = sim.validate_sweep(sim.load_sweep(path))
    assert len(groups) == 1


# ------------------------------------------------------ sweep-file mistakes
SWEEP_MISTAKES = [
    ('grid={"aggregator": []},', "grid axis 'aggregator' is empty", "grid"),
    ('hparams={"beta": []},', "hparams axis 'beta' is empty", "hparams"),
    ('grid={"aggregator": ["mean"]}, exclude=[{"agregator": "mean"}],',
     "exclude entry 0: unknown config field 'agregator'", "exclude"),
    ('grid={"aggregator": ["mean"]}, exclude=[{}],',
     "exclude entry 0 is empty", "exclude"),
    ('grid={"aggregator": ["mean"]}, overrides=[({"atack": "alie"}, '
     '{"beta": 0.5})],', "overrides entry 0 (match): unknown config field",
     "overrides"),
    ('grid={"aggregator": ["mean", "mean"]},', "repeats a value", "grid"),
]


@pytest.mark.parametrize("body,message,word", SWEEP_MISTAKES)
def test_a_sweep_file_mistake_is_one_line_naming_file_and_line(
        tmp_path, capsys, body, message, word):
    path = _sweep_file(tmp_path, body)
    assert cli.main(["sweep", path, "--outdir", str(tmp_path / "out"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    line = next(i for i, text in enumerate(open(path), 1) if word in text)
    assert f"{path}:{line}:" in err


@pytest.mark.parametrize("name,message", [(7, "must be a non-empty string"),
                                          ("../escape", "plain folder name"),
                                          ("a/b", "plain folder name")])
def test_a_sweep_name_that_is_not_a_folder_name_is_refused(tmp_path, name,
                                                           message):
    sweep = ml_collections.ConfigDict({"name": name, "base": tiny_config()})
    with pytest.raises(sim.ConfigError, match=message):
        sim.validate_sweep(sweep)


def test_a_rerun_sweep_names_the_records_it_no_longer_uses(tmp_path):
    outdir = str(tmp_path / "out")
    sweep = ml_collections.ConfigDict({"name": "s", "base": tiny_config(),
                                       "seeds": [0]})
    _schedule.run_sweep(sweep, outdir, progress=False, log=lambda *a: None)
    sweep.base.learning_rate = 0.2  # the file changed
    lines = []
    _schedule.run_sweep(sweep, outdir, progress=False, log=lines.append)
    assert any("1 record(s)" in x and "not runs of this sweep" in x
               and "file changed" in x for x in lines), lines


# ------------------------------------------------------------------ memory
def test_a_program_larger_than_memory_is_refused_before_it_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(_run, "available_memory", lambda: (10_000, "test limit"))
    with pytest.raises(sim.ConfigError, match="GiB.*test limit"):
        sim.run_group(tiny_config(), seeds=[0], data=make_data(7),
                      model=TinyMLP(), progress=False,
                      on_chunk=lambda *a: calls.append(a))
    assert not calls  # no chunk ran


def test_check_memory_passes_a_program_that_fits():
    compiled = jax.jit(lambda x: x * 2).lower(jnp.ones(8)).compile()
    _run.check_memory(compiled, num_runs=1, limit=1 << 30)
    with pytest.raises(sim.ConfigError, match="needs about"):
        _run.check_memory(compiled, num_runs=1, limit=1)


def test_validate_sweep_is_quiet_about_a_sweep_that_reads_everything(tmp_path):
    path = _sweep_file(tmp_path, """\
        grid={"aggregator": ["mean", "trimmed_mean"]},
        hparams={"beta": [0.5, 0.9]},
        """)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = _grid.validate_sweep(sim.load_sweep(path))
    assert [len(g.points) for g in groups] == [2, 2]
