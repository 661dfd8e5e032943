"""The result shaped as ``pm.to_inference_data`` shapes it under pm.sample's ``idata_kwargs``: the user's
``dims`` and ``coords`` over the model's, the ``prior`` / ``posterior_predictive`` groups it builds from
dicts of draws, and ``save_warmup=False``. Backend-neutral: functions of a DataTree and
:class:`~resilient.arguments.IdataOptions` (xarray only, imported when called)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from resilient.arguments import IdataOptions
from resilient.errors import ResilientError

__all__ = ["shape_result", "relabel"]

#: groups whose variables lead with (chain, draw), and groups of data without sample dimensions
SAMPLE_GROUPS = ("posterior", "warmup_posterior", "log_likelihood", "log_prior", "prior", "prior_predictive",
                 "posterior_predictive")
DATA_GROUPS = ("observed_data", "constant_data")
#: pm.sample computes log_likelihood and log_prior with the model's own dims (pm.compute_log_likelihood), not
#: idata_kwargs' dims, so those two groups keep theirs
_MODEL_DIMS_ONLY = ("log_likelihood", "log_prior")
_SAMPLE_DIMS = ("chain", "draw")


def _existing_layout(data: Any) -> tuple[dict[str, tuple[str, ...]], dict[str, np.ndarray]]:
    """Every variable's dimensions after its sample dims, and every index coordinate, over the groups."""
    dims: dict[str, tuple[str, ...]] = {}
    coords: dict[str, np.ndarray] = {}
    for group in (*SAMPLE_GROUPS, *DATA_GROUPS):
        if group not in data.children:
            continue
        dataset = data[group].to_dataset()
        for name, variable in dataset.data_vars.items():
            dims.setdefault(str(name), tuple(str(d) for d in variable.dims if d not in _SAMPLE_DIMS))
        for name in dataset.indexes:
            if name not in _SAMPLE_DIMS:
                coords.setdefault(str(name), np.asarray(dataset[name].values))
    return dims, coords


def _dataset(arrays: Mapping[str, np.ndarray], sample_dims: Sequence[str], dims: Mapping[str, Sequence[str]],
             coords: Mapping[str, Any], keep: Mapping[str, Any], attrs: Mapping[str, Any], what: str) -> Any:
    """An xarray Dataset of ``arrays`` whose leading axes are ``sample_dims``: each variable's other axes take
    ``dims[name]`` (padded with ArviZ's ``name_dim_k``), index coordinates from ``coords`` where given, else
    from ``keep`` (the group's own) where their length still fits."""
    import xarray as xr

    variables, used = {}, {}
    for name, array in arrays.items():
        array = np.asarray(array)
        rest = array.ndim - len(sample_dims)
        names = list(dims.get(name, ()))
        if len(names) > rest:
            raise ResilientError(f"idata_kwargs dims: `{name}` has {rest} dimension(s) after {list(sample_dims)}, got "
                                 f"{len(names)} names {names}. Give one name per dimension.")
        names += [f"{name}_dim_{k}" for k in range(len(names), rest)]
        axes = (*sample_dims, *names)
        for axis, size in zip(axes, array.shape):
            if axis in used and used[axis] != size:
                raise ResilientError(f"idata_kwargs dims: dimension `{axis}` has length {used[axis]} in one variable "
                                     f"and {size} in `{name}` ({what}). Name dimensions of different lengths apart.")
            used[axis] = size
        variables[name] = (axes, array)
    index = {}
    for axis, size in used.items():
        for source in (coords, keep):
            if axis in source and source[axis] is not None:
                values = np.asarray(source[axis])
                if values.ndim != 1 or len(values) != size:
                    if source is keep:
                        continue
                    raise ResilientError(f"idata_kwargs coords: `{axis}` has {len(np.atleast_1d(values))} values but "
                                         f"the dimension has length {size} ({what}).")
                index[axis] = values
                break
        if axis not in index and axis in sample_dims:
            index[axis] = np.arange(size)
    return xr.Dataset(variables, coords=index, attrs=dict(attrs))


def relabel(data: Any, coords: Mapping[str, Any] | None, dims: Mapping[str, Sequence[str]] | None) -> None:
    """Give the groups the user's ``dims`` and ``coords`` over the model's, as ``pm.to_inference_data`` does
    (``coords = {**model_coords, **coords}``, ``dims = {**model_dims, **dims}``); in place. ``log_likelihood``
    and ``log_prior`` keep the model's, as pm.sample's (``pm.compute_log_likelihood`` reads the model only)."""
    existing, _ = _existing_layout(data)
    wanted = {**existing, **{name: tuple(names) for name, names in (dims or {}).items()}}
    for group in (*SAMPLE_GROUPS, *DATA_GROUPS):
        if group not in data.children or group in _MODEL_DIMS_ONLY:
            continue
        dataset = data[group].to_dataset()
        sample_dims = _SAMPLE_DIMS if group in SAMPLE_GROUPS else ()
        arrays = {str(name): variable.transpose(*sample_dims, ...).values
                  for name, variable in dataset.data_vars.items()}
        keep = {str(name): dataset[name].values for name in dataset.indexes}
        shaped = _dataset(arrays, sample_dims, wanted, coords or {}, keep, dataset.attrs, f"group {group}")
        for name in dataset.data_vars:
            shaped[name].attrs.update(dataset[name].attrs)
        data[group] = shaped


def _add_draws(data: Any, options: IdataOptions) -> None:
    """``prior`` and ``posterior_predictive`` dicts as pm.to_inference_data makes groups of them."""
    dims, coords = _existing_layout(data)
    dims = {**dims, **{name: tuple(names) for name, names in (options.dims or {}).items()}}
    coords = {**coords, **dict(options.coords or {})}
    if options.prior:
        observed = set(data["observed_data"].data_vars) if "observed_data" in data.children else set()
        groups = {"prior": {k: v for k, v in options.prior.items() if k not in observed},
                  "prior_predictive": {k: v for k, v in options.prior.items() if k in observed}}
        for group, arrays in groups.items():
            if arrays:
                data[group] = _dataset({k: np.expand_dims(v, 0) for k, v in arrays.items()}, _SAMPLE_DIMS, dims,
                                       coords, {}, {}, f"idata_kwargs={{'prior': ...}} ({group})")
    if options.posterior_predictive:
        for name, array in options.posterior_predictive.items():
            if np.ndim(array) < 2:
                raise ResilientError(f"idata_kwargs={{'posterior_predictive': {{{name!r}: ...}}}} must lead with "
                                     f"(chain, draw), got shape {np.shape(array)}.")
        data["posterior_predictive"] = _dataset(options.posterior_predictive, _SAMPLE_DIMS, dims, coords, {}, {},
                                                "idata_kwargs={'posterior_predictive': ...}")


def shape_result(data: Any, options: IdataOptions) -> None:
    """Apply ``idata_kwargs``' shaping keys to a finished result, in place: warmup groups left out for
    ``save_warmup=False``, the ``prior`` / ``posterior_predictive`` groups added, then the user's dims and
    coords over every group."""
    if options.save_warmup is False:
        for group in ("warmup_posterior", "warmup_sample_stats"):
            if group in data.children:
                del data[group]
    _add_draws(data, options)
    if options.relabels:
        relabel(data, options.coords, options.dims)
