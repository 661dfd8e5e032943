"""The uniformity test of SBC's ranks (Säilynoja, Bürkner and Vehtari 2022): the ECDF of the ranks against
a simultaneous confidence band with a stated false-alarm rate per parameter (:func:`uniformity_test`,
:class:`ParameterCheck`).

Dependency rule: numpy and the standard library at import time; scipy inside functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from resilient.errors import ResilientError

__all__ = ["ParameterCheck", "uniformity_test", "null_statistics"]

_NULL: dict[tuple, np.ndarray] = {}


def _ecdf_counts(ranks: np.ndarray, rank_draws: int) -> np.ndarray:
    """``c[i-1] = #{rank < i}`` for i = 1..L: the ECDF of the fractional ranks at z_i = i / (L + 1)."""
    ranks = np.asarray(ranks, dtype=int)
    histogram = np.bincount(ranks, minlength=rank_draws + 1)
    return np.cumsum(histogram)[:rank_draws]


def _statistic(counts: np.ndarray, n: int, z: np.ndarray) -> np.ndarray:
    """1 - 2 min over i of the binomial tail probabilities of the ECDF counts (the smallest level of a
    pointwise band that still contains the ECDF). ``counts``: (..., L)."""
    from scipy.special import bdtr

    lower = np.min(bdtr(counts, n, z), axis=-1)
    upper = np.min(_at_least(counts, n, z), axis=-1)
    return 1.0 - 2.0 * np.minimum(lower, upper)


def null_statistics(n: int, rank_draws: int, simulations: int = 10000, random_seed: int = 20220) -> np.ndarray:
    """The statistic of :func:`_statistic` for ``simulations`` sets of ``n`` uniform ranks (cached)."""
    key = (n, rank_draws, simulations, random_seed)
    if key not in _NULL:
        rng = np.random.default_rng(random_seed)
        z = np.arange(1, rank_draws + 1) / (rank_draws + 1)
        out = np.empty(simulations)
        step = max(1, 2_000_000 // max(n * (rank_draws + 1), 1))
        for start in range(0, simulations, step):
            stop = min(start + step, simulations)
            ranks = rng.integers(0, rank_draws + 1, size=(stop - start, n))
            offsets = ranks + (rank_draws + 1) * np.arange(stop - start)[:, None]
            histogram = np.bincount(offsets.ravel(), minlength=(stop - start) * (rank_draws + 1))
            counts = np.cumsum(histogram.reshape(stop - start, rank_draws + 1), axis=1)[:, :rank_draws]
            out[start:stop] = _statistic(counts, n, z)
        _NULL[key] = out
    return _NULL[key]


def _at_least(counts: np.ndarray, n: int, z: np.ndarray) -> np.ndarray:
    """P(Binomial(n, z) >= counts); 1 where counts is 0 (scipy's bdtr is NaN below 0)."""
    from scipy.special import bdtr

    counts = np.asarray(counts)
    return np.where(counts > 0, 1.0 - bdtr(np.maximum(counts - 1, 0), n, z), 1.0)


def _band(n: int, z: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """ECDF bounds (as fractions of ``n``) of the pointwise band of marginal level ``level`` at ``z``:
    the counts c with both binomial tails at least (1 - level) / 2, the band the statistic measures."""
    from scipy.special import bdtr

    tail = (1.0 - level) / 2.0
    c = np.arange(n + 1)[:, None]
    inside = (bdtr(c, n, z[None, :]) >= tail) & (_at_least(c, n, z[None, :]) >= tail)
    lower = np.where(inside.any(axis=0), np.argmax(inside, axis=0), 0)
    upper = np.where(inside.any(axis=0), n - np.argmax(inside[::-1], axis=0), n)
    return lower / n, upper / n


@dataclass(frozen=True)
class ParameterCheck:
    """One parameter's calibration verdict: ``pass`` when the ECDF of its ranks stays inside the
    simultaneous ``prob`` band (a calibrated parameter fails with probability at most ``1 - prob``)."""

    parameter: str
    fits: int
    rank_draws: int
    verdict: str  # "pass", "fail", or "n/a" (too few fits to test)
    p_value: float | None
    prob: float
    max_deviation: float | None  # largest |ECDF - uniform CDF| over the evaluation points
    low_ess_fits: int = 0  # fits whose bulk ESS was below rank_draws
    shape: str = ""  # "too many high ranks" ...: what the ECDF says, in words
    z: list[float] = field(default_factory=list, repr=False)
    ecdf: list[float] = field(default_factory=list, repr=False)
    lower: list[float] = field(default_factory=list, repr=False)
    upper: list[float] = field(default_factory=list, repr=False)
    ranks: list[int] = field(default_factory=list, repr=False)

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        values = asdict(self)
        if not arrays:
            for key in ("z", "ecdf", "lower", "upper", "ranks"):
                values.pop(key)
        return values


def uniformity_test(ranks: Sequence[int], rank_draws: int, *, prob: float = 0.99, simulations: int = 10000,
                    parameter: str = "", random_seed: int = 20220) -> ParameterCheck:
    """Test that ``ranks`` (each in 0..rank_draws) are uniform: the simultaneous band of Säilynoja et al.

    The ECDF of the fractional ranks is evaluated at z_i = i / (L + 1), i = 1..L. The band is the
    pointwise binomial band whose marginal level is raised until ``prob`` of ``simulations`` uniform
    rank sets stay inside it everywhere (the simulation method of the paper, as
    ``arviz_stats.ecdf_utils.simulate_confidence_bands`` does for continuous PIT values; here with
    discrete uniform ranks, whose ECDF at z_i has exactly the binomial law). ``p_value``: the fraction
    of uniform sets that leave a band as narrow as the observed ECDF needs.
    """
    ranks = np.asarray(ranks, dtype=int)
    n = int(ranks.size)
    if not 0 < prob < 1:
        raise ResilientError(f"`prob` must be in (0, 1), got {prob!r}. Typical: 0.95 or 0.99.")
    if n and (ranks.min() < 0 or ranks.max() > rank_draws):
        raise ResilientError(f"ranks must lie in 0..{rank_draws}, got {ranks.min()}..{ranks.max()}.")
    if n < 2:
        return ParameterCheck(parameter, n, rank_draws, "n/a", None, prob, None, ranks=ranks.tolist())
    z = np.arange(1, rank_draws + 1) / (rank_draws + 1)
    counts = _ecdf_counts(ranks, rank_draws)
    observed = float(_statistic(counts, n, z))
    null = null_statistics(n, rank_draws, simulations, random_seed)
    level = float(np.quantile(null, prob, method="higher"))
    lower, upper = _band(n, z, level)
    ecdf = counts / n
    outside = bool(np.any(ecdf < lower - 1e-12) or np.any(ecdf > upper + 1e-12))
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))
    deviation = ecdf - z
    return ParameterCheck(parameter, n, rank_draws, "fail" if outside else "pass", p_value, prob,
                          float(np.max(np.abs(deviation))), shape=_shape(ecdf, z) if outside else "",
                          z=z.tolist(), ecdf=ecdf.tolist(), lower=lower.tolist(), upper=upper.tolist(),
                          ranks=ranks.tolist())


def _shape(ecdf: np.ndarray, z: np.ndarray) -> str:
    """What a failing ECDF suggests (Talts et al. 2018, figure 5): an ECDF above the uniform CDF early
    and below it late is a U-shaped histogram (too narrow), the mirror image a hump (too wide), one on
    one side throughout a shift (a bias)."""
    difference = np.asarray(ecdf) - np.asarray(z)
    shift = float(np.mean(difference))
    spread = float(np.mean(difference[z < 0.5]) - np.mean(difference[z > 0.5]))
    if abs(shift) > abs(spread):
        if shift > 0:
            return "too many low ranks: the posterior sits above the true values (biased high)"
        return "too many high ranks: the posterior sits below the true values (biased low)"
    if spread > 0:
        return "too many ranks at both ends (U shape): the posterior is too narrow (overconfident)"
    return "too many ranks in the middle (hump): the posterior is too wide (underconfident)"
