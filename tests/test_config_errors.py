"""Every bad input a new user might give fails before any data is loaded or any
program is compiled, with one line saying what to change (no traceback)."""

from __future__ import annotations

import os
import textwrap

import pytest

from byzjax import cli, sim
from byzjax.sim import _compile, _run, _schedule
from byzjax.sim import _errors as _config


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Loading data or building a program fails the test: errors come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("data loaded or program built before the error")

    for module in (_run, _schedule):
        monkeypatch.setattr(module, "load_sim_data", forbidden)
    monkeypatch.setattr(_run, "make_program", forbidden)
    monkeypatch.setattr(_compile, "make_program", forbidden)
    monkeypatch.setattr("byzjax.data.load_train_test", forbidden)
    monkeypatch.delenv("BYZJAX_DEBUG", raising=False)


def _error_line(capsys, argv) -> str:
    """Runs the CLI in-process; returns its one-line error (exit status 2)."""
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse's own errors (usage + one error line)
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    last = lines[-1]
    if not last.startswith("byzjax train: error: argument"):  # argparse adds usage
        assert len(lines) == 1, err
    return last


TRAIN = ["train", "--dataset", "synthetic", "--quiet", "--no-plot"]

# (extra arguments, what the one line must say)
TRAIN_CASES = [
    (["--rounds", "0"], "num_rounds must be an integer >= 1, got 0"),
    (["--rounds", "-5"], "num_rounds must be an integer >= 1, got -5"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["--batch-size", "-2"], "batch_size must be an integer >= 1"),
    (["--rounds", "7", "--eval-every", "2"], "e.g. num_rounds=8"),
    (["--set", "preaggregator=bucketing", "--set",
      "preaggregator_kwargs.bucket_size=0"],
     "pre-aggregator 'bucketing': bucket_size must be an integer >= 1, got 0"),
    (["--set", "preaggregator=static_clipping"],
     "pre-aggregator 'static_clipping' needs the keyword 'max_norm'"),
    (["--set", "eval_size=-3"], "eval_size must be an integer >= 0"),
    (["--split", "dirichlet", "--set", "dirichlet_alpha=0"],
     "dirichlet_alpha must be a number > 0, got 0.0"),
    (["--set", "dirichlet_alpha=-1"], "dirichlet_alpha must be a number > 0"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; known: cifar10"),
    (["--dataset", "mnsit"], "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
    (["--model", "wide_resnt"],
     "unknown model 'wide_resnt' (did you mean 'wide_resnet'?)"),
    (["--set", "beta=abc"], "beta must be a number, got 'abc'"),
    (["--set", "num_workers=seven"], "num_workers must be an integer, got 'seven'"),
    (["--set", "num_workers=7.5"], "num_workers must be an integer, got 7.5"),
    (["--set", "clip_norm=big"], "clip_norm must be a number, got 'big'"),
    (["--seeds", "a,b"], "--seeds: expected comma-separated integers"),
    (["--seeds", "0,0"], "--seeds: expected distinct integers >= 0"),
    (["--set", "aggregator_kwargs.foo=3"],
     "aggregator_kwargs: aggregator 'trimmed_mean' takes no keywords; remove "
     "'foo'"),
    (["--aggregator", "krum", "--num-workers", "15", "--num-byzantine", "2",
      "--set", "aggregator_kwargs.num_neighbors=3"],
     "aggregator 'krum' has no keyword 'num_neighbors' (did you mean "
     "'num_neighbours'?); its keywords: num_neighbours, squared"),
    (["--set", "attack_kwargs.epsilon=3"],
     "attack 'a_little_is_enough' has no keyword 'epsilon' (did you mean "
     "'eps'?)"),
    (["--set", "nothere.foo=3"], "unknown config field 'nothere'"),
    (["--set", "num_wrkers=9"],
     "unknown config field 'num_wrkers' (did you mean 'num_workers'?)"),
    (["--set", "beta"], "--set expects key=value, got 'beta'"),
    (["--lr", "0"], "learning_rate must be a finite number > 0, got 0.0"),
    (["--lr", "-0.1"], "learning_rate must be a finite number > 0"),
    (["--set", "learning_rate=nan"], "learning_rate must be a finite number"),
    (["--beta", "1.0"], "beta must be in [0, 1), got 1.0"),
    (["--beta", "-0.1"], "beta must be in [0, 1)"),
    (["--set", "b1=1.5"], "b1 must be in [0, 1)"),
    (["--set", "b2=1"], "b2 must be in [0, 1), got 1.0"),
    (["--set", "dampening=1.5"], "dampening must be in [0, 1], or -1"),
    (["--set", "dampening=-0.5"], "dampening must be in [0, 1], or -1"),
    (["--set", "clip_norm=-1"], "clip_norm must be a clipping radius >= 0"),
    (["--set", "weight_decay=-1e-4"], "weight_decay must be a number >= 0"),
    (["--set", "checkpoint_every=-1"], "checkpoint_every must be an integer >= 0"),
    (["--aggregator", "trimed_mean"],
     "unknown aggregator 'trimed_mean' (did you mean 'trimmed_mean'?)"),
    (["--set", "server_protocol=guanyu", "--set", "num_servers=5", "--set",
      "num_byzantine_servers=1"],
     "guanyu needs num_servers >= 3 num_byzantine_servers + 3 = 6, got "
     "num_servers=5"),
    (["--set", "server_protocol=liubi"],
     "unknown server_protocol 'liubi' (did you mean 'liubei'?)"),
    (["--attack", "sign_flp"], "unknown attack 'sign_flp' (did you mean 'sign_flip'"),
    (["--optimizer", "resma"], "unknown optimizer 'resma' (did you mean 'resam'?)"),
    (["--split", "dirichlett"], "unknown split 'dirichlett' (did you mean "
     "'dirichlet'?)"),
    (["--preaggregator", "nmm"], "unknown pre-aggregator 'nmm' (did you mean 'nnm'?)"),
    (["--num-workers", "7", "--num-byzantine", "3", "--aggregator", "krum"],
     "num_workers=7"),
    (["--num-workers", "6", "--num-byzantine", "3"],
     "need 0 <= num_byzantine < num_workers / 2"),
    (["--set", "num_attackers=20"], "num_attackers must be in [0, 15) or -1"),
    (["--set", "data_source=tfds"],
     "dataset 'synthetic' is not in tensorflow-datasets"),
    (["--set", "run_batching=pmap"], "unknown run_batching 'pmap'"),
    (["--aggregator", "fltrust"],
     "aggregator fltrust needs server data: set server_data_size > 0"),
    (["--set", "server_data_size=-5"], "server_data_size must be an integer >= 0"),
    (["--aggregator", "fltrust", "--set", "server_data_size=50", "--optimizer",
      "mra"], "optimizer 'mra' sends moment pairs"),
    (["--aggregator", "fltrust", "--set", "server_data_size=50", "--set",
      "server_protocol=liubei", "--set", "num_servers=4"],
     "aggregator fltrust needs one correct server"),
    (["--aggregator", "fltrust", "--set", "server_data_size=50", "--attack",
      "adaptive_alie"], "which the attack does not see"),
]


@pytest.mark.parametrize("extra,expected", TRAIN_CASES,
                         ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_bad_train_input_is_one_clear_line(capsys, tmp_path, extra, expected):
    line = _error_line(capsys, TRAIN + ["--outdir", str(tmp_path / "o")] + extra)
    assert expected in line, line
    assert not (tmp_path / "o" / "runs").exists()


def test_debug_flag_and_environment_show_the_traceback(capsys, tmp_path,
                                                       monkeypatch):
    argv = TRAIN + ["--outdir", str(tmp_path), "--rounds", "0"]
    with pytest.raises(_config.ConfigError, match="num_rounds"):
        cli.main(argv + ["--debug"])
    monkeypatch.setenv("BYZJAX_DEBUG", "1")
    with pytest.raises(_config.ConfigError, match="num_rounds"):
        cli.main(argv)


# --------------------------------------------------------------- config files
CONFIG_FILES = [
    ("def get_config(:\n    pass\n", "bad.py:1: syntax error"),
    ("def get_config():\n    return {'dataset': 'synthetic'}\n",
     "bad.py: get_config() must return an ml_collections.ConfigDict"),
    ("import ml_collections\n\ndef get_config():\n    c = ml_collections."
     "ConfigDict()\n    c.dataset = 'synthetic'\n    return c\n",
     "bad.py: config lacks fields"),
    ("from byzjax.sim import get_config as base\n\n\ndef get_config():\n"
     "    c = base()\n    c.num_wrkers = 9\n    return c\n",
     "bad.py:6: unknown config field 'num_wrkers' (did you mean 'num_workers'?)"),
    ("from byzjax.sim import get_config as base\n\n\ndef get_config():\n"
     "    c = base()\n    c.dataset = 'synthetic'\n    c.beta = 1.5\n    return c\n",
     "bad.py:7: beta must be in [0, 1), got 1.5"),
    ("def get_config():\n    x = 1\n    return x / 0\n",
     "bad.py:3: get_config() raised ZeroDivisionError"),
    ("import not_a_module_anywhere\n", "bad.py:1: ModuleNotFoundError"),
    ("X = 1\n", "bad.py: defines no get_config() function"),
]


@pytest.mark.parametrize("source,expected", CONFIG_FILES,
                         ids=[e.split(": ", 1)[1][:40] for _, e in CONFIG_FILES])
def test_bad_config_file_names_file_and_line(capsys, tmp_path, source, expected):
    path = tmp_path / "bad.py"
    path.write_text(source)
    line = _error_line(capsys, ["train", "--config", str(path), "--outdir",
                                str(tmp_path / "o"), "--quiet"])
    assert expected in line, line


def test_missing_config_file(capsys, tmp_path):
    line = _error_line(capsys, ["train", "--config", str(tmp_path / "nope.py"),
                                "--outdir", str(tmp_path)])
    assert "nope.py: no such file" in line


# ---------------------------------------------------------------- sweep files
GOOD_SWEEP = textwrap.dedent("""
    import ml_collections
    from byzjax.sim import get_config

    def get_sweep():
        base = get_config()
        base.dataset = "synthetic"
        base.num_workers = 7
        base.num_byzantine = 2
        base.num_rounds = 4
        base.eval_every = 2
        s = ml_collections.ConfigDict()
        s.name = "t"
        s.base = base
        s.grid = {"aggregator": ["mean", "trimmed_mean"]}
        s.seeds = [0]
        return s
""")

SWEEP_CASES = [
    ("def get_sweep(:\n", [], "bad.py:1: syntax error"),
    ("X = 1\n", [], "bad.py: defines no get_sweep() function"),
    ("def get_sweep():\n    return {'name': 'x', 'grid': {}}\n", [],
     "bad.py: get_sweep() has no 'base'"),
    ("def get_sweep():\n    return {'name': 'x', 'gird': {}}\n", [],
     "unknown sweep field 'gird' (did you mean 'grid'?)"),
    (GOOD_SWEEP, ["--set", "base.num_rounds"], "--set expects key=value"),
    (GOOD_SWEEP, ["--set", "base.num_wrkers=9"],
     "unknown config field 'num_wrkers' (did you mean 'num_workers'?)"),
    (GOOD_SWEEP, ["--set", "base.beta=abc"], "beta must be a number, got 'abc'"),
    (GOOD_SWEEP, ["--set", "sedes=[1]"], "unknown sweep field 'sedes' (did you "
     "mean 'seeds'?)"),
    (GOOD_SWEEP, ["--set", "seeds=['a']"], "seeds must be a non-empty list"),
    (GOOD_SWEEP, ["--set", "grid.attack=alie"], "--set grid.attack: an axis takes "
     "a non-empty list of values"),
    (GOOD_SWEEP, ["--set", "grid.atack=['alie']"], "unknown config field (grid "
     "axis) 'atack' (did you mean 'attack'?)"),
    (GOOD_SWEEP, ["--set", "grid.aggregator=['trimed_mean']"],
     "unknown aggregator 'trimed_mean'"),
    (GOOD_SWEEP, ["--set", "name.x=1"], "--set name.x: only base, grid and "
     "hparams have sub-fields"),
    (GOOD_SWEEP.replace('"trimmed_mean"]', '"trimed_mean"]'), [],
     "group aggregator=trimed_mean: unknown aggregator 'trimed_mean' (did you mean "
     "'trimmed_mean'?)"),
    (GOOD_SWEEP.replace('{"aggregator"', '{"agregator"'), [],
     "bad.py:15: unknown config field (grid axis) 'agregator' (did you mean "
     "'aggregator'?)"),
    (GOOD_SWEEP.replace("s.seeds = [0]", "s.seeds = [0]\n    s.hparams = "
                        "{'beta': [0.5, 1.5]}"), [],
     "group aggregator=mean: beta must be in [0, 1), got 1.5"),
    (GOOD_SWEEP.replace("base.num_rounds = 4", "base.num_rounds = 0"), [],
     "bad.py:10: group aggregator=mean: num_rounds must be an integer >= 1"),
]


@pytest.mark.parametrize("source,extra,expected", SWEEP_CASES,
                         ids=[e[:40] for _, _, e in SWEEP_CASES])
def test_bad_sweep_file_or_override_is_one_clear_line(capsys, tmp_path, source,
                                                      extra, expected):
    path = tmp_path / "bad.py"
    path.write_text(source)
    line = _error_line(capsys, ["sweep", str(path), "--outdir", str(tmp_path / "o"),
                                "--quiet", "--no-report"] + extra)
    assert expected in line, line
    assert not (tmp_path / "o" / "runs").exists()


# ------------------------------------------------------ output folder, report
def test_output_folder_that_is_a_file_fails_before_training(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    line = _error_line(capsys, TRAIN + ["--outdir", str(target)])
    assert "is a file; choose another --outdir" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write anywhere")
def test_unwritable_output_folder_fails_before_training(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = _error_line(capsys, TRAIN + ["--outdir", str(locked / "out")])
    finally:
        locked.chmod(0o700)
    assert "cannot write to output folder" in line


def test_output_folder_under_a_file_fails_before_training(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    line = _error_line(capsys, TRAIN + ["--outdir", str(tmp_path / "f" / "out")])
    assert "cannot write to output folder" in line


def test_report_on_missing_or_empty_folder(capsys, tmp_path):
    line = _error_line(capsys, ["report", str(tmp_path / "nothing")])
    assert "no results folder" in line
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    line = _error_line(capsys, ["report", str(tmp_path / "empty")])
    assert "no run records in" in line and "run byzjax train or sweep" in line


# ------------------------------------------------------------------ the API
def test_validate_is_the_one_check_and_raises_config_error():
    c = sim.get_config()
    c.num_wrkers = 9
    with pytest.raises(_config.ConfigError, match="did you mean 'num_workers'"):
        sim.validate(c)
    c = sim.get_config()
    c.aggregator_kwargs.foo = 1
    with pytest.raises(_config.ConfigError, match="takes no keyword"):
        sim.validate(c)
    with pytest.raises(_config.ConfigError, match="ConfigDict"):
        sim.validate(dict(sim.get_config()))
    sim.validate(sim.get_config())  # the default is valid


def test_run_group_checks_every_hyper_parameter_point():
    c = sim.get_config()
    c.dataset = "synthetic"
    with pytest.raises(_config.ConfigError, match="learning_rate must be"):
        sim.run_group(c, seeds=[0], hparam_points=[{"learning_rate": -1.0}],
                      progress=False)


def test_result_neutral_fields_do_not_change_run_ids():
    a, b = sim.get_config(), sim.get_config()
    b.checkpoint_every = 3
    assert sim.run_id(a, 0, sim.hparams_of(a)) == sim.run_id(b, 0, sim.hparams_of(b))
    assert sim.static_key(a) == sim.static_key(b)
    b.num_rounds = 10
    assert sim.run_id(a, 0, sim.hparams_of(a)) != sim.run_id(b, 0, sim.hparams_of(b))


def test_every_config_error_is_a_value_error():
    assert issubclass(_config.ConfigError, ValueError)


def test_batch_larger_than_a_worker_share_is_a_warning(monkeypatch):
    monkeypatch.undo()  # this test loads (synthetic) data
    c = sim.get_config()
    c.dataset = "synthetic"
    c.num_workers, c.num_byzantine, c.batch_size = 15, 5, 200
    with pytest.warns(UserWarning, match="larger than the smallest worker's share"):
        sim.load_sim_data(c)


def test_eval_size_larger_than_the_test_set_is_a_config_error(monkeypatch):
    monkeypatch.undo()  # known only once the (synthetic) test set is loaded
    c = sim.get_config()
    c.dataset = "synthetic"
    c.eval_size = 501  # the synthetic test set has 500 images
    with pytest.raises(_config.ConfigError, match="larger than the test set"):
        sim.load_sim_data(c)
