"""A sweep's compiled programs (``byzjax.sim._compile``): groups differing only
in the data split share one compilation, compiling the next group ahead in a
background thread changes no record, and a program that fails to compile
ahead fails in the foreground as it would without compiling ahead.

One sweep of 4 groups (2 aggregators x 2 ``similarity_gamma``, tiny runs) is
run twice, sequentially and compiling ahead, in a module-scope fixture."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from byzjax import aggregators, sim
from byzjax.sim import _compile, _schedule
from tests.helpers import tiny_config

#: Record fields that say how long it took or what code made it.
TIMING = {"group_wall_time_s", "group_first_chunk_s", "code", "checksum"}


def _sweep(aggregators_=("mean", "trimmed_mean")):
    s = ml_collections.ConfigDict()
    s.name = "compile"
    s.base = tiny_config(model="logreg_mnist", split="gamma_similarity",
                         attack="sign_flip", num_workers=5, num_byzantine=1,
                         num_rounds=1, eval_every=1, eval_size=100)
    s.grid = {"aggregator": list(aggregators_), "similarity_gamma": [0.0, 1.0]}
    s.seeds = [0]
    return s


class _Counting(_compile.ProgramCache):
    """The sweep's cache, kept for the test to read."""

    made: list[_compile.ProgramCache] = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.from_background = 0
        _Counting.made.append(self)

    def compiled(self, job):
        pending = self._pending.get(job.key())
        group = super().compiled(job)
        self.from_background += pending is not None and group is pending.result
        return group


def _run(tmp_path, name, monkeypatch, *, ahead, sweep=None):
    _Counting.made = []
    monkeypatch.setattr(_schedule, "ProgramCache", _Counting)
    outdir = str(tmp_path / name)
    sim.run_sweep(sweep or _sweep(), outdir, progress=False, log=lambda *a: None,
                  compile_ahead=ahead)
    records = {r["run_id"]: r for r in sim.load_records(outdir + "/runs").values()}
    return records, _Counting.made[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compile")
    with pytest.MonkeyPatch.context() as mp:
        seq = _run(tmp, "seq", mp, ahead=0)
        ahead = _run(tmp, "ahead", mp, ahead=1)
    return seq, ahead


def test_groups_differing_only_in_the_split_share_one_compilation(runs):
    (records, cache), _ = runs
    assert len(records) == 4  # 4 groups x 1 seed
    # init and chunk of each aggregator (both aggregators' init may be one
    # module), not of each of the 4 groups
    assert 3 <= cache.compilations <= 4
    # the split reaches the program: the gammas' curves differ
    by = {}
    for r in records.values():
        c = r["config"]
        by[(c["aggregator"], c["similarity_gamma"], r["seed"])] = r
    assert (by["mean", 0.0, 0]["final_params_sha256"]
            != by["mean", 1.0, 0]["final_params_sha256"])


def test_compiling_ahead_changes_no_record(runs):
    (seq, _), (ahead, cache) = runs
    assert cache.from_background >= 1  # a group's programs came from the thread
    assert seq.keys() == ahead.keys()
    for rid, r in seq.items():
        assert ({k: v for k, v in r.items() if k not in TIMING}
                == {k: v for k, v in ahead[rid].items() if k not in TIMING})


def test_padded_shards_sample_the_same_indices():
    idx = jnp.array([[3, 4, 5], [6, 7, 7]])
    counts = jnp.array([3, 0])  # (a worker without data reads its last entry)
    data = sim.SimData(jnp.zeros((20, 1, 1, 1), jnp.uint8), jnp.zeros(20, jnp.int32),
                       None, None, idx, counts, jnp.zeros(1), jnp.ones(1), 2)
    padded, _ = _compile.program_inputs(data)
    assert padded.worker_indices.shape == (2, 20)
    from byzjax.sim._kit import sample_batch_indices
    for k in range(3):
        key = jax.random.key(k)
        np.testing.assert_array_equal(
            sample_batch_indices(key, idx, counts, 6),
            sample_batch_indices(key, padded.worker_indices, counts, 6))


@contextlib.contextmanager
def _failing_rule(traced: list):
    def toy_fails_on_models(updates, *, num_byzantine: int):
        """The mean, refused on any leaf but the stand-in rows ``[n, 1]`` of
        the pipeline check: the program's trace fails, not the check."""
        leaves = jax.tree_util.tree_leaves(updates)
        if any(x.shape[1:] != (1,) for x in leaves):
            traced.append(1)
            raise ValueError("toy_fails_on_models: boom")
        return jax.tree_util.tree_map(lambda x: x.mean(0), updates)

    aggregators.AGGREGATORS.register("toy_fails_on_models")(toy_fails_on_models)
    try:
        yield
    finally:
        aggregators.AGGREGATORS.unregister("toy_fails_on_models")


def test_a_later_program_failing_ahead_fails_in_the_foreground(tmp_path, monkeypatch):
    traced: list = []
    with _failing_rule(traced):
        sweep = _sweep(("mean", "toy_fails_on_models"))
        sweep.grid["similarity_gamma"] = [0.0]
        with pytest.raises(ValueError, match="^toy_fails_on_models: boom"):
            _run(tmp_path, "fails", monkeypatch, ahead=1, sweep=sweep)
    # tried in the background while the first group ran, then again in the
    # foreground, which raised; the first group's runs are written
    assert len(traced) == 2
    done = sim.load_records(str(tmp_path / "fails" / "runs"))
    assert {r["config"]["aggregator"] for r in done.values()} == {"mean"}


def test_compile_ahead_must_not_be_negative(capsys):
    from byzjax import cli

    assert cli.main(["sweep", "no_such_sweep.py", "--compile-ahead", "-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "byzjax sweep: error: --compile-ahead must be >= 0, got -1")


class _FakeLowered:
    """A lowered module whose ``compile`` takes a while and is counted."""

    in_tree = out_tree = "tree"

    def __init__(self, text, calls, fail=False):
        self.text, self.calls, self.fail = text, calls, fail

    def as_text(self):
        return self.text

    def compile(self):
        import time

        self.calls.append(self.text)
        time.sleep(0.3)
        if self.fail:
            raise RuntimeError("XLA failed")
        return object()


def test_one_module_compiled_by_two_threads_at_once_is_compiled_once():
    """The foreground and a group compiled ahead share ``init``: the second
    waits for the first's executable instead of compiling it again; a
    different module compiles in parallel; a failed compilation is compiled
    again (and fails) by the thread that waited for it."""
    from concurrent.futures import ThreadPoolExecutor

    cache, calls = _compile.ProgramCache(ahead=1), []
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(cache._compile, [_FakeLowered("a", calls),
                                              _FakeLowered("a", calls),
                                              _FakeLowered("b", calls)]))
    assert sorted(calls) == ["a", "b"] and cache.compilations == 2
    assert outs[0] is outs[1] and outs[2] is not outs[0]
    calls.clear()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(cache._compile, _FakeLowered("c", calls, fail=True))
                   for _ in range(2)]
        errors = [f.exception() for f in futures]
    assert all(isinstance(e, RuntimeError) for e in errors) and calls == ["c", "c"]
    assert not cache._compiling
