"""The simulator: one compiled program per configuration (``docs/ARCHITECTURE.md``).

``make_train(config, data, model) -> train(key, hparams)`` runs a whole
training run (rounds under ``lax.scan``, evaluation every ``eval_every``
rounds); vmap it over keys (seeds) and hyper-parameter dicts. ``run_group``
adds data loading, a progress bar and JSON records.

Config and sweep files, and the results folder, as ``byzjax train`` and
``byzjax sweep`` use them: ``load_config`` / ``load_sweep`` read a file,
``override`` / ``set_sweep_field`` apply ``--set``, ``file_error`` points an
error at the file's line; ``validate_sweep`` splits a sweep into
``SweepGroup``s (one program each), ``run_missing`` computes a group's runs
without a record (under its lock, from its checkpoint), ``run_sweep`` every
group; ``check_outdir``, ``clean_orphans`` and ``load_records`` look after the
folder of records, and ``published_of`` reads a sweep's published values.
"""

from byzjax.sim._errors import ConfigError
from byzjax.sim._fields import (
    FIELDS,
    Field,
    coerce_field,
    float_hparams,
    get_config,
    register_field,
    unregister_field,
)
from byzjax.sim._files import file_error, import_file, load_config, load_sweep
from byzjax.sim._grid import (
    SweepGroup,
    published_of,
    set_sweep_field,
    validate_sweep,
)
from byzjax.sim._kit import Program, SimData, SimState, resolve_grad_strategy
from byzjax.sim._program import make_program, make_train
from byzjax.sim._records import run_id, static_key, write_json_atomic
from byzjax.sim._run import load_sim_data, make_model, run_group
from byzjax.sim._schedule import run_missing, run_sweep
from byzjax.sim._spec import IgnoredFieldWarning, RunSpec, resolve
from byzjax.sim._store import check_outdir, clean_orphans, load_records
from byzjax.sim._validate import (
    check_environment,
    hparams_of,
    ignored_fields,
    override,
    validate,
)

__all__ = [
    "FIELDS",
    "Field",
    "FLOAT_HPARAMS",
    "float_hparams",
    "register_field",
    "unregister_field",
    "ConfigError",
    "IgnoredFieldWarning",
    "coerce_field",
    "ignored_fields",
    "get_config",
    "hparams_of",
    "validate",
    "check_environment",
    "override",
    "RunSpec",
    "resolve",
    "load_sim_data",
    "make_model",
    "run_group",
    "run_id",
    "static_key",
    "write_json_atomic",
    "Program",
    "SimData",
    "SimState",
    "make_program",
    "make_train",
    "import_file",
    "resolve_grad_strategy",
    # files and the results folder (the command line's steps)
    "load_config",
    "load_sweep",
    "set_sweep_field",
    "file_error",
    "SweepGroup",
    "validate_sweep",
    "run_missing",
    "run_sweep",
    "published_of",
    "check_outdir",
    "clean_orphans",
    "load_records",
]


def __getattr__(name: str):
    # FLOAT_HPARAMS is read live from the field table (registered fields too).
    if name == "FLOAT_HPARAMS":
        return float_hparams()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
