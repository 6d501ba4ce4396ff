"""Re-keys run records whose run id counted fields their run never read.

byzjax leaves out of run ids the fields a run does not read (``dampening``
with ``server_momentum``, ``attack_eps`` with ``attack="none"``, ...: see
``byzjax.sim.ignored_fields``), so that two records of the same computation
never carry two ids. Records written before that rule keep such fields in
their id; this script moves each of them to the id the current code gives it
(the record's ``config`` with those fields at their defaults, the old id kept
as ``legacy_run_id``), so sweeps resume from them instead of running them
again. Records whose id does not change are left untouched; a record whose
stored id the current code does not reproduce from its own config is
reported and left alone.

    python scripts/rekey_records.py docs/reproduction/records/*/runs
"""

import argparse
import glob
import json
import os
import sys
import warnings

import ml_collections

from byzjax import sim
from byzjax.sim import _store


def _config_of(record) -> ml_collections.ConfigDict:
    config = sim.get_config()
    for k, v in record["config"].items():
        if k in config:
            config[k] = ml_collections.ConfigDict(v) if isinstance(v, dict) else v
    return config


def new_id(record) -> tuple[str, str, dict, dict]:
    """(id the record had under the old rule, its id now, its config and
    float hyper-parameters now)."""
    config = _config_of(record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = sim.resolve(config)
    hp = {k: float(v) for k, v in record["hparams"].items()}
    old = sim.run_id(config, record["seed"], hp)
    for k in spec.ignored:
        if k in hp:
            hp[k] = spec.hparams[k]
    return old, sim.run_id(spec, record["seed"], hp), dict(spec.config), hp


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders of run records (runs/)")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    moved = same = odd = 0
    for folder in args.folders:
        for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
            with open(path) as fh:
                record = json.load(fh)
            old, new, config, hparams = new_id(record)
            if old != record["run_id"]:
                print(f"{path}: stored id {record['run_id']} is not reproduced "
                      f"({old}); left alone", file=sys.stderr)
                odd += 1
                continue
            if new == old:
                same += 1
                continue
            record.update(run_id=new, legacy_run_id=old, config=config,
                          hparams=hparams)
            moved += 1
            if not args.dry_run:
                _store.write_record(os.path.join(folder, new + ".json"), record)
                os.remove(path)
    print(f"{moved} record(s) re-keyed, {same} unchanged, {odd} left alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
