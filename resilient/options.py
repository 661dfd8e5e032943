"""The run options: one frozen record, built and checked in one place.

:func:`resilient.sample`, :meth:`resilient.sampling.CompiledSampler.sample`,
:func:`resilient.sample_many` and :func:`resilient.sbc` all turn their keyword arguments into a
:class:`RunOptions`; its constructor checks every value once (each error quotes the value) and
normalises it (the seed to one int, ``time_budget`` / ``max_attempts`` into the policy), and the
run reads only that record, so the four entry points cannot drift apart.

Dependency rule: the standard library and numpy only.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from resilient.errors import ResilientError
from resilient.policy import Policy

__all__ = ["RunOptions", "check_count"]


def check_count(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or an error quoting it when it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ResilientError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class RunOptions:
    """What one run of the loop is asked to do (the model, engine and precision are the sampler's).

    Build it with keyword arguments (``RunOptions(draws=500, time_budget=60)``); every value is
    checked and normalised on construction, and ``dataclasses.replace`` checks again. After
    construction ``policy`` is the :class:`~resilient.policy.Policy` the loop runs under, with
    ``time_budget`` and ``max_attempts`` (when given) applied to it, and ``random_seed`` is one int
    (or None).
    """

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    target_accept: float = 0.8
    max_tree_depth: int = 10
    mass_matrix: str = "diag"
    random_seed: Any = None
    cores: int | None = None
    initvals: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    progressbar: bool = True
    preflight: bool = True
    policy: Policy | None = None
    time_budget: float | None = None
    max_attempts: int | None = None
    checkpoint: str | None = None
    resume: str | None = None
    log_likelihood: bool | None = None
    discard_tuned_samples: bool = True
    var_names: tuple[str, ...] | None = None
    compute_convergence_checks: bool = False

    def __post_init__(self) -> None:
        self._validate()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _validate(self) -> None:
        """Check and normalise every field; each error says the rule and quotes the value."""
        from resilient.arguments import normalise_seed

        self._set("draws", check_count("draws", self.draws, 1))
        self._set("tune", check_count("tune", 1000 if self.tune is None else self.tune, 0))
        self._set("chains", check_count("chains", 4 if self.chains is None else self.chains, 1))
        self._set("max_tree_depth", check_count("max_tree_depth", self.max_tree_depth, 1))
        if self.cores is not None:
            self._set("cores", check_count("cores", self.cores, 1))
        target = self.target_accept
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0 < float(target) < 1:
            raise ResilientError(f"`target_accept` must be in (0, 1), got {target!r}. Typical: 0.8 to 0.99.")
        self._set("target_accept", float(target))
        from resilient.engine import all_mass_matrices

        if self.mass_matrix not in all_mass_matrices():
            raise ResilientError(f"`mass_matrix` must be one of {', '.join(repr(m) for m in all_mass_matrices())}, "
                                 f"got {self.mass_matrix!r}.")
        self._set("random_seed", normalise_seed(self.random_seed, self.chains))
        if self.policy is not None and not isinstance(self.policy, Policy):
            raise ResilientError(f"`policy` must be a resilient.Policy, got {type(self.policy).__name__}.")
        overrides = {k: v for k, v in (("time_budget", self.time_budget), ("max_attempts", self.max_attempts))
                     if v is not None}
        policy = self.policy or Policy()
        self._set("policy", policy.replace(**overrides) if overrides else policy)
        for name in ("progressbar", "preflight", "discard_tuned_samples", "compute_convergence_checks"):
            value = getattr(self, name)
            if value is None and name == "compute_convergence_checks":
                value = False
            if not isinstance(value, (bool, numbers.Integral)):
                raise ResilientError(f"`{name}` must be True or False, got {value!r}.")
            self._set(name, bool(value))
        if self.log_likelihood is not None:
            if not isinstance(self.log_likelihood, (bool, numbers.Integral)):
                raise ResilientError(f"`log_likelihood` must be True, False or None, got {self.log_likelihood!r}.")
            self._set("log_likelihood", bool(self.log_likelihood))
        if self.var_names is not None:
            names = (self.var_names,) if isinstance(self.var_names, str) else tuple(self.var_names)
            if not all(isinstance(n, str) for n in names):
                raise ResilientError(f"`var_names` must be variable names (strings), got {self.var_names!r}.")
            self._set("var_names", names)
        for name in ("checkpoint", "resume"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, bytes)) and not hasattr(value, "__fspath__"):
                raise ResilientError(f"`{name}` must be a folder path, got {value!r}.")
        if self.initvals is not None and not isinstance(self.initvals, (Mapping, Sequence)):
            raise ResilientError(f"`initvals` must be one dict or one dict per chain, got "
                                 f"{type(self.initvals).__name__}.")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, in order."""
        return tuple(f.name for f in fields(cls))
