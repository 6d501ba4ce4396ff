"""Validation of a run config: everything checked before data loads or code compiles.

The second layer of ``byzjax.sim`` (above :mod:`byzjax.sim._fields`): field
names and types, each field's range (from its :class:`~byzjax.sim._fields.Field`),
names against the live registries (aggregators, attacks, optimisers, datasets,
models, splits), rule keywords against the rule's registry entry, ``(n, f)``
against each rule's requirement (after pre-aggregation), the server fields, and
the fields a run would not read (:func:`ignored_fields`). Every failure is one
:class:`~byzjax.sim.ConfigError` line saying what to change.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import jax
import ml_collections

from byzjax import aggregators, attacks, data, models, optim, servers, topology
from byzjax._registry import unknown_name
from byzjax.sim._errors import ConfigError
from byzjax.sim._fields import (
    FIELDS,
    SPLIT_FIELDS,
    check_field_ranges,
    coerce_field,
    float_hparams,
    kwargs_fields,
)

__all__ = ["validate", "override", "check_environment", "num_attackers",
           "hparams_of", "ignored_fields", "attack_strength", "server_quorums",
           "SERVER_PROTOCOLS", "check_topology"]

#: Values of config field ``server_protocol``.
SERVER_PROTOCOLS = FIELDS["server_protocol"].choices


def hparams_of(config) -> dict[str, float]:
    """The traced float hyper-parameters of ``config`` as a dict of Python floats.

    Example:
      >>> from byzjax.sim import get_config
      >>> hparams_of(get_config())["learning_rate"]
      0.75
    """
    return {k: float(config[k]) for k in float_hparams()}


def num_attackers(config) -> int:
    """The real number of attacking rows (``num_attackers`` or ``num_byzantine``).

    Example:
      >>> from byzjax.sim import get_config
      >>> num_attackers(get_config())
      5
    """
    a = int(config.num_attackers)
    return int(config.num_byzantine) if a < 0 else a


def attack_strength(attack: str) -> str | None:
    """The keyword of ``attack`` that config field ``attack_eps`` sets, or None.

    An attack's strength is the keyword its registry entry names
    (:class:`~byzjax.attacks.AttackEntry`); adaptive attacks choose their own.

    Example:
      >>> attack_strength("alie"), attack_strength("sign_flip")
      ('eps', None)
    """
    entry = attacks.entry(attack)
    if entry.adaptive or entry.data_level:
        return None
    return entry.strength


# ------------------------------------------------------------------- editing
def override(config, key: str, value: Any) -> None:
    """Sets field ``key`` of ``config`` (``"beta"``, ``"aggregator_kwargs.radius"``).

    The field must exist (unknown names get the closest valid ones) and the
    value must have its type (see :func:`~byzjax.sim.coerce_field`); keywords
    of the ``*_kwargs`` fields are checked against the rule by :func:`validate`.

    Raises:
      ConfigError: unknown field or wrong type.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> override(c, "aggregator_kwargs.radius", 10.0)
      >>> c.aggregator_kwargs.radius
      10.0
      >>> try:
      ...     override(c, "num_wrkers", 9)
      ... except ConfigError as e:
      ...     print(str(e).split(";")[0])
      unknown config field 'num_wrkers' (did you mean 'num_workers'?)
    """
    top, _, sub = key.partition(".")
    if top not in FIELDS:
        raise ConfigError(unknown_name("config field", top, FIELDS), field=top)
    if not sub:
        value = coerce_field(top, value)
        target, name = config, top
    elif top in kwargs_fields() and "." not in sub:
        if top not in config:
            config[top] = ml_collections.ConfigDict()
        target, name = config[top], sub
    else:
        raise ConfigError(f"{key!r}: only {', '.join(kwargs_fields())} have "
                          "sub-fields", field=top)
    try:
        target[name] = value
    except (TypeError, ValueError):
        raise ConfigError(f"{key} cannot be set to {value!r} (it is "
                          f"{target[name]!r})", field=top) from None


# ---------------------------------------------------------------- validation
def validate(config) -> None:
    """Checks a whole run config before anything is loaded or compiled.

    Every field is checked for its name (unknown fields get the closest valid
    names), its type and its range; names (dataset, model, split, aggregator,
    attack, optimiser, ...) against their registries; rule keyword arguments
    against the rule's registry entry; ``(n, f)`` against each rule's
    requirement; the server fields; and conflicts (``attack_eps`` beside the
    attack's own strength keyword).

    Raises:
      ConfigError: (a ``ValueError``) with one line saying what to change.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.learning_rate = -1.0
      >>> try:
      ...     validate(c)
      ... except ConfigError as e:
      ...     print(e)
      learning_rate must be a finite number > 0, got -1.0
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"a run config must be an ml_collections.ConfigDict, got "
            f"{type(config).__name__}; start from byzjax.sim.get_config() and "
            "override fields")
    keys = set(config.keys())
    unknown = sorted(keys - set(FIELDS))
    if unknown:
        raise ConfigError(unknown_name("config field", unknown[0], FIELDS),
                          field=unknown[0])
    missing = [k for k in FIELDS if k not in keys]
    if missing:
        raise ConfigError(
            f"config lacks fields {', '.join(missing)}; start from "
            "byzjax.sim.get_config() and override fields instead of building a "
            "config from scratch")
    for key in FIELDS:
        coerce_field(key, config[key])
    try:
        _check_names(config)
        check_field_ranges(config)
        _check_cross_fields(config)
        _check_rule_kwargs(config)
        _check_workers(config)
        _check_server_data(config)
        _check_servers(config)
        check_topology(config)
    except ConfigError:
        raise
    except ValueError as e:  # a registry's own (n, f) or name check
        raise ConfigError(str(e), field=_field_of(str(e))) from None


def _field_of(message: str) -> str | None:
    for key in ("preaggregator", "aggregator", "attack"):
        if message.startswith(f"unknown {key.replace('pre', 'pre-')} "):
            return key
    return "num_byzantine" if "num_byzantine" in message else None


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(unknown_name(key, value, [c for c in choices if c]),
                          field=key)


def _check_names(config) -> None:
    _choice("optimizer", config.optimizer, optim.optimizer_names())
    _choice("split", config.split, tuple(data.SPLITS))
    try:
        info = data.info(config.dataset)
    except ValueError:
        raise ConfigError(unknown_name("dataset", config.dataset, data.names()),
                          field="dataset") from None
    try:
        models.info(config.model)
    except ValueError:
        raise ConfigError(unknown_name("model", config.model, models.names()),
                          field="model") from None
    source = config.data_source
    if source == "offline" and not info.offline:
        raise ConfigError(f"dataset {info.name!r} has no offline source; set "
                          "data_source='tfds' (or 'auto')", field="data_source")
    if source == "tfds" and not info.tfds:
        raise ConfigError(f"dataset {info.name!r} is not in tensorflow-datasets; "
                          "set data_source='offline' (or 'auto')", field="data_source")


def _check_cross_fields(config) -> None:
    if config.num_rounds % config.eval_every:
        raise ConfigError(
            f"num_rounds ({config.num_rounds}) must be a multiple of eval_every "
            f"({config.eval_every}); e.g. num_rounds="
            f"{-(-config.num_rounds // config.eval_every) * config.eval_every}",
            field="num_rounds")
    if config.lr_schedule == "step" and config.lr_decay_every < 1:
        raise ConfigError(f"lr_decay_every must be an integer >= 1, got "
                          f"{config.lr_decay_every!r}", field="lr_decay_every")
    if config.train_fraction < 1.0 and config.server_data_size and (
            aggregators.AGGREGATORS.entry(config.aggregator).needs_reference):
        raise ConfigError("train_fraction < 1 and server_data_size > 0 together "
                          "are not supported; set one", field="train_fraction")
    if config.weight_decay_point == "server" and (
            config.server_protocol != "single"):
        raise ConfigError(
            "weight_decay_point 'server' is implemented for server_protocol "
            f"'single' only, got {config.server_protocol!r}; use 'loss'",
            field="weight_decay_point")
    if optim.optimizer_entry(config.optimizer).moments and (
            config.clip_point != "gradient"):
        raise ConfigError(f"clip_point must be 'gradient' for "
                          f"{config.optimizer} (its workers send moment pairs), "
                          f"got {config.clip_point!r}", field="clip_point")
    entry = attacks.entry(config.attack)
    spellings = attacks.strength_spellings(entry)
    given = [k for k in spellings if config.attack_kwargs.get(k) is not None]
    if config.attack_eps >= 0 and given:
        raise ConfigError(
            f"attack_eps and attack_kwargs.{given[0]} both set the strength of "
            f"attack {config.attack!r}; keep one", field="attack_eps")
    if entry.stateful and config.attack_point == "gradient" and (
            num_attackers(config)):
        raise ConfigError(
            f"attack {config.attack!r} reads the server's previous aggregate of "
            "the vectors the workers send; set attack_point='sent'",
            field="attack_point")


def check_environment(config) -> None:
    """Checks what a valid ``config`` needs from this machine.

    Optional packages (tensorflow-datasets) and devices (``num_devices`` at
    most the devices present). Separate from :func:`validate`, which says
    whether a config makes sense anywhere; call both before loading data.

    Args:
      config: a run config or :class:`~byzjax.sim.RunSpec`.

    Raises:
      ConfigError: a package the config needs is not installed, or it asks
        for more devices than there are.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.dataset, c.data_source
      ('mnist', 'offline')
      >>> check_environment(c)  # offline MNIST needs no optional package
    """
    info = data.info(config.dataset)
    source = config.data_source
    if (source == "tfds" or (source == "auto" and not info.offline)) and (
            importlib.util.find_spec("tensorflow_datasets") is None):
        raise ConfigError(f"dataset {info.name!r} is read with tensorflow-datasets, "
                          "which is not installed: pip install 'byzjax[tfds]'")
    wanted = int(config.num_devices or 0)
    if wanted:
        present = jax.device_count()
        if wanted > present:
            raise ConfigError(f"num_devices={wanted} but {present} device(s) are "
                              f"present ({jax.default_backend()}); use at most "
                              f"{present}, or 0 for all", field="num_devices")


def _check_workers(config) -> None:
    n, f = int(config.num_workers), int(config.num_byzantine)
    if not 2 * f < n:
        raise ConfigError(
            f"need 0 <= num_byzantine < num_workers / 2, got num_workers={n}, "
            f"num_byzantine={f}")
    attackers = num_attackers(config)
    if not (config.num_attackers == -1 or 0 <= attackers < n):
        raise ConfigError(
            f"num_attackers must be in [0, {n}) or -1 (= num_byzantine), got "
            f"{config.num_attackers}", field="num_attackers")
    m = _rows_after_preaggregation(config, n, f)
    aggregators.check(config.aggregator, num_workers=m, num_byzantine=f)
    attacks.ATTACKS.check(config.attack, num_workers=n, num_byzantine=attackers)


def _check_server_data(config) -> None:
    """A rule that needs the server's own update (registry
    ``needs_reference``: FLTrust) needs server data and one correct server
    computing it from plain gradients.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.aggregator = "fltrust"
      >>> try:
      ...     _check_server_data(c)
      ... except ConfigError as e:
      ...     print(e)
      aggregator fltrust needs server data: set server_data_size > 0
    """
    entry = aggregators.AGGREGATORS.entry(config.aggregator)
    if not entry.needs_reference:
        return
    name = entry.name
    if int(config.server_data_size) <= 0:
        raise ConfigError(f"aggregator {name} needs server data: set "
                          "server_data_size > 0", field="server_data_size")
    if config.server_protocol != "single" or int(config.num_byzantine_servers):
        raise ConfigError(f"aggregator {name} needs one correct server computing "
                          "its own update: use server_protocol='single' with "
                          "num_byzantine_servers=0, or another aggregator",
                          field="aggregator")
    if optim.optimizer_entry(config.optimizer).moments:
        raise ConfigError(f"aggregator {name} compares the workers' vectors with "
                          "the server's own gradient, but optimizer "
                          f"{config.optimizer!r} sends moment pairs; use dsgd, "
                          "server_momentum, resam or dra", field="optimizer")
    if num_attackers(config) and attacks.entry(config.attack).stateful:
        raise ConfigError(f"attack {config.attack!r} follows the server's "
                          f"aggregate, but aggregator {name} needs the server's "
                          "own update, which the attack does not see; use "
                          "another attack (alie, foe, min_max, ...)", field="attack")
    if num_attackers(config) and attacks.entry(config.attack).adaptive:
        raise ConfigError(f"attack {config.attack!r} evaluates the server's rule, "
                          f"but aggregator {name} needs the server's own update, "
                          "which the attack does not see; use a non-adaptive "
                          "attack (alie, foe, ...)", field="attack")


def _rows_after_preaggregation(config, n: int, f: int) -> int:
    """The rows the aggregator receives from ``n`` workers (after pre-aggregation)."""
    if not config.preaggregator:
        return n
    entry = aggregators.PREAGGREGATORS.check(config.preaggregator, num_workers=n,
                                             num_byzantine=f)
    return int(entry.output_rows(n, dict(config.preaggregator_kwargs)))


def _check_rule_kwargs(config) -> None:
    """Each rule's ``*_kwargs`` against what its registry entry declares
    (names, types, required keywords, ranges)."""
    rules = [("aggregator", aggregators.AGGREGATORS, config.aggregator)]
    if config.preaggregator:
        rules.append(("preaggregator", aggregators.PREAGGREGATORS,
                      config.preaggregator))
    rules.append(("attack", attacks.ATTACKS, config.attack))
    for field, registry, name in rules:
        kwargs = dict(config[f"{field}_kwargs"])
        registry.entry(name)  # an unknown name is its own error (validate)
        try:
            registry.check_kwargs(name, kwargs)
        except ValueError as e:  # (KeywordTypeError is one too)
            raise ConfigError(f"{field}_kwargs: {e}", field=f"{field}_kwargs") from None


# ----------------------------------------------------------- unused fields
#: Fields only some optimisers read (their registry entry's ``config_fields``).
_OPTIMIZER_FIELDS = ("beta", "dampening", "nesterov", "momentum_init",
                     "momentum_bias_correction", "b1", "b2", "eps", "mra_safeguard")
#: Server fields, with the protocols that read them ("byzantine_single": one
#: Byzantine server).
_SERVER_FIELDS = {
    "server_quorum": ("guanyu",), "worker_quorum": ("guanyu",),
    "server_attack": ("guanyu", "liubei", "byzantine_single"),
    "scatter_period": ("liubei",), "liubei_filters": ("liubei",),
    "delay_distribution": ("guanyu",),
    "num_slow_servers": ("guanyu",), "num_slow_workers": ("guanyu",),
    "slow_factor": ("guanyu",),
}


def ignored_fields(config) -> tuple[str, ...]:
    """The fields ``config`` sets away from their default that its run never reads.

    E.g. ``b1`` with optimiser ``dsgd``, ``preaggregator_kwargs`` without a
    pre-aggregator, ``attack_eps`` with an attack that has no strength
    (``label_flip``, ``none``, ``sign_flip``), the server fields of another
    protocol, ``lr_decay_every`` with a constant learning rate,
    ``server_data_size`` with an aggregator that takes no server reference
    (only ``needs_reference`` rules, FLTrust, read it), ``robust_layout`` in
    peer-to-peer learning (its receivers aggregate leaf by leaf). A valid
    config is assumed (:func:`validate`).

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.optimizer, c.b1, c.attack, c.attack_eps = "dsgd", 0.5, "label_flip", 1.0
      >>> ignored_fields(c)
      ('attack_eps', 'b1')
    """
    unused = set(_OPTIMIZER_FIELDS) - set(
        optim.optimizer_entry(config.optimizer).config_fields.values())
    if not config.preaggregator:
        unused.add("preaggregator_kwargs")
    read = {field for split, fields in SPLIT_FIELDS.items()
            if data.SPLITS.get(config.split) is data.SPLITS.get(split)
            for field in fields.values()}
    unused.update({field for fields in SPLIT_FIELDS.values()
                   for field in fields.values()} - read)
    if config.lr_schedule != "step":
        unused.add("lr_decay_every")
    if config.lr_schedule != "multistep":
        unused.update(("lr_milestones", "lr_decay_factor"))
    if config.weight_decay == 0:
        unused.add("weight_decay_point")
    if num_attackers(config) == 0:
        unused.update(("attack_eps", "attack_kwargs", "attack_point",
                       "split_among"))
    elif attack_strength(config.attack) is None:
        unused.add("attack_eps")
    if config.clip_norm <= 0:
        unused.add("clip_point")
    if config.shard == "none":
        unused.add("num_devices")
    if not aggregators.AGGREGATORS.entry(config.aggregator).needs_reference:
        unused.add("server_data_size")
    unused.update(_unread_topology_fields(config))
    protocol = config.server_protocol
    if protocol == "single" and int(config.num_byzantine_servers):
        protocol = "byzantine_single"
    for key, readers in _SERVER_FIELDS.items():
        if protocol not in readers:
            unused.add(key)
    out = []
    for key in sorted(unused):
        value, default = config[key], FIELDS[key].default
        if FIELDS[key].kind == "dict":
            if len(value):
                out.append(key)
        elif value != default:
            out.append(key)
    return tuple(out)


# ------------------------------------------------------------------- servers
def server_quorums(config) -> tuple[int, int]:
    """GuanYu's ``(q_ps, q_wr)`` with 0 resolved to the largest allowed value.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.num_servers, c.num_byzantine_servers, c.num_byzantine = 7, 1, 3
      >>> server_quorums(c)
      (6, 12)
    """
    n_ps, f_ps = int(config.num_servers), int(config.num_byzantine_servers)
    n_wr, f_wr = int(config.num_workers), int(config.num_byzantine)
    q_ps = int(config.server_quorum) or n_ps - f_ps
    q_wr = int(config.worker_quorum) or n_wr - f_wr
    return q_ps, q_wr


def _check_servers(config) -> None:
    """The server fields (``docs/SERVERS.md``), after their own ranges.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.server_protocol, c.num_servers, c.num_byzantine_servers = "guanyu", 5, 1
      >>> try:
      ...     _check_servers(c)
      ... except ConfigError as e:
      ...     print(e)
      guanyu needs num_servers >= 3 num_byzantine_servers + 3 = 6, got num_servers=5
    """
    protocol = config.server_protocol
    n_ps, f_ps = int(config.num_servers), int(config.num_byzantine_servers)
    n_wr, f_wr = int(config.num_workers), int(config.num_byzantine)
    if config.delay_distribution not in servers.DELAY_DISTRIBUTIONS:
        raise ConfigError(unknown_name("delay_distribution",
                                       config.delay_distribution,
                                       servers.DELAY_DISTRIBUTIONS),
                          field="delay_distribution")
    if protocol == "single":
        if n_ps != 1:
            raise ConfigError(f"server_protocol='single' has one server, got "
                              f"num_servers={n_ps}; set server_protocol='guanyu' "
                              "or 'liubei' to replicate it", field="num_servers")
        if f_ps > 1:
            raise ConfigError(f"num_byzantine_servers must be 0 or 1 with one "
                              f"server, got {f_ps}", field="num_byzantine_servers")
        if f_ps == 0:
            return
    _check_server_attack(config)
    if optim.optimizer_entry(config.optimizer).moments:
        raise ConfigError(f"optimizer {config.optimizer!r} is not supported with "
                          f"server_protocol={protocol!r} (its workers send moment "
                          "pairs); use dsgd, server_momentum, resam or dra",
                          field="optimizer")
    if config.shard == "workers":
        raise ConfigError("shard='workers' is not supported with replicated or "
                          "Byzantine servers; use shard='runs' or 'none'",
                          field="shard")
    if protocol == "single":
        return
    if int(config.num_slow_servers) > n_ps - f_ps:
        raise ConfigError(f"num_slow_servers must be at most the {n_ps - f_ps} "
                          f"correct servers, got {config.num_slow_servers}",
                          field="num_slow_servers")
    if int(config.num_slow_workers) > n_wr - num_attackers(config):
        raise ConfigError(f"num_slow_workers must be at most the "
                          f"{n_wr - num_attackers(config)} correct workers, got "
                          f"{config.num_slow_workers}", field="num_slow_workers")
    if protocol == "guanyu":
        _check_guanyu(config, n_ps, f_ps, n_wr, f_wr)
    else:
        _check_liubei(config, n_ps, f_ps, n_wr, f_wr)


def _check_server_attack(config) -> None:
    name = config.server_attack
    try:
        entry = attacks.entry(name)
    except ValueError as e:
        raise ConfigError(str(e).replace("unknown attack", "unknown server_attack",
                                         1), field="server_attack") from None
    if entry.data_level or entry.needs_own or entry.adaptive or entry.stateful:
        raise ConfigError(
            f"server_attack {entry.name!r} does not apply to models (it is "
            "data-level, needs the attacker's own rows, targets a worker-side "
            "rule or reads the server's previous aggregate); use sign_flip, "
            "fall_of_empires, a_little_is_enough, inf, gaussian, mimic, ...",
            field="server_attack")


def _check_guanyu(config, n_ps, f_ps, n_wr, f_wr) -> None:
    if n_ps < 3 * f_ps + 3:
        raise ConfigError(f"guanyu needs num_servers >= 3 num_byzantine_servers + 3 "
                          f"= {3 * f_ps + 3}, got num_servers={n_ps}",
                          field="num_servers")
    if n_wr < 3 * f_wr + 3:
        raise ConfigError(f"guanyu needs num_workers >= 3 num_byzantine + 3 = "
                          f"{3 * f_wr + 3}, got num_workers={n_wr}",
                          field="num_workers")
    q_ps, q_wr = server_quorums(config)
    if not 2 * f_ps + 3 <= q_ps <= n_ps - f_ps:
        raise ConfigError(f"guanyu needs 2 num_byzantine_servers + 3 <= "
                          f"server_quorum <= num_servers - num_byzantine_servers, "
                          f"i.e. in [{2 * f_ps + 3}, {n_ps - f_ps}] (0: the "
                          f"largest), got {config.server_quorum}",
                          field="server_quorum")
    if not 2 * f_wr + 3 <= q_wr <= n_wr - f_wr:
        raise ConfigError(f"guanyu needs 2 num_byzantine + 3 <= worker_quorum <= "
                          f"num_workers - num_byzantine, i.e. in [{2 * f_wr + 3}, "
                          f"{n_wr - f_wr}] (0: the largest), got "
                          f"{config.worker_quorum}", field="worker_quorum")
    _check_rule_on_quorum(config, q_wr, f_wr)


def _check_rule_on_quorum(config, m: int, f: int) -> None:
    """The robust rule must accept the ``m`` vectors a server aggregates."""
    try:
        rows = _rows_after_preaggregation(config, m, f)
        aggregators.check(config.aggregator, num_workers=rows, num_byzantine=f)
    except ValueError as e:
        raise ConfigError(f"a server aggregates {m} vectors per round (its worker "
                          f"quorum): {e}", field="worker_quorum") from None


def _check_liubei(config, n_ps, f_ps, n_wr, f_wr) -> None:
    if n_ps < 3 * f_ps + 1:
        raise ConfigError(f"liubei needs num_servers >= 3 num_byzantine_servers + 1 "
                          f"= {3 * f_ps + 1}, got num_servers={n_ps}",
                          field="num_servers")
    if n_wr < 2 * f_wr + 1:
        raise ConfigError(f"liubei needs num_workers >= 2 num_byzantine + 1 = "
                          f"{2 * f_wr + 1}, got num_workers={n_wr}",
                          field="num_workers")
    for key in ("server_quorum", "worker_quorum"):
        if int(config[key]) != 0:
            raise ConfigError(f"{key} is a GuanYu setting; LiuBei is synchronous "
                              f"(every message arrives): leave {key}=0", field=key)
    entry = optim.optimizer_entry(config.optimizer)
    if not entry.liubei:
        ok = [e.name for e in optim.OPTIMIZERS.values() if e.liubei]
        raise ConfigError(f"liubei's models filter bounds a server step by "
                          f"lr * clip_norm: use optimizer {' or '.join(ok)}, got "
                          f"{config.optimizer!r}", field="optimizer")
    if config.liubei_filters == "garfield":
        # The code's workers take Multi-Krum (m = n_ps - f_ps - 2) of every
        # server's output every T iterations.
        if n_ps < 2 * f_ps + 3:
            raise ConfigError(f"liubei_filters='garfield' takes Multi-Krum of the "
                              f"servers' models (n >= 2f+3): needs num_servers >= "
                              f"{2 * f_ps + 3}, got num_servers={n_ps}",
                              field="num_servers")
    elif not config.clip_norm > 0:
        raise ConfigError("liubei's models filter needs the workers' vectors "
                          "bounded: set clip_norm > 0 (or liubei_filters="
                          "'garfield', whose bound reads the gradient's norm)",
                          field="clip_norm")
    _check_rule_on_quorum(config, n_wr, f_wr)


# ------------------------------------------------------------ peer-to-peer
#: Topology fields, with the topologies that read them.
_TOPOLOGY_FIELDS = {"topology_degree": ("ring", "regular"),
                    "topology_probability": ("erdos_renyi",),
                    "topology_seed": ("regular", "erdos_renyi")}


def _unread_topology_fields(config) -> set[str]:
    if not config.topology:
        return set(_TOPOLOGY_FIELDS) | {"gossip_steps", "attack_per_receiver"}
    out = {k for k, readers in _TOPOLOGY_FIELDS.items()
           if config.topology not in readers}
    if num_attackers(config) == 0:
        out.add("attack_per_receiver")
    # Peer-to-peer receivers aggregate their views leaf by leaf (MoNNA from
    # one distance matrix of the vectors sent): the flat layout is not built.
    out.add("robust_layout")
    return out


def check_topology(config) -> None:
    """Peer-to-peer learning (a ``topology``): every honest node can aggregate.

    The graph is built (host, seeded) and every distinct number of inputs a
    receiver gets (itself and its neighbours) is checked: at least ``2f + 1``
    (``f`` declared) so that honest vectors can outnumber Byzantine ones,
    then the aggregator's own requirement (after pre-aggregation) at that
    count; with ``attack_per_receiver`` the attack's requirement at each
    receiver's view. Also: one correct server's fields only, an optimiser
    whose nodes send one vector (not MRA's moment pairs), no rule needing a
    server's own update, ``attack_point='sent'``, MoNNA's row pivot 0 (the
    receiver's own vector).

    Raises:
      ConfigError: one line naming the field and what to change.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.topology, c.aggregator, c.num_workers, c.num_byzantine = (
      ...     "ring", "krum", 10, 1)
      >>> try:
      ...     check_topology(c)
      ... except ConfigError as e:
      ...     where, why = str(e).split("; ")[:2]
      ...     print(where); print(why[:20])
      topology ring gives honest node 0 3 inputs (itself and 2 neighbours)
      krum needs n >= 2f+3
    """
    name = config.topology
    if not name:
        return
    if config.server_protocol != "single" or int(config.num_byzantine_servers):
        raise ConfigError("topology (peer-to-peer learning) has no parameter "
                          "server: keep server_protocol='single' and "
                          "num_byzantine_servers=0", field="topology")
    if config.shard == "workers":
        raise ConfigError("topology: shard='workers' is not supported peer-to-peer; "
                          "use shard='runs' or 'none'", field="shard")
    if optim.optimizer_entry(config.optimizer).moments:
        raise ConfigError(f"topology: optimizer {config.optimizer!r} sends moment "
                          "pairs; peer-to-peer nodes send one vector: use dsgd, "
                          "resam, dra or server_momentum", field="optimizer")
    agg = aggregators.AGGREGATORS.entry(config.aggregator)
    if agg.needs_reference:
        raise ConfigError(f"topology: aggregator {agg.name} needs a server's own "
                          "update; peer-to-peer has no server: use another "
                          "aggregator", field="aggregator")
    b = num_attackers(config)
    if b and config.attack_point != "sent":
        raise ConfigError("topology: Byzantine nodes send vectors to their "
                          "neighbours; set attack_point='sent'",
                          field="attack_point")
    if agg.name == "monna" and int(config.aggregator_kwargs.get("pivot", 0)):
        raise ConfigError("topology: MoNNA's pivot is the receiver's own vector "
                          "(row 0 of its view); remove aggregator_kwargs.pivot",
                          field="aggregator_kwargs")
    n, f = int(config.num_workers), int(config.num_byzantine)
    if n - b < 1:
        raise ConfigError(f"topology: num_attackers={b} leaves no honest node of "
                          f"num_workers={n}", field="num_attackers")
    try:
        groups = topology.topology_groups(
            name, num_nodes=n, num_byzantine_nodes=b,
            degree=int(config.topology_degree),
            probability=float(config.topology_probability),
            seed=int(config.topology_seed))
    except ValueError as e:
        text = str(e)
        field = ("topology_degree" if "degree" in text else
                 "num_workers" if "num_workers" in text else "topology")
        raise ConfigError(text, field=field) from None
    for g in groups:
        m, node = g.num_inputs, int(g.receivers[0])
        where = (f"topology {name} gives honest node {node} {m} inputs (itself "
                 f"and {m - 1} neighbours)")
        if f and m < 2 * f + 1:
            raise ConfigError(f"{where}; with num_byzantine={f} every node needs "
                              f"at least 2f + 1 = {2 * f + 1}: use a denser "
                              "topology or a smaller num_byzantine",
                              field="topology")
        try:
            rows = _rows_after_preaggregation(config, m, f)
            aggregators.check(config.aggregator, num_workers=rows, num_byzantine=f)
            kb = int(g.byzantine.shape[1])
            if config.attack_per_receiver and kb:
                attacks.ATTACKS.check(config.attack, num_workers=m,
                                      num_byzantine=kb)
        except ValueError as e:
            raise ConfigError(f"{where}; {e}", field="topology") from None
