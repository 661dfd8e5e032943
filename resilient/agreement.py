"""Do both backends give the same posterior for one shared-API model? ``check_agreement`` runs it on
NumPyro and on PyMC and compares each scalar parameter's mean and standard deviation, each difference
measured in its Monte Carlo standard error, so "differ" means more than the chains' own noise.

This is the strongest check a user can run on a model's translation: two independent compilers
of one model agreeing within MCSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

__all__ = ["check_agreement", "Agreement", "ParameterAgreement"]


@dataclass(frozen=True)
class ParameterAgreement:
    """One scalar parameter on both backends: means, sds and their differences in MCSE units."""

    name: str
    means: tuple[float, float]
    sds: tuple[float, float]
    z_mean: float
    z_sd: float
    verdict: Literal["agree", "differ"]


@dataclass(frozen=True)
class Agreement:
    """The comparison; ``ok`` when every parameter agrees. ``data`` holds both runs' DataTrees."""

    backends: tuple[str, str]
    critical_z: float
    family_alpha: float
    parameters: tuple[ParameterAgreement, ...]
    data: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(p.verdict == "agree" for p in self.parameters)

    @property
    def differing(self) -> list[str]:
        return [p.name for p in self.parameters if p.verdict == "differ"]

    def table(self) -> str:
        a, b = self.backends
        lines = [f"| parameter | mean {a} | mean {b} | z (mean) | sd {a} | sd {b} | z (sd) | verdict |",
                 "|---|---|---|---|---|---|---|---|"]
        for p in self.parameters:
            lines.append(f"| {p.name} | {p.means[0]:.4g} | {p.means[1]:.4g} | {p.z_mean:+.2f} | {p.sds[0]:.4g} | "
                         f"{p.sds[1]:.4g} | {p.z_sd:+.2f} | {p.verdict} |")
        lines.append(f"\n|z| above {self.critical_z:.2f} differs (Bonferroni over {2 * len(self.parameters)} "
                     f"comparisons, family-wise false-alarm rate {self.family_alpha:g}).")
        return "\n".join(lines)


def _scalars(data: Any) -> dict[str, np.ndarray]:
    """(chain, draw) arrays for every scalar element of every posterior variable."""
    out = {}
    for name, variable in data.posterior.data_vars.items():
        values = np.asarray(variable.values, float)
        chains, draws = values.shape[:2]
        flat = values.reshape(chains, draws, -1)
        shape = values.shape[2:]
        for position in range(flat.shape[2]):
            index = np.unravel_index(position, shape) if shape else ()
            label = name + (f"[{', '.join(str(int(i)) for i in index)}]" if shape else "")
            out[label] = flat[:, :, position]
    return out


def compare(first: Any, second: Any, backends: tuple[str, str] = ("numpyro", "pymc"),
            family_alpha: float = 0.01) -> Agreement:
    """Compare two runs of one model (see :func:`check_agreement`)."""
    from arviz_stats.base import array_stats

    a, b = _scalars(first), _scalars(second)
    names = [n for n in a if n in b]
    critical = NormalDist().inv_cdf(1 - family_alpha / (2 * max(2 * len(names), 1)))
    rows = []
    for name in names:
        x, y = a[name], b[name]
        if np.ptp(x) == 0 and np.ptp(y) == 0:
            z_mean = z_sd = 0.0 if np.all(x[0, 0] == y[0, 0]) else np.inf
        else:
            def mcse(draws: np.ndarray, method: str) -> float:
                return float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method=method))

            z_mean = (x.mean() - y.mean()) / np.hypot(mcse(x, "mean"), mcse(y, "mean"))
            z_sd = (x.std() - y.std()) / np.hypot(mcse(x, "sd"), mcse(y, "sd"))
        verdict = "agree" if abs(z_mean) <= critical and abs(z_sd) <= critical else "differ"
        rows.append(ParameterAgreement(name, (float(x.mean()), float(y.mean())), (float(x.std()), float(y.std())),
                                       float(z_mean), float(z_sd), verdict))
    return Agreement(backends, float(critical), family_alpha, tuple(rows), {backends[0]: first, backends[1]: second})


def check_agreement(model: Any, *args: Any, draws: int = 2000, tune: int = 1000, chains: int = 4,
                    random_seed: int = 0, family_alpha: float = 0.01, progressbar: bool = False,
                    **kwargs: Any) -> Agreement:
    """Sample a shared-API model on NumPyro and on PyMC and say, per parameter, whether they agree.

    A parameter differs when its mean or sd differs by more than ``critical_z`` combined MCSEs, with
    the critical value set so that two correct translations are flagged with probability at most
    ``family_alpha`` over all parameters (Bonferroni). Other arguments are :func:`resilient.sample`'s.
    """
    from resilient.sampling import sample

    runs = [sample(model, *args, backend=backend, draws=draws, tune=tune, chains=chains, random_seed=random_seed,
                   progressbar=progressbar, **kwargs) for backend in ("numpyro", "pymc")]
    return compare(runs[0], runs[1], ("numpyro", "pymc"), family_alpha)
