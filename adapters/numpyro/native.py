"""Native NumPyro models: site descriptions, structured facts and the handler that applies the rewrites."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping
import numpy as np
import jax
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.distribution import ExpandedDistribution, Independent, MaskedDistribution
from numpyro.distributions.truncated import LeftTruncatedDistribution, RightTruncatedDistribution, TwoSidedTruncatedDistribution
from numpyro.primitives import Messenger
from resilient.distributions import Distribution, Truncated
from resilient.errors import ResilientError
from resilient.model import Site
from resilient.rewrites import Rewrite, stabilize
from resilient.adapters.numpyro.distributions import _support_between
from resilient.adapters.numpyro.translate import _literal_all, _with_support, to_numpyro


def _concrete(value: Any) -> np.ndarray | None:
    if value is None or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 (anything that is not an array is not a literal)
        return None
    return array if array.dtype.kind in "biuf" else None


def _equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(np.array_equal(a, b))


def _value_text(value: Any, namer: Callable[[Any], str | None]) -> str:
    name = namer(value)
    if name:
        return name
    array = _concrete(value)
    if array is None:
        return "<expr>"
    if array.ndim == 0 or array.size == 1:
        number = array.reshape(()).item()
        if isinstance(number, float):
            return "inf" if number == np.inf else "-inf" if number == -np.inf else f"{number:g}"
        return str(number)
    return np.array2string(array, precision=4, threshold=6, separator=", ").replace("\n", "")


def _describe_numpyro(d: Any, namer: Callable[[Any], str | None]) -> str:
    """``TruncatedNormal(0, sigma, low=0, high=inf)``-style text for a NumPyro distribution."""
    if isinstance(d, ExpandedDistribution):
        return f"{_describe_numpyro(d.base_dist, namer)}.expand({tuple(d.batch_shape)})"
    if isinstance(d, Independent):
        return f"{_describe_numpyro(d.base_dist, namer)}.to_event({d.reinterpreted_batch_ndims})"
    if isinstance(d, MaskedDistribution):
        return f"{_describe_numpyro(d.base_dist, namer)}.mask(...)"
    if isinstance(d, (LeftTruncatedDistribution, RightTruncatedDistribution, TwoSidedTruncatedDistribution)):
        bounds = "".join(
            f", {b}={_value_text(getattr(d, b), namer)}" for b in ("low", "high") if hasattr(d, b)
        )
        base = d.base_dist
        if type(base) in (dist.Normal, dist.Cauchy):
            inner = ", ".join(_value_text(v, namer) for v in (base.loc, base.scale))
            return f"Truncated{type(base).__name__}({inner}{bounds})"
        return f"TruncatedDistribution({_describe_numpyro(base, namer)}{bounds})"
    if isinstance(d, dist.ImproperUniform):
        return f"ImproperUniform({type(d.support).__name__.lstrip('_')})"
    values = [vars(d).get(k) for k in getattr(type(d), "arg_constraints", {})]
    parts = [_value_text(v, namer) for v in values if v is not None]
    name = type(d).__name__
    for suffix in ("Probs", "Logits"):
        if name.endswith(suffix) and name != suffix:
            name = name[: -len(suffix)]
    return f"{name}({', '.join(parts)})"


def _parameter_values(d: Any) -> list[Any]:
    """The parameter values of a NumPyro distribution (truncation bounds included)."""
    if isinstance(d, (ExpandedDistribution, Independent, MaskedDistribution)):
        return _parameter_values(d.base_dist)
    if isinstance(d, (LeftTruncatedDistribution, RightTruncatedDistribution, TwoSidedTruncatedDistribution)):
        return _parameter_values(d.base_dist) + [getattr(d, b, None) for b in ("low", "high")]
    return [vars(d).get(k) for k in getattr(type(d), "arg_constraints", {})]


def _native_text(record: Any, namer: Callable[[Any], str | None]) -> str:
    """A rewrite record in NumPyro's words: ``TruncatedNormal(0, sigma, low=0)``, ``HalfNormal(sigma)``."""
    if isinstance(record, Truncated):
        base = record.base.describe(namer)
        bounds = "".join(
            f", {word}={(namer(v) if namer else None) or _value_text(v, lambda _: None)}"
            for word, v in (("low", record.lower), ("high", record.upper)) if v is not None
        )
        if record.base.family in ("Normal", "Cauchy"):
            return f"Truncated{base[:-1]}{bounds})"
        return f"TruncatedDistribution({base}{bounds})"
    return record.describe(namer)


_NATIVE_BASES: dict[type, tuple[str, tuple[tuple[str, str], ...]]] = {
    dist.Normal: ("Normal", (("loc", "mu"), ("scale", "sigma"))),
    dist.Cauchy: ("Cauchy", (("loc", "alpha"), ("scale", "beta"))),
    dist.StudentT: ("StudentT", (("df", "nu"), ("loc", "mu"), ("scale", "sigma"))),
    dist.Laplace: ("Laplace", (("loc", "mu"), ("scale", "b"))),
    dist.Logistic: ("Logistic", (("loc", "mu"), ("scale", "s"))),
}

#: scale families and random walks that are non-centred as ``scale * raw`` (a random walk through its
#: innovations: ``scale * cumsum(raw)``), where ``LocScaleReparam`` does not apply (they have no ``loc``): the
#: horseshoe's local and global scales, the latent path of a stochastic volatility model.
_SCALE_BASES: dict[type, tuple[str, tuple[tuple[str, str], ...]]] = {
    dist.HalfNormal: ("HalfNormal", (("scale", "sigma"),)),
    dist.HalfCauchy: ("HalfCauchy", (("scale", "beta"),)),
    dist.GaussianRandomWalk: ("GaussianRandomWalk", (("scale", "sigma"),)),
}


_TRUNCATED_TYPES = (LeftTruncatedDistribution, RightTruncatedDistribution, TwoSidedTruncatedDistribution)


def _unwrap(d: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The innermost distribution under expand/to_event/mask wrappers, and a function that
    puts a replacement back under the same wrappers."""
    if isinstance(d, ExpandedDistribution):
        inner, rewrap = _unwrap(d.base_dist)
        shape = tuple(d.batch_shape)
        return inner, lambda new: rewrap(new).expand(shape)
    if isinstance(d, Independent):
        inner, rewrap = _unwrap(d.base_dist)
        ndims = d.reinterpreted_batch_ndims
        return inner, lambda new: rewrap(new).to_event(ndims)
    if isinstance(d, MaskedDistribution):
        inner, rewrap = _unwrap(d.base_dist)
        mask = d._mask
        return inner, lambda new: rewrap(new).mask(mask)
    return d, lambda new: new


def _truncation_record(d: Any, literals: Mapping[str, np.ndarray]) -> Truncated | None:
    """The resilient record of a NumPyro truncated distribution; ``literals`` replaces values
    known (from the compile-time trace) to be constants, so the rules see them as literals."""
    spec = _NATIVE_BASES.get(type(d.base_dist))
    if spec is None:
        return None
    family, names = spec
    params = {}
    for attribute, pname in names:
        params[pname] = literals.get(attribute, getattr(d.base_dist, attribute))
    base = Distribution(family, MappingProxyType(params))
    lower = literals.get("low", getattr(d, "low", None))
    upper = literals.get("high", getattr(d, "high", None))
    try:
        return Truncated(base, lower=lower, upper=upper)
    except ResilientError:
        return None


def _stabilize_native(record: Any, namer: Callable[[Any], str | None]) -> tuple[Any, tuple[Rewrite, ...]]:
    """:func:`resilient.rewrites.stabilize`, with each step described in NumPyro's words."""
    return stabilize(record, describe=lambda each: _native_text(each, namer))


@dataclass
class _SiteNotes:
    description: str = ""
    rewrites: tuple[Rewrite, ...] = ()
    literals: Mapping[str, np.ndarray] | None = None  # None: not a truncation we handle
    inputs: tuple[str, ...] = ()  # sites whose values are parameters of this one
    family: str | None = None
    loc_scale: bool = False  # a location-scale family LocScaleReparam can non-centre (no mask, no truncation)


#: NumPyro class names that differ from the shared API's family names.
_FAMILY_NAMES = {"MultivariateNormal": "MvNormal", "GammaPoisson": "NegativeBinomial"}


def _family_of(d: Any) -> str | None:
    """The shared-API family of an unwrapped NumPyro distribution, where there is one."""
    from resilient.distributions import FAMILIES

    spec = _NATIVE_BASES.get(type(d))
    if spec is not None:
        return spec[0]
    name = type(d).__name__
    for suffix in ("Probs", "Logits"):
        if name.endswith(suffix) and name != suffix:
            name = name[: -len(suffix)]
    name = _FAMILY_NAMES.get(name, name)
    return name if name in FAMILIES else None


class _NativeFixes(Messenger):
    """Applies :mod:`resilient.rewrites` to NumPyro's truncated distributions by swapping
    ``msg["fn"]``: infinite bounds dropped, Half- forms, log-space normaliser.

    Two concrete runs at different random points (``learning`` 1 and 2) name every value by the
    site that made it and find the parameters that are constants: unnamed, and equal at both points
    (a value computed from a latent variable differs). The second run writes a note per site; later
    runs (under jit, where every value is a tracer) apply the same decisions by site name. With
    ``fix=False`` the density is left as written and only the rewrites are noted (a literal
    infinite bound still stops shaping the support, whose bijection would otherwise map every point
    to infinity)."""

    def __init__(self, fn: Callable, fix: bool) -> None:
        super().__init__(fn)
        self.fix = fix
        self.learning = 0  # 0: applying notes; 1, 2: the two learning runs
        self.notes: dict[str, _SiteNotes] = {}
        self._names: dict[int, str] = {}
        self._first_literals: dict[str, dict[str, np.ndarray]] = {}
        self._first_values: dict[str, list[np.ndarray | None]] = {}

    def start_learning(self, run: int) -> None:
        self.learning = run
        self._names.clear()

    def name_of(self, value: Any) -> str | None:
        return self._names.get(id(value))

    def _literals(self, d: Any) -> dict[str, np.ndarray]:
        found = {}
        candidates = [(a, getattr(d.base_dist, a, None)) for a in ("df", "loc", "scale")]
        candidates += [(a, getattr(d, a, None)) for a in ("low", "high")]
        for attribute, value in candidates:
            if value is None or self.name_of(value) is not None:
                continue
            array = _concrete(value)
            if array is not None:
                found[attribute] = np.asarray(array, dtype=float)
        return found

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or _is_unit(msg):
            return
        name = msg["name"]
        inner, rewrap = _unwrap(msg["fn"])
        if self.learning == 1:
            self._first_values[name] = [_concrete(v) for v in _parameter_values(msg["fn"])]
            if isinstance(inner, _TRUNCATED_TYPES):
                self._first_literals[name] = self._literals(inner)
            return
        if self.learning == 2:
            values = _parameter_values(msg["fn"])
            first = self._first_values.get(name, [None] * len(values))
            varying = {  # unnamed values that moved with the random point: expressions of latents
                id(v): "<expr>" for v, before in zip(values, first)
                if v is not None and self.name_of(v) is None
                and not (before is not None and _equal(before, _concrete(v)))
            }

            def namer(value: Any) -> str | None:
                return self.name_of(value) or varying.get(id(value))

            names = (self.name_of(v) for v in values if v is not None)
            notes = _SiteNotes(description=_describe_numpyro(msg["fn"], namer),
                               inputs=tuple(dict.fromkeys(n for n in names if n)), family=_family_of(inner))
            notes.loc_scale = _decentrable(msg["fn"])
            if isinstance(inner, _TRUNCATED_TYPES):
                first_literals = self._first_literals.get(name, {})
                literals = {k: v for k, v in self._literals(inner).items() if _equal(first_literals.get(k), v)}
                record = _truncation_record(inner, literals)
                if record is not None:
                    notes.literals = literals
                    _, notes.rewrites = _stabilize_native(record, namer)
            self.notes[name] = notes
        notes = self.notes.get(name)
        if notes is None or notes.literals is None or not isinstance(inner, _TRUNCATED_TYPES):
            return
        record = _truncation_record(inner, notes.literals)
        if record is None:
            return
        if self.fix and notes.rewrites:
            stable, _ = _stabilize_native(record, lambda _: None)
            new = to_numpyro(stable)
            if tuple(new.batch_shape) != tuple(inner.batch_shape):
                new = new.expand(tuple(inner.batch_shape))
            msg["fn"] = rewrap(new)
            return
        lower_infinite = _literal_all(record.lower, -np.inf)
        upper_infinite = _literal_all(record.upper, np.inf)
        if lower_infinite or upper_infinite:
            support = _support_between(
                None if lower_infinite else getattr(inner, "low", None),
                None if upper_infinite else getattr(inner, "high", None),
            )
            msg["fn"] = rewrap(_with_support(inner, support))

    def postprocess_message(self, msg: dict) -> None:
        if self.learning and msg["type"] in ("sample", "deterministic") and msg.get("value") is not None:
            self._names[id(msg["value"])] = msg["name"]


def fixed_constants(fixes: _NativeFixes) -> tuple:
    """The values the rewrites fixed into a native model's program: per site, the constant parameters
    (learned from its compile-time traces) that replace the traced ones, and whether it is rewritten."""
    return tuple(
        (name, bool(notes.rewrites), None if notes.literals is None else tuple(
            (key, value.shape, value.tobytes()) for key, value in sorted(notes.literals.items())))
        for name, notes in sorted(fixes.notes.items())
    )


def _is_unit(site: dict) -> bool:
    return type(site.get("fn")).__name__ == "Unit"


def _is_real(support: constraints.Constraint) -> bool:
    return support is constraints.real or (
        isinstance(support, constraints.independent) and support.base_constraint is constraints.real
    )


def _decentrable(d: Any) -> bool:
    """``LocScaleReparam`` decentres ``d``: it unwraps ``expand`` and ``to_event`` (not a mask or a
    truncation) around a location-scale family."""
    while isinstance(d, (ExpandedDistribution, Independent)):
        d = d.base_dist
    return type(d) in _NATIVE_BASES or type(d) in _SCALE_BASES


def _parameters(model: Callable, **latents: Any) -> dict[str, dict[str, Any]]:
    """Each sample site's location-scale parameters with ``latents`` substituted."""
    import jax.numpy as jnp
    from numpyro import handlers

    with handlers.trace() as trace, handlers.seed(rng_seed=0), handlers.substitute(data=latents):
        model()
    found = {}
    for name, site in trace.items():
        if site["type"] != "sample" or _is_unit(site):
            continue
        inner, _ = _unwrap(site["fn"])
        spec = _NATIVE_BASES.get(type(inner)) or _SCALE_BASES.get(type(inner))
        if spec is None:
            continue
        values = {pname: getattr(inner, attribute, None) for attribute, pname in spec[1]}
        found[name] = {pname: jnp.asarray(v) for pname, v in values.items() if v is not None}
    return found


def parameter_inputs(model: Callable, model_trace: dict) -> dict[str, dict[str, tuple[str, ...]]]:
    """Per site and parameter, the latent sites the parameter depends on: NumPyro's provenance
    tracking (:func:`numpyro.ops.provenance.eval_provenance`, what ``get_dependencies`` uses per site)
    applied to each parameter. Empty where provenance cannot be tracked (Python control flow on a
    latent value): then nothing is noncenterable, which is the safe side."""
    from functools import partial

    from numpyro.ops.provenance import eval_provenance

    latents = {name: site["value"] for name, site in model_trace.items()
               if site["type"] == "sample" and not site["is_observed"] and not _is_unit(site)}
    try:
        provenance = eval_provenance(partial(_parameters, model), **latents)
    except Exception:  # noqa: BLE001 - best effort for native models
        return {}
    order = list(latents)
    return {site: {pname: tuple(sorted(depends, key=order.index)) for pname, depends in params.items()}
            for site, params in provenance.items()}


def _native_sites(model_trace: dict, fixes: _NativeFixes, noncentered: frozenset[str],
                  inputs: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None) -> dict[str, Site]:
    """Site records with structured facts: family, what each parameter depends on, and whether the
    adapter can non-centre the site (a loc-scale family whose loc or scale depends on a latent, not
    truncated: ``LocScaleReparam`` rewrites it, see :func:`reparam_config`)."""
    sites: dict[str, Site] = {}
    for name, site in model_trace.items():
        notes = fixes.notes.get(name, _SiteNotes())
        parameters = MappingProxyType(dict((inputs or {}).get(name, {})))
        facts = dict(description=notes.description, inputs=notes.inputs, family=notes.family,
                     parameter_inputs=parameters)
        if name in noncentered:
            sites[name] = Site(name, "latent", None, None, notes.rewrites, True, **facts)
        elif site["type"] == "deterministic":
            sites[name] = Site(name, "deterministic", None, None)
        elif site["type"] == "sample":
            if _is_unit(site):
                sites[name] = Site(name, "factor", None, None, description="factor")
                continue
            kind = "observed" if site["is_observed"] else "latent"
            centred = notes.loc_scale and not notes.rewrites and any(
                parameters.get(p) for p in ("mu", "alpha", "sigma", "beta", "b", "s"))
            sites[name] = Site(name, kind, None, None, notes.rewrites, False, **facts,
                               noncenterable=kind == "latent" and centred)
    return sites


def reparam_config(noncentered: frozenset[str]) -> Callable[[dict], Any]:
    """``handlers.reparam`` config: ``LocScaleReparam(0)`` on the named sites (StudentT keeps its df); a scale
    family or a Gaussian random walk gets :func:`_scale_reparam`."""
    from numpyro.infer.reparam import LocScaleReparam

    def config(msg: dict) -> Any:
        if msg["name"] not in noncentered:
            return None
        inner, _ = _unwrap(msg["fn"])
        if type(inner) in _SCALE_BASES:
            return _scale_reparam()
        return LocScaleReparam(0, shape_params=("df",) if isinstance(inner, dist.StudentT) else ())

    return config


def _scale_reparam() -> Any:
    """A NumPyro ``Reparam`` sampling ``x ~ Family(scale)`` as ``scale * raw`` with ``raw ~ Family(1)`` (a
    Gaussian random walk as ``scale * cumsum(raw)`` with standard normal innovations): the value is the same
    random variable, the geometry no longer depends on the scale. ``raw`` is the site ``<name>_decentered``,
    as ``LocScaleReparam`` names it."""
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer.reparam import Reparam

    class ScaleReparam(Reparam):
        def __call__(self, name: str, fn: Any, obs: Any) -> tuple[None, Any]:
            assert obs is None, "only latent sites are non-centred"
            inner, expand_shape, event_dim = self._unwrap(fn)
            if isinstance(inner, dist.GaussianRandomWalk):
                shape = inner.batch_shape + inner.event_shape
                base = dist.Normal(jnp.zeros(shape), 1.0).to_event(1)
                raw = numpyro.sample(f"{name}_decentered", self._wrap(base, expand_shape, event_dim))
                return None, jnp.cumsum(raw, axis=-1) * jnp.expand_dims(inner.scale, -1)
            unit = type(inner)(jnp.ones(inner.batch_shape))
            raw = numpyro.sample(f"{name}_decentered", self._wrap(unit, expand_shape, event_dim))
            return None, inner.scale * raw

    return ScaleReparam()
