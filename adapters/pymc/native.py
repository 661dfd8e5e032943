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


def _native_sites(model: Any) -> dict[str, Site]:
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
            sites[var.name] = Site(var.name, kind, None, None, (), False, description, inputs)
    return sites
