"""Robust data-parallel training with one faulty device.

Every device is one worker: it computes the gradient of its shard of the batch,
keeps its own momentum, and a robust aggregator replaces the all-reduce mean
(``byzjax.parallel.robust_data_parallel_step``). Device 3 is made faulty: it
sends ``+inf`` or a sign-flipped, scaled gradient. The script trains the
784-100-10 MLP of El Mhamdi et al. (ICLR 2021) on Fashion-MNIST (or synthetic
data with ``--synthetic``) twice — plain mean vs trimmed mean — and prints the
loss curves.

On a CPU, fake 8 devices::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python experiments/robust_data_parallel.py --fault inf

On a GPU/TPU machine the real devices are used; on several hosts call
``jax.distributed.initialize()`` first (``--distributed``).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from byzjax import models, parallel


def make_fault(kind: str, device: int):
    if kind == "none":
        return None
    if kind == "inf":
        return lambda g, i: jax.tree_util.tree_map(
            lambda x: jnp.where(i == device, jnp.inf, x), g)
    if kind == "sign_flip":
        return lambda g, i: jax.tree_util.tree_map(
            lambda x: jnp.where(i == device, -10.0 * x, x), g)
    raise ValueError(f"unknown fault {kind!r}: none, inf or sign_flip")


def load(synthetic: bool):
    if synthetic:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, 8192).astype(np.int32)
        proto = rng.normal(size=(10, 784)).astype(np.float32)
        x = proto[y] + rng.normal(size=(8192, 784)).astype(np.float32)
        return x, y, x[:1024], y[:1024]
    from byzjax import data

    train, test = data.load_train_test("fashion_mnist", source="offline")
    def prep(images):
        x = np.asarray(images, np.float32).reshape(len(images), -1) / 255.0
        return (x - 0.286) / 0.353

    return (prep(train.images), np.asarray(train.labels), prep(test.images),
            np.asarray(test.labels))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fault", default="inf", choices=["none", "inf", "sign_flip"])
    p.add_argument("--faulty-device", type=int, default=3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-per-device", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--distributed", action="store_true")
    args = p.parse_args(argv)
    if args.distributed:
        jax.distributed.initialize()

    mesh = parallel.make_mesh()
    d = mesh.size
    print(f"{d} devices ({jax.default_backend()}); device {args.faulty_device} "
          f"faulty: {args.fault}")
    x, y, xt, yt = load(args.synthetic)
    model = models.get("mlp", num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]

    def loss_fn(p, batch):
        xb, yb = batch
        logits = model.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    test_loss = jax.jit(lambda p: loss_fn(p, (xt, yt)))
    fault = make_fault(args.fault, args.faulty_device)
    rng = np.random.default_rng(0)
    for rule, f in (("mean", 0), ("trimmed_mean", 1)):
        init, step = parallel.robust_data_parallel_step(
            loss_fn, optax.sgd(args.lr), mesh=mesh, num_byzantine=f, aggregator=rule,
            momentum=0.9, clip_norm=5.0, fault=fault)
        p, s = params, init(params)
        curve = []
        for t in range(args.steps):
            idx = rng.integers(0, len(y), d * args.batch_per_device)
            p, s, _ = step(p, s, (jnp.asarray(x[idx]), jnp.asarray(y[idx])))
            if (t + 1) % max(1, args.steps // 5) == 0:
                curve.append(float(test_loss(p)))
        print(f"{rule:>13}: test loss every {max(1, args.steps // 5)} steps: "
              + ", ".join(f"{v:.3f}" for v in curve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
