"""The simulator: one compiled program per configuration (``docs/ARCHITECTURE.md``).

``make_train(config, data, model) -> train(key, hparams)`` runs a whole
training run (rounds under ``lax.scan``, evaluation every ``eval_every``
rounds); vmap it over keys (seeds) and hyper-parameter dicts. ``run_group``
adds data loading, a progress bar and JSON records.
"""

from byzjax.sim._config import (
    FLOAT_HPARAMS,
    OPTIMIZERS,
    ConfigError,
    RunSpec,
    get_config,
    hparams_of,
    resolve,
    validate,
)
from byzjax.sim._run import (
    load_sim_data,
    make_model,
    run_group,
    run_id,
    static_key,
    write_json_atomic,
)
from byzjax.sim._sweep import import_file
from byzjax.sim._train import (
    Program,
    SimData,
    SimState,
    make_program,
    make_train,
    resolve_grad_strategy,
)

__all__ = [
    "FLOAT_HPARAMS",
    "OPTIMIZERS",
    "ConfigError",
    "get_config",
    "hparams_of",
    "validate",
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
]
