"""``resilient.sample``: a drop-in for ``pm.sample`` and NumPyro's ``MCMC`` with preflight and the loop,
and ``resilient.compile``: compile a model once, sample it many times."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from resilient.arguments import (IdataOptions, compile_options, idata_options, pm_sample_spellings,
                                 refuse_unsupported, split_keywords)
from resilient.backend import NUTSSettings, capabilities, get_adapter, helper, wraps_language
from resilient.errors import ResilientError, warn
from resilient.model import Model, NativeModel
from resilient.options import RunOptions
from resilient.plan import Plan
from resilient.policy import Policy
from resilient.precision import default_form

if TYPE_CHECKING:  # annotations only: resilient imports no xarray at import time
    import xarray

__all__ = ["sample", "resume", "compile", "CompiledSampler"]

@dataclass(eq=False)
class CompiledSampler:
    """A model compiled for one backend, sampled as often as you like without compiling again.

    Made by :func:`compile`; :meth:`sample` takes :func:`sample`'s run arguments. Remedies that
    change the model (non-centring, float64) compile their variant once and keep it too.
    ``backend`` is the language the model is written in (numpyro or pymc); ``engine`` what runs NUTS
    ("auto": chosen per run by :func:`resilient.engine.choose_engine`).
    """

    model: Model | NativeModel
    backend: str
    cache: dict = field(default_factory=dict, repr=False)
    engine: str = "auto"
    #: ``float32="auto"``: each run chooses float32 or float64 (:func:`resilient.precision.choose_precision`);
    #: ``model`` is then the float64 form; ``"raw"`` (``float32=None`` on a native NumPyro function): each run checks
    #: the precision raw NumPyro would give it (``model``'s) and records the choice
    float32_auto: bool | str = False
    #: the sampler state (:class:`~resilient.sampler_state.SamplerState`) of this sampler's last accepted call:
    #: what ``warm_start="auto"`` starts the next call from (:mod:`resilient.warm_start`)
    last_state: Any = field(default=None, repr=False)
    #: :func:`resilient.caches.contents_digest` of the model when this sampler was made or last refreshed (what its
    #: compiled forms hold): what :meth:`refresh` compares
    contents: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from resilient.caches import contents_digest

        if self.contents is None:
            self.contents = contents_digest(self.model)

    def refresh(self) -> bool:
        """Forget what was compiled (and the last call's adaptation) where what the compiled forms hold fixed has
        changed since: ``pm.set_data`` or a ``pytensor.shared``'s ``set_value`` on a ``pm.Model``, a global the
        model function reads, a data array changed in place. The next run compiles afresh, as ``pm.sample`` and a
        new ``MCMC`` would, instead of sampling the old model. True when it forgot."""
        from resilient.caches import contents_digest

        now = contents_digest(self.model)
        if now is None:
            return False
        changed = self.contents is not None and now != self.contents
        if changed:
            self.cache.clear()
            self.last_state = None
        self.contents = now
        return changed

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

        self.refresh()
        return run_preflight(self.model, self.backend, random_seed=random_seed, compiled=self.compiled)[0]

    def sample(self, *, draws: int = 1000, tune: int = 1000, chains: int = 4, target_accept: float = 0.8,
               random_seed: Any = None, initvals: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
               progressbar: bool = True, preflight: bool = True, max_tree_depth: int = 10,
               policy: Policy | None = None, time_budget: float | None = None, max_attempts: int | None = None,
               checkpoint: str | None = None, resume: str | None = None,
               var_names: Sequence[str] | None = None, mass_matrix: str = "diag",
               log_likelihood: bool | None = None, cores: int | None = None,
               discard_tuned_samples: bool = True, warm_start: Any = "auto") -> xarray.DataTree:
        """Preflight and the resilient NUTS loop on the compiled model; an ArviZ DataTree.

        The run options mean what they mean in :func:`sample` (they make one
        :class:`~resilient.options.RunOptions`, checked once); the model, its data, the backend and
        the engine are this sampler's.

        ``warm_start``: ``"auto"`` (the default) starts from the adaptation of this sampler's last accepted
        call (:attr:`last_state`) where there is one and the chains, mass matrix kind, engine, precision and
        non-centring are the same (and ``tune`` is longer than the window): a short, checked re-adaptation window
        (:data:`resilient.warm_start.WINDOW` iterations) instead of ``tune``, and a full warm-up when the check
        fails. ``False``: always the full warm-up. A result of an earlier run (its ``sampler_state`` group):
        start from that. The attempt log's ``settings["warm_start"]`` says what happened
        (see :mod:`resilient.warm_start`).
        """
        options = RunOptions(
            draws=draws, tune=tune, chains=chains, target_accept=target_accept, random_seed=random_seed,
            initvals=initvals, progressbar=progressbar, preflight=preflight, max_tree_depth=max_tree_depth,
            policy=policy, time_budget=time_budget, max_attempts=max_attempts, checkpoint=checkpoint, resume=resume,
            var_names=var_names, mass_matrix=mass_matrix, log_likelihood=log_likelihood, cores=cores,
            discard_tuned_samples=discard_tuned_samples)
        if isinstance(warm_start, str) and warm_start == "auto":  # the default: run's own
            return self.run(options)
        return self.run(options, warm_start=warm_start)

    def run(self, options: RunOptions, idata: IdataOptions | None = None, *,
            warm_start: Any = "auto") -> xarray.DataTree:
        """Preflight and the resilient NUTS loop under ``options`` (a checked
        :class:`~resilient.options.RunOptions`); an ArviZ DataTree, shaped as pm.sample's ``idata_kwargs``
        (``idata``, checked by :func:`resilient.arguments.idata_options`) asks. ``warm_start`` as in
        :meth:`sample`. The call goes one way: :meth:`plan`, then :meth:`execute`."""
        if options.resume is not None:  # continue a checkpoint's run (resilient/resumption.py)
            from resilient.resumption import resume_run

            self.refresh()
            _checked_warm_start(warm_start)
            keep = self._checked_var_names(options.var_names)
            self._checked_idata(idata or IdataOptions())
            return resume_run(self, options, keep)
        return self.execute(self.plan(options, idata, warm_start=warm_start))

    def plan(self, options: RunOptions, idata: IdataOptions | None = None, *, warm_start: Any = "auto") -> Plan:
        """What a run under ``options`` will do, resolved before anything samples (:class:`~resilient.plan.Plan`):
        the engine and why, the precision, the NUTS settings, the warm start, the checkpoint (created here: an
        earlier run in its folder is set aside), and how the result is shaped. ``plan.describe()`` says it in
        one line. Errors in the arguments are raised here, before any sampling."""
        from resilient.checkpoint import Checkpoint
        from resilient.engine import engines_adapting, mass_matrices

        if options.resume is not None:
            raise ResilientError("A resumed run continues the plan its checkpoint holds: call run() or "
                                 "resilient.resume(folder, model, ...).")
        warm_given = _checked_warm_start(warm_start)
        self.refresh()
        keep = self._checked_var_names(options.var_names)
        idata = idata or IdataOptions()
        pymc_model = self._checked_idata(idata)
        mass_matrix = options.mass_matrix
        choice = self.choose_engine(draws=options.draws, tune=options.tune, chains=options.chains,
                                    mass_matrix=mass_matrix, cores=options.cores)
        if mass_matrix not in mass_matrices(choice.engine):
            able = " or ".join(f"engine={e!r}" for e in engines_adapting(mass_matrix))
            raise ResilientError(f"mass_matrix={mass_matrix!r} is not adapted by {choice.engine!r} ({choice.reason}); "
                                 f"{able} adapts it (a PyMC or shared-API model).")
        settings = NUTSSettings(draws=options.draws, tune=options.tune, chains=options.chains,
                                target_accept=options.target_accept, random_seed=options.random_seed,
                                max_tree_depth=options.max_tree_depth, mass_matrix=mass_matrix, cores=options.cores)
        if options.initvals is not None:
            settings = replace(settings, initial_points=self._initial_points(options.initvals, options.chains))
        warm, warm_note = self._warm_start(warm_start, warm_given, options, choice.engine)
        if warm is not None:
            settings = replace(settings, warm_state=warm)
        model, precision_reason = self.model, None
        if self.float32_auto:
            from resilient.precision import choose_precision

            precision = choose_precision(self.model, choice.engine, self.cache, options.random_seed, self.float32_auto)
            model, precision_reason = precision.model, precision.reason
        store = None
        if options.checkpoint is not None:
            store = Checkpoint(options.checkpoint, fresh=True, meta={
                "model": self.model.name, "backend": choice.engine, "draws": options.draws, "tune": options.tune,
                "chains": options.chains, "target_accept": options.target_accept,
                "random_seed": options.random_seed})
        return Plan(model=model, engine=choice.engine, engine_reason=choice.reason, precision_reason=precision_reason,
                    settings=settings, policy=options.policy, preflight=options.preflight,
                    progressbar=options.progressbar, keep_warmup=not options.discard_tuned_samples,
                    checkpoint=store, warm=warm, warm_note=warm_note, keep=keep, idata=idata, pymc_model=pymc_model,
                    log_likelihood=options.log_likelihood,
                    convergence_checks=bool(options.compute_convergence_checks))

    def execute(self, plan: Plan) -> xarray.DataTree:
        """Run ``plan`` (from :meth:`plan`) through the loop and shape its result as the plan says."""
        from resilient.loop import run_loop

        if plan.checkpoint is not None and plan.checkpoint.attempt is not None:
            raise ResilientError(f"This plan's checkpoint {plan.checkpoint.root} already holds its run: make a new plan "
                                 "to sample again (its folder sets the earlier run aside), or resume that run with "
                                 "resilient.resume(folder, model, ...).")
        warm_asked = plan.warm is not None or plan.warm_note is not None
        try:
            data = run_loop(plan.model, plan.engine, plan.settings, plan.policy, preflight=plan.preflight,
                            checkpoint=plan.checkpoint, progressbar=plan.progressbar, compile_cache=self.cache,
                            engine_reason=plan.engine_reason, keep_warmup=plan.keep_warmup,
                            precision_reason=plan.precision_reason)
        except Exception as error:
            partial = getattr(error, "partial", None)
            if partial is not None and warm_asked:
                _record_warm_start(partial, plan.warm, plan.warm_note)
            raise
        if data is None:
            return data
        if warm_asked:
            _record_warm_start(data, plan.warm, plan.warm_note)
            if plan.checkpoint is not None:
                plan.checkpoint.write_record({}, {k: v for k, v in data.attrs.items() if k.startswith("resilient")})
        self._keep_state(data)
        return self._shaped(data, plan)

    def _shaped(self, data: xarray.DataTree, plan: Plan) -> xarray.DataTree:
        """The loop's result as the plan asks: the ``log_likelihood`` group, ``idata_kwargs``' groups, dims and
        coords, the variables kept, and pm.sample's convergence warnings."""
        wanted = plan.log_likelihood
        if capabilities(self.backend).log_likelihood_by_default if wanted is None else wanted:
            self._add_log_likelihood(data, limit=LOG_LIKELIHOOD_DEFAULT_LIMIT if wanted is None else None)
        keep = plan.keep
        if plan.idata.changes:
            keep = self._idata_groups(data, plan.idata, plan.pymc_model, keep)
        if keep is not None:
            data["posterior"] = data["posterior"].to_dataset()[keep]
        if plan.idata.changes:
            from resilient.idata import shape_result

            shape_result(data, plan.idata)
        if plan.convergence_checks:
            _warn_convergence(data)
        return data

    def _warm_start(self, warm_start: Any, given: Any, options: RunOptions, engine: str) -> tuple[Any, str | None]:
        """``(WarmStart or None, why not)`` for this run: the state ``warm_start`` names (``given``: a result's
        state, already read) when the run's settings allow one; ``why not`` is None where nothing was asked
        (``False``, or ``"auto"`` with no earlier accepted call)."""
        from resilient.warm_start import REESTIMATE_WINDOW, WINDOW, WarmStart, settings_mismatch

        if warm_start is False:
            return None, None
        if given is not None:
            state, source = given, "the sampler_state of the result given as warm_start"
        elif self.last_state is not None and options.tune > WINDOW:  # "auto" passes over a short run silently
            state, source = self.last_state, "the last accepted call of this compiled model"
        else:
            return None, None
        why = _another_model(state, self.compiled) if given is not None else None
        other_data = given is not None and why is None and _other_data(state, self.compiled)
        if why is not None:
            pass
        elif options.initvals is not None:
            why = "initvals were given: the chains start where asked and warm up in full"
        elif options.checkpoint is not None:
            why = "a checkpointed run warms up in full, so that a resume continues it as written"
        else:
            why = settings_mismatch(state, engine, options.chains, options.mass_matrix, options.tune,
                                    REESTIMATE_WINDOW if other_data else WINDOW)
        if why is not None:
            return None, f"not used ({source}): {why}"
        if other_data:  # sample_many's and sbc's next data set
            return WarmStart.of_other_data(state, source), None
        return WarmStart(state, source), None

    def _keep_state(self, data: Any) -> None:
        """Keep the sampler state of an accepted result for the next call's ``warm_start="auto"``."""
        if data is None or "sampler_state" not in data.children:
            return
        from resilient.record import read_run
        from resilient.sampler_state import SamplerState

        if (read_run(data) or {}).get("status") != "ok":
            return
        try:
            self.last_state = SamplerState.from_dataset(data["sampler_state"].to_dataset())
        except Exception:  # noqa: BLE001 - no state is better than a wrong one: the next call warms up in full
            self.last_state = None

    def _checked_idata(self, idata: IdataOptions) -> Any:
        """Refuse, before sampling, the ``idata_kwargs`` keys this model cannot honour; the ``pm.Model``
        behind it where there is one (``log_prior`` and ``include_transformed`` are computed with it)."""
        from resilient.resolve import is_pymc_model

        pymc_model = None
        if not (idata.log_prior or idata.include_transformed or idata.model is not None
                or idata.log_likelihood_names is not None):
            return None  # nothing to check: the model is compiled by preflight, which says why it cannot be
        if isinstance(self.model, NativeModel) and is_pymc_model(self.model.model):
            pymc_model = self.model.model
        elif isinstance(self.model, Model) and is_pymc_model(getattr(self.compiled, "model", None)):
            pymc_model = self.compiled.model
        if idata.model is not None and (pymc_model is None or idata.model is not pymc_model):
            raise ResilientError("idata_kwargs={'model': ...} must be the model being sampled (pm.sample's own "
                                 "`model`); another model's names and dims would label these draws. Leave it out.")
        asked = [key for key, value in (("log_prior", idata.log_prior), ("include_transformed",
                                                                        idata.include_transformed)) if value]
        if asked and pymc_model is None:
            raise ResilientError(f"idata_kwargs keys {asked} are pm.to_inference_data's, computed from a pm.Model; "
                                 f"this model runs on {self.backend!r} without one. Give a pm.Model (or backend="
                                 "'pymc' for a shared-API model), or leave them out.")
        if pymc_model is not None and isinstance(idata.log_prior, tuple):
            free_names = helper("pymc", "idata").free_names
            unknown = sorted(set(idata.log_prior) - set(free_names(pymc_model)))
            if unknown:
                raise ResilientError(f"idata_kwargs={{'log_prior': [...]}} names {unknown}, which are not free "
                                     f"variables of the model; it has {', '.join(free_names(pymc_model))}.")
        if idata.log_likelihood_names is not None:
            observed = sorted(name for name, site in self.compiled.sites.items() if site.kind == "observed")
            unknown = sorted(set(idata.log_likelihood_names) - set(observed))
            if unknown:
                raise ResilientError(f"idata_kwargs={{'log_likelihood': [...]}} names {unknown}, which are not "
                                     f"observed variables of the model; it has {', '.join(observed) or 'none'}.")
        return pymc_model

    def _idata_groups(self, data: Any, idata: IdataOptions, pymc_model: Any, keep: list[str] | None
                      ) -> list[str] | None:
        """The groups ``idata_kwargs`` adds from the model on the returned draws (``log_likelihood`` narrowed
        to the names asked, ``log_prior``, the transformed free variables); ``keep`` (var_names) grown by
        the transformed names of the variables it keeps."""
        if idata.log_likelihood_names is not None and "log_likelihood" in data.children:
            data["log_likelihood"] = data["log_likelihood"].to_dataset()[list(idata.log_likelihood_names)]
        if pymc_model is None:
            return keep
        pymc_idata = helper("pymc", "idata")
        if idata.log_prior:
            names = idata.log_prior if isinstance(idata.log_prior, tuple) else None
            data["log_prior"] = pymc_idata.log_prior(pymc_model, data, names)
        if idata.include_transformed:
            values = pymc_idata.transformed_values(pymc_model, data["posterior"].to_dataset())
            if values is not None:
                data["posterior"] = data["posterior"].to_dataset().merge(values)
                if keep is not None:
                    bases = pymc_idata.transformed_names(pymc_model)
                    keep = [*keep, *(name for name in values.data_vars if bases.get(name) in keep)]
        return keep

    def _add_log_likelihood(self, data: Any, limit: int | None = None) -> None:
        """Add the ``log_likelihood`` group (what ``az.loo`` / ``az.compare`` read) for the draws in ``data``,
        computed by the compiled model that made them, in the draws' precision, named as the backend's own
        converter names it (the observed variables' dims). With a ``limit`` (the default's, not asked for),
        a group of more numbers than that is skipped with a warning that says its size and how to ask for it.
        A failure here warns and leaves the draws as they are."""
        from arviz_base import dict_to_dataset

        posterior = data["posterior"].to_dataset()
        if not posterior.data_vars or posterior.sizes.get("draw", 0) == 0:
            return
        floats = [value.dtype for value in posterior.data_vars.values() if np.issubdtype(value.dtype, np.floating)]
        precision = max(floats, key=lambda dtype: dtype.itemsize) if floats else np.dtype(np.float64)
        if limit is not None and _too_big_for_default(data, posterior, precision, limit):
            return
        draws = {str(name): np.asarray(value.transpose("chain", "draw", ...).values)
                 for name, value in posterior.data_vars.items()}
        try:
            compiled = self._compiled_that_made(data)
            try:
                values = compiled.log_likelihood(draws)
            except KeyError:
                # a native PyMC variant samples sites of its own (theta_decentered) that the draws leave out; the
                # model as given scores the same observed variables at the user's variables the draws hold
                if compiled is self.compiled:
                    raise
                compiled = self.compiled
                values = compiled.log_likelihood(draws)
        except Exception as error:  # noqa: BLE001 - the draws are worth more than the group
            warn(f"Resilient: no log_likelihood group: computing it failed ({type(error).__name__}: {error}).")
            return
        if not values:
            return
        values = {name: np.asarray(value).astype(precision, copy=False)
                  if np.issubdtype(np.asarray(value).dtype, np.floating) else value for name, value in values.items()}
        layout = getattr(compiled, "datatree_layout", dict)()
        dims = {name: list(names) for name, names in (layout.get("dims") or {}).items() if name in values}
        data["log_likelihood"] = dict_to_dataset(values, coords=layout.get("coords") or None, dims=dims or None,
                                                 sample_dims=["chain", "draw"], skip_event_dims=True)

    def _compiled_that_made(self, data: Any) -> Any:
        """The compiled model of the attempt whose draws ``data`` holds (the run record's ``returned_attempt``;
        that attempt's record names its engine and model options: a remedy may have non-centred sites,
        switched to float64 or to another engine)."""
        from resilient.record import read_attempts, read_run

        run = read_run(data) or {}
        attempts = read_attempts(data)
        number = run.get("returned_attempt")  # absent from a record written before the field: the last attempt
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

    def choose_engine(self, *, draws: int = 1000, tune: int = 1000, chains: int = 4, mass_matrix: str = "diag",
                      cores: int | None = None) -> Any:
        """The engine for a run of this size (:class:`resilient.engine.EngineChoice`); a nutpie choice
        wraps the PyMC compiled model, compiled once for both."""
        from resilient.backend import ADAPTERS, CAPABILITIES
        from resilient.engine import EngineChoice, choose_engine, engine_for_language, installed

        compiled = None
        try:
            weighed = capabilities(self.backend).weighed_against_nutpie
            wrapping = wraps_language(engine_for_language(self.engine, self.backend))
            others = [name for name, c in CAPABILITIES.items() if c.language == self.backend and name != self.backend
                      and (c.one_off_compile or c.auto_cold)]
            if wrapping or (weighed and self.engine == "auto" and any(installed(ADAPTERS[n][2]) for n in others)):
                compiled = self.compiled
        except Exception:  # noqa: BLE001 - preflight compiles it again and reports why, by site
            if self.engine == "auto":
                return EngineChoice(self.backend, "pymc", "auto: PyMC's NUTS (the model did not compile; "
                                                          "preflight says why)")
            return choose_engine(self.engine, self.backend, native=isinstance(self.model, NativeModel))
        kept = {name for name, model in self.cache if wraps_language(name) and model is self.model}
        decide = dict(native=isinstance(self.model, NativeModel),
                      compiled_pymc=compiled if weighed else None, draws=draws, tune=tune, chains=chains,
                      cores=cores, mass_matrix=mass_matrix,
                      rival_compiled=any(capabilities(name).one_off_compile for name in kept),
                      cold_compiled=any(capabilities(name).auto_cold for name in kept))
        choice = choose_engine(self.engine, self.backend, **decide)
        wrapped, failed = self._wrapped(choice.engine, compiled, check=self.engine == "auto")
        if failed is not None and self.engine == "auto":  # auto's cold-start engine cannot run this model as well
            choice = choose_engine(self.engine, self.backend, **decide, cold=False)
            choice = replace(choice, reason=f"{choice.reason}; {capabilities(failed[0]).title} was not taken: "
                                            f"{failed[1]}")
            wrapped, _ = self._wrapped(choice.engine, compiled)
        if wrapped is not None and wrapped.unusual:
            choice = replace(choice, reason=f"{choice.reason}: {wrapped.describe}")
        return choice

    def _wrapped(self, engine: str, compiled: Any, check: bool = False) -> tuple[Any, tuple[str, str] | None]:
        """The kept compilation of this model for ``engine`` where ``engine`` samples the language's compiled model
        (made and prepared here: a wrapper's ``prepare`` compiles what it needs now, so a model it cannot compile
        is known before the engine is settled; with ``check``, auto's, its ``check_start`` too), and
        ``(engine, why)`` where that failed."""
        if not wraps_language(engine):
            return None, None
        if compiled is None:
            return self.cache.get((engine, self.model)), None
        if (engine, self.model) not in self.cache:
            wrapped = get_adapter(engine).wrap(compiled, compile_backend=self.model.compile_backend,
                                               gradient_backend=self.model.gradient_backend)
            try:
                getattr(wrapped, "prepare", lambda: None)()
                if check:
                    getattr(wrapped, "check_start", lambda: None)()
            except Exception as error:  # noqa: BLE001 - an engine that cannot compile the model is not taken
                return None, (engine, f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}")
            self.cache[(engine, self.model)] = wrapped
        return self.cache[(engine, self.model)], None

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


def _checked_warm_start(warm_start: Any) -> Any:
    """The saved state a ``warm_start`` result holds (None for ``"auto"``, True and False); an error quoting any
    other value."""
    if isinstance(warm_start, bool) or (isinstance(warm_start, str) and warm_start == "auto"):
        return None
    if isinstance(warm_start, str) or not hasattr(warm_start, "children"):
        raise ResilientError(f"`warm_start` must be 'auto', False or a result of resilient.sample (its sampler_state "
                             f"group is taken), got {warm_start!r}.")
    from resilient.warm_start import from_result

    return from_result(warm_start)


def _another_model(state: Any, compiled: Any) -> str | None:
    """Why a given result's state is of another model than ``compiled`` (its name, latents or sites), or None:
    said before any setting that differs, as the reason that matters."""
    from resilient.sampler_state import cached_fingerprint, fingerprint_differences

    saved, current = dict(state.fingerprint), cached_fingerprint(compiled)
    renamed = {f"{name}_raw": name for name in saved.get("noncentered") or ()}
    if renamed:  # a non-centred variant's state: its `x_raw` latents are the model's `x`, its sites another kind
        saved["latents"] = {renamed.get(n, n): size for n, size in dict(saved.get("latents") or {}).items()}
    keys = ("model", "latents") if renamed else ("model", "latents", "sites")
    differences = fingerprint_differences({k: saved.get(k) for k in keys}, {k: current.get(k) for k in keys},
                                          saved_label="the saved state's")
    return "the saved state is of another model: " + "; ".join(differences) if differences else None


def _other_data(state: Any, compiled: Any) -> bool:
    """Whether a given result's state may be of other data than ``compiled``'s: the digests of the observed
    sites, ``pm.Data`` and data arguments differ, or the state has none (a result written before they were kept)."""
    from resilient.sampler_state import cached_fingerprint

    saved = dict(state.fingerprint).get("data")
    return not saved or saved != cached_fingerprint(compiled).get("data")


def _record_warm_start(data: Any, warm: Any, note: str | None) -> None:
    """Put what the warm start did into ``data``'s attempt log (each attempt's ``settings["warm_start"]``, and
    its message where the check failed) and into the run record (``warm_start``: one sentence)."""
    from resilient import record
    from resilient.warm_start import describe

    attempts = [dict(a) for a in record.read_attempts(data)]
    if not attempts:
        return
    entries = {entry.get("random_seed"): entry for entry in (warm.log if warm is not None else ())}
    summary = note
    for attempt in attempts:
        settings = dict(attempt.get("settings") or {})
        entry = entries.get(settings.get("random_seed"))
        if entry is None and note is not None and attempt.get("attempt") == 1:
            entry = {"used": False, "why": note}
        if entry is None:
            continue
        entry = {k: v for k, v in entry.items() if k != "random_seed"}
        settings["warm_start"] = entry
        attempt["settings"] = settings
        text = describe(entry)
        attempt["message"] = f"{attempt['message']}; {text}" if attempt.get("message") else text
        if attempt.get("attempt") == 1 or summary is None:
            summary = text
    run = record.read_run(data)
    if run is not None and summary is not None:
        run = {**run, "warm_start": summary}
    record.attach(data, attempts=attempts, run=run)


#: numbers (chains x draws x observed values) up to which the default ``log_likelihood=None`` adds the
#: group on NumPyro models: 10 million, 80 MB in float64 (40 MB in float32), e.g. 4 chains x 1,000 draws
#: x 2,500 observations. Past it the pointwise group outgrows the draws themselves by orders of magnitude
#: (100,000 rows at pm.sample's 4 x 1,000 draws: 3.2 GB), so it is computed only when asked for.
LOG_LIKELIHOOD_DEFAULT_LIMIT = 10_000_000


def _too_big_for_default(data: Any, posterior: Any, precision: np.dtype, limit: int) -> bool:
    """Whether the default log_likelihood group for ``data`` would hold more than ``limit`` numbers; if so,
    warn once with its size and how to ask for it."""
    observed = data["observed_data"].to_dataset() if "observed_data" in data.children else None
    count = sum(int(value.size) for value in observed.data_vars.values()) if observed is not None else 0
    chains, draws = int(posterior.sizes.get("chain", 1)), int(posterior.sizes.get("draw", 0))
    numbers_ = chains * draws * count
    if numbers_ <= limit:
        return False
    warn(f"Resilient: no log_likelihood group by default: it would hold {numbers_:,} numbers ({chains} chains x "
         f"{draws:,} draws x {count:,} observed values; {numbers_ * precision.itemsize / 1e6:,.0f} MB in "
         f"{precision.name}), more than the default's limit of {limit:,}. Ask for it with log_likelihood=True "
         "(or idata_kwargs={'log_likelihood': True}).")
    return True


def compile(model: Any = None, *args: Any, backend: str | None = None, engine: str = "auto", fix: bool = True,
            float32: bool | str | None = None, model_kwargs: Mapping[str, Any] | None = None,
            **kwargs: Any) -> CompiledSampler:
    """Compile ``model`` once; sample it many times with ``.sample(...)``.

    What a compiled model holds fixed (its data; the globals, closure and defaults a model function reads; a
    ``pm.Model``'s data containers and shared variables) is checked before each run: where it changed since
    (``pm.set_data``, a global set again, an array changed in place) the sampler compiles afresh and starts
    without the last call's adaptation (:meth:`CompiledSampler.refresh`), as ``pm.sample`` would.

    Parameters
    ----------
    model, *args, backend, engine, fix, float32, model_kwargs
        As for :func:`sample`.
    **kwargs
        Data for a parameter the model function names in its signature, and pm.sample's
        ``compile_kwargs``. Run options (draws, chains, ...) go to :meth:`CompiledSampler.sample`.

    Returns
    -------
    CompiledSampler

    Raises
    ------
    ResilientError
        An argument that is neither data the model names nor a compile option.
    """
    pm_kwargs, data = split_keywords(model, kwargs, tuple(compile.__kwdefaults__))
    run = sorted(set(pm_kwargs) - {"compile_kwargs"})
    if run:
        raise ResilientError(f"{', '.join(f'`{n}`' for n in run)}: run arguments go to .sample(...) of what "
                             "resilient.compile returns, not to compile.")
    auto = _float32_auto(float32)
    resolved, backend, engine = _resolve(model, args, {**_checked_model_kwargs(model_kwargs), **data}, backend,
                                         engine, None, pm_kwargs, fix=fix, float32=False if auto else float32)
    resolved, auto = default_form(resolved, auto)
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


def sample(model: Any = None, *args: Any, draws: int = 1000, tune: int | None = 1000, chains: int | None = 4,
           target_accept: float | None = None, random_seed: Any = None,
           initvals: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, progressbar: bool = True,
           backend: str | None = None, engine: str = "auto", preflight: bool = True, fix: bool = True,
           float32: bool | str | None = None, max_tree_depth: int | None = None, mass_matrix: str | None = None,
           cores: int | None = None, policy: Policy | None = None, time_budget: float | None = None,
           max_attempts: int | None = None, checkpoint: str | None = None, resume: str | None = None,
           log_likelihood: bool | None = None, var_names: Sequence[str] | None = None,
           discard_tuned_samples: bool = True, model_kwargs: Mapping[str, Any] | None = None,
           **kwargs: Any) -> xarray.DataTree:
    """Run preflight and the resilient NUTS loop on ``model``; return an ArviZ DataTree.

    A drop-in for ``pm.sample`` and NumPyro's ``MCMC(NUTS(model)).run(...)``: the same model, the
    same names, the same kind of result, plus a preflight of the log density and a loop that retries
    with remedies under caps on attempts and time.

    Parameters
    ----------
    model : callable, pm.Model, CompiledSampler or None
        A shared-API model function (sites declared with :func:`resilient.model.sample`), a NumPyro
        model function, a PyMC model (or a function that builds and returns one), or what
        :func:`compile` returned. None: the model of the enclosing ``with pm.Model():`` block.
    *args
        Positional data for a model function, as the function takes them.
    draws, tune, chains : int
        Draws per chain after warm-up, warm-up iterations per chain, number of chains (as in
        ``pm.sample``; ``tune=None`` is 1000, ``chains=None`` is 4).
    target_accept : float, default 0.8
        NUTS target acceptance rate in (0, 1); the loop may raise it as a remedy. pm.sample's
        ``nuts={"target_accept": ...}`` is the same option (give one of the two).
    random_seed : int, numpy Generator, RandomState, SeedSequence, list of int or None
        The run's seed (a list has one int per chain, as pm.sample takes it).
    initvals : dict or list of dict, optional
        Starting values by variable name (constrained), one dict for every chain or one per chain.
    progressbar : bool
        A progress bar over all chains' draws (off in CI and without a terminal).
    backend : {"numpyro", "pymc"} or None
        The language a shared-API model is compiled in (a native model's own language is used; None:
        NumPyro, or what ``engine`` implies). pm.sample's compute backends ``"numba"``, ``"jax"`` and
        ``"c"`` are accepted too and choose the engine that runs them.
    engine : {"auto", "numpyro", "pymc", "nutpie"}
        What runs NUTS. ``"auto"`` picks the engine expected to finish first and records why
        (:func:`resilient.engine.choose_engine`). pm.sample's ``nuts_sampler`` is the same option.
    preflight : bool
        Evaluate the log density and gradient before sampling; a blocking problem raises
        :class:`~resilient.errors.PreflightError` naming the variable, the cause and the fix.
    fix : bool
        Apply preflight's rewrites that keep the target density (infinite truncation bounds dropped,
        non-centring ...); False only reports them.
    float32 : bool, "auto" or None, default None
        None: the backend's habit: a native NumPyro function runs in the precision raw NumPyro gives it
        (float32 unless jax's x64 is on; float64 where a float32 check fails), other models in float64.
        False: float64. True: float32 where the engine applies it (NumPyro). ``"auto"``: float32 on
        NumPyro when the data are large and a float32 check is clean, else float64. The choice and its
        reason are in the run record (:mod:`resilient.precision`).
    max_tree_depth : int, default 10
        NUTS maximum tree depth. pm.sample's ``max_treedepth`` and ``nuts={"max_treedepth": ...}`` are
        the same option (give one of them).
    mass_matrix : {"diag", "full", "diag_grad", "low_rank"}, default "diag"
        Mass matrix adaptation: "diag" everywhere, "full" on PyMC's NUTS and NumPyro, "diag_grad" on PyMC's NUTS, "low_rank" on
        nutpie. pm.sample's ``init`` (e.g. ``"adapt_full"``) is the same option (give one of the two).
    cores : int, optional
        Chains run at most ``cores`` at a time (PyMC's NUTS and nutpie).
    policy : Policy, optional
        The loop's caps, thresholds and remedies (:class:`~resilient.policy.Policy`).
    time_budget : float, optional
        Seconds for the whole call; overrides ``policy.time_budget``. The loop stops at it and
        returns the best finished draws.
    max_attempts : int, optional
        The cap on attempts; overrides ``policy.max_attempts``.
    checkpoint : str, optional
        A folder where draws are written as they finish (read it with :func:`resilient.read_checkpoint`).
    resume : str, optional
        Continue a NumPyro run from such a folder (warm-up is skipped).
    log_likelihood : bool, optional
        Add the pointwise ``log_likelihood`` group ``az.loo`` and ``az.compare`` read, in the draws'
        precision. None: the backend's habit: PyMC models no (as pm.sample); NumPyro models yes while
        chains x draws x observed values is at most :data:`LOG_LIKELIHOOD_DEFAULT_LIMIT` (10 million
        numbers, 80 MB in float64), else no, with a warning that gives its size. True: always.
        pm.sample's ``idata_kwargs={"log_likelihood": ...}`` is the same option.
    var_names : list of str, optional
        Keep only these variables in the posterior group.
    discard_tuned_samples : bool
        False keeps the warm-up draws in ``warmup_posterior``, as pm.sample does.
    model_kwargs : dict, optional
        Data for a model function by name; needed for data whose name collides with an option
        (``model_kwargs={"draws": ...}``) or for a model that takes ``**kwargs``.
    **kwargs
        pm.sample's other arguments (``nuts``, ``max_treedepth``, ``init``, ``nuts_sampler``,
        ``idata_kwargs``, ``compile_kwargs``, ``compute_convergence_checks``, ...; each is honoured,
        ignored or refused as :data:`resilient.arguments.PM_SAMPLE_ARGUMENTS` says), and data for a
        parameter the model function names in its signature.

    Returns
    -------
    xarray.DataTree
        ArviZ's groups (``posterior``, ``sample_stats``, ``observed_data``, ``log_likelihood`` ...);
        the preflight report, the attempt log and the run record are in its attributes
        (:mod:`resilient.record`).

    Raises
    ------
    ResilientError
        An argument that is neither an option, a pm.sample argument nor a parameter of the model
        function (with the closest option named), a bad value, or two spellings of one option that
        disagree.
    PreflightError
        Preflight found a problem it could not fix.
    SamplingFailed
        The loop ran out of attempts or time with nothing usable; it carries the attempt log and the
        draws that were finished.

    Notes
    -----
    Sites inside a model are declared with :func:`resilient.model.sample`; calling this function with
    a site name inside a model still works but is deprecated.
    """
    given = dict(locals())
    from resilient.context import inside_model
    from resilient.resolve import is_bambi_model

    if isinstance(model, str) and inside_model():
        return _declare_site_deprecated(model, *args, **kwargs)

    if isinstance(model, numbers.Integral) and not isinstance(model, bool):  # pm.sample(500) in a with-block
        draws, model = int(model), None
    if is_bambi_model(model):
        return _sample_bambi(**given)
    pm_kwargs, data_kwargs = split_keywords(model, kwargs, tuple(sample.__kwdefaults__))
    data_kwargs = {**_checked_model_kwargs(model_kwargs), **data_kwargs}
    log_likelihood, idata = idata_options(pm_kwargs, log_likelihood)
    refuse_unsupported(pm_kwargs)
    given = {"target_accept": target_accept, "max_tree_depth": max_tree_depth, "mass_matrix": mass_matrix}
    for option, (value, spelling) in pm_sample_spellings(pm_kwargs).items():
        if given[option] is not None:
            raise ResilientError(f"`{option}` and pm.sample's {spelling} are one option, given twice "
                                 f"({given[option]!r} and {value!r}); give one of them.")
        given[option] = value
    spelled = {option: value for option, value in given.items() if value is not None}  # else RunOptions' default
    options = RunOptions(draws=draws, tune=tune, chains=chains, random_seed=random_seed, cores=cores, initvals=initvals,
                         progressbar=progressbar, preflight=preflight, policy=policy, time_budget=time_budget,
                         max_attempts=max_attempts, checkpoint=checkpoint, resume=resume,
                         log_likelihood=log_likelihood, discard_tuned_samples=discard_tuned_samples,
                         var_names=var_names, compute_convergence_checks=pm_kwargs.get("compute_convergence_checks"),
                         **spelled)
    if isinstance(model, CompiledSampler):
        from resilient.engine import resolve_engine

        engine, backend = resolve_engine(engine, pm_kwargs.get("nuts_sampler"), backend)
        if args or data_kwargs or backend not in (None, model.backend) or engine not in ("auto", model.engine):
            raise ResilientError(
                "A compiled model carries its data and backend: pass only run arguments (draws, chains, ...) "
                "to resilient.sample(compiled, ...), or compile again with other data.")
        sampler, warm = model, "auto"
    else:
        from resilient.caches import kept_sampler

        auto = _float32_auto(float32)
        resolved, backend, engine = _resolve(model, args, data_kwargs, backend, engine, pm_kwargs.get("nuts_sampler"),
                                             pm_kwargs, fix=fix, float32=False if auto else float32)
        resolved, auto = default_form(resolved, auto)
        # the same model object with equal data again in this process: what the first call compiled is reused;
        # not its adaptation (warm_start=False), so the same seed gives the same draws as the first call
        sampler = kept_sampler(resolved, lambda: CompiledSampler(resolved, backend, engine=engine, float32_auto=auto),
                               backend, engine, auto)
        warm = False
    extra = {} if warm == "auto" else {"warm_start": warm}
    return sampler.run(options, idata, **extra) if idata.changes else sampler.run(options, **extra)


def _sample_bambi(model: Any, args: tuple, kwargs: dict[str, Any], engine: str, var_names: Any,
                  **options: Any) -> Any:
    """``resilient.sample(bmb_model, ...)``: ``bmb.Model.fit``'s arguments resolved
    (:func:`resilient.adapters.pymc.bambi.plan_fit`), the PyMC model Bambi builds run as any pm.Model is, and
    the result shaped as ``fit`` shapes it."""
    plan_fit = helper("pymc", "bambi").plan_fit
    if args or options.pop("model_kwargs", None):
        raise ResilientError("A Bambi model carries its data (the data frame given to bmb.Model): pass only fit's "
                             "and pm.sample's arguments.")
    fit = plan_fit(model, dict(kwargs), engine=engine, var_names=var_names, options=tuple(sample.__kwdefaults__))
    data = sample(fit.pymc_model, engine=fit.engine, var_names=fit.var_names, **options, **fit.kwargs)
    return fit.finish(data)


def _warn_convergence(data: Any) -> None:
    """pm.sample's ``compute_convergence_checks=True``: one warning naming each check past its warning
    threshold and what to do (nothing when every check passes)."""
    from resilient.diagnostics import diagnose

    failed = diagnose(data).failed()
    if failed:
        lines = "; ".join(f"{c.name} ({c.verdict}): {c.explanation}" + (f" {c.action}" if c.action else "")
                          for c in failed)
        warn(f"Resilient: convergence checks: {lines}")


def _float32_auto(float32: Any) -> bool | str:
    """``float32="auto"``: True (the loop chooses; see :mod:`resilient.precision`); None (the default): "raw",
    the backend's habit, which :func:`resilient.precision.default_form` settles once the model is resolved;
    a bool: False."""
    if float32 is None:
        from resilient.precision import RAW

        return RAW
    if isinstance(float32, str):
        if float32 != "auto":
            raise ResilientError(f"`float32` must be True, False or 'auto', got {float32!r}.")
        return True
    return False


def _checked_model_kwargs(model_kwargs: Any) -> dict[str, Any]:
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping):
        raise ResilientError(f"`model_kwargs` must be a dict of the model function's data by name, got "
                             f"{type(model_kwargs).__name__}.")
    return dict(model_kwargs)


def _declare_site_deprecated(name: str, *args: Any, **kwargs: Any) -> Any:
    from resilient import model as model_api

    warn(f"resilient.sample({name!r}, ...) inside a model is deprecated: declare sites with "
         "resilient.model.sample (`from resilient.model import sample`), as numpyro.sample declares them; "
         "resilient.sample runs a model.", DeprecationWarning)
    return model_api.sample(name, *args, **kwargs)


def resume(path: str, model: Any, *args: Any, draws: int | None = None, **kwargs: Any) -> Any:
    """Continue the run saved in the checkpoint folder ``path`` (NumPyro, PyMC's NUTS or nutpie) until each
    chain has ``draws`` draws (None: the run's own ``draws``; more extends a finished run). The model and its
    data must be the run's; the run's settings (chains, tune, target_accept, seed, tree depth, mass matrix)
    are taken from the checkpoint, and one given otherwise is refused. See :mod:`resilient.resumption`."""
    from resilient.resumption import checkpoint_settings

    recorded = checkpoint_settings(path)
    taken = {name: value for name, value in recorded.items() if name != "draws" and name not in kwargs}
    return sample(model, *args, draws=recorded.get("draws", 1000) if draws is None else draws, resume=path,
                  preflight=False, **taken, **kwargs)
