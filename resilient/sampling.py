"""``resilient.sample``: a drop-in for ``pm.sample`` and NumPyro's ``MCMC`` with preflight and the loop,
and ``resilient.compile``: compile a model once, sample it many times."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from resilient.arguments import (PM_SAMPLE_ARGUMENTS, compile_options, idata_options, init_option,
                                 normalise_seed, nuts_options, refuse_unsupported)
from resilient.backend import NUTSSettings
from resilient.errors import ResilientError, warn
from resilient.model import Model, NativeModel
from resilient.policy import Policy

__all__ = ["sample", "resume", "compile", "CompiledSampler"]

def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ResilientError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclass(eq=False)
class CompiledSampler:
    """A model compiled for one backend, sampled as often as you like without compiling again.

    Made by :func:`compile`; :meth:`sample` takes :func:`sample`'s run arguments. Remedies that
    change the model (non-centring, float64) compile their variant once and keep it too.
    ``backend`` is the language the model is in ("numpyro" or "pymc"); ``engine`` what runs NUTS
    ("auto": chosen per run by :func:`resilient.engine.choose_engine`).
    """

    model: Model | NativeModel
    backend: str
    cache: dict = field(default_factory=dict, repr=False)
    engine: str = "auto"
    #: ``float32="auto"``: each run chooses float32 or float64 (:func:`resilient.precision.choose_precision`);
    #: ``model`` is then the float64 form
    float32_auto: bool = False

    @property
    def compiled(self) -> Any:
        """The adapter's :class:`~resilient.backend.CompiledModel`, compiled on first use."""
        key = (self.backend, self.model)
        if key not in self.cache:
            from resilient.checks import compile_model

            self.cache[key] = compile_model(self.model, self.backend)
        return self.cache[key]

    def preflight(self, *, random_seed: int = 0) -> Any:
        """Preflight's :class:`~resilient.findings.PreflightReport` for the compiled model."""
        from resilient.checks import run_preflight

        return run_preflight(self.model, self.backend, random_seed=random_seed, compiled=self.compiled)[0]

    def sample(self, *, draws: int = 1000, tune: int = 1000, chains: int = 4, target_accept: float = 0.8,
               random_seed: int | None = None, initvals: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
               progressbar: bool = True, preflight: bool = True, max_tree_depth: int = 10,
               policy: Policy | None = None, time_budget: float | None = None, max_attempts: int | None = None,
               checkpoint: str | None = None, resume: str | None = None,
               var_names: Sequence[str] | None = None, mass_matrix: str = "diag",
               log_likelihood: bool | None = None, cores: int | None = None,
               discard_tuned_samples: bool = True) -> Any:
        """Preflight and the resilient NUTS loop; an ArviZ DataTree. Arguments as for :func:`sample`;
        ``var_names`` keeps only those variables in the posterior group; ``cores``, pm.sample's: chains
        at a time on PyMC's NUTS and nutpie; ``discard_tuned_samples=False`` keeps the warm-up draws
        (``warmup_posterior``)."""
        from resilient.checkpoint import Checkpoint, read_state
        from resilient.loop import run_loop

        draws = _check_count("draws", draws, 1)
        tune = _check_count("tune", tune, 0)
        chains = _check_count("chains", chains, 1)
        max_tree_depth = _check_count("max_tree_depth", max_tree_depth, 1)
        if not 0 < float(target_accept) < 1:
            raise ResilientError(f"`target_accept` must be in (0, 1), got {target_accept!r}. Typical: 0.8 to 0.99.")
        random_seed = normalise_seed(random_seed, chains)
        log_likelihood = idata_options({}, log_likelihood)
        keep = self._checked_var_names(var_names)
        policy = policy or Policy()
        overrides = {k: v for k, v in (("time_budget", time_budget), ("max_attempts", max_attempts)) if v is not None}
        policy = policy.replace(**overrides) if overrides else policy
        resume_state = read_state(resume) if resume is not None else None
        from resilient.engine import all_mass_matrices, engines_adapting, mass_matrices

        if mass_matrix not in all_mass_matrices():
            raise ResilientError(f"`mass_matrix` must be one of {', '.join(repr(m) for m in all_mass_matrices())}, "
                                 f"got {mass_matrix!r}.")
        choice = self.choose_engine(draws=draws, tune=tune, chains=chains, mass_matrix=mass_matrix)
        if mass_matrix not in mass_matrices(choice.engine):
            able = " or ".join(f"engine={e!r}" for e in engines_adapting(mass_matrix))
            raise ResilientError(f"mass_matrix={mass_matrix!r} is not adapted by {choice.engine!r} ({choice.reason}); "
                                 f"{able} adapts it (a PyMC or shared-API model).")
        settings = NUTSSettings(draws=draws, tune=0 if resume_state is not None else tune, chains=chains,
                                target_accept=float(target_accept), random_seed=random_seed,
                                max_tree_depth=max_tree_depth, resume_state=resume_state, mass_matrix=mass_matrix,
                                cores=None if cores is None else _check_count("cores", cores, 1))
        if initvals is not None:
            settings = replace(settings, initial_points=self._initial_points(initvals, chains))
        store = None
        if checkpoint is not None or resume is not None:
            store = Checkpoint(checkpoint or resume, fresh=resume is None, meta={
                "model": self.model.name, "backend": choice.engine, "draws": draws, "tune": tune, "chains": chains,
                "target_accept": target_accept, "random_seed": random_seed})
        model, precision_reason = self.model, None
        if self.float32_auto:
            from resilient.precision import choose_precision

            precision = choose_precision(self.model, choice.engine, self.cache, random_seed)
            model, precision_reason = precision.model, precision.reason
        data = run_loop(model, choice.engine, settings, policy, preflight=preflight and resume is None,
                        checkpoint=store, progressbar=progressbar, compile_cache=self.cache,
                        engine_reason=choice.reason, keep_warmup=not discard_tuned_samples,
                        precision_reason=precision_reason)
        if data is not None and (self.backend == "numpyro" if log_likelihood is None else log_likelihood):
            self._add_log_likelihood(data)
        if keep is not None and data is not None:
            data["posterior"] = data["posterior"].to_dataset()[keep]
        return data

    def _add_log_likelihood(self, data: Any) -> None:
        """Add the ``log_likelihood`` group (what ``az.loo`` / ``az.compare`` read) for the draws in ``data``,
        computed by the compiled model that made them, named as the backend's own converter names it (the
        observed variables' dims). A failure here warns and leaves the draws as they are."""
        from arviz_base import dict_to_dataset

        posterior = data["posterior"].to_dataset()
        if not posterior.data_vars or posterior.sizes.get("draw", 0) == 0:
            return
        try:
            compiled = self._compiled_that_made(data)
            draws = {str(name): np.asarray(value.transpose("chain", "draw", ...).values)
                     for name, value in posterior.data_vars.items()}
            values = compiled.log_likelihood(draws)
        except Exception as error:  # noqa: BLE001 - the draws are worth more than the group
            warn(f"Resilient: no log_likelihood group: computing it failed ({type(error).__name__}: {error}).")
            return
        if not values:
            return
        layout = getattr(compiled, "datatree_layout", dict)()
        dims = {name: list(names) for name, names in (layout.get("dims") or {}).items() if name in values}
        data["log_likelihood"] = dict_to_dataset(values, coords=layout.get("coords") or None, dims=dims or None,
                                                 sample_dims=["chain", "draw"], skip_event_dims=True)

    def _compiled_that_made(self, data: Any) -> Any:
        """The compiled model of the attempt whose draws ``data`` holds (the run record names its engine and
        model options: a remedy may have non-centred sites, switched to float64 or to another engine)."""
        import re

        from resilient.backend import get_adapter
        from resilient.record import read_attempts, read_run

        run = read_run(data) or {}
        attempts = read_attempts(data)
        returned = re.search(r"returned attempt (\d+)'s draws", str(run.get("message", "")))
        number = int(returned.group(1)) if returned else None
        attempt = next((a for a in attempts if a.get("attempt") == number), attempts[-1] if attempts else {})
        engine = attempt.get("backend") or run.get("backend") or self.backend
        settings = attempt.get("settings") or {}
        float32 = bool(settings.get("float32", self.model.float32))
        noncentered = frozenset(settings.get("noncentered", self.model.noncentered))
        candidates = [(model is not self.model, compiled) for (name, model), compiled in self.cache.items()
                      if name == engine and bool(model.float32) == float32
                      and frozenset(model.noncentered) == noncentered]
        if candidates:
            return min(candidates, key=lambda entry: entry[0])[1]
        variant = self.model.with_options(float32=float32, noncentered=noncentered)
        self.cache[(engine, variant)] = get_adapter(engine).compile(variant)
        return self.cache[(engine, variant)]

    def choose_engine(self, *, draws: int = 1000, tune: int = 1000, chains: int = 4, mass_matrix: str = "diag") -> Any:
        """The engine for a run of this size (:class:`resilient.engine.EngineChoice`); a nutpie choice
        wraps the PyMC compiled model, compiled once for both."""
        from resilient.engine import EngineChoice, choose_engine, installed

        compiled = None
        try:
            if self.engine == "nutpie" or (self.backend == "pymc" and self.engine == "auto" and installed("nutpie")):
                compiled = self.compiled
        except Exception:  # noqa: BLE001 - preflight compiles it again and reports why, by site
            if self.engine == "auto":
                return EngineChoice(self.backend, "pymc", "auto: PyMC's NUTS (the model did not compile; "
                                                          "preflight says why)")
            return choose_engine(self.engine, self.backend, native=isinstance(self.model, NativeModel))
        choice = choose_engine(self.engine, self.backend, native=isinstance(self.model, NativeModel),
                               compiled_pymc=compiled if self.backend == "pymc" else None, draws=draws, tune=tune,
                               chains=chains, mass_matrix=mass_matrix)
        if choice.engine == "nutpie" and compiled is not None and ("nutpie", self.model) not in self.cache:
            from resilient.adapters.nutpie import NutpieCompiledModel

            self.cache[("nutpie", self.model)] = NutpieCompiledModel(
                compiled, compile_backend=self.model.compile_backend, gradient_backend=self.model.gradient_backend)
        nutpie = self.cache.get(("nutpie", self.model))
        if choice.engine == "nutpie" and nutpie is not None and (nutpie.source, nutpie.compile_backend) != ("pymc", "numba"):
            choice = replace(choice, reason=f"{choice.reason}: {nutpie.describe}")
        return choice

    def _checked_var_names(self, var_names: Sequence[str] | None) -> list[str] | None:
        if var_names is None:
            return None
        names = [var_names] if isinstance(var_names, str) else list(var_names)
        compiled = self.compiled
        known = set(compiled.latent_names) | {n for n, s in compiled.sites.items() if s.kind not in ("observed", "enumerated")}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ResilientError(f"`var_names` lists {unknown}, which the model does not sample; it has "
                                 f"{', '.join(sorted(known))}.")
        return names

    def _initial_points(self, initvals: Any, chains: int) -> np.ndarray:
        """pm.sample-style initvals (constrained values by name, one dict or one per chain) as points."""
        per_chain = [initvals] * chains if isinstance(initvals, Mapping) else list(initvals)
        if len(per_chain) != chains:
            raise ResilientError(f"`initvals` must be one dict or one per chain ({chains}), got {len(per_chain)}.")
        compiled = self.compiled
        points = []
        for chain, values in enumerate(per_chain):
            x = np.asarray(compiled.initial_point("default", chain), float)
            if values:
                unknown = sorted(set(values) - set(compiled.latent_names))
                if unknown:
                    raise ResilientError(
                        f"`initvals` names {unknown}, which are not free variables of the model "
                        f"({', '.join(compiled.latent_names)})."
                    )
                x = compiled.unconstrain({**compiled.constrain(x), **values})
            points.append(x)
        return np.stack(points)


def compile(model: Any = None, *args: Any, backend: str | None = None, engine: str = "auto", fix: bool = True,
            float32: bool | str = False, **kwargs: Any) -> CompiledSampler:
    """Compile ``model`` once for ``backend``; sample it many times with ``.sample(...)``.

    ``model`` and its data (``*args``/``**kwargs``) are as for :func:`sample`.
    """
    auto = _float32_auto(float32)
    resolved, backend, engine = _resolve(model, args, kwargs, backend, engine, None, {}, fix=fix,
                                         float32=False if auto else float32)
    sampler = CompiledSampler(resolved, backend, engine=engine, float32_auto=auto)
    sampler.compiled  # noqa: B018  (compile now: the caller asked for it)
    return sampler


def _resolve(model: Any, args: tuple, data: Mapping[str, Any], backend: str | None, engine: str,
             nuts_sampler: str | None, pm_kwargs: dict[str, Any], **options: Any) -> tuple[Any, str, str]:
    """``(model, backend, engine)``: the model resolved, the language it is compiled in and what runs NUTS,
    from resilient.sample's and pm.sample's ways to say them (``backend=`` may be a compute backend)."""
    from resilient.engine import engine_for_compute_backend, model_backend, resolve_engine
    from resilient.resolve import default_backend, resolve_model

    backend, compute, gradient = compile_options(backend, pm_kwargs)
    engine, backend = resolve_engine(engine, nuts_sampler, backend)
    engine = engine_for_compute_backend(engine, compute)
    if compute in ("numba", "jax"):
        options.update(compile_backend=compute, gradient_backend=gradient)
    resolved = resolve_model(model, args, data, **options)
    native = resolved.backend if isinstance(resolved, NativeModel) else None
    return resolved, default_backend(resolved, model_backend(engine, backend, native)), engine


def sample(model: Any = None, *args: Any, backend: str | None = None, engine: str = "auto", draws: int = 1000,
           tune: int = 1000,
           chains: int = 4, target_accept: float = 0.8, random_seed: int | None = None,
           initvals: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, progressbar: bool = True,
           preflight: bool = True, fix: bool = True, float32: bool | str = False, max_tree_depth: int = 10,
           policy: Policy | None = None, time_budget: float | None = None, max_attempts: int | None = None,
           checkpoint: str | None = None, resume: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
           mass_matrix: str = "diag", log_likelihood: bool | None = None, **kwargs: Any) -> Any:
    """Run preflight and the resilient NUTS loop; return an ArviZ DataTree.

    ``model`` is a shared-API model function (data as ``*args`` / ``**kwargs`` or
    ``model_kwargs``), a NumPyro model function (its arguments likewise), a PyMC model
    (``model=`` or the ``with pm.Model():`` context; ``pm.sample``'s arguments are accepted), or
    what :func:`compile` returned. ``draws``, ``tune``, ``chains``, ``target_accept``,
    ``random_seed``, ``initvals`` and ``progressbar`` mean what they mean in ``pm.sample``.
    ``time_budget`` (seconds for the whole call) and ``max_attempts`` override the
    :class:`~resilient.policy.Policy`; ``checkpoint`` is a folder where finished draws are
    written as they finish; ``resume`` continues a NumPyro run from such a folder. ``engine``
    (or pm.sample's ``nuts_sampler``) is what runs NUTS: ``"auto"`` (the one expected to finish
    first, with the reason in the run record), ``"numpyro"``, ``"pymc"`` or ``"nutpie"``;
    ``mass_matrix="low_rank"`` asks nutpie for its low-rank adaptation, ``"full"`` (pm.sample's
    ``init="adapt_full"``) PyMC's NUTS for a dense one. ``log_likelihood`` (or
    pm.sample's ``idata_kwargs={"log_likelihood": ...}``) adds the pointwise ``log_likelihood`` group
    ``az.loo`` and ``az.compare`` need; None is the backend's habit: yes for NumPyro models, no for PyMC
    models (as ``pm.sample``). ``float32``: False (float64), True (float32 where the engine applies it: NumPyro),
    or ``"auto"``: float32 on NumPyro when the data are large and a float32 check is clean, else float64, with
    the reason in the run record (:mod:`resilient.precision`). The preflight
    report and the attempt log are in the result's attributes (:mod:`resilient.record`).

    Sites inside a model are declared with :func:`resilient.model.sample`; calling this one
    with a site name still works but is deprecated.
    """
    from resilient.context import inside_model

    if isinstance(model, str) and inside_model():
        return _declare_site_deprecated(model, *args, **kwargs)

    if isinstance(model, numbers.Integral) and not isinstance(model, bool):  # pm.sample(500) in a with-block
        draws, model = int(model), None
    if "model" in kwargs and model is None:
        model = kwargs.pop("model")
    pm_kwargs, data_kwargs = _split_pm_sample_arguments(model, kwargs)
    data_kwargs = {**(model_kwargs or {}), **data_kwargs}
    log_likelihood = idata_options(pm_kwargs, log_likelihood)
    refuse_unsupported(pm_kwargs)
    nuts = nuts_options(pm_kwargs)
    asked = init_option(pm_kwargs)
    if asked is not None and mass_matrix not in ("diag", asked):
        raise ResilientError(f"init={kwargs['init']!r} and mass_matrix={mass_matrix!r} disagree; give one of them.")
    mass_matrix = asked or mass_matrix
    target_accept = nuts.get("target_accept", target_accept)
    max_tree_depth = nuts.get("max_tree_depth", max_tree_depth)
    var_names = pm_kwargs.get("var_names")
    cores = pm_kwargs.get("cores")
    discard_tuned_samples = bool(pm_kwargs.get("discard_tuned_samples", True))
    tune = 1000 if tune is None else tune
    chains = 4 if chains is None else chains
    if isinstance(model, CompiledSampler):
        from resilient.engine import resolve_engine

        engine, backend = resolve_engine(engine, pm_kwargs.get("nuts_sampler"), backend)
        if args or data_kwargs or backend not in (None, model.backend) or engine not in ("auto", model.engine):
            raise ResilientError(
                "A compiled model carries its data and backend: pass only run arguments (draws, chains, ...) "
                "to resilient.sample(compiled, ...), or compile again with other data.")
        sampler = model
    else:
        auto = _float32_auto(float32)
        resolved, backend, engine = _resolve(model, args, data_kwargs, backend, engine, pm_kwargs.get("nuts_sampler"),
                                             pm_kwargs, fix=fix, float32=False if auto else float32)
        sampler = CompiledSampler(resolved, backend, engine=engine, float32_auto=auto)
    data = sampler.sample(draws=draws, tune=tune, chains=chains, target_accept=target_accept,
                          random_seed=random_seed, initvals=initvals, progressbar=progressbar, preflight=preflight,
                          max_tree_depth=max_tree_depth, policy=policy, time_budget=time_budget,
                          max_attempts=max_attempts, checkpoint=checkpoint, resume=resume, var_names=var_names,
                          mass_matrix=mass_matrix, log_likelihood=log_likelihood, cores=cores,
                          discard_tuned_samples=discard_tuned_samples)
    if pm_kwargs.get("compute_convergence_checks") and data is not None:
        _warn_convergence(data)
    return data


def _warn_convergence(data: Any) -> None:
    """pm.sample's ``compute_convergence_checks=True``: one warning naming each check past its warning
    threshold and what to do (nothing when every check passes)."""
    from resilient.diagnostics import diagnose

    failed = diagnose(data).failed()
    if failed:
        lines = "; ".join(f"{c.name} ({c.verdict}): {c.explanation}" + (f" {c.action}" if c.action else "")
                          for c in failed)
        warn(f"Resilient: convergence checks: {lines}")


def _float32_auto(float32: Any) -> bool:
    """``float32="auto"`` (the loop chooses; see :mod:`resilient.precision`), else a bool as before."""
    if isinstance(float32, str):
        if float32 != "auto":
            raise ResilientError(f"`float32` must be True, False or 'auto', got {float32!r}.")
        return True
    return False


def _split_pm_sample_arguments(model: Any, kwargs: Mapping[str, Any]) -> tuple[dict, dict]:
    """pm.sample's arguments apart from a model function's data (a function's own parameter is data)."""
    import inspect

    takes: set[str] = set()
    if callable(model) and not isinstance(model, (type, CompiledSampler)):
        try:
            takes = set(inspect.signature(model).parameters)
        except (TypeError, ValueError):
            takes = set()
    pm_kwargs = {k: v for k, v in kwargs.items() if k in PM_SAMPLE_ARGUMENTS and k not in takes}
    return pm_kwargs, {k: v for k, v in kwargs.items() if k not in pm_kwargs}


def _declare_site_deprecated(name: str, *args: Any, **kwargs: Any) -> Any:
    from resilient import model as model_api

    warn(f"resilient.sample({name!r}, ...) inside a model is deprecated: declare sites with "
         "resilient.model.sample (`from resilient.model import sample`), as numpyro.sample declares them; "
         "resilient.sample runs a model.", DeprecationWarning)
    return model_api.sample(name, *args, **kwargs)


def resume(path: str, model: Any, *args: Any, draws: int = 1000, **kwargs: Any) -> Any:
    """Continue a NumPyro run saved in the checkpoint folder ``path`` for ``draws`` more draws."""
    return sample(model, *args, draws=draws, resume=path, preflight=False, **kwargs)
