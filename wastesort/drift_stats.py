"""The statistics behind drift reports, in numpy and `math` alone (no scipy: they run inside a
small Lambda and on a bin). Pure functions, no I/O; `wastesort.drift` turns them into verdicts.

The distributions are the textbook ones: the chi-square survival function through the
regularized upper incomplete gamma function (series below `a + 1`, Lentz's continued fraction
above), and the Kolmogorov distribution's asymptotic series with Stephens' small-sample
correction (Numerical Recipes' `probks`). tests/core/test_drift.py checks both against scipy.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-15
_TINY = 1e-300
_ITERATIONS = 500


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) = Gamma(a, x) / Gamma(a)."""
    if a <= 0:
        raise ValueError("a must be positive")
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # the series for P converges fast here
        term = total = 1.0 / a
        ap = a
        for _ in range(_ITERATIONS):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    b = x + 1 - a  # the continued fraction for Q (modified Lentz)
    c = 1 / _TINY
    d = 1 / b
    h = d
    for i in range(1, _ITERATIONS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return min(1.0, math.exp(log_front) * h)


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square with `dof` degrees of freedom."""
    if dof < 1:
        return 1.0
    return gamma_q(dof / 2, statistic / 2)


def kolmogorov_sf(lam: float) -> float:
    """Q_KS(lam) = 2 * sum_{k>=1} (-1)^(k-1) exp(-2 k^2 lam^2), the limit of P(sqrt(n) D > lam)."""
    if lam < 0.2:  # Q_KS(0.2) = 1 - 2e-11; the series converges slowly below
        return 1.0
    total = 0.0
    sign = 1.0
    for k in range(1, 101):
        term = sign * 2 * math.exp(-2 * k * k * lam * lam)
        total += term
        if abs(term) <= 1e-16 * max(abs(total), _TINY):
            break
        sign = -sign
    return min(1.0, max(0.0, total))


def ks_2samp(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (D, two-sided p-value).

    The p-value is Q_KS((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * D) with ne = n m / (n + m),
    Stephens' correction, good to a few percent from ne of about 4 upwards.
    """
    x = np.sort(np.asarray(x, np.float64).ravel())
    y = np.sort(np.asarray(y, np.float64).ravel())
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return 0.0, 1.0
    pooled = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, pooled, side="right") / n
    cdf_y = np.searchsorted(y, pooled, side="right") / m
    d = float(np.abs(cdf_x - cdf_y).max())
    root = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def chi2_homogeneity(counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[float, float, int]:
    """Pearson's chi-square test that two count vectors (over the same categories) come from
    one distribution: (statistic, p-value, degrees of freedom). Categories empty in both
    samples are left out."""
    table = np.vstack([counts_a, counts_b]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    total = table.sum()
    if table.shape[1] < 2 or total == 0 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / total
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return statistic, chi2_sf(statistic, dof), dof


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index sum((a - e) ln(a / e)) of two share vectors (no zeros)."""
    e = np.asarray(expected, np.float64)
    a = np.asarray(actual, np.float64)
    return float(((a - e) * np.log(a / e)).sum())


def two_proportions(hits_a: float, n_a: int, hits_b: float, n_b: int) -> float:
    """Two-sided p-value of the pooled z-test that two shares are equal."""
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (hits_a / n_a - hits_b / n_b) / se
    return math.erfc(abs(z) / math.sqrt(2))


def mean_drop(a: tuple[float, float, int], b: tuple[float, float, int]) -> float:
    """One-sided p-value (normal approximation) that mean b is below mean a; each sample is
    (mean, variance, n)."""
    (mean_a, var_a, n_a), (mean_b, var_b, n_b) = a, b
    se = math.sqrt(var_a / n_a + var_b / n_b)
    if se == 0:
        return 1.0 if mean_b >= mean_a else 0.0
    return 0.5 * math.erfc((mean_a - mean_b) / se / math.sqrt(2))


def _mmd2_u(kernel: np.ndarray, members: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased MMD^2 for each row of `members` (1 marks the first sample); kernel diagonal 1."""
    k_members = members @ kernel
    s_xx = (members * k_members).sum(axis=1)
    s_xy = ((1 - members) * k_members).sum(axis=1)
    s_yy = kernel.sum() - s_xx - 2 * s_xy
    return (s_xx - n) / (n * (n - 1)) + (s_yy - m) / (m * (m - 1)) - 2 * s_xy / (n * m)


def mmd2_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    permutations: int = 1000,
    seed: int = 0,
    max_items: int = 500,
) -> tuple[float, float, float]:
    """MMD^2 with an RBF kernel, and its permutation p-value: (mmd2, p-value, bandwidth).

    The kernel is exp(-|a - b|^2 / h) with h the median squared distance of the pooled sample
    (the median heuristic). Each sample is cut to `max_items` (seeded) to bound the cost; the
    p-value is (1 + #permutations at least as large) / (1 + permutations), so it is never 0 and
    its smallest value is 1 / (1 + permutations). Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) > max_items:
        x = x[np.sort(rng.choice(len(x), max_items, replace=False))]
    if len(y) > max_items:
        y = y[np.sort(rng.choice(len(y), max_items, replace=False))]
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return 0.0, 1.0, 0.0
    pooled = np.vstack([x, y])
    norms = (pooled**2).sum(axis=1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2 * pooled @ pooled.T, 0)
    upper = squared[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.median(upper[upper > 0])) if (upper > 0).any() else 1.0
    kernel = np.exp(-squared / bandwidth)
    np.fill_diagonal(kernel, 1.0)
    observed = float(_mmd2_u(kernel, np.r_[np.ones(n), np.zeros(m)][None], n, m)[0])
    members = np.zeros((permutations, n + m))
    chosen = np.argsort(rng.random((permutations, n + m)), axis=1)[:, :n]
    np.put_along_axis(members, chosen, 1.0, axis=1)
    null = _mmd2_u(kernel, members, n, m)
    p_value = (1 + int((null >= observed - 1e-12).sum())) / (1 + permutations)
    return observed, p_value, bandwidth
