"""The statistics of a paired A/B comparison: pure functions, no model, no I/O.

Every comparison is *paired*: arm A and arm B answered the same inputs, so each input yields one
outcome, ``+1`` (B better), ``0`` (tie) or ``-1`` (B worse). From those outcomes:

- :func:`win_rate` counts a tie as half a win, so 0.5 means "no difference";
- :func:`bootstrap_ci` resamples *inputs* (pairs), never the two arms separately, which keeps the
  correlation between the arms' answers to the same input;
- :func:`sign_test_p` is the exact two-sided sign test (ties dropped), for "could this be chance?".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Outcome = int  # +1 win for B, 0 tie, -1 loss for B


def outcomes(a: Sequence[float], b: Sequence[float], tie_tolerance: float = 0.0) -> list[Outcome]:
    """Per-pair outcome of B against A: ``+1`` when ``b > a``, ``-1`` when ``b < a``, ``0`` when
    ``|b - a| <= tie_tolerance`` (exactly equal scores are a tie with the default tolerance)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length (got {len(a)} and {len(b)})")
    out = []
    for x, y in zip(a, b):
        d = float(y) - float(x)
        out.append(0 if abs(d) <= tie_tolerance else (1 if d > 0 else -1))
    return out


def counts(results: Sequence[Outcome]) -> dict[str, int]:
    """``{"wins", "ties", "losses", "n"}`` of a list of outcomes."""
    wins = sum(1 for r in results if r > 0)
    losses = sum(1 for r in results if r < 0)
    return {"wins": wins, "ties": len(results) - wins - losses, "losses": losses, "n": len(results)}


def win_rate(results: Sequence[Outcome]) -> float:
    """(wins + 0.5 * ties) / n; NaN for no pairs. 1.0: B won every pair; 0.5: no difference."""
    if len(results) == 0:
        return float("nan")
    c = counts(results)
    return (c["wins"] + 0.5 * c["ties"]) / c["n"]


def bootstrap_ci(values: Sequence[float], statistic: Callable[[np.ndarray], float] | None = None, *,
                 n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over paired per-input ``values``.

    ``values`` holds one number per input (an outcome, or a score difference ``b - a``); each resample
    draws ``n`` inputs with replacement, so pairs stay together. ``statistic`` defaults to the mean —
    which, on outcomes mapped to 1 / 0.5 / 0, is the win rate (see :func:`win_rate_ci`). Seeded:
    the same inputs give the same interval. An empty input gives ``(nan, nan)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    samples = x[idx]
    stats = samples.mean(axis=1) if statistic is None else np.array([statistic(s) for s in samples])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def win_rate_ci(results: Sequence[Outcome], *, n_resamples: int = 2000, level: float = 0.95,
                seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of :func:`win_rate` (outcomes mapped to 1 / 0.5 / 0, then averaged)."""
    points = [1.0 if r > 0 else (0.0 if r < 0 else 0.5) for r in results]
    return bootstrap_ci(points, n_resamples=n_resamples, level=level, seed=seed)


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this lopsided if wins and losses
    were equally likely (ties are not counted). 1.0 when there are no decided pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled for two sides; exact integer sums, no scipy needed.
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN when empty."""
    return float(np.mean(values)) if len(values) else float("nan")


def variance(values: Sequence[float]) -> float:
    """Population variance (divide by n): the spread of a model's samples for one input; 0 for one."""
    return float(np.var(values)) if len(values) else float("nan")


def paired_mean_delta(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Mean of ``b - a`` over pairs with its bootstrap interval: ``{"delta", "ci_low", "ci_high"}``."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length (got {len(a)} and {len(b)})")
    d = [float(y) - float(x) for x, y in zip(a, b)]
    lo, hi = bootstrap_ci(d, n_resamples=n_resamples, level=level, seed=seed)
    return {"delta": mean(d), "ci_low": lo, "ci_high": hi}


def verdict(ci_low: float, ci_high: float) -> str:
    """``better`` when the whole win-rate interval is above 0.5, ``worse`` when below, else ``unclear``."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "unclear"
    if ci_low > 0.5:
        return "better"
    if ci_high < 0.5:
        return "worse"
    return "unclear"
