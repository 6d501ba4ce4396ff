"""Attacks that read the server's previous aggregate: relocated orthogonal perturbation.

Centered clipping clips every row around the previous aggregate (its
reference). Ozfatura et al.'s ROP places the Byzantine rows around that same
point, perpendicular to the reference the attackers expect the server to
use, where clipping around it cannot shorten them.

The attack needs the server's previous aggregate ``center``; an
:class:`~byzjax.attacks.AttackEntry` registered with ``stateful=True`` takes
it as ``center=``. :func:`byzjax.optim.byzantine_attack` keeps it in its
state: after writing the Byzantine rows it applies its own copy of the
server's robust stage (pre-aggregation and aggregation, same rule, keywords,
state and keys, which :func:`byzjax.optim.stages` passes as ``server=``) to
the rows it saw and wrote, and the result is next round's ``center`` (zeros
before the first round, as the server's initial reference). Where the attack
stage sees the vectors the server aggregates (``attack_point="sent"``, one
server) that copy computes the server's own aggregate.

Reference:
  K. Ozfatura, E. Ozfatura, A. Kupcu, D. Gunduz, "Byzantines Can Also Learn
  From History: Fall of Centered Clipping in Federated Learning", IEEE
  Transactions on Information Forensics and Security, 2024,
  https://arxiv.org/abs/2208.09894.
"""

from __future__ import annotations

import math
import statistics

import jax
import jax.numpy as jnp

from byzjax._registry import in_range
from byzjax._tree import PyTree, num_rows
from byzjax.attacks._base import ATTACKS, honest_mean, repeat_rows

__all__ = ["relocated_orthogonal_perturbation", "rop_z_max"]


def rop_z_max(num_workers: int, num_byzantine: int) -> float:
    """ROP's default ``z = Phi^-1((n - f - s) / (n - f))``, ``s = floor(n/2 + 1) - f``.

    The authors' code (FL-Byzantine-Library, ``reloc`` and ``alie``) computes
    ALIE's ``z_max`` over the ``n - f`` honest workers: Baruch et al.'s
    :func:`~byzjax.attacks.alie_z_max` is ``Phi^-1((n - s) / n)``. Static: a
    Python float from the static ``n`` and ``f``.

    Raises:
      ValueError: if ``(n - f - s) / (n - f)`` is not in ``(0, 1)``.

    Example:
      >>> from byzjax import attacks
      >>> round(attacks.rop_z_max(25, 5), 4)   # s = 8: Phi^-1(12 / 20)
      0.2533
    """
    n, f = int(num_workers), int(num_byzantine)
    s = math.floor(n / 2 + 1) - f
    p = (n - f - s) / (n - f)
    if not 0.0 < p < 1.0:
        raise ValueError(
            f"relocated_orthogonal_perturbation: its default z = Phi^-1((n - f - s)"
            f"/(n - f)) with n={n}, f={f}, s={s} is undefined ({p}); pass z")
    return statistics.NormalDist().inv_cdf(p)


def _norm(tree: PyTree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                        for x in jax.tree_util.tree_leaves(tree)))


def _unit(tree: PyTree) -> tuple[PyTree, jax.Array]:
    """``(tree / ||tree||, ||tree|| > 0)``, zeros where the norm is 0."""
    norm = _norm(tree)
    positive = norm > 0
    safe = jnp.where(positive, norm, 1.0)
    return jax.tree_util.tree_map(
        lambda x: jnp.where(positive, x / safe.astype(x.dtype), 0.0), tree), positive


@ATTACKS.register("relocated_orthogonal_perturbation", stateful=True,
                  aliases=("rop",),
                  keywords={"reference_weight": in_range(0, 1),
                            "location_weight": in_range(0, 1)},
                  strength="z", display_name="relocated orthogonal perturbation",
                  short_name="ROP", order=19)
def relocated_orthogonal_perturbation(
        honest: PyTree, *, num_byzantine: int, center: PyTree | None = None,
        z: float | jax.Array | None = None, angle: float | jax.Array = 270.0,
        reference_weight: float | jax.Array = 0.9,
        location_weight: float | jax.Array = 1.0, key=None) -> PyTree:
    """ROP: the previous aggregate plus a step ``z`` orthogonal to the reference.

    With ``gbar`` the honest mean and ``c`` the server's previous aggregate
    (``center``; zeros when None), every Byzantine row is
    ``l + z * (sin(theta) o + cos(theta) u)``:

    * ``r = lambda c + (1 - lambda) gbar``, the reference the attackers
      expect (``lambda = reference_weight``), and ``u = r / ||r||``; when
      ``r = 0`` (``lambda = 1`` before the first aggregate) ``r = gbar``,
      as the authors' code takes the honest mean on its first round;
    * ``o``: the all-ones vector minus its projection on ``u``, normalised,
      a direction orthogonal to the reference (``0`` if there is none:
      ``u`` along the all-ones vector, or one coordinate);
    * ``theta = angle`` in degrees (the perturbation's angle to ``u``);
    * ``l = pi c + (1 - pi) gbar`` the attack's location
      (``pi = location_weight``; ``pi = 1``: at the previous aggregate).

    Defaults as the authors' code (FL-Byzantine-Library, ``reloc``):
    ``lambda = 0.9``, ``pi = 1``, ``angle = 270`` (orthogonal, against the
    all-ones direction) and ``z = rop_z_max(n, f)`` (:func:`rop_z_max`), an
    absolute length (not in standard deviations).

    Where ``center`` comes from: :func:`byzjax.optim.byzantine_attack` (the
    simulator's attack stage) passes the previous output of its own copy of
    the server's robust stage applied to the rows it saw and wrote (the
    module docstring); a direct call without ``center`` is the first round.

    Args:
      honest: leaves ``[n_honest, *param_shape]``.
      num_byzantine: static number of rows to return.
      center: the server's previous aggregate, leaves ``[*param_shape]``, or
        None (zeros).
      z: the perturbation's length (float or traced; the strength). None:
        :func:`rop_z_max` of the static ``n = n_honest + num_byzantine`` and
        ``f = num_byzantine``.
      angle: degrees between the perturbation and the reference (float or
        traced); 90 and 270 are orthogonal to it.
      reference_weight: ``lambda`` in ``[0, 1]`` (float or traced).
      location_weight: ``pi`` in ``[0, 1]`` (float or traced).
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``, every row equal.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[2.0, 0.0], [0.0, 0.0]])}  # mean [1, 0]
      >>> out = attacks.relocated_orthogonal_perturbation(
      ...     honest, num_byzantine=1, z=1.0, angle=90.0,
      ...     center={"w": jnp.array([3.0, 0.0])})
      >>> out["w"]  # at the center, one unit orthogonal to the reference [1, 0]
      Array([[3., 1.]], dtype=float32)

    Reference:
      K. Ozfatura, E. Ozfatura, A. Kupcu, D. Gunduz, "Byzantines Can Also
      Learn From History: Fall of Centered Clipping in Federated Learning",
      IEEE TIFS 2024, https://arxiv.org/abs/2208.09894.
    """
    del key
    n_honest = num_rows(honest)
    gbar = honest_mean(honest)
    if num_byzantine == 0:
        return repeat_rows(gbar, 0)
    if z is None:
        z = rop_z_max(n_honest + num_byzantine, num_byzantine)
    if center is None:
        center = jax.tree_util.tree_map(jnp.zeros_like, gbar)
    lam, pi = reference_weight, location_weight
    reference = jax.tree_util.tree_map(
        lambda c, g: lam * c.astype(g.dtype) + (1 - lam) * g, center, gbar)
    u, positive = _unit(reference)
    u_mean, _ = _unit(gbar)
    u = jax.tree_util.tree_map(lambda a, b: jnp.where(positive, a, b), u, u_mean)
    # The all-ones vector minus its projection on u.
    ones_dot_u = sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(u))
    ortho, _ = _unit(jax.tree_util.tree_map(lambda x: 1.0 - ones_dot_u * x, u))
    theta = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    row = jax.tree_util.tree_map(
        lambda c, g, o, v: (pi * c.astype(g.dtype) + (1 - pi) * g
                            + z * (sin * o + cos * v)).astype(g.dtype),
        center, gbar, ortho, u)
    return repeat_rows(row, num_byzantine)
