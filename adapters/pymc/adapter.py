"""The PyMC adapter: compiles shared-API models and native pm.Model objects."""

from __future__ import annotations

from resilient.backend import CAPABILITIES

from resilient.adapters.common import require_native

from dataclasses import replace
from typing import Any
import numpy as np
import pymc as pm
from pymc.model.core import BaseModel, FrozenModel
from resilient.errors import UnsupportedModelError
from resilient.model import Model, NativeModel, Trace
from resilient.adapters.pymc.compiled import PyMCCompiledModel, _no_c_compilation, discrete_free_rvs
from resilient.adapters.pymc.native import _native_sites, noncentred_model, without_infinite_truncations
from resilient.adapters.pymc.translate import PyMCSiteHandler


class PyMCAdapter:
    """Compiles shared-API models and native ``pm.Model`` objects for PyMC.

    ``cores``: processes for ``pm.sample`` (``None``: ``os.cpu_count()``), capped at the chains.
    A run with a deadline uses one process per chain whatever ``cores`` says: PyMC runs surplus
    chains only after the first ones finish, which a deadline would leave empty.
    """

    name = "pymc"
    capabilities = CAPABILITIES["pymc"]

    def __init__(self, cores: int | None = None) -> None:
        if cores is not None and int(cores) < 1:
            raise ValueError(f"`cores` must be at least 1, got {cores}.")
        self.cores = None if cores is None else int(cores)

    def compile(self, model: Any) -> "PyMCCompiledModel":
        if isinstance(model, Model):
            handler = PyMCSiteHandler()
            with _no_c_compilation(), pm.Model() as pm_model:
                trace = Trace(model, handler)
                sites = trace.run()
            evaluated, sampled = discrete_split(pm_model)
            compiled = PyMCCompiledModel(_frozen(evaluated), dict(sites), cores=self.cores, name=model.name,
                                         order=tuple(pm_model.named_vars), sampling_model=sampled)
            compiled.ignored_options = ("float32",) if model.float32 else ()  # PyMC runs in float64
            return compiled
        if isinstance(model, NativeModel):
            require_native(model, "pymc")
            if not isinstance(model.model, BaseModel):
                raise UnsupportedModelError(
                    f"A native PyMC model must be a pm.Model (or a frozen one), got {type(model.model).__name__}."
                )
            ignored = ("float32",) if model.float32 else ()
            base, rewrites = without_infinite_truncations(model.model, fix=model.fix)
            noncentered = frozenset(model.noncentered)
            if noncentered:
                base = noncentred_model(base, noncentered)
            order = [name for name in model.model.named_vars]
            order += [f"{name}_decentered" for name in sorted(noncentered)]
            evaluated, sampled = discrete_split(base)
            sites = _native_sites(base)
            for name, rewrite in rewrites.items():  # said as the user wrote it, with the rewrite that ran
                sites[name] = replace(sites[name], description=rewrite.before, rewrites=(rewrite,))
            compiled = PyMCCompiledModel(_frozen(evaluated), sites, cores=self.cores, name=model.name,
                                         order=tuple(order), sampling_model=sampled)
            compiled.ignored_options = ignored
            compiled.hidden = frozenset(f"{name}_decentered" for name in noncentered)
            return compiled
        if isinstance(model, BaseModel):
            return self.compile(NativeModel("pymc", model))
        raise UnsupportedModelError(
            f"The PyMC adapter compiles resilient.model.Model or NativeModel(backend='pymc'), "
            f"got {type(model).__name__}."
        )


def discrete_split(model: Any) -> tuple[Any, Any]:
    """``(evaluated, sampled)`` for a model with discrete latents: ``evaluated`` holds them observed at
    their initial values (``pm.observe``; their own terms kept), so preflight and the loop's initial
    points work on the continuous part as NUTS sees it; ``sampled`` is the model ``pm.sample`` runs with
    its compound step (NUTS for the continuous latents, PyMC's default step for the discrete ones, as
    ``pm.sample`` assigns them). Without discrete latents: ``(model, None)``."""
    discrete = discrete_free_rvs(model)
    if not discrete:
        return model, None
    start = model.initial_point()
    values = {rv: np.asarray(start[model.rvs_to_values[rv].name]) for rv in discrete}
    return pm.observe(model, values), _frozen(model)


def _frozen(model: Any) -> Any:
    """PyMC's frozen copy of ``model`` (compiled functions cached, graph immutable; the user's
    model is left as it is), or ``model`` itself where PyMC cannot freeze it (symbolic initial
    values): then everything still works, compiled once per use as ``pm.sample`` does."""
    from pymc.model.transform.optimization import freeze_model

    if isinstance(model, FrozenModel):
        return model
    try:
        with _no_c_compilation():
            frozen = freeze_model(model)
    except (TypeError, ValueError, NotImplementedError):
        return model
    if not _same_names(model, frozen):
        # PyMC 6.4's freeze_model merges a Deterministic of a Deterministic into it
        # (pm.Deterministic("corr", chol_corr) after LKJCholeskyCov(compute_corr=True): the frozen
        # model lists `chol_corr` twice and `corr` nowhere), which would drop variables.
        return model
    return frozen


def _same_names(model: Any, frozen: Any) -> bool:
    """Whether ``frozen`` lists the same variables, by name, as ``model``."""
    groups = ("free_RVs", "observed_RVs", "deterministics", "potentials")
    return all([v.name for v in getattr(model, g)] == [v.name for v in getattr(frozen, g)] for g in groups)
