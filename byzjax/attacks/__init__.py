"""Byzantine attacks: honest rows in, Byzantine rows out.

Every attack has the signature ``attack(honest, *, num_byzantine, key=None,
**hparams)``: ``honest`` is a pytree with leaves ``[n_honest, *param_shape]``
(the rows of the honest workers, which an omniscient attacker sees) and the
result has leaves ``[num_byzantine, *param_shape]``. ``num_byzantine`` and
integer options are static Python ints; float strengths (``eps``, ``scale``)
may be traced, so they can be vmapped.

Registry names (aliases in brackets): ``sign_flip``, ``sign_flip_own``,
``fall_of_empires`` (``foe``, ``empire``), ``a_little_is_enough`` (``alie``,
``little``), ``inf``, ``neg_inf``, ``nan``, ``mimic``, ``gaussian``,
``label_flip``, ``none``, ``adaptive_alie``, ``adaptive_foe``, ``optimized``
(``optimised``: the Byzantine row found by gradient ascent through the server's
own pipeline), ``inner_product_manipulation`` (``ipm``: ByzFL's ``-tau * gbar``),
``min_max`` and ``min_sum`` (Shejwalkar and Houmansadr), and
``relocated_orthogonal_perturbation`` (``rop``: Ozfatura et al., around the
server's previous aggregate). Each entry
records ``needs_key``, ``data_level`` (label flip and none: the attack stage
leaves the Byzantine rows untouched), ``needs_own`` (takes the Byzantine
workers' own rows as ``byzantine_own=``), ``adaptive`` and ``stateful``
(takes the server's previous aggregate as ``center=``).

Example:
    >>> import jax.numpy as jnp
    >>> from byzjax import attacks
    >>> honest = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    >>> attacks.get("foe")(honest, num_byzantine=1, eps=2.0)
    {'w': Array([[-2., -3.]], dtype=float32)}
    >>> attacks.entry("label_flip").data_level, attacks.entry("gaussian").needs_key
    (True, True)
"""

from byzjax._types import Attack
from byzjax.attacks import _adaptive, _classic, _history, _min_max, _optimized
from byzjax.attacks._adaptive import DEFAULT_CANDIDATES as DEFAULT_CANDIDATES
from byzjax.attacks._adaptive import LINE_SEARCH_DEFAULTS as LINE_SEARCH_DEFAULTS
from byzjax.attacks._adaptive import adaptive as adaptive
from byzjax.attacks._adaptive import adaptive_alie as adaptive_alie
from byzjax.attacks._adaptive import adaptive_foe as adaptive_foe
from byzjax.attacks._adaptive import line_search as line_search
from byzjax.attacks._adaptive import server_view as server_view
from byzjax.attacks._base import ATTACKS, AttackEntry, honest_mean, honest_std
from byzjax.attacks._base import strength_spellings as strength_spellings
from byzjax.attacks._classic import a_little_is_enough as a_little_is_enough
from byzjax.attacks._classic import a_little_is_enough_own as a_little_is_enough_own
from byzjax.attacks._classic import alie_z_max as alie_z_max
from byzjax.attacks._classic import fall_of_empires as fall_of_empires
from byzjax.attacks._classic import fall_of_empires_own as fall_of_empires_own
from byzjax.attacks._classic import flip_labels as flip_labels
from byzjax.attacks._classic import gaussian as gaussian
from byzjax.attacks._classic import infinity as infinity
from byzjax.attacks._classic import (
    inner_product_manipulation as inner_product_manipulation,
)
from byzjax.attacks._classic import label_flip as label_flip
from byzjax.attacks._classic import mimic as mimic
from byzjax.attacks._classic import negative_infinity as negative_infinity
from byzjax.attacks._classic import no_attack as no_attack
from byzjax.attacks._classic import not_a_number as not_a_number
from byzjax.attacks._classic import sign_flip as sign_flip
from byzjax.attacks._classic import sign_flip_own as sign_flip_own
from byzjax.attacks._history import (
    relocated_orthogonal_perturbation as relocated_orthogonal_perturbation,
)
from byzjax.attacks._history import rop_z_max as rop_z_max
from byzjax.attacks._min_max import min_max as min_max
from byzjax.attacks._min_max import min_max_gamma as min_max_gamma
from byzjax.attacks._min_max import min_sum as min_sum
from byzjax.attacks._optimized import optimized as optimized

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackEntry",
    "get",
    "entry",
    "names",
    "honest_mean",
    "honest_std",
    "strength_spellings",
]
__all__ += (list(_classic.__all__) + list(_adaptive.__all__)
            + list(_optimized.__all__) + list(_min_max.__all__)
            + list(_history.__all__))


def get(name: str):
    """Returns the attack registered as ``name`` (or an alias, e.g. ``"alie"``)."""
    return ATTACKS.get(name)


def entry(name: str) -> AttackEntry:
    """Returns the registry entry of ``name``: the function and its flags."""
    return ATTACKS.entry(name)  # type: ignore[return-value]  # (AttackRegistry)


def names() -> tuple[str, ...]:
    """Canonical names of all registered attacks."""
    return ATTACKS.names()
