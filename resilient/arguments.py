"""What ``resilient.sample`` does with each argument of ``pm.sample``: the drop-in contract.

:data:`PM_SAMPLE_ARGUMENTS` gives every argument a fate (``honoured``, ``ignored`` with the reason
nothing is lost, or ``refused`` with the reason) and the words the README's table shows; a test
walks it against ``inspect.signature(pm.sample)`` so a new PyMC argument cannot go unstated.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any, Iterable, Literal, Mapping

import numpy as np

from resilient.errors import ResilientError

__all__ = ["PM_SAMPLE_ARGUMENTS", "IDATA_KWARGS", "IdataOptions", "Fate", "normalise_seed", "pm_sample_spellings",
           "split_keywords", "idata_options", "refuse_unsupported", "markdown_table"]

Fate = Literal["honoured", "ignored", "refused"]

#: argument -> (fate, what happens). Arguments of resilient.sample itself are "honoured".
PM_SAMPLE_ARGUMENTS: dict[str, tuple[Fate, str]] = {
    "draws": ("honoured", "draws per chain, after warm-up"),
    "tune": ("honoured", "warm-up iterations per chain (None: 1000)"),
    "chains": ("honoured", "number of chains (None: 4)"),
    "cores": ("honoured", "chains run at most `cores` at a time: PyMC's NUTS in worker processes (default: pm.sample's own, min(4, half the logical CPUs), so one at a time in the calling process on a 2-CPU machine, as `pm.sample` does; every chain at once when a time budget is set, so a deadline can stop them all), nutpie in threads (default: os.cpu_count()); NumPyro uses the devices it has"),
    "random_seed": ("honoured", "an int, a numpy Generator, RandomState or SeedSequence, or one seed per chain (the "
                                "list is hashed into the run's seed: reproducible, not chain-by-chain identical to "
                                "pm.sample)"),
    "progressbar": ("honoured", "a progress bar over all chains' draws (off in CI and without a terminal)"),
    "progressbar_theme": ("ignored", "the bar is rich's; only its on/off switch is honoured"),
    "quiet": ("ignored", "Resilient says what it did through warnings and the attempt log"),
    "step": ("refused", "Resilient runs NUTS on every continuous variable; call pm.sample for other step methods"),
    "var_names": ("honoured", "only these variables are kept in the posterior group (diagnostics during the run see "
                              "them all)"),
    "nuts_sampler": ("honoured", "the engine: 'pymc', 'nutpie' (a pm.Model, a shared-API model, or a NumPyro function through nutpie's function interface) or 'numpyro' "
                                 "(shared-API models); same as `engine=`, whose default 'auto' picks one per model "
                                 "and says why; 'blackjax' is refused"),
    "initvals": ("honoured", "one dict or one per chain, constrained values by variable name"),
    "init": ("honoured", "its mass matrix part: 'auto', 'adapt_diag', 'jitter+adapt_diag' (diagonal, every engine), "
                         "'adapt_full', 'jitter+adapt_full' (dense) and 'jitter+adapt_diag_grad' (PyMC's NUTS; same as "
                         "mass_matrix='full' / 'diag_grad'); the loop picks the starting points itself (PyMC's jittered "
                         "start, then uniform(-2, 2), then prior draws); 'advi', 'advi+adapt_diag', 'advi_map' and "
                         "'map' are refused: Resilient runs no ADVI or MAP before NUTS"),
    "jitter_max_retries": ("ignored", "the loop retries initial points itself (Policy.init_retries)"),
    "n_init": ("ignored", "used by ADVI initialisation, which Resilient does not run"),
    "trace": ("refused", "draws go to the returned DataTree and, with checkpoint=, to netCDF chunks"),
    "discard_tuned_samples": ("honoured", "False keeps the warm-up draws in warmup_posterior, as pm.sample does (their "
                                          "sample stats are always kept, in warmup_sample_stats)"),
    "compute_convergence_checks": ("honoured", "True (given) warns after the run, as pm.sample warns, with each check "
                                               "past its warning threshold (R-hat > 1.01, ESS < 100 per chain, "
                                               "divergences, E-BFMI, tree depth) and what to do; not given or False: "
                                               "the verdict is in the report and resilient.diagnose only. The loop "
                                               "computes the checks either way: its decisions need them"),
    "keep_warning_stat": ("ignored", "sample stats are plain arrays"),
    "return_inferencedata": ("honoured", "True (the default) returns an ArviZ DataTree; False is refused: there is "
                                         "no MultiTrace"),
    "idata_kwargs": ("honoured", "each key of pm.to_inference_data as pm.sample passes it on (dims, coords, "
                                 "log_likelihood, log_prior, include_transformed, save_warmup, prior, "
                                 "posterior_predictive); see the table of its keys below; an unknown key is refused "
                                 "by name"),
    "nuts_sampler_kwargs": ("refused", "engine options other than target_accept and max_treedepth are not passed on"),
    "callback": ("refused", "draws are handed over per chunk, not per draw; use checkpoint= to see them as they "
                            "finish"),
    "mp_ctx": ("ignored", "PyMC workers are started by Resilient's own context (so they die with a killed parent)"),
    "blas_cores": ("ignored", "BLAS threads are left as the environment sets them"),
    "model": ("honoured", "a pm.Model, or the one in the `with` context"),
    "backend": ("honoured", "pm.sample's compute backend: 'numba' or 'jax' runs nutpie with that backend (JAX: nutpie "
                            "calls the jitted function through Python for each gradient), 'c' runs PyMC's NUTS; "
                            "resilient.sample's own values 'pymc' and 'numpyro' name the model's language"),
    "compile_kwargs": ("honoured", "`mode` ('NUMBA', 'JAX', 'C' or 'FAST_RUN', as `backend`) and `gradient_backend` "
                                   "('pytensor' or 'jax', nutpie's JAX backend); other keys are refused with their "
                                   "names"),
    "target_accept": ("honoured", "NUTS target acceptance (also inside nuts={...}); the loop may raise it"),
    "max_treedepth": ("honoured", "NUTS maximum tree depth (also inside nuts={...})"),
    "nuts": ("honoured", "a dict with target_accept and/or max_treedepth; other keys are refused with their names"),
}

#: the ``nuts={...}`` keys Resilient passes on, and the resilient.sample argument each becomes.
_NUTS_KEYS = {"target_accept": "target_accept", "max_treedepth": "max_tree_depth"}


def refuse_unsupported(kwargs: Mapping[str, Any]) -> None:
    """Raise for any refused pm.sample argument that was given, with the reason."""
    for name, value in kwargs.items():
        fate, reason = PM_SAMPLE_ARGUMENTS.get(name, ("", ""))
        if fate == "refused" and value is not None:
            raise ResilientError(f"pm.sample's `{name}` is not supported by resilient.sample: {reason}.")
    if kwargs.get("return_inferencedata") is False:
        raise ResilientError("`return_inferencedata=False` is not supported: resilient.sample returns an ArviZ "
                             "DataTree (there is no MultiTrace). Drop the argument.")


def _pop_dict(kwargs: dict[str, Any], name: str, what: str, known: Iterable[str]) -> Mapping[str, Any]:
    """Pop the dict argument ``name`` (pm.sample's ``nuts``, ``idata_kwargs``); a key not in ``known`` is
    refused by name."""
    options = kwargs.pop(name, None) or {}
    if not isinstance(options, Mapping):
        raise ResilientError(f"`{name}` must be {what}, got {type(options).__name__}.")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ResilientError(f"{name}={{...}} keys {unknown} are not passed on by resilient.sample; it takes "
                             f"{', '.join(known)}.")
    return options


def pm_sample_spellings(kwargs: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Pop pm.sample's spellings of Resilient's options from pm.sample-style kwargs (``nuts={...}``,
    ``max_treedepth``, ``init``): option -> ``(value, the spelling used)``. One option given in two of
    them is an error."""
    found: dict[str, tuple[Any, str]] = {}
    nuts = _pop_dict(kwargs, "nuts", "a dict of NUTS options", sorted(_NUTS_KEYS))
    for key, value in nuts.items():
        found[_NUTS_KEYS[key]] = (value, f"nuts={{{key!r}: ...}}")
    if "max_treedepth" in kwargs:
        value = kwargs.pop("max_treedepth")
        if "max_tree_depth" in found:
            raise ResilientError("`max_treedepth` and nuts={'max_treedepth': ...} are one option, given twice; "
                                 "give one of them.")
        found["max_tree_depth"] = (value, "max_treedepth")
    if kwargs.get("init") is not None:
        init = kwargs["init"]
        found["mass_matrix"] = (init_option(kwargs), f"init={init!r}")
    kwargs.pop("init", None)
    return found


def split_keywords(model: Any, kwargs: Mapping[str, Any], options: Iterable[str]) -> tuple[dict, dict]:
    """``(pm_kwargs, data)``: resilient.sample's ``**kwargs`` apart. A keyword is data when the model
    function names it explicitly in its signature (a ``**kwargs`` there does not make every name data),
    else a pm.sample argument when pm.sample has it; anything else is an error that names it and the
    closest of ``options``, pm.sample's arguments and the model's parameters."""
    import difflib
    import inspect

    takes: list[str] = []
    variadic = False
    function = callable(model) and not isinstance(model, type) and not _is_model_object(model)
    if function:
        try:
            parameters = inspect.signature(model).parameters.values()
        except (TypeError, ValueError):
            parameters = []
        takes = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        variadic = any(p.kind is p.VAR_KEYWORD for p in parameters)
    pm_kwargs, data = {}, {}
    for name, value in kwargs.items():
        if name in takes:
            data[name] = value
        elif name in PM_SAMPLE_ARGUMENTS:
            pm_kwargs[name] = value
        else:
            known = [*options, *PM_SAMPLE_ARGUMENTS, *takes]
            close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else "."
            if function:
                label = getattr(model, "__name__", "the model function")
                where = (f" It is not an option of resilient.sample, an argument of pm.sample or a parameter "
                         f"{label}() names" + (" (its **kwargs do not make every name data)" if variadic else "")
                         + ". Data whose name collides with an option, or for a model's **kwargs, goes in "
                         "model_kwargs={...}.")
            elif _is_pymc(model) or (model is None and _pymc_context() is not None):
                where = (" It is not an option of resilient.sample or an argument of pm.sample, and a PyMC model "
                         "carries its own data (pm.Data, or build the model with the data).")
            else:
                where = " It is not an option of resilient.sample or an argument of pm.sample."
            raise ResilientError(f"unknown argument `{name}`{hint}{where}")
    return pm_kwargs, data


def _pymc_context() -> Any:
    from resilient.resolve import _pymc_context_model

    return _pymc_context_model()


def _is_pymc(model: Any) -> bool:
    return any(c.__module__.startswith("pymc") and c.__name__ in ("Model", "BaseModel") for c in type(model).__mro__)


def _is_model_object(model: Any) -> bool:
    """A pm.Model, a compiled sampler or a resolved model: callables whose parameters are not data."""
    from resilient.model import Model, NativeModel

    names = {c.__name__ for c in type(model).__mro__}
    return _is_pymc(model) or isinstance(model, (Model, NativeModel)) or "CompiledSampler" in names


def init_option(kwargs: dict[str, Any]) -> str | None:
    """Pop pm.sample's ``init`` from pm.sample-style kwargs: the mass matrix adaptation it asks for."""
    from resilient.engine import INIT_MASS_MATRIX

    init = kwargs.pop("init", None)
    if init is None:
        return None
    if init not in INIT_MASS_MATRIX:
        refused = ("advi", "advi+adapt_diag", "advi_map", "map", "jitter+map")
        if init in refused:
            raise ResilientError(f"init={init!r} is not supported: Resilient runs no ADVI or MAP before NUTS; the loop "
                                 "picks starting points itself and retries them (Policy.init_retries). Use "
                                 "'jitter+adapt_diag' (the default) or 'adapt_full'.")
        raise ResilientError(f"`init` must be one of {', '.join(repr(k) for k in INIT_MASS_MATRIX)}, got {init!r}.")
    return INIT_MASS_MATRIX[init]


#: pm.sample's compute backends (its ``backend=``, ``compile_kwargs["mode"]``) and their names here.
_COMPILE_MODES = {"numba": "numba", "jax": "jax", "c": "c", "fast_run": "c", "cvm": "c"}


def compile_options(backend: str | None, kwargs: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(backend, compile_backend, gradient_backend)``: resilient.sample's ``backend`` (the model's language)
    apart from pm.sample's (a compute backend: ``"numba"``, ``"jax"``, ``"c"``), with ``compile_kwargs={...}``
    popped from pm.sample-style kwargs."""
    compile_backend = None
    if isinstance(backend, str) and backend.lower() in _COMPILE_MODES:
        compile_backend, backend = _COMPILE_MODES[backend.lower()], None
    options = _pop_dict(kwargs, "compile_kwargs", "a dict", ("mode", "gradient_backend"))
    mode = options.get("mode")
    if mode is not None:
        if not isinstance(mode, str) or mode.lower() not in _COMPILE_MODES:
            raise ResilientError(f"compile_kwargs={{'mode': {mode!r}}}: Resilient takes the mode by name, one of "
                                 "'NUMBA', 'JAX', 'C' or 'FAST_RUN'.")
        if compile_backend is not None and _COMPILE_MODES[mode.lower()] != compile_backend:
            raise ResilientError(f"backend={compile_backend!r} and compile_kwargs={{'mode': {mode!r}}} disagree; "
                                 "give one of them (pm.sample refuses both together too).")
        compile_backend = _COMPILE_MODES[mode.lower()]
    gradient = options.get("gradient_backend")
    if gradient is not None and gradient not in ("pytensor", "jax"):
        raise ResilientError(f"compile_kwargs={{'gradient_backend': {gradient!r}}}: it is 'pytensor' or 'jax'.")
    if gradient == "jax" and compile_backend != "jax":
        raise ResilientError("compile_kwargs={'gradient_backend': 'jax'} needs the JAX backend: add backend='jax'.")
    return backend, compile_backend, gradient


#: what ``resilient.sample`` does with each key of ``idata_kwargs={...}``: pm.sample hands the dict to
#: ``pm.to_inference_data`` (after its own ``model=`` and ``save_warmup=not discard_tuned_samples``), so
#: every keyword of that function has a fate here; a test walks ``inspect.signature(pm.to_inference_data)``.
IDATA_KWARGS: dict[str, tuple[Fate, str]] = {
    "trace": ("refused", "pm.sample passes its own trace; a second one makes pm.sample itself raise TypeError"),
    "prior": ("honoured", "a dict of prior draws (draw, ...) by name: the prior and prior_predictive groups (observed "
                          "names go to prior_predictive), with the run's dims and coords, as pm.to_inference_data "
                          "makes them"),
    "posterior_predictive": ("honoured", "a dict of (chain, draw, ...) arrays by name: the posterior_predictive "
                                         "group, with the run's dims and coords"),
    "log_likelihood": ("honoured", "True/False (same as `log_likelihood=`): the log_likelihood group az.loo and "
                                   "az.compare read, on every backend (default: NumPyro models yes up to 10,000,000 "
                                   "values, PyMC models no); a list of observed names keeps those only"),
    "log_prior": ("honoured", "True or a list of free variables: the log_prior group, computed by "
                              "pm.compute_log_prior on the returned draws (a pm.Model, or a shared-API model on the "
                              "PyMC backend); refused for NumPyro models, which have no such converter option"),
    "coords": ("honoured", "added to (and overriding) the model's coords, as pm.to_inference_data does"),
    "dims": ("honoured", "variable -> dimension names, added to (and overriding) the model's dims in the posterior, "
                         "warmup_posterior, observed_data, constant_data, prior and predictive groups; "
                         "log_likelihood and log_prior keep the model's dims, as pm.sample's do (PyMC computes them "
                         "from the model alone)"),
    "sample_dims": ("honoured", "only None or ['chain', 'draw']: MCMC draws have those two sample dimensions; "
                                "other values are refused"),
    "model": ("honoured", "only the model being sampled (pm.sample's own `model`); another model's names would "
                          "label these draws, so it is refused"),
    "save_warmup": ("honoured", "False leaves out the warmup groups (warmup_posterior and warmup_sample_stats), as "
                                "pm.sample does; True keeps what discard_tuned_samples keeps (pm.sample discards "
                                "the tuned draws before converting, so True alone adds nothing there either)"),
    "include_transformed": ("honoured", "True adds each transformed free variable's unconstrained values "
                                        "(`sigma_log__` ...) to the posterior, as pm.sample does (PyMC models; "
                                        "refused for NumPyro models)"),
}


@dataclass(frozen=True)
class IdataOptions:
    """``idata_kwargs={...}`` checked once: what the result's groups get beyond the draws. The defaults change
    nothing (``log_likelihood`` itself is a :class:`~resilient.options.RunOptions` field; ``log_likelihood_names``
    narrows the group to those observed variables)."""

    log_likelihood_names: tuple[str, ...] | None = None
    log_prior: bool | tuple[str, ...] = False
    coords: Mapping[str, Any] | None = None
    dims: Mapping[str, tuple[str, ...]] | None = None
    save_warmup: bool | None = None
    include_transformed: bool = False
    prior: Mapping[str, Any] | None = None
    posterior_predictive: Mapping[str, Any] | None = None
    model: Any = None

    @property
    def relabels(self) -> bool:
        """Whether the groups' dims or coords change."""
        return bool(self.coords) or bool(self.dims)

    @property
    def changes(self) -> bool:
        """Whether any key asks for more than the run's own result."""
        return any(getattr(self, f.name) is not None and getattr(self, f.name) is not False for f in fields(self))


def _names(value: Any, key: str, what: str) -> bool | tuple[str, ...]:
    """A ``bool`` or a list of variable names (``log_likelihood``, ``log_prior``)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ResilientError(f"idata_kwargs={{{key!r}: ...}} must be True, False or a list of {what} names, got {value!r}.")


def _checked_dims(dims: Any) -> dict[str, tuple[str, ...]] | None:
    if dims is None:
        return None
    if not isinstance(dims, Mapping):
        raise ResilientError(f"idata_kwargs={{'dims': ...}} must be a dict of variable name -> dimension names, got "
                             f"{type(dims).__name__}.")
    checked = {}
    for name, names in dims.items():
        names = (names,) if isinstance(names, str) else names
        if not isinstance(names, Iterable) or not all(isinstance(n, str) for n in names):
            raise ResilientError(f"idata_kwargs={{'dims': {{{name!r}: ...}}}} must be a list of dimension names, got "
                                 f"{names!r}.")
        checked[str(name)] = tuple(names)
    return checked


def _checked_arrays(value: Any, key: str, shape: str) -> dict[str, np.ndarray] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ResilientError(f"idata_kwargs={{{key!r}: ...}} must be a dict of variable name -> {shape} array, got "
                             f"{type(value).__name__}.")
    return {str(name): np.asarray(array) for name, array in value.items()}


def idata_options(kwargs: dict[str, Any], log_likelihood: bool | None = None) -> tuple[bool | None, IdataOptions]:
    """Pop ``idata_kwargs={...}`` from pm.sample-style kwargs: ``(log_likelihood, IdataOptions)``, the
    ``log_likelihood`` choice it and the argument of that name make together (None: the backend's default)
    and the rest of its keys, each as :data:`IDATA_KWARGS` says."""
    options = dict(_pop_dict(kwargs, "idata_kwargs", "a dict of pm.to_inference_data's keywords", IDATA_KWARGS))
    for key in ("trace",):
        if key in options:
            raise ResilientError(f"idata_kwargs={{{key!r}: ...}} is not supported: {IDATA_KWARGS[key][1]}.")
    asked = options.get("log_likelihood")
    names = None
    if asked is not None and not isinstance(asked, (bool, np.bool_)):
        picked = _names(asked, "log_likelihood", "observed variable")
        names, asked = (picked, True) if picked else (None, False)
    if log_likelihood is not None and not isinstance(log_likelihood, (bool, np.bool_)):
        raise ResilientError(f"`log_likelihood` must be True, False or None, got {log_likelihood!r}.")
    if asked is not None and log_likelihood is not None and bool(asked) != bool(log_likelihood):
        raise ResilientError(f"log_likelihood={log_likelihood!r} and idata_kwargs={{'log_likelihood': "
                             f"{options.get('log_likelihood')!r}}} disagree: give one.")
    chosen = log_likelihood if log_likelihood is not None else asked
    sample_dims = options.get("sample_dims")
    if sample_dims is not None and list(sample_dims) != ["chain", "draw"]:
        raise ResilientError(f"idata_kwargs={{'sample_dims': {sample_dims!r}}} is not supported: MCMC draws have the "
                             "sample dimensions ['chain', 'draw'] (pm.sample's); leave it out.")
    coords = options.get("coords")
    if coords is not None and not isinstance(coords, Mapping):
        raise ResilientError(f"idata_kwargs={{'coords': ...}} must be a dict of dimension name -> values, got "
                             f"{type(coords).__name__}.")
    save_warmup = options.get("save_warmup")
    if save_warmup is not None and not isinstance(save_warmup, (bool, np.bool_)):
        raise ResilientError(f"idata_kwargs={{'save_warmup': ...}} must be True, False or None, got {save_warmup!r}.")
    include = options.get("include_transformed", False)
    if not isinstance(include, (bool, np.bool_)):
        raise ResilientError(f"idata_kwargs={{'include_transformed': ...}} must be True or False, got {include!r}.")
    idata = IdataOptions(
        log_likelihood_names=names, log_prior=_names(options.get("log_prior"), "log_prior", "free variable"),
        coords={str(k): v for k, v in coords.items()} if coords else None, dims=_checked_dims(options.get("dims")),
        save_warmup=None if save_warmup is None else bool(save_warmup), include_transformed=bool(include),
        prior=_checked_arrays(options.get("prior"), "prior", "(draw, ...)"),
        posterior_predictive=_checked_arrays(options.get("posterior_predictive"), "posterior_predictive",
                                             "(chain, draw, ...)"),
        model=options.get("model"))
    return (None if chosen is None else bool(chosen)), idata


def normalise_seed(seed: Any, chains: int) -> int | None:
    """One int seed for the run from what pm.sample accepts as ``random_seed``."""
    if seed is None:
        return None
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise ResilientError(f"`random_seed` must be a non-negative integer, got {seed}.")
        return int(seed)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**31))
    if isinstance(seed, np.random.RandomState):
        return int(seed.randint(2**31))
    if isinstance(seed, np.random.SeedSequence):
        return int(seed.generate_state(1)[0] % 2**31)
    if isinstance(seed, (list, tuple, np.ndarray)):
        seeds = list(seed)
        if len(seeds) != chains or not all(isinstance(s, numbers.Integral) and s >= 0 for s in seeds):
            raise ResilientError(f"`random_seed` as a list needs one non-negative int per chain ({chains}), got "
                                 f"{seeds!r}.")
        return int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0] % 2**31)
    raise ResilientError(f"`random_seed` must be an int, a numpy Generator, RandomState or SeedSequence, or one int "
                         f"per chain; got {type(seed).__name__}.")


def markdown_table(which: str = "pm.sample") -> str:
    """The guide's table of pm.sample's arguments (``which="pm.sample"``) or of the ``idata_kwargs`` keys
    (``which="idata_kwargs"``: pm.to_inference_data's keywords)."""
    if which == "idata_kwargs":
        table, header = IDATA_KWARGS, "| `idata_kwargs` key | fate | what happens |"
    elif which == "pm.sample":
        table, header = PM_SAMPLE_ARGUMENTS, "| `pm.sample` argument | fate | what happens |"
    else:
        raise ResilientError(f"`which` must be 'pm.sample' or 'idata_kwargs', got {which!r}.")
    return fate_table(table, header)


def fate_table(table: Mapping[str, tuple[str, str]], header: str) -> str:
    """A Markdown table of arguments, each with its fate and what happens (the guide's tables)."""
    rows = [header, "|---|---|---|"]
    rows += [f"| `{name}` | {fate} | {words} |" for name, (fate, words) in table.items()]
    return "\n".join(rows)
