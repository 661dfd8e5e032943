"""Bambi models under Resilient's loop: ``resilient.sample(bmb_model, ...)`` takes what ``bmb.Model.fit``
takes for MCMC, samples the PyMC model Bambi builds (``model.build()``, ``model.backend.model``) with every
guarantee of the loop, and returns what ``fit`` returns: Bambi's post-processing
(``PyMCModel._clean_results``: offsets omitted, the intercept un-centred, Bambi's dims order and attributes)
applied to our result, so ``model.predict(idata)``, ``bmb.interpret`` and ArviZ work on it unchanged.

Bambi is imported only through the model the user passes (nothing here imports it at module level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from resilient.errors import ResilientError
from resilient.resolve import is_bambi_model

__all__ = ["FIT_ARGUMENTS", "BambiFit", "plan_fit", "is_bambi_model", "markdown_table"]

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
    method = kwargs.pop("method", None)
    inference_method = kwargs.pop("inference_method", None)
    if method is not None:
        if inference_method is not None and inference_method != method:
            raise ResilientError(f"method={method!r} and inference_method={inference_method!r} disagree; give "
                                 "inference_method only (Bambi deprecates method).")
        inference_method = method
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
