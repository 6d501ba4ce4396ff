"""Memory of one simulated round per model, from XLA's buffer assignment.

For each shipped model and optimiser, compiles the simulator's ``round_step``
(one run, no vmap) for two worker counts, reads XLA's memory analysis
(arguments + outputs + temporaries - aliased), fits ``bytes(n) = a + b n`` and
prints a markdown table: ``b / (4 d)`` (one worker's bytes in float32 parameter
vectors: its ``[n, d]`` stack rows plus its activations) and the largest ``n``
that fits 90% of a 16, 40 and 80 GB device. Numbers come from the backend this
runs on (the CPU here); a GPU's buffer assignment differs (not measured).

With ``--topology random_subset`` (or another topology) the round is the
peer-to-peer one of ``docs/PEER_TO_PEER.md`` (every honest node's model,
momentum and view); ``--device-gb`` sets the device sizes of the table.

Usage: python scripts/memory_per_device.py [--models mlp,mnist_cnn] [--n 8,16]
       [--topology random_subset] [--device-gb 16,40,80]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import models, sim
from byzjax.sim import SimData, make_program

GB = 1e9


def fake_data(shape, n, per_worker=64, classes=10, test=256):
    rng = np.random.default_rng(0)
    total = n * per_worker
    return SimData(
        train_images=jnp.asarray(rng.integers(0, 255, (total, *shape), np.uint8)),
        train_labels=jnp.asarray(rng.integers(0, classes, total), jnp.int32),
        test_images=jnp.asarray(rng.integers(0, 255, (test, *shape), np.uint8)),
        test_labels=jnp.asarray(rng.integers(0, classes, test), jnp.int32),
        worker_indices=jnp.arange(total, dtype=jnp.int32).reshape(n, per_worker),
        worker_counts=jnp.full((n,), per_worker, jnp.int32),
        mean=jnp.zeros(shape[-1:]), std=jnp.ones(shape[-1:]))


def round_bytes(model_name, optimizer, n, batch_size, topology=""):
    info = models.info(model_name)
    config = sim.get_config()
    config.model = model_name
    config.num_workers = n
    config.num_byzantine = (n - 3) // 4
    config.optimizer = optimizer
    config.aggregator = "trimmed_mean"
    config.attack = "alie"
    config.batch_size = batch_size
    config.num_rounds = 1
    config.eval_every = 1
    config.topology = topology
    data = fake_data(info.input_shape, n)
    program = make_program(config, data, models.get(model_name, num_classes=10))
    hp = {k: jnp.float32(v) for k, v in sim.hparams_of(config).items()}
    state = jax.eval_shape(program.init, jax.random.key(0), hp)
    compiled = jax.jit(program.round_step).lower(state, hp).compile()
    m = compiled.memory_analysis()
    data_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(data))
    return (m.argument_size_in_bytes + m.output_size_in_bytes
            + m.temp_size_in_bytes - m.alias_size_in_bytes - data_bytes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,mnist_cnn,cifar_cnn,wide_resnet")
    ap.add_argument("--optimizers", default="resam,dra")
    ap.add_argument("--n", default="8,16")
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--topology", default="",
                    help="peer-to-peer topology ('' : a parameter server)")
    ap.add_argument("--device-gb", default="16,40,80",
                    help="device sizes of the table, GB (10^9 bytes)")
    args = ap.parse_args()
    n1, n2 = (int(v) for v in args.n.split(","))
    sizes = [float(v) for v in args.device_gb.split(",")]
    where = f"peer-to-peer ({args.topology})" if args.topology else "one server"
    print(f"backend {jax.default_backend()}; {where}; batch {args.batch_size} per "
          "worker; trimmed mean under ALIE; data excluded; 90% of the device "
          "usable\n")
    print("| model | d | optimizer | bytes(n) = a + b n | b / 4d | "
          + " | ".join(f"max n, {c:g} GB" for c in sizes) + " |")
    print("|---|---:|---|---|---:|" + "---:|" * len(sizes))
    for name in args.models.split(","):
        d = models.info(name).num_params
        for opt in args.optimizers.split(","):
            t0 = time.perf_counter()
            m1 = round_bytes(name, opt, n1, args.batch_size, args.topology)
            m2 = round_bytes(name, opt, n2, args.batch_size, args.topology)
            b = (m2 - m1) / (n2 - n1)
            a = m1 - b * n1
            fits = [int((0.9 * c * GB - a) // b) for c in sizes]
            print(f"| {name} | {d:,} | {opt} | {a / 1e6:.1f} MB + {b / 1e6:.2f} MB n "
                  f"| {b / (4 * d):.1f} | "
                  + " | ".join(f"{v:,}" for v in fits) + " |", flush=True)
            print(f"<!-- {name} {opt}: {time.perf_counter() - t0:.0f} s -->",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
