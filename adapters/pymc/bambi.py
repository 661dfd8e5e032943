"""Bambi models under Resilient's loop: ``resilient.sample(bmb_model, ...)`` takes what ``bmb.Model.fit``
takes for MCMC, samples the PyMC model Bambi builds (``model.build()``, ``model.backend.model``) with every
guarantee of the loop, and returns what ``fit`` returns: Bambi's post-processing
(``PyMCModel._clean_results``: offsets omitted, the intercept un-centred, Bambi's dims order and attributes)
applied to our result, so ``model.predict(idata)``, ``bmb.interpret`` and ArviZ work on it unchanged.

Bambi is imported only through the model the user passes (nothing here imports it at module level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from resilient.errors import ResilientError
from resilient.resolve import is_bambi_model

__all__ = ["FIT_ARGUMENTS", "BambiFit", "plan_fit", "is_bambi_model", "markdown_table", "BambiRecipe", "recipe_of",
           "built_model", "many_fit_options", "check_many_engine", "MANY_FIT_ARGUMENTS"]

Fate = Literal["honoured", "ignored", "refused"]

#: what ``resilient.sample(bmb_model, ...)`` does with each argument of ``bmb.Model.fit`` (Bambi 0.21) beyond the
#: pm.sample arguments it passes on (those follow :data:`resilient.arguments.PM_SAMPLE_ARGUMENTS`).
FIT_ARGUMENTS: dict[str, tuple[Fate, str]] = {
    "draws": ("honoured", "draws per chain, after warm-up"),
    "tune": ("honoured", "warm-up iterations per chain"),
    "discard_tuned_samples": ("honoured", "as pm.sample's"),
    "omit_offsets": ("honoured", "True (the default) drops the `_offset` variables of group-specific terms from the "
                                 "posterior, as fit does"),
    "include_mean": ("honoured", "deprecated by Bambi: same as include_response_params"),
    "include_response_params": ("honoured", "True adds the response distribution's parameters (e.g. `mu`, `p`) "
                                            "to the posterior with model.predict, as fit does"),
    "inference_method": ("honoured", "'pymc' runs PyMC's NUTS, 'nutpie' nutpie (same as engine=); left out, "
                                     "Resilient's engine='auto' chooses; 'numpyro' and 'blackjax' (PyMC's JAX "
                                     "samplers) are refused, as are 'vi' and 'laplace' (not MCMC: call model.fit)"),
    "init": ("honoured", "as pm.sample's `init` (its mass matrix part; the loop picks starting points)"),
    "n_init": ("ignored", "used by ADVI initialisation, which Resilient does not run"),
    "chains": ("honoured", "number of chains (None: Resilient's 4)"),
    "cores": ("honoured", "as pm.sample's"),
    "random_seed": ("honoured", "as pm.sample's"),
    "nuts": ("honoured", "target_accept and max_treedepth, as pm.sample's nuts={...}"),
    "method": ("honoured", "deprecated by Bambi: same as inference_method"),
    "nuts_sampler_kwargs": ("honoured", "deprecated by Bambi: merged into nuts={...}"),
    "var_names": ("refused", "fit chooses the variables itself (every free variable and deterministic but the "
                             "response's parameters); a second list makes fit's own pm.sample call raise TypeError"),
}

#: inference methods that are MCMC with an engine here, and what each becomes
_ENGINES = {"pymc": "pymc", "nutpie": "nutpie"}


@dataclass
class BambiFit:
    """One ``fit``-style call resolved: the PyMC model to sample, the variables ``fit`` keeps, the engine, and
    how to shape the result as ``fit`` shapes it."""

    model: Any  # the bambi.Model
    pymc_model: Any
    var_names: list[str]
    engine: str
    omit_offsets: bool = True
    include_response_params: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)  # pm.sample arguments to pass on

    def finish(self, data: Any) -> Any:
        """``data`` shaped as ``fit`` returns it, with Bambi's own post-processing; the model marked fitted."""
        if data is None:
            return data
        backend = self.model.backend
        data = backend._clean_results(data, self.omit_offsets, self.include_response_params)
        backend.fit = True
        return data


def _vars_to_sample(model: Any, pymc_model: Any) -> list[str]:
    """The variables ``PyMCModel._run_mcmc`` asks pm.sample for: every unobserved value variable (untransformed
    names) and deterministic, less the deterministics that are the response distribution's parameters."""
    from pymc.util import get_default_varnames

    names = [v.name for v in get_default_varnames(pymc_model.unobserved_value_vars, include_transformed=False)]
    likelihood = set(model.family.likelihood.params)
    deterministics = set(pymc_model.deterministics)
    return [n for n in names if not (n in likelihood and pymc_model.named_vars.get(n) in deterministics)]


def _inference_method(arguments: dict[str, Any]) -> Any:
    """``inference_method`` (or Bambi's deprecated ``method``) taken out of ``arguments``; both given must agree."""
    method = arguments.pop("method", None)
    inference_method = arguments.pop("inference_method", None)
    if method is not None:
        if inference_method is not None and inference_method != method:
            raise ResilientError(f"method={method!r} and inference_method={inference_method!r} disagree; give "
                                 "inference_method only (Bambi deprecates method).")
        inference_method = method
    return inference_method


def plan_fit(model: Any, kwargs: dict[str, Any], *, engine: str = "auto", var_names: Any = None,
             options: tuple[str, ...] = ()) -> BambiFit:
    """Pop ``bmb.Model.fit``'s own arguments from ``kwargs`` (the rest are pm.sample's, passed on), build the
    model if it is not built, and say what to sample and how to shape the result. A keyword that is neither
    fit's, pm.sample's nor one of resilient.sample's ``options`` is refused with the closest name."""
    import difflib

    from resilient.arguments import PM_SAMPLE_ARGUMENTS

    for name in kwargs:
        if name not in FIT_ARGUMENTS and name not in PM_SAMPLE_ARGUMENTS:
            known = list(dict.fromkeys([*FIT_ARGUMENTS, *options, *PM_SAMPLE_ARGUMENTS]))
            close = difflib.get_close_matches(name, known, n=1)
            raise ResilientError(f"unknown argument `{name}`" + (f"; did you mean `{close[0]}`?" if close else ".")
                                 + " It is not an argument of bmb.Model.fit or pm.sample, or an option of "
                                 "resilient.sample; a Bambi model carries its data in its data frame.")
    if var_names is not None or "var_names" in kwargs:
        raise ResilientError(f"`var_names` is not supported for a Bambi model: {FIT_ARGUMENTS['var_names'][1]}.")
    inference_method = _inference_method(kwargs)
    legacy = kwargs.pop("nuts_sampler_kwargs", None)
    if legacy:
        kwargs["nuts"] = {**dict(legacy), **dict(kwargs.get("nuts") or {})}
    kwargs.pop("n_init", None)
    include_mean = kwargs.pop("include_mean", None)
    include_response_params = kwargs.pop("include_response_params", False)
    if include_mean is not None:
        include_response_params = include_mean
    omit_offsets = kwargs.pop("omit_offsets", True)
    for name, value in (("omit_offsets", omit_offsets), ("include_response_params", include_response_params)):
        if not isinstance(value, bool):
            raise ResilientError(f"`{name}` must be True or False, got {value!r}.")
    if inference_method is not None:
        engine = _engine(str(inference_method).lower(), engine)
    if not model.built:
        model.build()
    pymc_model = model.backend.model
    return BambiFit(model=model, pymc_model=pymc_model, var_names=_vars_to_sample(model, pymc_model), engine=engine,
                    omit_offsets=omit_offsets, include_response_params=include_response_params, kwargs=kwargs)


def _engine(method: str, engine: str) -> str:
    if method in ("numpyro", "blackjax"):
        raise ResilientError(
            f"inference_method={method!r} is not supported: it runs Bambi's PyMC model on {method}'s JAX NUTS "
            "(pm.sample(nuts_sampler=...)), which Resilient's loop does not drive. Use 'pymc' (PyMC's NUTS) or "
            "'nutpie' (add backend='jax' to compile with JAX), or leave it out and Resilient chooses.")
    if method in ("vi", "laplace"):
        raise ResilientError(
            f"inference_method={method!r} is not supported: it is not MCMC, and resilient.sample runs NUTS under "
            f"its loop. Call model.fit(inference_method={method!r}) for it.")
    if method not in _ENGINES:
        raise ResilientError(f"`inference_method` must be one of 'pymc', 'nutpie' (or Bambi's 'numpyro', "
                             f"'blackjax', 'vi', 'laplace', which Resilient refuses), got {method!r}.")
    if engine not in ("auto", _ENGINES[method]):
        raise ResilientError(f"inference_method={method!r} and engine={engine!r} disagree; give one of them.")
    return _ENGINES[method]


def markdown_table() -> str:
    """The guide's table of ``bmb.Model.fit``'s arguments (docs/guide/bambi.md)."""
    from resilient.arguments import fate_table

    return fate_table(FIT_ARGUMENTS, "| `bmb.Model.fit` argument | fate | what happens |")


# --- many fits of one formula (resilient.sample_many) ---------------------------------------------------------------

#: bmb.Model.fit's arguments that sample_many takes in ``fit_kwargs`` (its own arguments say the rest: draws, tune,
#: chains, random_seed, target_accept, engine)
MANY_FIT_ARGUMENTS = ("omit_offsets", "include_response_params", "include_mean", "inference_method", "method")

#: bmb.Model's constructor options a template model keeps as attributes (what a recipe passes on)
_MODEL_OPTIONS = ("dropna", "auto_scale", "noncentered", "center_predictors", "potentials")


@dataclass(frozen=True, eq=False)
class BambiRecipe:
    """How ``sample_many(bmb_model, datasets=[frame, ...])`` builds the template's model again on each data frame:
    ``bmb.Model(formula, frame, family=..., priors=..., ...)`` with the template's formula, family (its links
    included), the priors its user set (default priors are Bambi's, scaled to each frame as ``bmb.Model`` scales
    them), its categorical columns and its options. Made by :func:`recipe_of`, which checks that the recipe
    builds the template itself again."""

    builds_bambi: ClassVar[bool] = True  #: what resilient.batch.spec.builds_bambi looks for (no import of this module)

    formula: Any
    family: Any
    priors: dict[str, Any]
    categorical: tuple[str, ...]
    options: dict[str, Any]

    @property
    def __name__(self) -> str:  # noqa: PLW3201 - names the batch ("fits of y ~ x")
        return str(getattr(self.formula, "main", self.formula))

    def fingerprint(self) -> str:
        """A text that names this recipe the same way in every process (what a rerun's manifest compares)."""
        links = sorted((str(k), getattr(v, "name", repr(v))) for k, v in dict(self.family.link).items())
        priors = sorted((str(k), repr(v)) for k, v in self.priors.items())
        likelihood = self.family.likelihood
        return repr((str(self.formula), type(self.family).__name__, self.family.name, likelihood.name,
                     list(likelihood.params), links, priors,
                     self.categorical, sorted((k, repr(v)) for k, v in self.options.items())))

    def __call__(self, data: Any) -> Any:
        import copy

        import bambi
        # bmb.Model evaluates the formula in its caller's frame: this one, where np.log(x) finds numpy
        import numpy as np  # noqa: F401

        return bambi.Model(self.formula, data, family=copy.deepcopy(self.family), priors=copy.deepcopy(self.priors),
                           categorical=list(self.categorical) or None, **self.options)


def _user_set(prior: Any) -> bool:
    """A prior the model's user chose (Bambi marks its own defaults ``auto_scale=True`` and scales them)."""
    return not getattr(prior, "auto_scale", False)


def _priors_of(model: Any) -> list[tuple[str, str, str]]:
    """Every component's and term's prior, as text: what two builds of one formula on one frame share."""
    rows = []
    for name, component in model._components.items():
        terms = getattr(component, "terms", None)
        if terms is None:
            rows.append((name, "", repr(component.prior)))
        else:
            rows.extend((name, term_name, repr(term.prior)) for term_name, term in terms.items())
    return rows


def recipe_of(model: Any) -> BambiRecipe:
    """The :class:`BambiRecipe` of a template ``bmb.Model``, checked: built on the template's own data frame it gives
    the template's terms and priors. What a ``bmb.Model`` does not keep (``extra_namespace``, a name the formula
    takes from the caller's scope but ``np``) fails that check, and priors changed with ``set_priors`` are refused
    (Bambi then marks its own scaled priors as set); the error says to pass a function that builds the model from a
    frame."""
    advice = ("Pass a function that builds the model from a data frame instead (def build(data): return "
              "bmb.Model(formula, data, ...)); sample_many calls it on each data set.")
    if any(value is not None for value in getattr(model, "_added_priors", {}).values()):
        raise ResilientError("sample_many cannot build this Bambi model again: its priors were changed with "
                             "set_priors, after which Bambi no longer tells its own (scaled to the data) from the "
                             f"ones set. {advice}")
    parent = model.family.likelihood.parent
    priors: dict[str, Any] = {}
    for name, component in model._components.items():
        terms = getattr(component, "terms", None)
        if terms is None:
            if _user_set(component.prior):
                priors[name] = component.prior
            continue
        chosen = {term_name: term.prior for term_name, term in terms.items() if _user_set(term.prior)}
        if name == parent:
            priors.update(chosen)
        elif chosen:
            priors[name] = chosen
    categorical = tuple(str(c) for c in model.data.columns if str(model.data[c].dtype) == "category")
    recipe = BambiRecipe(formula=model.formula, family=model.family, priors=priors, categorical=categorical,
                         options={name: getattr(model, name) for name in _MODEL_OPTIONS})
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = recipe(model.data)
    except Exception as error:  # noqa: BLE001 - what the template does not keep (a namespace ...): said, with the fix
        raise ResilientError(f"sample_many cannot build this Bambi model again from its formula and options: "
                             f"{type(error).__name__}: {error}. {advice}") from None
    if _priors_of(again) != _priors_of(model):
        differ = sorted({f"{c}:{t}" if t else c for (c, t, p) in set(_priors_of(model)) ^ set(_priors_of(again))})
        raise ResilientError(f"sample_many cannot build this Bambi model again from its formula and options: built "
                             f"on its own data frame, the priors of {differ} differ. {advice}")
    return recipe


def built_model(function: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """The ``bmb.Model`` a builder (or a :class:`BambiRecipe`) returns for one data set."""
    built = function(*args, **kwargs)
    if not is_bambi_model(built):
        name = getattr(function, "__name__", "model")
        raise ResilientError(f"{name}() refers to Bambi but returned {type(built).__name__}, not a bmb.Model. A "
                             "builder for many fits must end with `return bmb.Model(formula, data, ...)`.")
    return built


def check_many_engine(engine: str, backend: str | None) -> None:
    """A Bambi model builds a PyMC model: sample_many runs it on an engine that samples PyMC models."""
    from resilient.backend import capabilities

    if backend not in (None, "pymc") or (engine != "auto" and capabilities(engine).language != "pymc"):
        raise ResilientError(f"A Bambi model builds a PyMC model, so it runs on PyMC's NUTS or nutpie: `engine` "
                             f"must be 'auto', 'pymc' or 'nutpie' and `backend` 'pymc' or left out, got "
                             f"engine={engine!r}, backend={backend!r}.")


def many_fit_options(fit_kwargs: Any, engine: str, own: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """``sample_many``'s ``fit_kwargs`` for a Bambi model, checked: ``(options for plan_fit, engine)``. Only the
    arguments of :data:`MANY_FIT_ARGUMENTS`; ``inference_method`` becomes the engine; one of sample_many's ``own``
    arguments (draws, chains, ...) is refused with the place to give it."""
    if fit_kwargs is None:
        return {}, engine
    if not isinstance(fit_kwargs, dict):
        raise ResilientError(f"`fit_kwargs` must be a dict of bmb.Model.fit's arguments, got "
                             f"{type(fit_kwargs).__name__}.")
    for name in fit_kwargs:
        if name in own:
            raise ResilientError(f"`fit_kwargs` has `{name}`, which is sample_many's own argument: give "
                                 f"sample_many({name}=...).")
        if name not in MANY_FIT_ARGUMENTS:
            raise ResilientError(f"`fit_kwargs` has `{name}`; sample_many takes only "
                                 f"{', '.join(MANY_FIT_ARGUMENTS[:4])} from bmb.Model.fit's arguments.")
    options = dict(fit_kwargs)
    inference_method = _inference_method(options)
    if inference_method is not None:
        engine = _engine(str(inference_method).lower(), engine)
    include_mean = options.pop("include_mean", None)
    if include_mean is not None:
        options["include_response_params"] = include_mean
    for name in ("omit_offsets", "include_response_params"):
        if name in options and not isinstance(options[name], bool):
            raise ResilientError(f"`{name}` must be True or False, got {options[name]!r}.")
    return options, engine
