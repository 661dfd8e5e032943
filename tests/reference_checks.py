"""Comparing a run with a posteriordb reference, with MCSE-derived tolerances.

The band is the one tests/posteriors/README.md states: |mean - ref.mean| < 0.15 * ref.sd + 4 * mcse
(the MCSE of this run); for q05/q50/q95 a looser 0.25 * ref.sd + 4 * quantile-MCSE.
"""

from __future__ import annotations

import numpy as np

from examples.reference_models import reference_name


def elements(data, variable):
    """(posteriordb name, (chain, draw) array) for each scalar element of a posterior variable."""
    values = np.asarray(data.posterior[variable].values, float)
    chains, draws = values.shape[:2]
    flat = values.reshape(chains, draws, -1)
    shape = values.shape[2:]
    for position in range(flat.shape[2]):
        index = np.unravel_index(position, shape) if shape else ()
        yield reference_name(variable, tuple(int(i) for i in index)), flat[:, :, position]


def mismatches(data, reference, variables):
    """Every statistic outside its band, as readable lines (empty: the run matches)."""
    from arviz_stats.base import array_stats

    problems = []
    checked = set()
    for variable in variables:
        for name, draws in elements(data, variable):
            if name not in reference:
                continue
            checked.add(name)
            ref = reference[name]
            mean = float(np.mean(draws))
            mcse = float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="mean"))
            band = 0.15 * ref["sd"] + 4 * mcse
            if abs(mean - ref["mean"]) > band:
                problems.append(f"{name}: mean {mean:.5g} vs reference {ref['mean']:.5g} (band {band:.3g})")
            for key, prob in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95)):
                quantile = float(np.quantile(draws, prob))
                qmcse = float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="quantile", prob=prob))
                band = 0.25 * ref["sd"] + 4 * qmcse
                if abs(quantile - ref[key]) > band:
                    problems.append(f"{name}: {key} {quantile:.5g} vs reference {ref[key]:.5g} (band {band:.3g})")
    missing = sorted(set(reference) - checked)
    if missing:
        problems.append(f"not in the run: {', '.join(missing)}")
    return problems
