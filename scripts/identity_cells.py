"""Runs eight small cells and prints what identifies their results, for checking
that a refactoring leaves results bit-identical.

Each cell is ``byzjax train`` on MNIST (MLP, n = 15, 50 rounds, seeds 0 and 1)
with one combination of optimiser, attack, rule and options, covering the
single-server round, GuanYu and LiuBei. The output (JSON, one entry per run)
holds each run's ``run_id``, ``static_key``, ``final_params_sha256`` and a
sha256 of its metric curves; compare the files of two checkouts with ``diff``::

    python scripts/identity_cells.py --outdir /tmp/before > before.json
    (change the code)
    python scripts/identity_cells.py --outdir /tmp/after > after.json
    diff before.json after.json
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

BASE = ["--dataset", "mnist", "--model", "mlp", "--num-workers", "15",
        "--num-byzantine", "5", "--rounds", "50", "--eval-every", "25",
        "--seeds", "0,1", "--quiet"]

#: Metrics recorded only by later versions (the per-class test accuracy), left
#: out of the curve hashes so both sides hash the same curves.
ADDED_LATER = ("test_class_accuracy",)

CELLS = {
    "resam_alie_cwtm": ["--optimizer", "resam", "--attack", "alie",
                        "--aggregator", "trimmed_mean"],
    "dra_alie_cwtm": ["--optimizer", "dra", "--attack", "alie",
                      "--aggregator", "trimmed_mean"],
    "dsgd_signflip_krum_noclip": ["--optimizer", "dsgd", "--attack", "sign_flip",
                                  "--aggregator", "krum", "--set", "clip_norm=0"],
    "mra_gaussian_mda_nnm_clamp": ["--optimizer", "mra", "--attack", "gaussian",
                                   "--aggregator", "mda", "--preaggregator", "nnm",
                                   "--set", "mra_safeguard=clamp"],
    "servermom_labelflip_cc_step": ["--optimizer", "server_momentum",
                                    "--attack", "label_flip",
                                    "--aggregator", "centered_clipping",
                                    "--set", "lr_schedule=step"],
    "resam_dirichlet_eps_nesterov": ["--optimizer", "resam", "--split", "dirichlet",
                                     "--set", "attack_eps=1.5",
                                     "--num-attackers", "3",
                                     "--set", "nesterov=True",
                                     "--set", "eval_size=1000"],
    "guanyu": ["--num-byzantine", "4", "--set", "server_protocol=guanyu",
               "--set", "num_servers=6", "--set", "num_byzantine_servers=1"],
    "liubei": ["--set", "server_protocol=liubei", "--set", "num_servers=4",
               "--set", "num_byzantine_servers=1"],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outdir", required=True)
    p.add_argument("--cells", default=",".join(CELLS))
    args = p.parse_args()
    out = {}
    for name in args.cells.split(","):
        folder = os.path.join(args.outdir, name)
        cmd = [sys.executable, "-m", "byzjax.cli", "train", *BASE, *CELLS[name],
               "--outdir", folder]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        runs = os.path.join(folder, "runs")
        for fname in sorted(os.listdir(runs)):
            with open(os.path.join(runs, fname)) as fh:
                rec = json.load(fh)
            curves = json.dumps({k: v for k, v in rec["metrics"].items()
                                 if k not in ADDED_LATER}, sort_keys=True).encode()
            out[f"{name}/seed{rec['seed']}"] = {
                "run_id": rec["run_id"], "static_key": rec["static_key"],
                "final_params_sha256": rec["final_params_sha256"],
                "metrics_sha256": hashlib.sha256(curves).hexdigest()}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
