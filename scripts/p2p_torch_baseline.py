"""A BASELINE for speed only: one step of ``peerToPeer.py`` (Farhadkhani et al.,
"Robust Collaborative Learning with Linear Gradient Overhead", ICML 2023;
github.com/LPD-EPFL/robust-collaborative-learning) ported to plain PyTorch.

Not part of byzjax and not a reference for its numbers: ``scripts/bench.py``
(section 7) times it beside byzjax's peer-to-peer round of the same sizes.
What it keeps from the code, in its order and with its loops:

* every honest node loads its own flat parameter vector into one model
  (``model.set(theta)``), computes its gradient on its batch (cross-entropy
  plus ``l2 * ||theta||^2 / 2``), updates its momentum
  ``m <- momentum * m + (1 - dampening) * g`` and steps ``theta <- theta - lr m``;
* the Byzantine nodes send one vector crafted from the honest ones (here
  "A little is enough" with a fixed factor: ``mean - 1.5 * std``; the code's
  line search is left out, as byzjax's bench row uses plain ALIE);
* every honest node ``j`` hears itself, ``n - 2f - 1`` other honest nodes
  drawn with ``random.sample`` and the ``f`` Byzantine ones, and aggregates
  them: the code's trimmed mean (``g.sort(dim=0).values[f:-f].mean(0)``) or
  CVA/MoNNA around its own vector (its Python loop of ``.norm().item()``).

Usage (torch is not a byzjax dependency)::

    python scripts/p2p_torch_baseline.py --aggregator trmean --steps 5

prints milliseconds per step (median). Synthetic MNIST-shaped data.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_step(aggregator: str = "trmean", *, n: int = 26, f: int = 5, b: int = 25,
              lr: float = 0.75, momentum: float = 0.99, dampening: float = 0.99,
              l2: float = 1e-4, seed: int = 0):
    """``step()``: one peer-to-peer step of all nodes (a closure over its state)."""
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100),
                                torch.nn.ReLU(), torch.nn.Linear(100, 10))
    params = list(model.parameters())
    h = n - f
    theta0 = torch.nn.utils.parameters_to_vector(params).detach()
    thetas = [theta0.clone() for _ in range(h)]
    moms = [torch.zeros_like(theta0) for _ in range(h)]
    x = torch.randn(h, b, 1, 28, 28)
    y = torch.randint(0, 10, (h, b))
    lossf = torch.nn.CrossEntropyLoss()

    def trmean(g):
        return g.sort(dim=0).values[f:-f].mean(dim=0)

    def cva(grads, honest_index):  # aggregators/cva.py, the P2P branch
        pivot = grads[honest_index]
        scores = [(i, grads[i].sub(pivot).norm().item()) for i in range(len(grads))]
        scores.sort(key=lambda s: s[1])
        return torch.stack([grads[scores[j][0]]
                            for j in range(len(grads) - f)]).mean(dim=0)

    def step():
        nonlocal thetas
        for j in range(h):
            torch.nn.utils.vector_to_parameters(thetas[j], params)
            model.zero_grad()
            loss = lossf(model(x[j]), y[j])
            loss = loss + l2 / 2 * sum((p * p).sum() for p in params)
            loss.backward()
            g = torch.cat([p.grad.reshape(-1) for p in params])
            moms[j].mul_(momentum).add_(g, alpha=1 - dampening)
        with torch.no_grad():
            for theta, m in zip(thetas, moms):
                theta.add_(m, alpha=-lr)
            stacked = torch.stack(thetas)
            byz = [stacked.mean(0) - 1.5 * stacked.std(0)] * f
            new = []
            for j in range(h):
                others = random.sample([k for k in range(h) if k != j], h - f - 1)
                others.append(j)
                received = [thetas[k] for k in others] + byz
                if aggregator == "trmean":
                    new.append(trmean(torch.stack(received)))
                else:
                    new.append(cva(received, len(others) - 1))
            thetas = new

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aggregator", choices=("trmean", "cva"), default="trmean")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    step = make_step(args.aggregator)
    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.aggregator}: {statistics.median(times) * 1e3:.1f} ms per step "
          f"(median of {args.steps})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
