"""Pure rewrites from a distribution record to an equivalent, numerically stabler one.

Each rule returns the new record and a :class:`Rewrite` that says what changed and why.
Every rule keeps the target density up to an additive constant (tested by comparing log
densities at random points). :func:`stabilize` applies all rules to a fixed point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from resilient import distributions
from resilient.distributions import Distribution, Exponential, Truncated, is_literal

__all__ = ["Rewrite", "stabilize", "drop_infinite_bounds", "half_form", "log_space_normaliser", "RULES"]


@dataclass(frozen=True)
class Rewrite:
    """One applied (or suggested) rewrite, for the report."""

    rule: str
    before: str
    after: str
    reason: str
    #: for ``drop-infinite-bounds``: which bounds were infinite ("lower", "upper")
    infinite_bounds: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.before} -> {self.after}: {self.reason}"


def _is_value(value: Any, target: float) -> bool:
    return value is not None and is_literal(value) and np.all(np.asarray(value, float) == target)


def drop_infinite_bounds(dist: Any) -> tuple[Any, str | None]:
    """``lower=-inf`` / ``upper=inf`` bound nothing but make the normaliser's gradient NaN."""
    if not isinstance(dist, Truncated):
        return dist, None
    infinite_lower = _is_value(dist.lower, -np.inf)
    infinite_upper = _is_value(dist.upper, np.inf)
    if not (infinite_lower or infinite_upper):
        return dist, None
    lower = None if infinite_lower else dist.lower
    upper = None if infinite_upper else dist.upper
    which = " and ".join(b for b, flag in (("lower", infinite_lower), ("upper", infinite_upper)) if flag)
    plural = "s are" if infinite_lower and infinite_upper else " is"
    reason = (
        f"the {which} bound{plural} infinite: it truncates nothing, but the backend's normaliser "
        "then computes inf - inf, whose gradient is NaN"
    )
    if lower is None and upper is None:
        return dist.base, reason
    return Truncated(dist.base, lower=lower, upper=upper, stable=dist.stable), reason


def _infinite_bounds(dist: Any) -> tuple[str, ...]:
    if not isinstance(dist, Truncated):
        return ()
    return tuple(name for name, value, target in (("lower", dist.lower, -np.inf), ("upper", dist.upper, np.inf))
                 if _is_value(value, target))


def _literal_shape(value: Any) -> tuple[int, ...] | None:
    """The shape a literal location gives the batch (None: a scalar adds nothing)."""
    shape = np.shape(value)
    return tuple(shape) if shape else None


def half_form(dist: Any) -> tuple[Any, str | None]:
    """Truncating a symmetric family at its location 0 from below is its Half- family."""
    if not isinstance(dist, Truncated) or dist.upper is not None or not _is_value(dist.lower, 0.0):
        return dist, None
    base, spec = dist.base, dist.base.spec
    if spec.location is None or not _is_value(base.params[spec.location], 0.0):
        return dist, None
    shape = base.shape if base.shape is not None else _literal_shape(base.params[spec.location])
    if spec.half is not None:
        kept = {k: v for k, v in base.params.items() if k != spec.location}
        return getattr(distributions, spec.half)(**kept, shape=shape), (
            f"a {base.family} centred at 0 and truncated to [0, inf) is exactly {spec.half}; "
            "its positive transform is simpler and its density needs no normaliser"
        )
    if base.family == "Laplace":
        return Exponential(lam=1.0 / base.params["b"], shape=shape), (
            "a Laplace centred at 0 and truncated to [0, inf) is exactly Exponential(1/b)"
        )
    return dist, None


def log_space_normaliser(dist: Any) -> tuple[Any, str | None]:
    """Compute a truncated Normal's normaliser with ``log_ndtr`` so far tails do not underflow."""
    if not isinstance(dist, Truncated) or dist.stable or dist.base.family != "Normal":
        return dist, None
    if dist.lower is None and dist.upper is None:
        return dist, None
    return Truncated(dist.base, dist.lower, dist.upper, stable=True), (
        "the normaliser log(Phi(b) - Phi(a)) is computed in log space (log_ndtr), so a bound far in "
        "the tail does not underflow to log(0), which in float32 starts about 5.5 sigma out"
    )


RULES: tuple[tuple[str, Callable[[Any], tuple[Any, str | None]]], ...] = (
    ("drop-infinite-bounds", drop_infinite_bounds),
    ("half-form", half_form),
    ("log-space-normaliser", log_space_normaliser),
)


def stabilize(dist: Any, *, observed: bool = False, namer: Callable[[Any], str | None] | None = None,
              describe: Callable[[Any], str] | None = None) -> tuple[Any, tuple[Rewrite, ...]]:
    """Apply every rule until none fires; return the final record and what was done.

    ``describe`` words each record for the report (default: the shared API's ``describe``;
    adapters pass their backend's words for native models).
    """
    describe = describe or (lambda record: record.describe(namer))
    applied: list[Rewrite] = []
    for _ in range(len(RULES) + 1):
        fired = False
        for rule, function in RULES:
            new, reason = function(dist)
            if reason is not None:
                applied.append(Rewrite(rule, describe(dist), describe(new), reason, _infinite_bounds(dist)))
                dist, fired = new, True
        if not fired:
            break
    return dist, tuple(applied)


#: family -> (location parameter or None, scale parameter, how the scale enters)
NONCENTERABLE: dict[str, tuple[str | None, str, str]] = {
    "Normal": ("mu", "sigma", "scale"),
    "StudentT": ("mu", "sigma", "scale"),
    "Cauchy": ("alpha", "beta", "scale"),
    "Laplace": ("mu", "b", "scale"),
    "Logistic": ("mu", "s", "scale"),
    "LogNormal": ("mu", "sigma", "log-scale"),
    "HalfNormal": (None, "sigma", "scale"),
    "HalfCauchy": (None, "beta", "scale"),
    "HalfStudentT": (None, "sigma", "scale"),
    "Exponential": (None, "lam", "rate"),
}


def can_noncenter(dist: Any) -> bool:
    """A location-scale record whose location or scale is another variable (not a literal)."""
    if not isinstance(dist, Distribution) or dist.family not in NONCENTERABLE or dist.ordered:
        return False  # an ordered vector non-centred would lose its ordering
    location, scale, _ = NONCENTERABLE[dist.family]
    return not is_literal(dist.params[scale]) or (location is not None and not is_literal(dist.params[location]))


def noncentered(dist: Distribution, shape: tuple[int, ...]) -> tuple[Distribution, Callable[[Any, Any], Any]]:
    """The standard record to sample instead, and how to map its value back: ``value = back(raw, math)``.

    ``x ~ Normal(mu, sigma)`` becomes ``x_raw ~ Normal(0, 1)``, ``x = mu + sigma * x_raw``; scale
    families multiply (``HalfNormal``), rate families divide (``Exponential``), ``LogNormal``
    exponentiates. The joint density of the other variables and ``x`` is unchanged.
    """
    location, scale, kind = NONCENTERABLE[dist.family]
    standard = {k: v for k, v in dist.params.items() if k not in (location, scale)}
    family = "Normal" if kind == "log-scale" else dist.family
    if kind != "log-scale":
        standard[scale] = 1.0
        if location is not None:
            standard[location] = 0.0
    params = {"mu": 0.0, "sigma": 1.0} if kind == "log-scale" else standard
    record = getattr(distributions, family)(**params, shape=shape)
    loc = dist.params[location] if location is not None else 0.0
    size = dist.params[scale]

    def back(raw: Any, math: Any) -> Any:
        if kind == "rate":
            return raw / size
        value = loc + size * raw
        return math.exp(value) if kind == "log-scale" else value

    return record, back
