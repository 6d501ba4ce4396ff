"""NumPy references shared by the tests: plain loops in float64, written from
the rules' definitions (never from the implementation's shortcuts); and the
simulator's test scaffolding (a tiny model, data and config, and its rounds
step by step).

Conventions, as the library documents them (``docs/CONVENTIONS.md``):

* ``NaN`` entries count as ``+inf`` in coordinate-wise rules; rows with any
  non-finite entry are infinitely far from every other row in distance rules.
* "The ``k`` values closest to a centre": every value closer than the ``k``-th
  smallest distance ``D`` is kept, and the values exactly at ``D`` share the
  slots left equally (the permutation-invariant tie rule).
* Ties in scores and distances go to the lowest row index.
"""

from __future__ import annotations

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# ------------------------------------------------------------ coordinate-wise


def ref_mean(x):
    """The mean of the rows of ``x`` ``[n, d]``, summed one row at a time."""
    n, d = x.shape
    out = np.zeros(d)
    for i in range(n):
        out += x[i]
    return out / n


def _numbers(values):
    """float64 list with NaN mapped to +inf (the coordinate rules' convention)."""
    return [np.inf if np.isnan(v) else float(v) for v in values]


def ref_median(values, lower=False):
    s = sorted(_numbers(values))
    n = len(s)
    if lower or n % 2:
        return s[(n - 1) // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2


def ref_trimmed(values, f):
    s = sorted(_numbers(values))
    kept = s[f:len(s) - f]
    return sum(kept) / len(kept)


def closest_mean(values, center, keep):
    """Mean of the ``keep`` values closest to ``center``, ties sharing slots."""
    vals = _numbers(values)
    dist = sorted(abs(v - center) for v in vals)
    radius = dist[keep - 1]
    inside = [v for v in vals if abs(v - center) < radius]
    edge = [v for v in vals if abs(v - center) == radius]
    slots = keep - len(inside)
    return (sum(inside) + slots * sum(edge) / len(edge)) / keep


def ref_meamed(values, f, lower=False):
    return closest_mean(values, ref_median(values, lower), len(values) - f)


def ref_phocas(values, f):
    return closest_mean(values, ref_trimmed(values, f), len(values) - f)


def per_coordinate(stack, fn):
    """Applies ``fn`` (a function of a list of n floats) per coordinate, float64.

    ``stack`` is a dict of arrays ``[n, *shape]``; returns a dict of ``[*shape]``.
    """
    out = {}
    for name, x in stack.items():
        x = np.asarray(x, np.float64)
        flat = x.reshape(x.shape[0], -1)
        vals = [fn(list(flat[:, j])) for j in range(flat.shape[1])]
        out[name] = np.array(vals).reshape(x.shape[1:])
    return out


def ref_mean_around_median(x, num_keep, lower=False):
    """Per column of ``x`` ``[n, d]``: the ``num_keep`` values closest to the median."""
    return np.array([closest_mean(list(col), ref_median(col, lower), num_keep)
                     for col in np.asarray(x, np.float64).T])


# ------------------------------------------------------------ distance rules


def ref_finite(x):
    return np.array([np.all(np.isfinite(row)) for row in x])


def ref_sq_dist(x):
    """Squared distances ``[n, n]``; a pair with a non-finite row is at +inf."""
    n = len(x)
    fin = ref_finite(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            out[i, j] = np.sum((x[i] - x[j]) ** 2) if fin[i] and fin[j] else np.inf
    return out


def ref_krum_scores(x, k, squared=True, valid=None):
    n = len(x)
    valid = np.ones(n, bool) if valid is None else valid
    d2 = ref_sq_dist(x)
    scores = np.full(n, np.inf)
    for i in range(n):
        if not valid[i]:
            continue
        ds = sorted(d2[i, j] if squared else np.sqrt(d2[i, j])
                    for j in range(n) if j != i and valid[j])
        scores[i] = sum(ds[:k]) if k > 0 else 0.0
    return scores


def ref_order(scores):
    """Indices by increasing score, ties by index."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


def ref_krum(x, f, k=None, squared=True):
    n = len(x)
    k = n - f - 2 if k is None else k
    return x[ref_order(ref_krum_scores(x, k, squared))[0]]


def ref_multi_krum(x, f, m=None, k=None, squared=True):
    n = len(x)
    k = n - f - 2 if k is None else k
    m = n - f if m is None else m
    chosen = ref_order(ref_krum_scores(x, k, squared))[:m]
    return np.mean(x[chosen], axis=0)


def ref_mda_subset(d2, f):
    """``bool[n]``: first subset (combinations order) of strictly least diameter."""
    n = len(d2)
    d2 = np.asarray(d2)
    best, best_diameter = None, None
    for subset in itertools.combinations(range(n), n - f):
        diameter = d2[np.ix_(subset, subset)].max()
        if best is None or diameter < best_diameter:
            best, best_diameter = subset, diameter
    mask = np.zeros(n, bool)
    mask[list(best)] = True
    return mask


def ref_mda(x, f):
    return np.mean(x[ref_mda_subset(ref_sq_dist(x), f)], axis=0)


def ref_geomed(x, iters, tol, nu, init="mean"):
    fin = ref_finite(x)
    xs = x[fin]
    if isinstance(init, str):
        z = xs.mean(0) if init == "mean" else np.zeros(x.shape[1])
    else:
        z = np.asarray(init, np.float64)
    for t in range(iters):
        dist = np.sqrt(((xs - z) ** 2).sum(1))
        w = 1.0 / np.maximum(nu, dist)
        new = (w[:, None] * xs).sum(0) / w.sum()
        move = np.sqrt(((new - z) ** 2).sum())
        dist_new = np.sort(np.sqrt(((xs - new) ** 2).sum(1)))
        scale = dist_new[(len(xs) - 1) // 2]  # lower median
        checked = (isinstance(init, str) and init == "mean") or t > 0
        z = new
        if checked and move <= tol * scale:
            break
    return z


def ref_cc(x, center, tau, iters):
    n = len(x)
    fin = ref_finite(x)
    v = np.zeros(x.shape[1]) if center is None else np.asarray(center, np.float64)
    for _ in range(iters):
        total = np.zeros_like(v)
        for i in range(n):
            if not fin[i]:
                continue  # excluded: contributes 0, still divided by n
            u = x[i] - v
            norm = np.sqrt((u ** 2).sum())
            total += u * min(1.0, tau / norm) if norm > 0 else u
        v = v + total / n
    return v


def ref_fltrust_scores(x, g0):
    """FLTrust's trust scores (Cao et al. 2021, Eq. 4): ``max(0, cos(x_i, g0))``
    per row, in float64 loops; 0 for a zero or non-finite row, and for every
    row when ``g0`` is zero or non-finite."""
    x = np.asarray(x, np.float64)
    g0 = np.asarray(g0, np.float64).reshape(-1)
    n0 = math.sqrt(sum(v * v for v in g0)) if np.all(np.isfinite(g0)) else 0.0
    scores = np.zeros(len(x))
    for i, row in enumerate(x.reshape(len(x), -1)):
        if n0 == 0.0 or not np.all(np.isfinite(row)):
            continue
        ni = math.sqrt(sum(v * v for v in row))
        if ni == 0.0:
            continue
        cos = sum(a * b for a, b in zip(row, g0)) / (ni * n0)
        scores[i] = max(0.0, cos)
    return scores


def ref_fltrust(x, g0):
    """FLTrust (Cao et al. 2021, Eq. 4-6) in float64 loops: every row rescaled
    to ``||g0||`` and weighted by its trust score, divided by the scores' sum;
    zeros when every score is 0."""
    x = np.asarray(x, np.float64)
    g0 = np.asarray(g0, np.float64).reshape(-1)
    scores = ref_fltrust_scores(x, g0)
    out = np.zeros(g0.size)
    if scores.sum() == 0.0:
        return out
    n0 = math.sqrt(sum(v * v for v in g0))
    for ts, row in zip(scores, x.reshape(len(x), -1)):
        if ts > 0.0:
            ni = math.sqrt(sum(v * v for v in row))
            out += ts * row * (n0 / ni)
    return out / scores.sum()


def ref_nnm(x, f):
    n = len(x)
    m = n - f
    fin = ref_finite(x)
    d2 = ref_sq_dist(x)
    hoods = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: (d2[i, j], j))
        hoods.append([i] + others[:m - 1])
    scores = ref_krum_scores(x, m - 1)
    central = min((i for i in range(n) if fin[i]), key=lambda i: (scores[i], i))
    out = np.zeros_like(x)
    for i in range(n):
        hood = hoods[i] if fin[i] else hoods[central]
        out[i] = np.mean(x[hood], axis=0)
    return out


def ref_monna(x, f, pivot=0):
    """MoNNA (Farhadkhani et al. 2023; ByzFL ``MoNNA(f, idx=pivot)``): the mean
    of the ``n - f`` rows nearest to row ``pivot``, the pivot first, then by
    distance, ties by index. A non-finite pivot borrows the neighbourhood of
    the most central finite row (least sum of squared distances to its
    ``n - f - 1`` nearest others, ties by index), as NNM does."""
    n = len(x)
    m = n - f
    fin = ref_finite(x)
    d2 = ref_sq_dist(x)
    p = pivot
    if not fin[p]:
        scores = ref_krum_scores(x, m - 1)
        p = min((i for i in range(n) if fin[i]), key=lambda i: (scores[i], i))
    others = sorted((j for j in range(n) if j != p), key=lambda j: (d2[p, j], j))
    hood = [p] + others[:m - 1]
    total = np.zeros(x.shape[1])
    for i in hood:
        total = total + x[i]
    return total / m


def ref_arc(x, f):
    """Adaptive robust clipping (Allouah et al. 2024; ByzFL ``ARC(f)``): with
    ``k = int((2 * f / n) * (n - f))`` (ByzFL's expression), the ``k`` rows of
    largest norm are clipped to the ``(k+1)``-th largest norm; a non-finite
    row counts as infinitely large and becomes a zero row; ``k = 0``: the
    input unchanged."""
    n = len(x)
    k = int((2 * f / n) * (n - f))
    out = np.array(x, np.float64)
    if k == 0:
        return out
    fin = ref_finite(x)
    norms = [float(np.sqrt(np.sum(row ** 2))) if fin[i] else np.inf
             for i, row in enumerate(x)]
    ranked = sorted(range(n), key=lambda i: -norms[i])
    threshold = norms[ranked[k]]
    for i in ranked[:k]:  # the k largest (rows tied at the threshold: unchanged)
        if not fin[i]:
            out[i] = 0.0
        elif norms[i] > threshold:
            out[i] = x[i] * (threshold / norms[i])
    return out


def _top_eigenvalue_of_covariance(rows, weights=None):
    """``lambda_max`` of ``sum_i w_i (x_i - mu)(x_i - mu)^T`` (``w`` sums to 1,
    uniform by default) and its eigenvalues / eigenvectors (``d x d``)."""
    rows = np.asarray(rows, np.float64)
    w = (np.full(len(rows), 1.0 / len(rows)) if weights is None
         else np.asarray(weights, np.float64))
    mu = np.zeros(rows.shape[1])
    for wi, row in zip(w, rows):
        mu = mu + wi * row
    cov = np.zeros((rows.shape[1], rows.shape[1]))
    for wi, row in zip(w, rows):
        cov += wi * np.outer(row - mu, row - mu)
    evals, evecs = np.linalg.eigh(cov)
    return max(evals[-1], 0.0), evals, evecs, mu


SPECTRAL_TIE_RTOL = 1e-4  # byzjax.aggregators._spectral.TIE_RTOL


def ref_smea(x, f, rtol=SPECTRAL_TIE_RTOL):
    """SMEA (Allouah et al. 2023; ByzFL ``SMEA(f)`` with exact eigenvalues):
    over ``itertools.combinations(range(n), n - f)``, the mean of the first
    subset whose covariance ``1/|S| sum (x_i - mu_S)(x_i - mu_S)^T`` has a top
    eigenvalue within a relative ``rtol`` of the least; subsets with a
    non-finite row are infinite."""
    n = len(x)
    fin = ref_finite(x)
    subsets = list(itertools.combinations(range(n), n - f))
    tops = []
    for subset in subsets:
        if not all(fin[i] for i in subset):
            tops.append(np.inf)
            continue
        tops.append(_top_eigenvalue_of_covariance(x[list(subset)])[0])
    least = min(tops)
    best = next(s for s, t in zip(subsets, tops) if t <= least * (1 + rtol))
    total = np.zeros(x.shape[1])
    for i in best:
        total = total + x[i]
    return total / len(best)


def ref_caf(x, f, rtol=SPECTRAL_TIE_RTOL, positive_max=True, max_steps=None):
    """CAF (Allouah, Guerraoui, Stephan 2025; ByzFL ``CAF(f)``'s loop with the
    exact top eigenpair of the ``d x d`` weighted covariance).

    Weights ``c_i = 1`` (0 for non-finite rows); while ``sum c > n - 2f``:
    ``mu = sum c_i x_i / sum c``, ``(lambda, v)`` the top eigenpair of
    ``sum c_i (x_i - mu)(x_i - mu)^T / sum c``, ``tau_i = ((x_i - mu) . v)^2``
    (summed over the top eigenspace when ``lambda`` is repeated within
    ``rtol``), ``c_i <- c_i (1 - tau_i / tau_max)``; the loop stops when
    ``lambda = 0``. Returns the first ``mu`` whose ``lambda`` is within
    ``rtol`` of the least met (the finite rows' mean if no step runs).
    ``positive_max``: ``tau_max`` over rows with ``c_i > 0`` (byzjax);
    False: over every row (ByzFL 0.0.11), then ``max_steps`` caps the loop.
    """
    n = len(x)
    fin = ref_finite(x)
    c = np.array([1.0 if fin[i] else 0.0 for i in range(n)])
    xs = np.where(fin[:, None], x, 0.0)
    history = []
    steps = 0
    while c.sum() > n - 2 * f and (max_steps is None or steps < max_steps):
        steps += 1
        w = c / c.sum()
        top, evals, evecs, mu = _top_eigenvalue_of_covariance(xs, w)
        history.append((top, mu))
        if top <= 0:
            break
        tau = np.zeros(n)
        for u in range(len(evals)):
            if evals[u] >= top * (1 - rtol) and evals[u] > 0:
                tau += ((xs - mu) @ evecs[:, u]) ** 2
        tau_max = max(tau[i] for i in range(n) if c[i] > 0 or not positive_max)
        if tau_max <= 0:
            break
        c = np.maximum(c * (1 - tau / tau_max), 0.0)
    if not history:
        return np.mean(xs[fin], axis=0)
    least = min(t for t, _ in history)
    return next(mu for t, mu in history if t <= least * (1 + rtol))


def ref_bulyan_selection(x, f, kind="krum", squared=True, inner=None):
    """Recomputes on the remaining set after every pick (El Mhamdi et al.)."""
    n = len(x)
    remaining = list(range(n))
    chosen = []
    for _ in range(n - 2 * f):
        m = len(remaining)
        sub = x[remaining]
        if kind == "generic":
            out = inner(sub)
            dist = [np.sum((row - out) ** 2) if np.all(np.isfinite(row)) else np.inf
                    for row in sub]
            pick = ref_order(dist)[0]
        else:
            k = min(max(m - f - 2, 1), m - 1)
            scores = ref_krum_scores(sub, k, squared)
            d2 = ref_sq_dist(sub)
            near = [sorted(d2[i, j] for j in range(m) if j != i) for i in range(m)]
            ranked = sorted(range(m), key=lambda i: (scores[i], near[i], i))
            if kind == "krum":
                pick = ranked[0]
            else:
                keep = ranked[:max(m - f, 1)]
                mean = sub[keep].mean(0)
                dist = [np.sum((row - mean) ** 2) if np.all(np.isfinite(row))
                        else np.inf for row in sub]
                pick = ref_order(dist)[0]
        chosen.append(remaining[pick])
        remaining.pop(pick)
    return chosen


def ref_bulyan(x, f, kind="krum", squared=True):
    chosen = ref_bulyan_selection(x, f, kind, squared)
    return ref_mean_around_median(x[chosen], len(x) - 4 * f)


def ref_bulyan_byzantine_momentum(x, f):
    """Bulyan as the ByzantineMomentum code computes it (El Mhamdi, Guerraoui,
    Rouault, ICLR 2021), written from its definition:

    Krum scores over ``n - f - 2`` neighbours with plain distances, computed
    once; rows ranked by score (ties by index); selected vector ``i`` (of
    ``n - 2f - 2``) is the mean of the rows ranked ``i .. n - f - 3``; then per
    coordinate the ``n - 4f - 2`` selected values closest to the lower median.
    """
    n = len(x)
    top = n - f - 2
    order = ref_order(ref_krum_scores(x, top, squared=False))
    selected = np.array([x[order[i:top]].mean(0) for i in range(n - 2 * f - 2)])
    return ref_mean_around_median(selected, n - 4 * f - 2, lower=True)


# -------------------------------------------------------------------- attacks


def ref_sq(v):
    """``||v||^2`` of a 1-D array, one coordinate at a time."""
    return sum(float(a) * float(a) for a in v)


def ref_std(x, ddof=1):
    """Coordinate-wise standard deviation of the rows of ``x`` ``[n, d]``."""
    n, d = x.shape
    mu = ref_mean(x)
    return np.array([math.sqrt(sum((x[i, j] - mu[j]) ** 2 for i in range(n))
                               / (n - ddof)) for j in range(d)])


def ref_min_max_direction(x, direction):
    """Shejwalkar and Houmansadr's perturbation ``p``: ``-mu/||mu||``,
    ``-std`` (``ddof=1``) or ``-sign(mu)``."""
    mu = ref_mean(x)
    if direction == "unit_vector":
        norm = math.sqrt(ref_sq(mu))
        return -mu / norm if norm > 0 else np.zeros_like(mu)
    if direction == "std":
        return -ref_std(x, ddof=1)
    return -np.sign(mu)


def ref_min_max_admissible(x, m, bound, threshold="max"):
    """Is ``m`` within the honest bound of Min-Max (``bound="max"``) or
    Min-Sum (``"sum"``)? Distances computed directly, pair by pair."""
    n = x.shape[0]
    d2 = [[ref_sq(x[i] - x[j]) for j in range(n)] for i in range(n)]
    to_m = [ref_sq(m - x[i]) for i in range(n)]
    if bound == "max":
        return max(to_m) <= max(max(row) for row in d2)
    sums = [sum(row) for row in d2]
    return sum(to_m) <= (max(sums) if threshold == "max" else min(sums))


def ref_halving_search(admissible, gamma_init, tolerance):
    """The paper's search (its code's ``our_attack_dist``): the last admissible
    candidate, 0 when none."""
    gamma, step, success = gamma_init, gamma_init, 0.0
    while abs(success - gamma) > tolerance:
        if admissible(gamma):
            success = gamma
            gamma = gamma + step / 2
        else:
            gamma = gamma - step / 2
        step = step / 2
    return success


def ref_min_max_attack(x, f, bound="max", direction="unit_vector", gamma_init=10.0,
                       tolerance=1e-5, threshold="max"):
    """``(rows [f, d], gamma)``: Min-Max / Min-Sum from their definition."""
    mu = ref_mean(x)
    p = ref_min_max_direction(x, direction)
    gamma = ref_halving_search(
        lambda g: ref_min_max_admissible(x, mu + g * p, bound, threshold),
        gamma_init, tolerance)
    return np.stack([mu + gamma * p] * f) if f else np.zeros((0, x.shape[1])), gamma


def ref_min_max_gamma_exact(x, bound, direction, threshold="max"):
    """The largest admissible ``gamma`` in closed form (roots of the quadratics
    ``||mu + gamma p - x_i||^2``), a check on the search."""
    n = x.shape[0]
    mu = ref_mean(x)
    p = ref_min_max_direction(x, direction)
    pp = ref_sq(p)
    d2 = [[ref_sq(x[i] - x[j]) for j in range(n)] for i in range(n)]
    c = [ref_sq(mu - x[i]) for i in range(n)]
    b = [float(np.dot(p, mu - x[i])) for i in range(n)]
    if pp == 0:
        return math.inf
    if bound == "max":
        top = max(max(row) for row in d2)
        return min((-bi + math.sqrt(bi * bi + pp * (top - ci))) / pp
                   for bi, ci in zip(b, c))
    sums = [sum(row) for row in d2]
    top = max(sums) if threshold == "max" else min(sums)
    return math.sqrt(max(top - sum(c), 0.0) / (n * pp))


def ref_rop(x, f, center=None, z=1.0, angle=270.0, reference_weight=0.9,
            location_weight=1.0):
    """Ozfatura et al.'s ROP from its definition: rows ``[f, d]``."""
    d = x.shape[1]
    mu = ref_mean(x)
    c = np.zeros(d) if center is None else np.asarray(center, np.float64)
    lam, pi = reference_weight, location_weight
    r = lam * c + (1 - lam) * mu
    if ref_sq(r) == 0:  # the authors' first round: the honest mean
        r = mu
    u = r / math.sqrt(ref_sq(r)) if ref_sq(r) > 0 else np.zeros(d)
    o = np.ones(d) - float(np.dot(np.ones(d), u)) * u
    o = o / math.sqrt(ref_sq(o)) if ref_sq(o) > 1e-24 else np.zeros(d)
    theta = math.radians(angle)
    row = pi * c + (1 - pi) * mu + z * (math.sin(theta) * o + math.cos(theta) * u)
    return np.stack([row] * f) if f else np.zeros((0, d))
# ------------------------------------------------------------ filtering rules
#
# DnC, SignGuard and clipped clustering (the rules of the Blades library),
# from their definitions. With ``tol=0`` each returns its one answer; with
# ``tol > 0`` a list of every answer the definition allows when the decisions
# within ``tol`` of a tie go either way (inputs built from small integers tie
# exactly in real arithmetic but not always in float32, where the rules
# run): the rule must return one of them.


def ref_norms(x):
    """Row norms, ``+inf`` for a row with a non-finite entry."""
    return np.array([np.sqrt(np.sum(row ** 2)) if np.all(np.isfinite(row))
                     else np.inf for row in x])


def _kept_means(x, kept_sets, factors=None):
    """The distinct means of the (scaled) rows over each kept set; zeros for
    an empty set."""
    out = []
    for kept in kept_sets:
        rows = sorted(kept)
        if rows:
            scale = np.ones(len(x)) if factors is None else factors
            mean = sum(x[i] * scale[i] for i in rows) / len(rows)
        else:
            mean = np.zeros(x.shape[1])
        if not any(np.array_equal(mean, m) for m in out):
            out.append(mean)
    return out


def _answer(outs, tol):
    return outs if tol else outs[0]


def ref_dnc_kept(sub, finite, num_removed, tol=0.0):
    """The kept sets of one DnC iteration on the subsampled rows ``sub``.

    Centre the finite rows on their mean, score every row by its squared
    projection on the top right singular vector (non-finite rows: ``+inf``),
    keep every row scoring at most the ``(n - k)``-th smallest score. With
    ``tol > 0``: scores within ``tol`` (relative to the largest finite score)
    of the cut may fall on either side, and a top singular value within
    ``tol`` of the next leaves the direction open (then every set of at least
    ``n - k`` rows is allowed).
    """
    n = len(sub)
    k = num_removed
    rows = sub[finite]
    mu = rows.mean(0)
    scores = np.full(n, np.inf)
    open_direction = False
    centred = rows - mu
    if not np.any(centred):
        scores[finite] = 0.0
    else:
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        open_direction = len(sv) > 1 and sv[0] ** 2 - sv[1] ** 2 <= tol * sv[0] ** 2
        for i in range(n):
            if finite[i]:
                scores[i] = float(np.dot(sub[i] - mu, vt[0])) ** 2
    cut = sorted(scores)[n - k - 1]
    exact = frozenset(i for i in range(n) if scores[i] <= cut)
    if not tol or (not open_direction and np.isinf(cut)):
        return [exact]
    if open_direction:
        return [frozenset(s) for r in range(n - k, n + 1)
                for s in itertools.combinations(range(n), r)]
    eps = tol * max(scores[finite].max(initial=0.0), 0.0)
    sure = [i for i in range(n) if scores[i] < cut - eps]
    band = [i for i in range(n) if abs(scores[i] - cut) <= eps]
    return [frozenset(sure) | frozenset(a) for r in range(len(band) + 1)
            for a in itertools.combinations(band, r)
            if len(sure) + r >= n - k]


def ref_dnc(x, f, coords, filter_fraction=1.0, tol=0.0):
    """DnC on ``x`` ``[n, d]`` with the sampled coordinates ``coords``
    (``[T, b]``, one row per iteration, as ``aggregators.dnc_coordinates``
    draws them): the mean of the finite rows every iteration keeps (the
    first iteration's if none is)."""
    n = len(x)
    k = int(filter_fraction * f)
    finite = ref_finite(x)
    fin_set = frozenset(np.flatnonzero(finite).tolist())
    per_iteration = [ref_dnc_kept(x[:, np.asarray(idx)], finite, k, tol)
                     for idx in np.asarray(coords)]
    kept_sets = []
    for combo in itertools.product(*per_iteration):
        kept = frozenset.intersection(*combo) & fin_set
        kept_sets.append(kept if kept else combo[0] & fin_set)
    del n
    return _answer(_kept_means(x, kept_sets), tol)


def ref_two_means_largest(points, max_iterations=300):
    """``bool[n]``: the larger cluster of SignGuard's 2-means, in exact
    rational arithmetic.

    Seeds: the two points farthest apart; of several such pairs ``(p, q)``
    with ``p < q`` lexicographically, the lexicographically first; ``p``
    seeds cluster 0. Lloyd: each point to its nearest centroid (ties:
    cluster 0), centroids the means of their points (an empty cluster keeps
    its centroid), until the assignment repeats (at most ``max_iterations``).
    The larger cluster; equal sizes: the one of least inertia; equal sizes
    and inertias: both.
    """
    from fractions import Fraction

    pts = [tuple(Fraction(int(v)) for v in p) for p in points]
    n = len(pts)
    if n == 1:
        return np.ones(1, bool)

    def sq(p, q):
        return sum((a - b) ** 2 for a, b in zip(p, q))

    far = max(sq(p, q) for p in pts for q in pts)
    seeds = min((p, q) for p in pts for q in pts if p < q and sq(p, q) == far) \
        if far > 0 else (pts[0], pts[0])
    centres = list(seeds)
    labels = None
    for _ in range(max_iterations):
        new = [0 if sq(p, centres[0]) <= sq(p, centres[1]) else 1 for p in pts]
        if new == labels:
            break
        labels = new
        for c in (0, 1):
            members = [p for p, lab in zip(pts, labels) if lab == c]
            if members:
                centres[c] = tuple(sum(v) / len(members) for v in zip(*members))
    sizes = [labels.count(0), labels.count(1)]
    inertia = [sum(sq(p, centres[c]) for p, lab in zip(pts, labels) if lab == c)
               for c in (0, 1)]
    if (sizes[0], -inertia[0]) == (sizes[1], -inertia[1]):
        return np.ones(n, bool)
    pick = 1 if (sizes[1], -inertia[1]) > (sizes[0], -inertia[0]) else 0
    return np.array([lab == pick for lab in labels])


def ref_signguard(x, f, lower=0.1, upper=3.0, tol=0.0):
    """SignGuard: the rows whose norm lies in ``[lower M, upper M]`` (``M``
    the median norm) and whose sign counts fall in the larger 2-means
    cluster, clipped to norm ``M`` and averaged (zeros if there are none).
    With ``tol > 0`` a norm within ``tol M`` of a bound may go either way."""
    del f
    n = len(x)
    finite = ref_finite(x)
    norms = ref_norms(x)
    m = ref_median(norms)
    feats = [(int(np.sum(row > 0)), int(np.sum(row < 0)), int(np.sum(row == 0)))
             for row in x]
    cluster = ref_two_means_largest(feats)
    sure, band = [], []
    for i in range(n):
        if not (finite[i] and cluster[i]):
            continue
        near = min(abs(norms[i] - lower * m), abs(norms[i] - upper * m))
        if tol and near <= tol * m:
            band.append(i)
        elif lower * m <= norms[i] <= upper * m:
            sure.append(i)
    factors = np.array([min(1.0, m / v) if 0 < v < np.inf else 1.0 for v in norms])
    kept_sets = [frozenset(sure) | frozenset(a) for r in range(len(band) + 1)
                 for a in itertools.combinations(band, r)]
    return _answer(_kept_means(x, kept_sets, factors), tol)


def ref_cosine_distances(x):
    """``1 - cos(x_i, x_j)`` (``cos = 0`` if a row is zero); 2 for a pair with
    a non-finite row; 0 on the diagonal."""
    n = len(x)
    finite = ref_finite(x)
    norms = ref_norms(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if not (finite[i] and finite[j]):
                out[i, j] = 2.0
            elif norms[i] == 0 or norms[j] == 0:
                out[i, j] = 1.0
            else:
                out[i, j] = 1.0 - np.dot(x[i], x[j]) / (norms[i] * norms[j])
    return out


def ref_average_linkage_largest(dist, tol=0.0):
    """The larger cluster(s) of average-linkage agglomerative clustering into
    two clusters, as sets of row indices.

    Each merge joins the two clusters of least mean pairwise distance (ties:
    the pair whose smallest members come first); the larger final cluster,
    equal sizes: the least mean within-cluster distance, equal sizes and
    distances: both clusters together. With ``tol > 0`` every merge and
    choice within ``tol`` of a tie is followed (a list of the clusters
    reachable).
    """
    n = len(dist)

    def link(a, b):
        return sum(dist[i, j] for i in a for j in b) / (len(a) * len(b))

    def within(c):
        pairs = [(i, j) for i in c for j in c if i < j]
        return sum(dist[i, j] for i, j in pairs) / len(pairs) if pairs else 0.0

    states = {frozenset(frozenset([i]) for i in range(n))}
    while len(next(iter(states))) > 2:
        new_states = set()
        for state in states:
            clusters = sorted(state, key=min)
            links = [(link(a, b), min(a), min(b), a, b)
                     for p, a in enumerate(clusters) for b in clusters[p + 1:]]
            best = min(v for v, *_ in links)
            chosen = ([t for t in links if t[0] <= best + tol] if tol else
                      [min((t for t in links if t[0] == best),
                           key=lambda t: (t[1], t[2]))])
            for _, _, _, a, b in chosen:
                new_states.add((state - {a, b}) | {a | b})
        states = new_states
    out = []
    for state in states:
        clusters = sorted(state, key=min)
        if len(clusters) == 1:
            picks = clusters
        else:
            a, b = clusters
            size_a, size_b = len(a), len(b)
            if size_a != size_b:
                picks = [a if size_a > size_b else b]
            elif tol and abs(within(a) - within(b)) <= tol:
                picks = [a, b, a | b]
            elif within(a) == within(b):
                picks = [a | b]
            else:
                picks = [b if within(b) < within(a) else a]
        out.extend(p for p in picks if p not in out)
    return out if tol else out[0]


def ref_clipped_clustering(x, f, tol=0.0):
    """Clipped clustering: rows clipped to the median norm, the larger
    average-linkage cluster on cosine distances, the mean of its finite
    clipped rows."""
    del f
    finite = ref_finite(x)
    norms = ref_norms(x)
    tau = ref_median(norms)
    factors = np.array([min(1.0, tau / v) if 0 < v < np.inf else 1.0 for v in norms])
    clusters = ref_average_linkage_largest(ref_cosine_distances(x), tol)
    if not tol:
        clusters = [clusters]
    kept_sets = [frozenset(i for i in c if finite[i]) for c in clusters]
    return _answer(_kept_means(x, kept_sets, factors), tol)



# ------------------------------------------------------------------- pytrees


def flatten(tree):
    """``[n, d]`` float64 from a stack pytree (leaves concatenated in tree order)."""
    leaves = jax.tree_util.tree_leaves(tree)
    n = leaves[0].shape[0]
    return np.concatenate([np.asarray(v, np.float64).reshape(n, math.prod(v.shape[1:]))
                           for v in leaves], axis=1)


def flat_params(tree):
    """``[d]`` float64: every leaf of a parameter pytree raveled, in tree order."""
    return np.concatenate([np.asarray(leaf, np.float64).ravel()
                           for leaf in jax.tree_util.tree_leaves(tree)]
                          + [np.zeros(0)])


def unflattener(tree):
    """The inverse of :func:`flat_params` for pytrees shaped like ``tree``:
    ``unflat(v)`` gives float32 leaves of ``tree``'s shapes from ``v`` ``[d]``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    shapes = [leaf.shape for leaf in leaves]

    def unflat(v):
        out, i = [], 0
        for s in shapes:
            k = int(np.prod(s))
            out.append(jnp.asarray(v[i:i + k].reshape(s), jnp.float32))
            i += k
        return jax.tree_util.tree_unflatten(treedef, out)

    return unflat


# ----------------------------------------------------------------- simulator
#
# A tiny model, synthetic data and config for the simulator's tests, and its
# rounds step by step (one worker at a time, NumPy between the gradients).

CLASSES = 3
N_TRAIN, N_TEST = 240, 60


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(8)(x))
        return nn.Dense(CLASSES)(x)


def make_data(num_workers: int, seed: int = 0):
    """``sim.SimData``: class-dependent 4x4 images so training can progress."""
    from byzjax import sim

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, N_TRAIN + N_TEST).astype(np.int32)
    base = rng.integers(0, 255, (CLASSES, 4, 4, 1))
    noise = rng.integers(-40, 40, (N_TRAIN + N_TEST, 4, 4, 1))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    per = N_TRAIN // num_workers
    perm = rng.permutation(N_TRAIN)[: per * num_workers].reshape(num_workers, per)
    x = images[:N_TRAIN].astype(np.float32) / 255
    return sim.SimData(
        train_images=jnp.asarray(images[:N_TRAIN]),
        train_labels=jnp.asarray(labels[:N_TRAIN]),
        test_images=jnp.asarray(images[N_TRAIN:]),
        test_labels=jnp.asarray(labels[N_TRAIN:]),
        worker_indices=jnp.asarray(perm, jnp.int32),
        worker_counts=jnp.full((num_workers,), per, jnp.int32),
        mean=jnp.asarray(x.mean((0, 1, 2))),
        std=jnp.asarray(x.std((0, 1, 2))),
    )


#: The fields :func:`tiny_config` sets (a small RESAM / trimmed mean / ALIE run).
TINY_FIELDS = dict(dataset="synthetic", num_workers=7, num_byzantine=2,
                   batch_size=5, num_rounds=4, eval_every=2, learning_rate=0.1,
                   beta=0.9, clip_norm=2.0, weight_decay=1e-4,
                   aggregator="trimmed_mean", attack="alie", optimizer="resam")


def tiny_config(**overrides):
    """The default run config with :data:`TINY_FIELDS`, then ``overrides``."""
    from byzjax import sim

    c = sim.get_config()
    for k, v in {**TINY_FIELDS, **overrides}.items():
        c[k] = v
    return c


def traced_hparams(config):
    """The config's float hyper-parameters as float32 arrays (a program's input)."""
    from byzjax import sim

    return {k: jnp.float32(v) for k, v in sim.hparams_of(config).items()}


def cross_entropy_grad(model):
    """Jitted ``grad(params, x, y)`` of the mean cross-entropy of ``model``."""

    @jax.jit
    def grad(params, x, y):
        def ce(p):
            logp = jax.nn.log_softmax(model.apply({"params": p}, x, train=True))
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))

        return jax.grad(ce)(params)

    return grad


def reference_rounds(config, data, model, key, rounds, *, alie_ddof=1):
    """The parameters ``[d]`` after ``rounds`` rounds of ``config``, step by step.

    One worker at a time: gradients plus weight decay (or weight decay added to
    the aggregate, ``weight_decay_point="server"``), per-worker clipping,
    worker momentum from ``momentum_init`` (bias-corrected if
    ``momentum_bias_correction``), ALIE (``eps`` 1.5, standard deviation with
    ``alie_ddof``) or label flip on the last ``num_byzantine`` rows, clipping
    and ALIE at their ``clip_point`` / ``attack_point``, trimmed mean, SGD
    (constant or ``multistep`` learning rate).
    Only the RESAM / trimmed mean pipeline, unsharded; batches from the
    simulator's own sampler and key.
    """
    from byzjax import sim
    from byzjax.sim._kit import sample_batch_indices

    if (config.optimizer, config.aggregator) != ("resam", "trimmed_mean") or (
            config.attack not in ("alie", "label_flip")):
        raise NotImplementedError("no step-by-step reference for this config")
    hp = sim.hparams_of(config)
    state = sim.make_program(config, data, model).init(key, traced_hparams(config))
    unflat = unflattener(state.params)
    grad = cross_entropy_grad(model)
    theta = flat_params(state.params)
    n, f = config.num_workers, config.num_byzantine
    n_h = n - f
    beta = hp["beta"]
    m = np.full((n, theta.size), config.momentum_init)
    run_key = state.key
    images = np.asarray(data.train_images)
    labels = np.asarray(data.train_labels)

    def clip(rows):
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows * np.minimum(1.0, hp["clip_norm"] / norms)

    def attack(rows):
        if config.attack != "alie":
            return rows
        rows = rows.copy()
        rows[n_h:] = (rows[:n_h].mean(0)
                      - 1.5 * rows[:n_h].std(0, ddof=alie_ddof))
        return rows

    server_decay = config.weight_decay_point == "server"
    for t in range(1, rounds + 1):
        run_key, k_batch, _ = jax.random.split(run_key, 3)
        idx = np.asarray(sample_batch_indices(k_batch, data.worker_indices,
                                              data.worker_counts, config.batch_size))
        grads = np.zeros((n, theta.size))
        for i in range(n):
            x = (images[idx[i]].astype(np.float32) / 255
                 - np.asarray(data.mean)) / np.asarray(data.std)
            y = labels[idx[i]]
            if config.attack == "label_flip" and i >= n_h:
                y = CLASSES - 1 - y
            g = flat_params(grad(unflat(theta), jnp.asarray(x), jnp.asarray(y)))
            grads[i] = g + (hp["weight_decay"] * theta if not server_decay else 0)
        if config.clip_point == "gradient":
            grads = clip(grads)
        if config.attack_point == "gradient":
            grads = attack(grads)
        m = beta * m + (1 - beta) * grads
        sent = m / (1 - beta ** t) if config.momentum_bias_correction else m.copy()
        if config.clip_point == "sent":
            sent = clip(sent)
        if config.attack_point == "sent":
            sent = attack(sent)
        trimmed = np.sort(sent, axis=0)[f:n - f].mean(0)
        if server_decay:  # PyTorch SGD's weight_decay, at the server (ByzFL)
            trimmed = trimmed + hp["weight_decay"] * theta
        lr = hp["learning_rate"]
        if config.lr_schedule == "multistep":  # MultiStepLR: step t - 1 from 0
            lr *= config.lr_decay_factor ** sum(
                t - 1 >= int(m) for m in config.lr_milestones.split(",") if m)
        theta = theta - lr * trimmed
    return theta
