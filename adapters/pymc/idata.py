"""The groups ``pm.to_inference_data`` adds from a ``pm.Model`` that the draws alone do not give:
``log_prior`` (``idata_kwargs={"log_prior": ...}``) and the transformed free variables
(``idata_kwargs={"include_transformed": True}``), computed with PyMC's own functions on the draws a
run returned."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["free_names", "log_prior", "transformed_names", "transformed_values"]


def free_names(model: Any) -> tuple[str, ...]:
    """The model's free random variables (what ``log_prior`` may name)."""
    return tuple(rv.name for rv in model.free_RVs)


def transformed_names(model: Any) -> dict[str, str]:
    """Unconstrained value variable name -> its free variable's name (``{"sigma_log__": "sigma"}``)."""
    return {model.rvs_to_values[rv].name: rv.name for rv in model.free_RVs
            if model.rvs_to_transforms.get(rv) is not None}


def log_prior(model: Any, data: Any, var_names: Sequence[str] | None) -> Any:
    """The ``log_prior`` group PyMC's ``pm.compute_log_prior`` makes for the posterior in ``data``."""
    from pymc.stats.log_density import compute_log_prior

    return compute_log_prior(data, var_names=None if var_names is None else list(var_names),
                             extend_inferencedata=False, model=model, progressbar=False)


def transformed_values(model: Any, posterior: Any) -> Any:
    """The unconstrained values of each transformed free variable at every draw of ``posterior`` (an
    xarray Dataset of constrained draws), named and dimensioned as ``pm.sample(idata_kwargs=
    {"include_transformed": True})`` names them (``sigma_log__`` with dimension ``sigma_log___dim_0``):
    each transform's ``forward`` applied with its parameters at that draw, as PyMC's initial-point code
    applies it."""
    from pymc.backends.arviz import apply_function_over_dataset, coords_and_dims_for_inferencedata
    from pymc.model.transform.conditioning import remove_value_transforms

    plain = remove_value_transforms(model)
    names, outputs = [], []
    for rv in plain.free_RVs:
        transform = model.rvs_to_transforms.get(model[rv.name])
        if transform is None:
            continue
        names.append(model.rvs_to_values[model[rv.name]].name)
        outputs.append(transform.forward(plain.rvs_to_values[rv], *rv.owner.inputs))
    if not names:
        return None
    outputs = plain.replace_rvs_by_values(outputs)
    function = plain.compile_fn(inputs=plain.value_vars, outs=outputs, on_unused_input="ignore")
    coords, dims = coords_and_dims_for_inferencedata(plain)
    free = [rv.name for rv in plain.free_RVs]
    dataset = posterior[free].astype({plain.rvs_to_values[rv].name: plain.rvs_to_values[rv].type.dtype
                                      for rv in plain.free_RVs}, copy=False)
    return apply_function_over_dataset(function, dataset, output_var_names=names, coords=coords, dims=dims,
                                       sample_dims=["chain", "draw"], progressbar=False)
