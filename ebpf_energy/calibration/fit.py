"""Least squares for ``power = idle_watts + k x busy CPUs``, in pure Python.

Each sample is one short interval: power = joules / seconds, busy CPUs =
CPU-seconds / seconds. Fitting power with an intercept is the same model as
energy = idle_watts x t + k x CPU-seconds, with samples weighted equally. The
95% confidence intervals use Student's t with n - 2 degrees of freedom
(quantile computed from the regularised incomplete beta function).
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence


class FitError(Exception):
    """The data cannot give a fit (too few points, no spread in load)."""


@dataclass
class LinearFit:
    intercept: float
    slope: float
    r2: float
    n: int
    se_intercept: float
    se_slope: float
    ci95_intercept: List[float]
    ci95_slope: List[float]
    residuals: List[float] = field(default_factory=list)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p (bisection; p in (0, 1))."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError("t_quantile needs 0 < p < 1 and df > 0")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Ordinary least squares y = a + b x with standard errors and 95% CIs."""
    n = len(x)
    if n != len(y):
        raise FitError("x and y differ in length")
    if n < 3:
        raise FitError(f"{n} samples are too few for a fit with confidence intervals (need >= 3)")
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((xi - mx) ** 2 for xi in x)
    if sxx <= 1e-12 * max(1.0, mx * mx) * n:
        raise FitError("the load did not vary across samples: one load level cannot separate idle from dynamic power")
    sxy = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y))
    b = sxy / sxx
    a = my - b * mx
    residuals = [yi - (a + b * xi) for xi, yi in zip(x, y)]
    sse = sum(r * r for r in residuals)
    sst = sum((yi - my) ** 2 for yi in y)
    r2 = 1.0 - sse / sst if sst > 0 else 0.0
    s2 = sse / (n - 2)
    se_b = math.sqrt(s2 / sxx)
    se_a = math.sqrt(s2 * (1.0 / n + mx * mx / sxx))
    t = t_quantile(0.975, n - 2)
    return LinearFit(a, b, r2, n, se_a, se_b, [a - t * se_a, a + t * se_a], [b - t * se_b, b + t * se_b], residuals)


def residuals_by_level(levels: Sequence[int], residuals: Sequence[float]) -> Dict[str, dict]:
    """Mean and RMS residual (watts) per load level: a curved response shows here."""
    out: Dict[str, List[float]] = {}
    for lv, r in zip(levels, residuals):
        out.setdefault(str(lv), []).append(r)
    return {lv: {"n": len(rs), "mean_w": sum(rs) / len(rs), "rms_w": math.sqrt(sum(r * r for r in rs) / len(rs))}
            for lv, rs in sorted(out.items(), key=lambda kv: int(kv[0]))}


@dataclass
class MultiFit:
    """``y = intercept + sum(slopes[j] x[j])``, with a 95% CI per coefficient."""

    intercept: float
    slopes: List[float]
    r2: float
    n: int
    se_intercept: float
    se_slopes: List[float]
    ci95_intercept: List[float]
    ci95_slopes: List[List[float]]
    residuals: List[float] = field(default_factory=list)


def _invert(m: List[List[float]]) -> List[List[float]]:
    """Gauss-Jordan with partial pivoting; FitError when singular (a column never varied)."""
    n = len(m)
    a = [list(row) + [1.0 if i == j else 0.0 for j in range(n)] for i, row in enumerate(m)]
    scale = max(abs(v) for row in m for v in row) or 1.0
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) <= 1e-12 * scale:
            raise FitError("the loads did not vary independently: each core class must be loaded on its own")
        a[col], a[pivot] = a[pivot], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0.0:
                f = a[r][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col])]
    return [row[n:] for row in a]


def multi_fit(xs: Sequence[Sequence[float]], y: Sequence[float]) -> MultiFit:
    """Ordinary least squares with an intercept and one slope per column of
    ``xs`` (one row per sample): idle watts plus watts per CPU-second of each
    core class. Standard errors from ``s² (XᵀX)⁻¹``, Student's t with
    n - p - 1 degrees of freedom."""
    n = len(y)
    if n != len(xs):
        raise FitError("x and y differ in length")
    k = len(xs[0]) if n else 0
    if n < k + 2:
        raise FitError(f"{n} samples are too few for {k + 1} coefficients with confidence intervals "
                       f"(need >= {k + 2})")
    rows = [[1.0] + [float(v) for v in x] for x in xs]
    p = k + 1
    xtx = [[sum(r[i] * r[j] for r in rows) for j in range(p)] for i in range(p)]
    xty = [sum(r[i] * yi for r, yi in zip(rows, y)) for i in range(p)]
    inv = _invert(xtx)
    beta = [sum(inv[i][j] * xty[j] for j in range(p)) for i in range(p)]
    residuals = [yi - sum(b * v for b, v in zip(beta, r)) for r, yi in zip(rows, y)]
    sse = sum(e * e for e in residuals)
    my = sum(y) / n
    sst = sum((yi - my) ** 2 for yi in y)
    s2 = sse / (n - p)
    se = [math.sqrt(max(s2 * inv[i][i], 0.0)) for i in range(p)]
    t = t_quantile(0.975, n - p)
    ci = [[b - t * s, b + t * s] for b, s in zip(beta, se)]
    return MultiFit(beta[0], beta[1:], 1.0 - sse / sst if sst > 0 else 0.0, n, se[0], se[1:], ci[0], ci[1:],
                    residuals)
