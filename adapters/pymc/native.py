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


def _native_sites(model: Any) -> dict[str, Site]:
    """Sites of a pm.Model. ``noncenterable`` stays False: the adapter does not rewrite native
    models (see ``ignored_options``), so the loop must not claim to non-centre them."""
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
            sites[var.name] = Site(var.name, kind, None, None, (), False, description, inputs, **facts)
    return sites
