"""Collects chunks of draws as they finish and turns them into an ArviZ DataTree."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from resilient.backend import Chunk

__all__ = ["DrawBuffer", "to_datatree"]


class DrawBuffer:
    """Post-warm-up draws per chain, in order; warm-up statistics kept apart for diagnosis, and the
    warm-up draws themselves when ``keep_warmup`` (pm.sample's ``discard_tuned_samples=False``)."""

    def __init__(self, chains: int, keep_warmup: bool = False) -> None:
        self.chains = chains
        self.keep_warmup = keep_warmup
        self._warmup_posterior: list[dict[str, list[np.ndarray]]] = [{} for _ in range(chains)]
        self._posterior: list[dict[str, list[np.ndarray]]] = [{} for _ in range(chains)]
        self._stats: list[dict[str, list[np.ndarray]]] = [{} for _ in range(chains)]
        self._warmup_stats: list[dict[str, list[np.ndarray]]] = [{} for _ in range(chains)]
        self.counts = [0] * chains
        self.warmup_counts = [0] * chains
        self._divergent = 0  # post-warm-up divergent draws so far, counted as chunks arrive

    def add(self, chunk: Chunk) -> None:
        for row, chain in enumerate(chunk.chains):
            if chunk.warmup:
                self.warmup_counts[chain] += chunk.size
                for name, values in chunk.sample_stats.items():
                    self._warmup_stats[chain].setdefault(name, []).append(np.asarray(values[row]))
                if self.keep_warmup:
                    for name, values in chunk.posterior.items():
                        self._warmup_posterior[chain].setdefault(name, []).append(np.asarray(values[row]))
                continue
            self.counts[chain] += chunk.size
            for name, values in chunk.posterior.items():
                self._posterior[chain].setdefault(name, []).append(np.asarray(values[row]))
            for name, values in chunk.sample_stats.items():
                self._stats[chain].setdefault(name, []).append(np.asarray(values[row]))
            if "diverging" in chunk.sample_stats:
                self._divergent += int(np.sum(chunk.sample_stats["diverging"][row]))

    def last_stat(self, chain: int, name: str) -> Any:
        """Chain ``chain``'s last post-warm-up value of the statistic ``name``, or None (none yet, or no such
        statistic)."""
        values = self._stats[chain].get(name)
        return None if not values or np.size(values[-1]) == 0 else np.asarray(values[-1])[-1]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def complete_draws(self) -> int:
        """Draws every chain has finished (the DataTree holds this many per chain)."""
        return min(self.counts) if self.counts else 0

    def _stack(self, groups: list[dict[str, list[np.ndarray]]], length: int) -> dict[str, np.ndarray]:
        names = [n for n in groups[0]] if groups and groups[0] else []
        return {
            name: np.stack([np.concatenate(g[name], axis=0)[:length] for g in groups], axis=0)
            for name in names
            if all(name in g for g in groups)
        }

    def posterior(self) -> dict[str, np.ndarray]:
        return self._stack(self._posterior, self.complete_draws)

    def sample_stats(self) -> dict[str, np.ndarray]:
        return self._stack(self._stats, self.complete_draws)

    def warmup_stats(self) -> dict[str, np.ndarray]:
        length = min(self.warmup_counts) if self.warmup_counts else 0
        return self._stack(self._warmup_stats, length) if length else {}

    def warmup_posterior(self) -> dict[str, np.ndarray]:
        length = min(self.warmup_counts) if self.warmup_counts else 0
        return self._stack(self._warmup_posterior, length) if length and self.keep_warmup else {}

    def divergences(self) -> int:
        """Divergent post-warm-up draws so far (all chains, complete or not)."""
        return self._divergent


def to_datatree(posterior: Mapping[str, np.ndarray], sample_stats: Mapping[str, np.ndarray],
                observed: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None,
                warmup_stats: Mapping[str, np.ndarray] | None = None, layout: Mapping[str, Any] | None = None,
                warmup_posterior: Mapping[str, np.ndarray] | None = None) -> Any:
    """A DataTree with ArviZ's group and dimension conventions.

    ``layout`` is what the backend's own converter would name (``CompiledModel.datatree_layout()``):
    ``coords`` and ``dims`` (variable -> dimension names, as in ``pm.Model(coords=...)``), and
    ``constant_data`` (``pm.Data``). Without it dimensions are ArviZ's ``x_dim_0`` ...
    """
    import xarray as xr
    from arviz_base import from_dict

    layout = dict(layout or {})
    groups: dict[str, dict[str, Any]] = {
        "posterior": dict(posterior),
        "sample_stats": dict(sample_stats),
    }
    if observed:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed.items()}
    if layout.get("constant_data"):
        groups["constant_data"] = {k: np.asarray(v) for k, v in layout["constant_data"].items()}
    if warmup_posterior:
        groups["warmup_posterior"] = dict(warmup_posterior)
    if warmup_stats:
        groups["warmup_sample_stats"] = dict(warmup_stats)
    known = {name for group in groups.values() for name in group}
    dims = {k: list(v) for k, v in (layout.get("dims") or {}).items() if k in known and v}
    used = {d for names in dims.values() for d in names}
    coords = {k: np.asarray(v) for k, v in (layout.get("coords") or {}).items() if k in used}
    datasets = {}
    for name, group in groups.items():
        sample_dims = [] if "data" in name else None
        datasets[name] = _dataset(group, coords, dims, sample_dims)
        if datasets[name] is None:
            # save_warmup: from_dict drops warmup_* groups unless asked (ArviZ's rcParams default).
            datasets[name] = from_dict({name: group}, coords=coords or None, dims=dims or None,
                                       save_warmup=True)[name].to_dataset()
    data = xr.DataTree.from_dict(datasets)
    data.attrs.update(dict(attrs or {}))
    return data


def _dataset(group: Mapping[str, Any], coords: Mapping[str, Any], dims: Mapping[str, list],
             sample_dims: list | None) -> Any:
    """``arviz_base.dict_to_dataset``'s Dataset built in one step: the same names, dimensions, coordinates
    and attributes, without a DataArray per variable and their alignment (about 80 ms of a small model's
    call, more than nutpie's sampling of it). None where two variables give one dimension other values
    (``dict_to_dataset`` aligns them), or where a variable is named as a dimension: those rare cases are left to it."""
    import xarray as xr
    from arviz_base import generate_dims_coords, rcParams
    from arviz_base.base import make_attrs

    if sample_dims is None:
        sample_dims = list(rcParams["data.sample_dims"])
    variables, merged = {}, {}
    for var_name, values in group.items():
        ary = np.asarray(values)
        asked = list(dims.get(var_name, []))
        var_dims = [d for d in sample_dims if d not in asked] + asked
        var_dims, var_coords = generate_dims_coords(ary.shape, var_name=var_name, dims=var_dims, coords=coords)
        for dim, index in var_coords.items():
            if dim in merged:
                if len(merged[dim]) != len(index) or not np.array_equal(merged[dim], index):
                    return None
            else:
                merged[dim] = index
        variables[var_name] = (var_dims, ary)
    if set(variables) & set(merged):
        return None  # a variable named as a dimension (a site `draw`, `theta_dim_0`): as ArviZ does
    return xr.Dataset(variables, coords=merged, attrs=make_attrs(sample_dims=sample_dims))


#: the statistic an engine keeps as a running count over its run (PyMC's and nutpie's ``divergences``)
RUNNING_COUNT = "divergences"


def running_counts_on(chunk: Chunk, counts_before: Mapping[int, Any]) -> dict[str, Any]:
    """``chunk``'s statistics with its :data:`RUNNING_COUNT` carried on from ``counts_before`` (chain -> the
    chain's count before this run): a run that continues chains (more_draws, resume) starts the engine's count at
    0 again."""
    stats = dict(chunk.sample_stats)
    if RUNNING_COUNT not in stats or not counts_before:
        return stats
    count = np.array(stats[RUNNING_COUNT], copy=True)
    for row, chain in enumerate(chunk.chains):
        if chain in counts_before:
            count[row] = count[row] + counts_before[chain]
    stats[RUNNING_COUNT] = count
    return stats
