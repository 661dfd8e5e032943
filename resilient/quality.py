"""What an attempt's draws say about themselves: the worst R-hat, the smallest bulk ESS, the divergence
rate, tree-depth saturation and chains settled in separate modes; and the order the loop uses to pick the
best attempt. Pure functions of arrays (ArviZ's ``array_stats`` for R-hat and ESS); no backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = ["Quality", "measure", "convergence", "separated_modes", "Modes", "badness"]


@dataclass(frozen=True)
class Quality:
    """One attempt's diagnostics, as the loop ranks attempts by them (None: not computable)."""

    draws: int
    chains: int
    rhat: float | None = None  #: the worst rank-normalised split R-hat over every scalar
    ess_bulk: float | None = None  #: the smallest bulk ESS (all chains together)
    worst: str | None = None  #: the scalar with the worst R-hat
    divergence_rate: float = 0.0
    depth_saturation: float = 0.0  #: fraction of draws at the maximum tree depth

    @property
    def ess_per_chain(self) -> float | None:
        return None if self.ess_bulk is None else self.ess_bulk / max(self.chains, 1)

    def describe(self) -> str:
        """``R-hat 1.71 (nu), bulk ESS 3, 0 divergent`` in the words of a Stan or ArviZ user."""
        parts = []
        if self.rhat is not None:
            parts.append(f"worst R-hat {self.rhat:.3f}" + (f" ({self.worst})" if self.worst else ""))
        if self.ess_bulk is not None:
            parts.append(f"smallest bulk ESS {self.ess_bulk:.0f}")
        parts.append(f"{100 * self.divergence_rate:.2f}% divergent")
        if self.depth_saturation:
            parts.append(f"{100 * self.depth_saturation:.0f}% at the maximum tree depth")
        return ", ".join(parts)


def _scalars(posterior: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray] | None:
    """Every finite, non-constant scalar of the posterior as columns of one (chains, draws, k) array."""
    labels, columns = [], []
    for name, values in posterior.items():
        values = np.asarray(values, float)
        if values.ndim < 2:
            continue
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        for index in range(flat.shape[2]):
            column = flat[:, :, index]
            if not np.all(np.isfinite(column)) or np.ptp(column) == 0:
                continue
            labels.append(name if flat.shape[2] == 1 else f"{name}[{index}]")
            columns.append(column)
    if not columns:
        return None
    return labels, np.stack(columns, axis=-1)


def convergence(posterior: Mapping[str, np.ndarray]) -> list[tuple[str, float, float]]:
    """``(label, R-hat, bulk ESS)`` for every finite, non-constant scalar (empty with fewer than 2 chains or
    8 draws): ArviZ's rank-normalised split R-hat and bulk ESS, computed over all scalars at once."""
    table = _scalars(posterior)
    if table is None:
        return []
    labels, values = table
    if values.shape[0] < 2 or values.shape[1] < 8:
        return []
    from arviz_stats.base import array_stats

    rhat = np.atleast_1d(array_stats.rhat(values, chain_axis=0, draw_axis=1))
    ess = np.atleast_1d(array_stats.ess(values, chain_axis=0, draw_axis=1, method="bulk"))
    return [(label, float(r), float(e)) for label, r, e in zip(labels, rhat, ess)]


def measure(posterior: Mapping[str, np.ndarray], stats: Mapping[str, np.ndarray], *, draws: int, chains: int,
            max_tree_depth: int | None = None, table: list[tuple[str, float, float]] | None = None) -> Quality:
    """The :class:`Quality` of one attempt's draws and sample statistics; ``table``: :func:`convergence`'s
    rows where the caller has them already."""
    rows = [row for row in (convergence(posterior) if table is None else table)
            if np.isfinite(row[1]) and np.isfinite(row[2])]
    rhat = ess = worst = None
    if rows:
        label, rhat, _ = max(rows, key=lambda row: row[1])
        worst, ess = label, min(row[2] for row in rows)
    diverging = np.asarray(stats.get("diverging", np.zeros(0)), bool)
    rate = float(diverging.mean()) if diverging.size else 0.0
    depth = stats.get("tree_depth")
    saturation = 0.0
    if depth is not None and max_tree_depth is not None and np.size(depth):
        saturation = float(np.mean(np.asarray(depth) >= max_tree_depth))
    return Quality(draws=draws, chains=chains, rhat=rhat, ess_bulk=ess, worst=worst, divergence_rate=rate,
                   depth_saturation=saturation)


def badness(quality: Quality, *, rhat_limit: float, min_ess_per_chain: float, max_divergence_rate: float,
            depth_limit: float) -> tuple[int, float]:
    """Orders attempts, smaller is better: how many of the loop's limits on the draws' validity they break
    (R-hat, bulk ESS per chain, divergence rate), then how far they are from them, each relative to its limit.
    Tree-depth saturation costs time, not validity (a saturated run's draws are still a valid Markov chain), so
    it only adds a small term to the distance. No draws or no convergence figures at all rank last."""
    if quality.draws == 0:
        return (5, float("inf"))
    rhat = quality.rhat if quality.rhat is not None else (1.0 if quality.chains < 2 else float("inf"))
    per_chain = quality.ess_per_chain
    ess_ratio = min_ess_per_chain / max(per_chain, 1e-9) if per_chain is not None else (0.0 if quality.chains < 2 else 10.0)
    terms = [
        (rhat > rhat_limit, (rhat - 1.0) / max(rhat_limit - 1.0, 1e-9)),
        (ess_ratio > 1.0, ess_ratio),
        (quality.divergence_rate > max_divergence_rate, quality.divergence_rate / max_divergence_rate),
        (False, 0.1 * quality.depth_saturation / depth_limit),
    ]
    return (sum(int(broken) for broken, _ in terms), float(sum(value for _, value in terms)))


@dataclass(frozen=True)
class Modes:
    """Chains that settled in separate modes of one scalar: the groups of chains and their means."""

    label: str
    groups: tuple[tuple[int, ...], ...]
    means: tuple[float, ...]
    spread: float  #: the largest within-chain standard deviation

    def describe(self) -> str:
        groups = " and ".join(f"chain(s) {', '.join(map(str, g))} near {_figure(m)}"
                              for g, m in zip(self.groups, self.means))
        return f"{self.label}: {groups} (each chain's spread about {_figure(self.spread)})"


def _figure(value: float) -> str:
    """A mode's location or spread in three significant figures, for the message."""
    return f"{value:.3g}"


def separated_modes(posterior: Mapping[str, np.ndarray], *, gap: float = 6.0, stable_rhat: float = 1.1
                    ) -> Modes | None:
    """Chains that each mixed well on their own yet sit in separate places: for some scalar, the sorted chain
    means split into groups whose neighbouring means are more than ``gap`` within-chain standard deviations
    apart, while every chain's own split R-hat (its two halves compared) is under ``stable_rhat``. That is a
    multimodal (or unidentified) posterior, which more warm-up or a higher target_accept do not fix; a chain
    that drifts (slow mixing) fails the stability test and is not called multimodal."""
    table = _scalars(posterior)
    if table is None:
        return None
    labels, values = table
    chains, draws, _ = values.shape
    if chains < 2 or draws < 20:
        return None
    from arviz_stats.base import array_stats

    half = draws // 2
    halves = np.stack([values[:, :half], values[:, half:2 * half]], axis=1)  # (chains, 2, half, k)
    own_rhat = np.asarray(array_stats.rhat(halves, chain_axis=1, draw_axis=2, method="rank"))  # (chains, k)
    means = values.mean(axis=1)  # (chains, k)
    spreads = values.std(axis=1)  # (chains, k)
    found: Modes | None = None
    best_gap = 0.0
    for index, label in enumerate(labels):
        if not np.all(np.isfinite(own_rhat[:, index])) or np.any(own_rhat[:, index] > stable_rhat):
            continue
        order = np.argsort(means[:, index])
        sorted_means = means[order, index]
        spread = float(max(spreads[:, index].max(), 1e-12))
        steps = np.diff(sorted_means) / spread
        if not np.any(steps > gap) or float(steps.max()) <= best_gap:
            continue
        best_gap = float(steps.max())
        cuts = np.flatnonzero(steps > gap) + 1
        groups = [tuple(int(c) for c in sorted(group)) for group in np.split(order, cuts)]
        group_means = tuple(float(means[list(group), index].mean()) for group in groups)
        found = Modes(label, tuple(groups), group_means, spread)
    return found
