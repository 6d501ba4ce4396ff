"""Byzantine parameter servers: GuanYu and LiuBei against one (Byzantine) server.

MNIST, the 784-100-10 MLP, 15 workers of which 3 Byzantine (ALIE), RESAM
(worker momentum) with a trimmed mean; servers:

* one correct server (the usual simulator);
* one Byzantine server (it hands out ``server_attack`` of its model);
* GuanYu (El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault, 2019, "SGD:
  Decentralized Byzantine Resilience") with 7 servers of which 1 Byzantine, and
  9 servers of which 2 (GuanYu needs ``n_ps >= 3 f_ps + 3``: 7 servers hold
  at most 1 Byzantine one), largest quorums, exponential delays;
* LiuBei (El Mhamdi, Guerraoui, Guirguis, Rouault, 2019/2022, "Fast Machine
  Learning with Byzantine Workers and Servers") with 7 servers of which 1 and
  2 Byzantine, a gather every 10 iterations;

each under the server attacks ``sign_flip`` (a far model) and
``a_little_is_enough`` (a model hidden in the spread of the correct ones).
Every run writes its record (accuracy and the server diagnostics per
evaluation) to ``--outdir``; the script then writes a table
(``table.md``) and a figure (``servers.png``) there. ``docs/SERVERS.md``
shows them.

Usage::

    python experiments/byzantine_servers.py --outdir results/servers \\
        --rounds 200 --seeds 0
    python experiments/byzantine_servers.py --outdir results/servers --report-only
    python experiments/byzantine_servers.py --outdir results/servers_garfield \\
        --only liubei sign_flip --liubei-filters derived garfield --rounds 100
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from byzjax import sim

SERVER_ATTACKS = ("sign_flip", "a_little_is_enough")


def base_config(rounds: int, eval_every: int, eval_size: int):
    c = sim.get_config()
    c.dataset = "mnist"
    c.model = "mlp"
    c.num_workers = 15
    c.num_byzantine = 3
    c.attack = "alie"
    c.aggregator = "trimmed_mean"
    c.optimizer = "resam"
    c.learning_rate = 0.5
    c.beta = 0.9
    c.clip_norm = 2.0
    c.batch_size = 25
    c.num_rounds = rounds
    c.eval_every = eval_every
    c.eval_size = eval_size
    c.checkpoint_every = 0
    return c


def settings(rounds: int, eval_every: int, eval_size: int,
             liubei_filters=("derived",)):
    """``(label, config)`` of every run, one compiled program each; LiuBei
    once per value of ``liubei_filters`` (``"garfield"``: the authors' public
    code's filters and schedule, labelled so)."""
    out = []
    c = base_config(rounds, eval_every, eval_size)
    out.append(("single correct server", c))
    c = base_config(rounds, eval_every, eval_size)
    c.num_byzantine_servers = 1
    c.server_attack = "sign_flip"
    out.append(("single Byzantine server (sign_flip)", c))
    for attack in SERVER_ATTACKS:
        for protocol, n_ps, f_ps in (("guanyu", 7, 1), ("guanyu", 9, 2),
                                     ("liubei", 7, 1), ("liubei", 7, 2)):
            c = base_config(rounds, eval_every, eval_size)
            c.server_protocol = protocol
            c.num_servers = n_ps
            c.num_byzantine_servers = f_ps
            c.server_attack = attack
            c.scatter_period = 10
            label = f"{protocol} {n_ps} servers, {f_ps} Byzantine ({attack})"
            if protocol != "liubei":
                out.append((label, c))
                continue
            for mode in liubei_filters:
                m = c.copy_and_resolve_references()
                m.liubei_filters = mode
                out.append((label if mode == "derived" else f"{label}, {mode}", m))
    return out


def _last(record, key):
    v = record["metrics"].get(key)
    if v is None:
        return float("nan")
    v = np.asarray(v, np.float64)
    return float(v[-1])


def _mean(record, key):
    v = record["metrics"].get(key)
    if v is None:
        return float("nan")
    return float(np.nanmean(np.asarray(v, np.float64)))


def report(outdir: str, labelled) -> None:
    """Writes ``table.md`` and ``servers.png`` from the records in ``outdir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    by_id = sim.load_records(outdir)
    rows = ["| setting | final acc. | min over correct servers | max spread of "
            "correct servers | rejected pulls | by Lipschitz filter | by models "
            "filter | pulls / iteration | workers on own model |",
            "|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for label, config, seeds in labelled:
        recs = [by_id.get(sim.run_id(config, s, sim.hparams_of(config)))
                for s in seeds]
        recs = [r for r in recs if r is not None]
        if not recs:
            continue
        acc = np.mean([_last(r, "test_accuracy") for r in recs])
        acc_min = np.mean([_last(r, "test_accuracy_min") for r in recs])
        spread = max(float(np.max(r["metrics"]["server_spread"], initial=0.0))
                     if "server_spread" in r["metrics"] else np.nan for r in recs)
        rej = np.mean([_mean(r, "rejected_fraction") for r in recs])
        pulls = np.mean([_mean(r, "pulls_per_iteration") for r in recs])
        lips = np.mean([_mean(r, "lipschitz_filter_rejected") for r in recs])
        near = np.mean([_mean(r, "models_filter_rejected") for r in recs])
        own = np.mean([_mean(r, "fallback_fraction") for r in recs])

        def fmt(x, spec=".3f"):
            return "n/a" if not np.isfinite(x) else format(x, spec)

        rows.append(f"| {label} | {fmt(acc)} | {fmt(acc_min)} | {fmt(spread, '.2e')}"
                    f" | {fmt(rej)} | {fmt(lips)} | {fmt(near)} | {fmt(pulls, '.2f')}"
                    f" | {fmt(own)} |")
        curve = np.mean([np.asarray(r["metrics"]["test_accuracy"], np.float64)
                         for r in recs], axis=0)
        rounds = np.asarray(recs[0]["metrics"]["round"])
        style = "--" if "a_little" in label else "-"
        axes[0].plot(rounds, curve, style, label=label)
        if label.startswith("guanyu"):
            sp = np.asarray(recs[0]["metrics"]["server_spread"], np.float64)
            axes[1].plot(rounds, sp, style, label=label)
        if label.startswith("liubei"):
            rj = np.asarray(recs[0]["metrics"]["rejected_fraction"], np.float64)
            axes[2].plot(rounds, rj, style, label=label)
    axes[0].set_xlabel("round")
    axes[0].set_ylabel("test accuracy (first correct server)")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=6)
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("GuanYu: spread of correct servers (chunk mean)")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(fontsize=6)
    axes[2].set_xlabel("round")
    axes[2].set_ylabel("LiuBei: fraction of pulls rejected (chunk mean)")
    axes[2].set_ylim(0, 1)
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "servers.png"), dpi=110)
    with open(os.path.join(outdir, "table.md"), "w") as fh:
        fh.write("\n".join(rows) + "\n")
    print("\n".join(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="results/byzantine_servers")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-size", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--liubei-filters", nargs="+", default=["derived"],
                   choices=sim.FIELDS["liubei_filters"].choices,
                   help="LiuBei's filters, one run per value (docs/SERVERS.md)")
    p.add_argument("--only", nargs="*", default=[],
                   help="run (and report) only the settings whose label "
                        "contains every one of these texts, e.g. liubei sign_flip")
    args = p.parse_args(argv)
    runs = settings(args.rounds, args.eval_every, args.eval_size,
                    tuple(args.liubei_filters))
    runs = [(label, c) for label, c in runs
            if all(text in label for text in args.only)]
    for _, c in runs:
        sim.validate(c)
    labelled = [(label, c, args.seeds) for label, c in runs]
    if not args.report_only:
        os.makedirs(args.outdir, exist_ok=True)

        done = set(sim.load_records(args.outdir))
        data = None
        for label, c in runs:
            missing = [s for s in args.seeds
                       if sim.run_id(c, s, sim.hparams_of(c)) not in done]
            if not missing:
                continue
            if data is None:
                data = sim.load_sim_data(c)
            print(f"== {label}", flush=True)
            sim.run_group(c, seeds=missing, outdir=args.outdir, data=data,
                          progress=False, desc=label)
    report(args.outdir, labelled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
