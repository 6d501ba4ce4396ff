"""Classic Byzantine attacks: fixed formulas of the honest rows.

All attacks share the signature ``attack(honest, *, num_byzantine, key=None,
**hparams)``: ``honest`` has leaves ``[n_honest, *param_shape]`` and the result
leaves ``[num_byzantine, *param_shape]`` (same dtype). ``num_byzantine`` and
integer options are static; float strengths (``eps``, ``scale``) may be traced.
The attacker is omniscient: it sees every honest row.

References:
  Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner
  Product Manipulation", UAI 2020, https://arxiv.org/abs/1903.03936.
  Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
  Distributed Learning", NeurIPS 2019, https://arxiv.org/abs/1902.06156.
  Fabris, "Investigating a Byzantine Resilient Framework for the Adam Optimizer",
  MSc thesis, Chalmers 2023 (sign flip, label flip, infinity attacks).
"""

from __future__ import annotations

import math
import statistics

import jax
import jax.numpy as jnp

from byzjax._registry import at_least
from byzjax._tree import PyTree, num_rows
from byzjax.attacks._base import (
    ATTACKS,
    honest_mean,
    honest_std,
    repeat_rows,
)

__all__ = [
    "sign_flip",
    "sign_flip_own",
    "fall_of_empires",
    "inner_product_manipulation",
    "a_little_is_enough",
    "a_little_is_enough_own",
    "fall_of_empires_own",
    "alie_z_max",
    "infinity",
    "negative_infinity",
    "not_a_number",
    "mimic",
    "gaussian",
    "label_flip",
    "no_attack",
    "flip_labels",
]


def _cast_like(tree: PyTree, like: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: x.astype(y.dtype), tree, like)


@ATTACKS.register("sign_flip", aliases=("signflip", "sign_flipping"),
                  display_name="sign flip", short_name="SF", order=3)
def sign_flip(honest: PyTree, *, num_byzantine: int, key=None) -> PyTree:
    """Every Byzantine row is ``-gbar``, the negated honest mean (ByzFL's SignFlipping).

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of rows to return.
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.sign_flip({"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])},
      ...                   num_byzantine=1)
      {'w': Array([[-2., -3.]], dtype=float32)}
    """
    del key
    gbar = honest_mean(honest)
    return repeat_rows(jax.tree_util.tree_map(jnp.negative, gbar), num_byzantine)


@ATTACKS.register("sign_flip_own", needs_own=True,
                  aliases=("sign_flip_self", "own_sign_flip"),
                  display_name="sign flip", short_name="SF (own)", order=4)
def sign_flip_own(honest: PyTree, *, num_byzantine: int,
                  byzantine_own: PyTree | None = None, key=None) -> PyTree:
    """Each Byzantine worker negates its *own* honestly computed vector (Fabris 2023).

    Args:
      honest: leaves ``[n_honest, *param_shape]`` (only checked).
      num_byzantine: static number of rows to return.
      byzantine_own: leaves ``[num_byzantine, *param_shape]``, the vectors the
        Byzantine workers would have sent had they been honest (their own
        gradients / momentums). :func:`byzjax.optim.byzantine_attack` passes
        the last ``num_byzantine`` rows of its input.
      key: ignored.

    Returns:
      ``-byzantine_own``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.sign_flip_own({"w": jnp.ones((2, 2))}, num_byzantine=1,
      ...                       byzantine_own={"w": jnp.array([[5.0, -1.0]])})
      {'w': Array([[-5.,  1.]], dtype=float32)}
    """
    del key
    own = _require_own("sign_flip_own", byzantine_own, num_byzantine)
    return jax.tree_util.tree_map(jnp.negative, own)


@ATTACKS.register("fall_of_empires", aliases=("foe", "empire"), strength="eps",
                  display_name="Fall of Empires", short_name="FOE", order=2)
def fall_of_empires(honest: PyTree, *, num_byzantine: int, eps=1.1,
                    key=None) -> PyTree:
    """Fall of Empires (inner-product manipulation): ``(1 - eps) * gbar``.

    The form ``gbar + eps * (-gbar)`` of El Mhamdi, Guerraoui and Rouault
    (ICLR 2021); ``eps = 1.1`` (their default) by default; "multiply the mean
    by -0.9" (Fabris's thesis, Chalmers 2023) is ``eps = 1.9``. ByzFL's
    ``InnerProductManipulation(tau)`` sends ``-tau * gbar``, which is
    ``eps = 1 + tau`` here (its default ``tau = 2.0`` is ``eps = 3.0``), or
    :func:`inner_product_manipulation` with ByzFL's ``tau`` itself.

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of rows to return.
      eps: attack strength, a float or traced scalar.
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``, every row equal.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.fall_of_empires({"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])},
      ...                         num_byzantine=2, eps=3.0)
      {'w': Array([[-4., -6.],
                   [-4., -6.]], dtype=float32)}
    """
    del key
    gbar = honest_mean(honest)
    out = jax.tree_util.tree_map(lambda g: (1.0 - eps) * g, gbar)
    return repeat_rows(_cast_like(out, gbar), num_byzantine)


@ATTACKS.register("inner_product_manipulation", aliases=("ipm",), strength="tau",
                  display_name="inner product manipulation", short_name="IPM",
                  order=16)
def inner_product_manipulation(honest: PyTree, *, num_byzantine: int,
                               tau: float | jax.Array = 2.0, key=None) -> PyTree:
    """Inner product manipulation with ByzFL's parameter: ``-tau * gbar``.

    ByzFL's ``InnerProductManipulation(tau)`` (default ``tau = 2.0``): every
    Byzantine row is the honest mean scaled by ``-tau``. The same family as
    :func:`fall_of_empires` (``(1 - eps) * gbar``, so ``tau = eps - 1``), in
    the parameter ByzFL's configurations use; Xie et al.'s ``epsilon`` is
    this ``tau``.

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of rows to return.
      tau: attack factor, a float or traced scalar.
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``, every row equal.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.inner_product_manipulation(
      ...     {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}, num_byzantine=2)
      {'w': Array([[-4., -6.],
                   [-4., -6.]], dtype=float32)}

    Reference:
      C. Xie, O. Koyejo, I. Gupta, "Fall of Empires: Breaking
      Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2020,
      https://arxiv.org/abs/1903.03936.
    """
    del key
    gbar = honest_mean(honest)
    out = jax.tree_util.tree_map(lambda g: -tau * g, gbar)
    return repeat_rows(_cast_like(out, gbar), num_byzantine)


def alie_z_max(num_workers: int, num_byzantine: int) -> float:
    """Baruch et al.'s ``z_max = Phi^-1((n - s) / n)``, ``s = floor(n/2 + 1) - f``.

    ``s`` is the number of honest workers the attackers need on their side to
    form a majority; ``z_max`` the largest deviation (in standard deviations)
    that still keeps ``s`` honest workers farther from the mean. Static: a
    Python float from the static ``n`` and ``f``.

    Raises:
      ValueError: if ``(n - s) / n`` is not in ``(0, 1)``.

    Example:
      >>> from byzjax import attacks
      >>> round(attacks.alie_z_max(50, 24), 4)   # Baruch et al.: n=50, f=24
      1.7507
      >>> round(attacks.alie_z_max(15, 5), 4)
      0.8416
    """
    n, f = int(num_workers), int(num_byzantine)
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    if not 0.0 < p < 1.0:
        raise ValueError(
            f"alie z_max: Phi^-1((n - s)/n) with n={n}, f={f}, s={s} is undefined "
            f"((n - s)/n = {p}); z_max needs 0 < s < n, i.e. f < n/2 + 1. Pass a "
            "fixed eps instead."
        )
    return statistics.NormalDist().inv_cdf(p)


@ATTACKS.register("a_little_is_enough", aliases=("alie", "little"),
                  min_workers=lambda f: f + 2,
                  requirement="n >= f + 2 (the standard deviation needs 2 honest rows)",
                  hint="(Its standard deviation, with ddof=1, needs 2 honest rows.)",
                  keywords={"eps": {"kind": "float", "traced": True},
                            "tau": {"kind": "float", "traced": True},
                            "ddof": at_least(0)},
                  strength="eps", strength_aliases=("tau",),
                  display_name="A Little Is Enough", short_name="ALIE", order=1)
def a_little_is_enough(honest: PyTree, *, num_byzantine: int, eps=None,
                       tau=None, z_max: bool = False, ddof: int = 1,
                       key=None) -> PyTree:
    """A Little Is Enough: ``gbar - eps * sigma`` in every Byzantine row.

    ``sigma`` is the coordinate-wise standard deviation of the honest rows.
    Convention: ``ddof=1`` (the sample standard deviation), as both anchors
    compute it (ByzFL ``ALittleIsEnough``: ``np.var(..., ddof=1)``;
    ByzantineMomentum ``little``: ``torch.var`` unbiased by default);
    ``ddof=0`` gives the population one. The sign is ``-sigma``, as in Baruch
    et al. and Fabris's thesis. ByzFL's ``ALittleIsEnough(tau)`` sends
    ``gbar + tau * sigma``: pass ``tau=`` for ByzFL's sign (``tau = -eps``;
    its default ``tau = 1.5`` is ``eps = -1.5``).

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of rows to return.
      eps: strength (float or traced scalar); default ``1.5`` (El Mhamdi et al. 2021).
      tau: ByzFL's spelling of the strength, ``gbar + tau * sigma``
        (``tau = -eps``); give ``eps`` or ``tau``, not both.
      z_max: static; if True use Baruch et al.'s ``z_max`` (see
        :func:`alie_z_max`) from the static ``n = n_honest + num_byzantine``
        and ``f = num_byzantine`` instead of ``eps`` (then leave ``eps`` unset).
      ddof: static delta degrees of freedom of ``sigma`` (``1`` or ``0``).
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``, every row equal.

    Raises:
      ValueError: if ``n_honest <= ddof``, or two of ``eps``, ``tau`` and
        ``z_max`` are given.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[0.0, 1.0], [2.0, 1.0]])}  # mean [1, 1]
      >>> attacks.a_little_is_enough(honest, num_byzantine=1, eps=1.0, ddof=0)
      {'w': Array([[0., 1.]], dtype=float32)}
      >>> attacks.a_little_is_enough(honest, num_byzantine=1, tau=1.0, ddof=0)
      {'w': Array([[2., 1.]], dtype=float32)}
    """
    del key
    n_honest = num_rows(honest)
    if tau is not None:
        if eps is not None:
            raise ValueError("attack 'a_little_is_enough': eps and tau both set "
                             "its strength (tau = -eps); keep one")
        if z_max:
            raise ValueError(
                "a_little_is_enough: pass either tau or z_max=True, not both")
        eps = -tau
    if z_max:
        if eps is not None:
            raise ValueError(
                "a_little_is_enough: pass either eps or z_max=True, not both")
        eps = alie_z_max(n_honest + num_byzantine, num_byzantine)
    elif eps is None:
        eps = 1.5
    gbar = honest_mean(honest)
    sigma = honest_std(honest, ddof=ddof, mean=gbar)
    out = jax.tree_util.tree_map(lambda g, s: g - eps * s, gbar, sigma)
    return repeat_rows(_cast_like(out, gbar), num_byzantine)


@ATTACKS.register("a_little_is_enough_own", needs_own=True,
                  aliases=("alie_own", "little_own"), keywords={"ddof": at_least(0)},
                  strength="eps", display_name="Little (own vectors)",
                  short_name="Little", order=9)
def a_little_is_enough_own(honest: PyTree, *, num_byzantine: int,
                           byzantine_own: PyTree | None = None, eps=1.0,
                           ddof: int = 1, key=None) -> PyTree:
    """Fabris's (2023) "Little": each Byzantine worker sends ``own - eps * sigma_B``.

    The thesis's Little algorithm shifts each Byzantine worker's *own*
    honestly computed vector (its momentum) by the coordinate-wise standard
    deviation ``sigma_B`` of the Byzantine workers' own vectors, ``eps = 1``.
    Baruch et al.'s ALIE (:func:`a_little_is_enough`) instead sends
    ``gbar - eps * sigma`` from the honest rows' mean and standard deviation,
    the same row for every Byzantine worker. ``ddof=1`` (the sample standard
    deviation) as in :func:`a_little_is_enough`.

    Args:
      honest: leaves ``[n_honest, *param_shape]`` (only checked).
      num_byzantine: static number of rows to return.
      byzantine_own: leaves ``[num_byzantine, *param_shape]``, the Byzantine
        workers' own vectors (:func:`byzjax.optim.byzantine_attack` passes the
        last ``num_byzantine`` rows of its input).
      eps: strength (float or traced scalar), default ``1.0``.
      ddof: static delta degrees of freedom of ``sigma_B``.
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``.

    Raises:
      ValueError: if ``0 < num_byzantine <= ddof`` (``sigma_B`` is undefined).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> own = {"w": jnp.array([[1.0, 0.0], [3.0, 0.0]])}  # sigma_B = [sqrt 2, 0]
      >>> attacks.a_little_is_enough_own({"w": jnp.ones((3, 2))}, num_byzantine=2,
      ...                                byzantine_own=own, ddof=0)
      {'w': Array([[0., 0.],
                   [2., 0.]], dtype=float32)}

    Reference:
      B. Fabris, "Investigating a Byzantine Resilient Framework for the Adam
      Optimizer", MSc thesis, Chalmers University of Technology, 2023.
    """
    del key
    own = _require_own("a_little_is_enough_own", byzantine_own, num_byzantine)
    if num_byzantine == 0:
        return own
    if num_byzantine <= ddof:
        raise ValueError(
            f"a_little_is_enough_own: the standard deviation of the Byzantine "
            f"workers' own rows with ddof={ddof} needs more than {ddof} of them, "
            f"got {num_byzantine}; use more attackers or ddof=0")
    sigma = honest_std(own, ddof=ddof)
    out = jax.tree_util.tree_map(lambda x, s: x - eps * s[None], own, sigma)
    return _cast_like(out, own)


@ATTACKS.register("fall_of_empires_own", needs_own=True,
                  aliases=("foe_own", "empire_own"), strength="eps",
                  display_name="Empire (own vectors)", short_name="Empire",
                  order=10)
def fall_of_empires_own(honest: PyTree, *, num_byzantine: int,
                        byzantine_own: PyTree | None = None, eps=1.9,
                        key=None) -> PyTree:
    """Fabris's (2023) "Empire": each Byzantine worker sends ``(1 - eps) * own``.

    The thesis's Empire multiplies each Byzantine worker's *own* vector (its
    momentum) by ``-0.9`` (``eps = 1.9``, the default); Fall of Empires
    (:func:`fall_of_empires`) scales the honest rows' mean instead.

    Args:
      honest: leaves ``[n_honest, *param_shape]`` (only checked).
      num_byzantine: static number of rows to return.
      byzantine_own: leaves ``[num_byzantine, *param_shape]``, the Byzantine
        workers' own vectors.
      eps: strength (float or traced scalar), default ``1.9``.
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.fall_of_empires_own({"w": jnp.ones((2, 2))}, num_byzantine=1,
      ...                             byzantine_own={"w": jnp.array([[10.0, -1.0]])})
      {'w': Array([[-9. ,  0.9]], dtype=float32)}

    Reference:
      B. Fabris, "Investigating a Byzantine Resilient Framework for the Adam
      Optimizer", MSc thesis, Chalmers University of Technology, 2023.
    """
    del key
    own = _require_own("fall_of_empires_own", byzantine_own, num_byzantine)
    out = jax.tree_util.tree_map(lambda x: (1.0 - eps) * x, own)
    return _cast_like(out, own)


def _constant_rows(honest, num_byzantine, value):
    return jax.tree_util.tree_map(
        lambda x: jnp.full((num_byzantine,) + x.shape[1:], value, x.dtype), honest)


@ATTACKS.register("inf", aliases=("infinity", "pos_inf", "+inf"), display_name="+inf",
                  short_name="+inf", order=6)
def infinity(honest: PyTree, *, num_byzantine: int, key=None) -> PyTree:
    """Every coordinate of every Byzantine row is ``+inf`` (Fabris's Infinity).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.infinity({"w": jnp.zeros((3, 2))}, num_byzantine=1)
      {'w': Array([[inf, inf]], dtype=float32)}
    """
    del key
    return _constant_rows(honest, num_byzantine, jnp.inf)


@ATTACKS.register("neg_inf", aliases=("negative_infinity", "minus_inf", "-inf"),
                  display_name="\u2212inf", short_name="\u2212inf", order=7)
def negative_infinity(honest: PyTree, *, num_byzantine: int, key=None) -> PyTree:
    """Every coordinate of every Byzantine row is ``-inf`` (Fabris's -Infinity).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.negative_infinity({"w": jnp.zeros((3, 2))}, num_byzantine=1)
      {'w': Array([[-inf, -inf]], dtype=float32)}
    """
    del key
    return _constant_rows(honest, num_byzantine, -jnp.inf)


@ATTACKS.register("nan", aliases=("not_a_number",), display_name="NaN",
                  short_name="NaN", order=8)
def not_a_number(honest: PyTree, *, num_byzantine: int, key=None) -> PyTree:
    """Every coordinate of every Byzantine row is ``NaN`` (ByzantineMomentum's ``nan``).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.not_a_number({"w": jnp.zeros((3, 2))}, num_byzantine=1)
      {'w': Array([[nan, nan]], dtype=float32)}
    """
    del key
    return _constant_rows(honest, num_byzantine, jnp.nan)


@ATTACKS.register("mimic", aliases=("copy",),
                  keywords={"index": {"low": 0, "traced": True}},
                  display_name="mimic", short_name="mimic", order=11)
def mimic(honest: PyTree, *, num_byzantine: int, index=0, key=None) -> PyTree:
    """Every Byzantine row copies honest row ``index`` (ByzFL's Mimic).

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of rows to return.
      index: which honest row to copy; a Python int (checked) or traced int.
      key: ignored.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.mimic({"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])},
      ...               num_byzantine=2, index=1)
      {'w': Array([[3., 4.],
                   [3., 4.]], dtype=float32)}
    """
    del key
    n_honest = num_rows(honest)
    if isinstance(index, int) and not 0 <= index < n_honest:
        raise ValueError(f"mimic: index must be in [0, {n_honest}), got {index}")
    row = jax.tree_util.tree_map(lambda x: x[index], honest)
    return repeat_rows(row, num_byzantine)


@ATTACKS.register("gaussian", needs_key=True, aliases=("gauss", "noise"),
                  keywords={"scale": at_least(0)}, strength="scale",
                  display_name="Gaussian noise", short_name="gauss", order=12)
def gaussian(honest: PyTree, *, num_byzantine: int, key, scale=1.0) -> PyTree:
    """``gbar + N(0, scale^2)``, fresh noise per Byzantine row and coordinate.

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of rows to return.
      key: a PRNG key (required).
      scale: noise standard deviation (float or traced scalar).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from byzjax import attacks
      >>> out = attacks.gaussian({"w": jnp.zeros((3, 2))}, num_byzantine=4,
      ...                        key=jax.random.key(0), scale=0.0)
      >>> out["w"].shape, float(jnp.abs(out["w"]).max())
      ((4, 2), 0.0)
    """
    if key is None:
        raise ValueError(
            "gaussian attack needs a PRNG key: pass key=jax.random.key(...)")
    gbar = honest_mean(honest)
    leaves, treedef = jax.tree_util.tree_flatten(gbar)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        (g[None] + scale * jax.random.normal(k, (num_byzantine,) + g.shape,
                                             g.dtype)).astype(g.dtype)
        for g, k in zip(leaves, keys)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _require_own(name, byzantine_own, num_byzantine):
    if byzantine_own is None:
        raise ValueError(
            f"{name} needs byzantine_own=: the Byzantine workers' own honestly "
            "computed rows [num_byzantine, *param_shape] (byzjax.optim."
            "byzantine_attack passes the last num_byzantine rows of its input)"
        )
    if num_byzantine and num_rows(byzantine_own) != num_byzantine:
        raise ValueError(
            f"{name}: byzantine_own has {num_rows(byzantine_own)} rows, expected "
            f"num_byzantine={num_byzantine}"
        )
    return byzantine_own


@ATTACKS.register("label_flip", data_level=True, needs_own=True,
                  aliases=("labelflip", "label_flipping"),
                  display_name="label flip", short_name="LF", order=5)
def label_flip(honest: PyTree, *, num_byzantine: int,
               byzantine_own: PyTree | None = None, key=None) -> PyTree:
    """Label flip is data-level: this stage returns the Byzantine rows untouched.

    The Byzantine workers compute honest updates on flipped labels
    ``y -> C - 1 - y`` (:func:`flip_labels`); the simulator flips their labels,
    and the vectors they then send are their own rows, ``byzantine_own``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.label_flip({"w": jnp.ones((2, 2))}, num_byzantine=1,
      ...                    byzantine_own={"w": jnp.array([[7.0, 8.0]])})
      {'w': Array([[7., 8.]], dtype=float32)}
    """
    del key
    return _require_own("label_flip (a data-level attack)", byzantine_own,
                        num_byzantine)


@ATTACKS.register("none", data_level=True, needs_own=True,
                  aliases=("no_attack", "honest"),
                  display_name="no attack", short_name="none", order=0)
def no_attack(honest: PyTree, *, num_byzantine: int,
              byzantine_own: PyTree | None = None, key=None) -> PyTree:
    """No attack: the "Byzantine" workers behave honestly (rows untouched).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.no_attack({"w": jnp.ones((2, 1))}, num_byzantine=1,
      ...                   byzantine_own={"w": jnp.array([[3.0]])})
      {'w': Array([[3.]], dtype=float32)}
    """
    del key
    return _require_own("none (no attack)", byzantine_own, num_byzantine)


def flip_labels(labels: jax.Array, num_classes: int) -> jax.Array:
    """Label flip ``y -> num_classes - 1 - y`` (Fabris: ``9 - y``, 10 classes).

    Args:
      labels: integer array of any shape.
      num_classes: number of classes ``C`` (Python int or traced scalar).

    Returns:
      An array of the same shape and dtype as ``labels``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> attacks.flip_labels(jnp.array([0, 3, 9]), 10)
      Array([9, 6, 0], dtype=int32)
    """
    labels = jnp.asarray(labels)
    return (num_classes - 1 - labels).astype(labels.dtype)
