"""One ByzFL training replayed step by step in byzjax (a benchmark script, not
part of the package).

ByzFL 0.0.11 runs one training of a benchmark ``config.json`` (its first
combination with data-distribution seed 0 and training seed 0) in its own
virtual environment, recording the initial model it sends to the clients,
every batch each client draws (the normalised images and labels), its test
accuracy at each evaluation and its final model. byzjax then replays the same
steps from the same start on the same batches with the simulator's own stages
(``byzjax.sim._kit.stages_for`` of the importer's run: the clients' momentum,
the pre-aggregators and the aggregator, ByzFL's weight decay at the server,
``optax.sgd``), and prints the largest difference between the two final
models and both test accuracies of ByzFL's final model (ByzFL's evaluation
and byzjax's, on byzjax's offline MNIST test set). Equal models from equal
inputs mean that a difference between the two libraries' runs of that config
comes from the draws (initial model, batches, split), not from the training.

Honest training only: ``f`` must be ``[0]`` (the attacks are compared rule by
rule elsewhere: ``tests/test_adaptive_line_search.py``, ``tests/test_byzfl_*``);
models without BatchNorm or dropout (``fc_mnist``, ``cnn_mnist``,
``logreg_mnist``).

Usage (byzjax's interpreter; ByzFL's is called for the recording)::

    python scripts/byzfl_replay.py CONFIG.json --workdir /tmp/byzfl_replay

Measured 2026-12-07 (``fc_mnist``, gamma-similarity 1.0, Average, 10 honest
clients, batch 25, lr 0.1, momentum 0.9, weight decay 1e-4, 20 steps): the
largest parameter difference after 20 steps 3.0e-8; ByzFL's final test
accuracy 0.7679, byzjax's evaluation of ByzFL's final model 0.7680.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BYZFL_PYTHON = "/work/benchvenv/bin/python"


def _child_record(workdir: str, out: str) -> None:
    """Runs in ByzFL's interpreter: one training, recorded to ``out`` (npz)."""
    import torch

    torch.set_num_threads(2)
    from byzfl.benchmark import benchmark as bench
    from byzfl.benchmark import train
    from byzfl.fed_framework import client as client_mod
    from byzfl.fed_framework import server as server_mod

    os.chdir(workdir)
    with open("config.json") as fh:
        data = bench.ensure_optional_config_parameters(json.load(fh))
    dicts = bench.generate_all_combinations(data, ["pre_aggregators", "milestones"])
    dicts = bench.ensure_key_parameters(dicts)
    dicts = bench.set_tolerated_f_equal_to_real_f(dicts)
    dicts = bench.set_declared_as_aggregation_parameter(dicts)
    dicts = bench.compute_number_of_workers(dicts)
    dicts = bench.delegate_training_seeds(dicts)
    dicts = bench.delegate_data_distribution_seeds(dicts)
    params = next(d for d in dicts if d["benchmark_config"]["training_seed"] == 0
                  and d["benchmark_config"]["data_distribution_seed"] == 0)
    rec: dict = {"batches": [], "init": None, "test": [], "server": None}
    clients: dict[int, int] = {}
    sample = client_mod.Client._sample_train_batch

    def recording_sample(self):
        x, y = sample(self)
        clients.setdefault(id(self), len(clients))
        rec["batches"].append((clients[id(self)], x.numpy().copy(), y.numpy().copy()))
        return x, y

    set_state = client_mod.Client.set_model_state

    def recording_set_state(self, state):
        if rec["init"] is None:
            rec["init"] = {k: v.detach().numpy().copy() for k, v in state.items()}
        return set_state(self, state)

    test = server_mod.Server.compute_test_accuracy

    def recording_test(self):
        rec["server"] = self
        accuracy = test(self)
        rec["test"].append(accuracy)
        return accuracy

    client_mod.Client._sample_train_batch = recording_sample
    client_mod.Client.set_model_state = recording_set_state
    server_mod.Server.compute_test_accuracy = recording_test
    train.start_training(params)
    final = {k: v.detach().numpy().copy()
             for k, v in rec["server"].get_dict_parameters().items()}
    np.savez(out, client=np.array([b[0] for b in rec["batches"]]),
             x=np.stack([b[1] for b in rec["batches"]]),
             y=np.stack([b[2] for b in rec["batches"]]),
             test=np.array(rec["test"]), names=np.array(list(final)),
             **{f"init:{k}": v for k, v in rec["init"].items()},
             **{f"final:{k}": v for k, v in final.items()})


def _flax_params(model, sample_shape, arrays: list[np.ndarray]):
    """byzjax parameters holding PyTorch's (in registration order = call order
    for these models): Linear ``[out, in]`` transposed, Conv2d to HWIO."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    order = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module,
                                                            (nn.Conv, nn.Dense)):
            order.append(tuple(context.module.scope.path))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract = jax.eval_shape(model.init, jax.random.key(0),
                                  jnp.zeros((1, *sample_shape)))["params"]
    source = iter(arrays)
    params: dict = {}
    for path in order:
        layer = abstract
        for key in path:
            layer = layer[key]
        for key in ("kernel", "bias"):
            if key not in layer:
                continue
            a = next(source)
            a = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T if a.ndim == 2 else a
            node = params
            for k in path:
                node = node.setdefault(k, {})
            node[key] = jnp.asarray(a)
    if next(source, None) is not None:
        raise SystemExit("byzfl_replay: the model has more tensors than layers")
    return params


def replay(config_path: str, recording: str) -> dict:
    """byzjax's steps on ByzFL's start and batches; returns what it measured."""
    import jax
    import jax.numpy as jnp
    import optax

    from byzjax import byzfl, models, sim
    from byzjax.sim import _kit, _run

    rec = np.load(recording)
    with open(config_path) as fh:
        conversion = byzfl.convert(json.load(fh))
    groups = sim.validate_sweep(conversion.sweep)
    spec = next(g.spec for g in groups if g.spec.split_seed == 0)
    if spec.num_attackers:
        raise SystemExit("byzfl_replay: honest training only; set f to [0]")
    model = models.get(spec.model)
    shape = models.info(spec.model).input_shape
    names = list(rec["names"])
    params = _flax_params(model, shape, [rec[f"init:{k}"] for k in names])
    final = _flax_params(model, shape, [rec[f"final:{k}"] for k in names])
    worker, _, robust, server = _kit.stages_for(spec, spec.hparams, jax.random.key(0))
    states = [tx.init(params) for tx in (worker, robust, server)]
    n = spec.num_workers

    def loss(p, x, y):
        out = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    grad = jax.jit(jax.grad(loss))
    x = rec["x"].transpose(0, 1, 3, 4, 2)  # NCHW -> NHWC
    steps = len(rec["client"]) // n
    for t in range(steps):
        rows = range(t * n, (t + 1) * n)
        g = jax.tree.map(lambda *a: jnp.stack(a), *[
            grad(params, jnp.asarray(x[i]), jnp.asarray(rec["y"][i])) for i in rows])
        sent, states[0] = worker.update(g, states[0], params)
        agg, states[1] = robust.update(sent, states[1], params)
        agg = jax.tree.map(lambda a, p: a + spec.weight_decay * p, agg, params)
        step, states[2] = server.update(agg, states[2], params)
        params = optax.apply_updates(params, step)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(params), jax.tree.leaves(final)))
    data = _run.load_sim_data(spec)
    evaluate = _kit.make_evaluate(model, data, eval_size=int(data.test_labels.shape[0]),
                                  has_bn=False)
    return {"steps": steps, "max_abs_difference": diff,
            "byzfl_test_accuracy": [float(a) for a in rec["test"]],
            "byzjax_eval_of_byzfl_final": float(evaluate(final)[0]),
            "byzjax_eval_of_replay": float(evaluate(params)[0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", help="ByzFL's config.json (f = [0])")
    p.add_argument("--workdir", default="byzfl_replay")
    p.add_argument("--byzfl-python", default=DEFAULT_BYZFL_PYTHON)
    p.add_argument("--child-record", nargs=2, metavar=("WORKDIR", "OUT"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_record:
        _child_record(*args.child_record)
        return 0
    if not args.config:
        p.error("give a ByzFL config.json")
    sys.path.insert(0, HERE)
    import byzfl_side_by_side as side

    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(args.config) as fh:
        config = json.load(fh)
    ev = config.setdefault("evaluation_and_results", {})
    ev["data_folder"] = side.prepare_mnist(os.path.join(workdir, "data"))
    ev["results_directory"] = os.path.join(workdir, "results")
    with open(os.path.join(workdir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=4)
    out = os.path.join(workdir, "recording.npz")
    subprocess.run([args.byzfl_python, os.path.abspath(__file__), "--child-record",
                    workdir, out], check=True,
                   env=dict(os.environ, OMP_NUM_THREADS="2", MPLBACKEND="Agg"))
    print(json.dumps(replay(args.config, out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
