"""Native pm.Model sites: descriptions, structured facts (family, parameter inputs) and dependencies."""

from __future__ import annotations

from typing import Any
import numpy as np
from resilient.model import Site


def _format_input(var: Any, named: set) -> str:
    if var in named and getattr(var, "name", None):
        return var.name
    data = getattr(var, "data", None)
    if data is not None:
        array = np.asarray(data)
        if array.ndim == 0:
            value = array.item()
            if isinstance(value, float):
                if np.isinf(value):
                    return "inf" if value > 0 else "-inf"
                return f"{value:g}"
            return str(value)
        return np.array2string(array, precision=4, threshold=6, separator=", ").replace("\n", "")
    try:
        from pymc.printing import _str_for_input_var

        return _str_for_input_var(var, formatting="plain", named_vars=named)
    except Exception:  # noqa: BLE001 - a description must never fail
        return "<expr>"


def _describe_rv(rv: Any, named: set) -> str:
    """``Truncated(Normal(0, sigma), lower=0, upper=inf)``, ``InverseGamma(2, 3)`` ..."""
    node = rv.owner
    op = node.op
    print_name = getattr(op, "_print_name", None)
    family = print_name[0] if print_name else type(op).__name__
    from pytensor.tensor.random.type import RandomType
    from pytensor.tensor.type_other import NoneTypeT

    if type(op).__name__ == "TruncatedRV":
        args = list(node.inputs[2:])  # rng, size, *base params, lower, upper
    else:
        try:
            args = list(op.dist_params(node))
        except Exception:  # noqa: BLE001
            args = [x for x in node.inputs if not isinstance(x.type, (RandomType, NoneTypeT))]
    texts = [_format_input(a, named) for a in args]
    if family.startswith("Truncated") and family != "Truncated" and len(texts) >= 2:
        base = family[len("Truncated"):]
        lower, upper = texts[-2:]
        return f"Truncated({base}({', '.join(texts[:-2])}), lower={lower}, upper={upper})"
    return f"{family}({', '.join(texts)})"


def _parents(var: Any, sites: set) -> tuple[str, ...]:
    """Names of the sites whose values feed ``var`` directly (not through another site)."""
    from pytensor.graph.traversal import ancestors

    start = list(var.owner.inputs) if var.owner is not None else []
    found = []
    for ancestor in ancestors(start, blockers=sites):
        if ancestor in sites and ancestor is not var and ancestor.name not in found:
            found.append(ancestor.name)
    return tuple(found)


#: PyMC's parameter order -> the shared API's names, for the families whose sites the loop reasons about.
_PARAMETERS = {
    "Normal": ("mu", "sigma"), "StudentT": ("nu", "mu", "sigma"), "Cauchy": ("alpha", "beta"),
    "Laplace": ("mu", "b"), "Logistic": ("mu", "s"), "LogNormal": ("mu", "sigma"),
}


def _facts(rv: Any, latents: set) -> dict[str, Any]:
    """Family (shared-API name) and, per parameter, the latent variables it depends on."""
    from pytensor.graph.traversal import ancestors

    from resilient.distributions import FAMILIES

    print_name = getattr(rv.owner.op, "_print_name", None)
    family = print_name[0] if print_name and print_name[0] in FAMILIES else None
    if family not in _PARAMETERS:
        return {"family": family}
    params = list(rv.owner.op.dist_params(rv.owner))
    inputs = {}
    for pname, param in zip(_PARAMETERS[family], params):
        found = [a.name for a in ancestors([param], blockers=latents) if a in latents and a is not rv]
        inputs[pname] = tuple(dict.fromkeys(found))
    return {"family": family, "parameter_inputs": inputs}


def _fgraph_convertible(model: Any) -> bool:
    """Whether PyMC's model fgraph can hold ``model`` (what :func:`noncentred_model` rewrites)."""
    return model.parent is None and all(v is None for v in model.rvs_to_initial_values.values())


def noncentred_model(model: Any, names: frozenset[str]) -> Any:
    """A copy of ``model`` in which each named latent ``x ~ Normal(mu, sigma)`` is sampled as
    ``x_decentered ~ Normal(0, 1)`` and ``x = mu + sigma * x_decentered`` is a Deterministic with x's
    name and dims: the same joint density of x and the rest, without the funnel. Rewritten on PyMC's
    model fgraph (``pymc.model.fgraph``); the user's model is not changed."""
    import pymc as pm
    from pymc.model.fgraph import (ModelFreeRV, fgraph_from_model, model_deterministic, model_free_rv,
                                   model_from_fgraph)

    from resilient.errors import ModelError

    fgraph, _ = fgraph_from_model(model)
    done = set()
    for node in list(fgraph.toposort()):
        if not isinstance(node.op, ModelFreeRV) or node.op.name not in names:
            continue
        name, rv = node.op.name, node.inputs[0]
        print_name = getattr(rv.owner.op, "_print_name", None)
        if not print_name or print_name[0] != "Normal" or node.op.transform is not None:
            raise ModelError(f"Cannot non-centre `{name}`: only an untransformed Normal latent can be sampled as "
                             "loc + scale * Normal(0, 1).", site=name)
        mu, sigma = rv.owner.op.dist_params(rv.owner)
        raw_rv = pm.Normal.dist(0.0, 1.0, size=rv.shape)
        raw_name = f"{name}_decentered"
        raw = model_free_rv(raw_rv, raw_rv.type(name=raw_name), None, raw_name, *node.op.dims)
        fgraph.replace(node.outputs[0], model_deterministic(mu + sigma * raw, name, *node.op.dims),
                       import_missing=True)
        done.add(name)
    missing = sorted(set(names) - done)
    if missing:
        latent = [v.name for v in model.free_RVs]
        raise ModelError(f"Cannot non-centre {', '.join(f'`{n}`' for n in missing)}: the model has no latent "
                         f"variable of that name. Its latent variables are: {', '.join(latent) or 'none'}.",
                         site=missing[0])
    return model_from_fgraph(fgraph, mutate_fgraph=True)


def _native_sites(model: Any) -> dict[str, Site]:
    """Sites of a pm.Model. A latent ``Normal`` whose location or scale depends on another latent is
    ``noncenterable``: :func:`noncentred_model` really rewrites it (when PyMC's model fgraph can hold
    the model)."""
    convertible = _fgraph_convertible(model)
    named = set(model.named_vars.values())
    site_vars = set(model.free_RVs) | set(model.observed_RVs) | set(model.deterministics)
    sites: dict[str, Site] = {}
    groups = (
        ("latent", model.free_RVs), ("observed", model.observed_RVs),
        ("deterministic", model.deterministics), ("potential", model.potentials),
    )
    for kind, variables in groups:
        for var in variables:
            if kind in ("latent", "observed"):
                try:
                    description = _describe_rv(var, named)
                except Exception:  # noqa: BLE001 - best effort for native models
                    description = type(var.owner.op).__name__
            else:
                description = "Deterministic" if kind == "deterministic" else "Potential"
            try:
                inputs = _parents(var, site_vars)
            except Exception:  # noqa: BLE001
                inputs = ()
            facts: dict[str, Any] = {}
            if kind in ("latent", "observed"):
                try:
                    facts = _facts(var, set(model.free_RVs))
                except Exception:  # noqa: BLE001 - facts are best effort for ops we do not know
                    facts = {}
            centred = (kind == "latent" and convertible and facts.get("family") == "Normal"
                       and var.owner is not None and model.rvs_to_transforms.get(var) is None
                       and any(facts.get("parameter_inputs", {}).values()))
            sites[var.name] = Site(var.name, kind, None, None, (), False, description, inputs, **facts,
                                   noncenterable=centred)
    return sites
