"""``resilient.sample``: a drop-in for ``pm.sample`` and NumPyro's ``MCMC`` with preflight and the loop."""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from resilient.backend import NUTSSettings
from resilient.errors import ResilientError
from resilient.policy import Policy

__all__ = ["sample", "resume"]

#: pm.sample arguments that are accepted and have no effect here (Resilient picks these itself).
_PYMC_IGNORED = {"cores", "init", "jitter_max_retries", "n_init", "discard_tuned_samples",
                 "compute_convergence_checks", "return_inferencedata", "mp_ctx", "blas_cores",
                 "progressbar_theme", "quiet", "keep_warning_stat", "idata_kwargs", "compile_kwargs"}
_PYMC_UNSUPPORTED = {"step", "nuts_sampler", "trace", "callback", "var_names", "nuts_sampler_kwargs", "backend_kwargs"}


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ResilientError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def sample(model: Any = None, *args: Any, backend: str | None = None, draws: int = 1000, tune: int = 1000,
           chains: int = 4, target_accept: float = 0.8, random_seed: int | None = None,
           initvals: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, progressbar: bool = True,
           preflight: bool = True, fix: bool = True, float32: bool = False, max_tree_depth: int = 10,
           policy: Policy | None = None, time_budget: float | None = None, max_attempts: int | None = None,
           checkpoint: str | None = None, resume: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
           **kwargs: Any) -> Any:
    """Run preflight and the resilient NUTS loop; return an ArviZ DataTree.

    ``model`` is a shared-API model function (data as ``*args`` / ``**kwargs`` or
    ``model_kwargs``), a NumPyro model function (its arguments likewise), or a PyMC model
    (``model=`` or the ``with pm.Model():`` context; ``pm.sample``'s arguments are accepted).
    ``draws``, ``tune``, ``chains``, ``target_accept``, ``random_seed``, ``initvals`` and
    ``progressbar`` mean what they mean in ``pm.sample``. ``time_budget`` (seconds for the
    whole call) and ``max_attempts`` override the :class:`~resilient.policy.Policy`;
    ``checkpoint`` is a folder where finished draws are written as they finish; ``resume``
    continues a NumPyro run from such a folder. The preflight report and the attempt log are
    in the result's attributes (:mod:`resilient.record`).
    """
    from resilient.checkpoint import Checkpoint, read_state
    from resilient.loop import run_loop
    from resilient.resolve import default_backend, resolve_model

    if isinstance(model, numbers.Integral) and not isinstance(model, bool):  # pm.sample(500) in a with-block
        draws, model = int(model), None
    if "model" in kwargs and model is None:
        model = kwargs.pop("model")
    unsupported = sorted(set(kwargs) & _PYMC_UNSUPPORTED)
    if unsupported:
        raise ResilientError(
            f"pm.sample argument(s) {', '.join(unsupported)} are not supported by resilient.sample: it always "
            "runs NUTS on the chosen backend. Call pm.sample directly for other samplers."
        )
    data_kwargs = dict(model_kwargs or {})
    for key in _PYMC_IGNORED & set(kwargs):
        kwargs.pop(key)
    data_kwargs.update(kwargs)
    draws = _check_count("draws", draws, 1)
    tune = _check_count("tune", tune, 0)
    chains = _check_count("chains", chains, 1)
    max_tree_depth = _check_count("max_tree_depth", max_tree_depth, 1)
    if not 0 < float(target_accept) < 1:
        raise ResilientError(f"`target_accept` must be in (0, 1), got {target_accept!r}. Typical: 0.8 to 0.99.")

    resolved = resolve_model(model, args, data_kwargs, fix=fix, float32=float32)
    name = default_backend(resolved, backend)
    policy = policy or Policy()
    overrides = {k: v for k, v in (("time_budget", time_budget), ("max_attempts", max_attempts)) if v is not None}
    policy = policy.replace(**overrides) if overrides else policy
    resume_state = read_state(resume) if resume is not None else None
    settings = NUTSSettings(draws=draws, tune=0 if resume_state is not None else tune, chains=chains,
                            target_accept=float(target_accept), random_seed=random_seed,
                            max_tree_depth=max_tree_depth, resume_state=resume_state)
    if initvals is not None:
        settings = _with_initvals(settings, resolved, name, initvals)
    store = None
    if checkpoint is not None or resume is not None:
        store = Checkpoint(checkpoint or resume, fresh=resume is None, meta={
            "model": resolved.name, "backend": name, "draws": draws, "tune": tune, "chains": chains,
            "target_accept": target_accept, "random_seed": random_seed})
    return run_loop(resolved, name, settings, policy, preflight=preflight, checkpoint=store,
                    progressbar=progressbar)


def _with_initvals(settings: NUTSSettings, model: Any, backend: str, initvals: Any) -> NUTSSettings:
    """Turn pm.sample-style initvals (constrained values by name, one dict or one per chain) into points."""
    from dataclasses import replace

    from resilient.backend import get_adapter

    per_chain = [initvals] * settings.chains if isinstance(initvals, Mapping) else list(initvals)
    if len(per_chain) != settings.chains:
        raise ResilientError(f"`initvals` must be one dict or one per chain ({settings.chains}), got {len(per_chain)}.")
    compiled = get_adapter(backend).compile(model)
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
    return replace(settings, initial_points=np.stack(points))


def resume(path: str, model: Any, *args: Any, draws: int = 1000, **kwargs: Any) -> Any:
    """Continue a NumPyro run saved in the checkpoint folder ``path`` for ``draws`` more draws."""
    return sample(model, *args, draws=draws, resume=path, preflight=False, **kwargs)
