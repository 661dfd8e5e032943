"""Backend-neutral distribution records.

A distribution is a small frozen record: a family name, its parameters (plain numbers,
numpy arrays or a backend's tensors) and an optional shape. Adapters translate records
into NumPyro or PyMC objects; rewrites turn records into equivalent, stabler records.
Parameter names follow PyMC (``mu``, ``sigma``, ``lam`` ...), the idiom most users know.

Parameters given as plain numbers are validated when the record is made, so
``Normal(0, -1)`` fails at once with an error naming ``sigma`` (inside a model the error
is attached to the site instead, see :mod:`resilient.model`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from resilient.context import inside_model
from resilient.errors import ParameterError

__all__ = [
    "Distribution", "Truncated", "FAMILIES", "IMPROPER_FAMILIES", "Family", "is_literal", "outside_support",
    "Normal", "HalfNormal", "StudentT", "HalfStudentT", "Cauchy", "HalfCauchy",
    "Laplace", "Logistic", "LogNormal", "Exponential", "Gamma", "InverseGamma", "Beta",
    "Uniform", "Flat", "HalfFlat", "Weibull", "Bernoulli", "Binomial", "Poisson",
    "NegativeBinomial", "Categorical", "Dirichlet", "MvNormal", "LKJCholesky", "NormalMixture", "Mixture",
]

#: families whose density does not integrate (no prior draws; preflight and the loop name such sites).
IMPROPER_FAMILIES = ("Flat", "HalfFlat")

# Parameter rules: name -> (test on a numpy array, words for the error message).
_RULES: dict[str, tuple[Callable[[np.ndarray], bool], str]] = {
    "real": (lambda v: bool(np.all(np.isfinite(v))), "a finite real number"),
    "positive": (lambda v: bool(np.all(v > 0) and np.all(np.isfinite(v))), "positive and finite"),
    "unit": (lambda v: bool(np.all((v >= 0) & (v <= 1))), "in the interval [0, 1]"),
    "count": (
        lambda v: bool(np.all(v >= 0) and np.all(np.floor(v) == v)),
        "a non-negative integer",
    ),
    "dimension": (
        lambda v: bool(np.all(v >= 1) and np.all(np.floor(v) == v)),
        "an integer of at least 1",
    ),
    "simplex": (
        lambda v: bool(
            np.all(v >= 0) and np.allclose(np.sum(v, axis=-1), 1.0, rtol=1e-6, atol=1e-6)
        ),
        "a probability vector (non-negative, summing to 1 over the last axis)",
    ),
    "positive_vector": (
        lambda v: bool(v.ndim >= 1 and np.all(v > 0) and np.all(np.isfinite(v))),
        "a vector of positive numbers",
    ),
    "vector": (lambda v: bool(v.ndim >= 1 and np.all(np.isfinite(v))), "a finite vector"),
    "covariance": (lambda v: _is_positive_definite(v), "a symmetric positive-definite matrix"),
    "cholesky": (
        lambda v: bool(v.ndim >= 2 and np.allclose(v, np.tril(v)) and np.all(np.diagonal(v, axis1=-2, axis2=-1) > 0)),
        "a lower-triangular matrix with a positive diagonal",
    ),
}


def _is_positive_definite(value: np.ndarray) -> bool:
    if value.ndim < 2 or value.shape[-1] != value.shape[-2] or not np.allclose(value, np.swapaxes(value, -1, -2)):
        return False
    try:
        np.linalg.cholesky(value)
    except np.linalg.LinAlgError:
        return False
    return True


@dataclass(frozen=True)
class Family:
    """What the rest of Resilient needs to know about one family."""

    name: str
    params: tuple[tuple[str, str, Any], ...]  # (name, rule, default or _REQUIRED)
    support: str  # "real", "positive", "unit", "interval", "count", "binary", "simplex", ...
    discrete: bool = False
    multivariate: bool = False
    location: str | None = None  # symmetric about this parameter
    half: str | None = None  # the Half- family of a symmetric family, at location 0
    scale: str | None = None  # the scale parameter shared with the half form


_REQUIRED = object()


def _family(name, params, support, **kwargs) -> Family:
    return Family(name=name, params=tuple(params), support=support, **kwargs)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        _family("Normal", [("mu", "real", 0.0), ("sigma", "positive", 1.0)], "real",
                location="mu", half="HalfNormal", scale="sigma"),
        _family("HalfNormal", [("sigma", "positive", 1.0)], "positive"),
        _family("StudentT", [("nu", "positive", _REQUIRED), ("mu", "real", 0.0), ("sigma", "positive", 1.0)],
                "real", location="mu", half="HalfStudentT", scale="sigma"),
        _family("HalfStudentT", [("nu", "positive", _REQUIRED), ("sigma", "positive", 1.0)], "positive"),
        _family("Cauchy", [("alpha", "real", 0.0), ("beta", "positive", 1.0)], "real",
                location="alpha", half="HalfCauchy", scale="beta"),
        _family("HalfCauchy", [("beta", "positive", 1.0)], "positive"),
        _family("Laplace", [("mu", "real", 0.0), ("b", "positive", 1.0)], "real", location="mu"),
        _family("Logistic", [("mu", "real", 0.0), ("s", "positive", 1.0)], "real", location="mu"),
        _family("LogNormal", [("mu", "real", 0.0), ("sigma", "positive", 1.0)], "positive"),
        _family("Exponential", [("lam", "positive", 1.0)], "positive"),
        _family("Gamma", [("alpha", "positive", _REQUIRED), ("beta", "positive", 1.0)], "positive"),
        _family("InverseGamma", [("alpha", "positive", _REQUIRED), ("beta", "positive", 1.0)], "positive"),
        _family("Beta", [("alpha", "positive", _REQUIRED), ("beta", "positive", _REQUIRED)], "unit"),
        _family("Uniform", [("lower", "real", 0.0), ("upper", "real", 1.0)], "interval"),
        _family("Flat", [], "real"),
        _family("HalfFlat", [], "positive"),
        _family("Weibull", [("alpha", "positive", _REQUIRED), ("beta", "positive", 1.0)], "positive"),
        _family("Bernoulli", [("p", "unit", _REQUIRED)], "binary", discrete=True),
        _family("Binomial", [("n", "count", _REQUIRED), ("p", "unit", _REQUIRED)], "count", discrete=True),
        _family("Poisson", [("mu", "positive", _REQUIRED)], "count", discrete=True),
        _family("NegativeBinomial", [("mu", "positive", _REQUIRED), ("alpha", "positive", _REQUIRED)],
                "count", discrete=True),
        _family("Categorical", [("p", "simplex", _REQUIRED)], "category", discrete=True),
        _family("Dirichlet", [("a", "positive_vector", _REQUIRED)], "simplex", multivariate=True),
        _family("MvNormal", [("mu", "vector", _REQUIRED), ("cov", "covariance", None),
                             ("chol", "cholesky", None)], "real_vector", multivariate=True),
        _family("LKJCholesky", [("n", "dimension", _REQUIRED), ("eta", "positive", 1.0)],
                "correlation_cholesky", multivariate=True),

    ]
}


#: what an observed value must be, per support (NaN is left alone: PyMC imputes it as missing data)
SUPPORT_RULES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "positive": (lambda v: v >= 0, "non-negative"),
    "unit": (lambda v: (v >= 0) & (v <= 1), "in [0, 1]"),
    "count": (lambda v: (v >= 0) & (np.floor(v) == v), "a non-negative integer"),
    "binary": (lambda v: (v == 0) | (v == 1), "0 or 1"),
    "category": (lambda v: (v >= 0) & (np.floor(v) == v), "a category index (a non-negative integer)"),
}


def outside_support(family: str | None, data: Any) -> tuple[str, float, int, str] | None:
    """The first observed value outside ``family``'s support, or infinite: ``(index text, value, how many,
    what every value must be)``; None when all are inside (NaN, missing data, is not judged here)."""
    try:
        values = np.asarray(data, dtype=float)
    except (TypeError, ValueError):
        return None
    present = ~np.isnan(values)
    outside = present & np.isinf(values)
    rule = SUPPORT_RULES.get(FAMILIES[family].support) if family in FAMILIES else None
    if rule is not None:
        with np.errstate(invalid="ignore"):
            outside |= present & ~rule[0](values)
    if not np.any(outside):
        return None
    index = tuple(int(i) for i in np.argwhere(outside)[0])
    value = float(values[index])
    words = "finite" if np.isinf(value) or rule is None else rule[1]
    return (f"[{', '.join(map(str, index))}]" if index else "", value, int(np.sum(outside)), words)


def is_literal(value: Any) -> bool:
    """True for values Resilient can check now: Python numbers, numpy arrays and lists."""
    if isinstance(value, (numbers.Number, np.ndarray, np.generic)) and not isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_literal(v) for v in value)
    return False


def _format_value(value: Any) -> str:
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, (np.ndarray, np.generic, list, tuple)):
        array = np.asarray(value)
        if array.ndim == 0:
            return _format_value(array.item())
        text = np.array2string(array, precision=4, threshold=6, separator=", ")
        return text.replace("\n", "")
    name = getattr(value, "name", None)
    return name if isinstance(name, str) and name else "<expr>"


@dataclass(frozen=True, eq=False)
class Distribution:
    """A family with its parameters; ``shape`` is the batch shape (``None``: from the parameters).

    ``invalid`` holds the error of a literal parameter found invalid inside a model, so that
    :func:`resilient.model.sample` can raise it with the site's name.
    """

    family: str
    params: Mapping[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    invalid: ParameterError | None = None
    #: Stan's ``ordered`` (real support) / ``positive_ordered``: the last axis is sorted ascending; the
    #: density is the family's at the sorted vector, on the ordered transform (Jacobian included).
    ordered: bool = False

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]

    @property
    def discrete(self) -> bool:
        return self.spec.discrete

    def replace(self, **params: Any) -> "Distribution":
        merged = dict(self.params)
        merged.update(params)
        return Distribution(self.family, MappingProxyType(merged), self.shape, self.invalid, self.ordered)

    def describe(self, namer: Callable[[Any], str | None] | None = None) -> str:
        """``Normal(0, sigma)``: literals printed, tensors by the site that made them."""
        parts = []
        for pname, value in self.params.items():
            if value is None:
                continue
            text = (namer(value) if namer else None) or _format_value(value)
            parts.append(f"{pname}={text}" if _is_keyword_only(self, pname) else text)
        if self.shape is not None:
            parts.append(f"shape={self.shape}")
        if self.ordered:
            parts.append("ordered=True")
        return f"{self.family}({', '.join(parts)})"

    def __repr__(self) -> str:
        return self.describe()


def _is_keyword_only(dist: Distribution, pname: str) -> bool:
    return dist.family == "MvNormal" and pname in ("cov", "chol")


@dataclass(frozen=True, eq=False)
class Truncated:
    """``base`` restricted to ``[lower, upper]``; either bound may be ``None`` (no bound).

    ``stable`` asks the adapter to compute the normaliser in log space (far-tail truncation);
    it is set by the rewrite that detects a far tail, not by users.
    """

    base: Distribution
    lower: Any = None
    upper: Any = None
    stable: bool = False
    #: the bound error of a record made inside a model, raised by the model's sample() with the site's name
    invalid: ParameterError | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, Distribution):
            raise ParameterError(
                f"Truncated: `base` must be a resilient distribution such as Normal(0, 1), "
                f"got {type(self.base).__name__}."
            )
        if self.base.discrete or self.base.spec.multivariate:
            raise ParameterError(
                f"Truncated: `base` must be a continuous univariate distribution, got {self.base.family}. "
                "Truncate a continuous family such as Normal or StudentT."
            )
        error = self._bound_error()
        if error is not None:
            if not inside_model():
                raise error
            object.__setattr__(self, "invalid", error)  # raised by the model's sample() with the site's name

    def _bound_error(self) -> ParameterError | None:
        for bound in ("lower", "upper"):
            value = getattr(self, bound)
            if value is not None and is_literal(value) and np.any(np.isnan(np.asarray(value, float))):
                return ParameterError(f"Truncated: `{bound}` must be a number or None, got nan.", argument=bound)
        if is_literal(self.lower) and is_literal(self.upper) and self.lower is not None and self.upper is not None:
            if np.any(np.asarray(self.lower, float) >= np.asarray(self.upper, float)):
                return ParameterError(
                    f"Truncated: `lower` must be below `upper`, got lower={_format_value(self.lower)}, "
                    f"upper={_format_value(self.upper)}. Swap the bounds or drop one.", argument="lower",
                    value=self.lower)
        for bound, empty in (("lower", np.inf), ("upper", -np.inf)):
            value = getattr(self, bound)
            if value is not None and is_literal(value) and np.any(np.asarray(value, float) == empty):
                return ParameterError(
                    f"Truncated: `{bound}` = {_format_value(value)} leaves no values. Drop the bound or give a "
                    "finite one.", argument=bound, value=value)
        return None

    family = "Truncated"

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self.base.shape

    @property
    def discrete(self) -> bool:
        return False

    def describe(self, namer: Callable[[Any], str | None] | None = None) -> str:
        parts = [self.base.describe(namer)]
        for bound in ("lower", "upper"):
            value = getattr(self, bound)
            if value is not None:
                parts.append(f"{bound}={(namer(value) if namer else None) or _format_value(value)}")
        return f"Truncated({', '.join(parts)})"

    def __repr__(self) -> str:
        return self.describe()


def _check(family: str, pname: str, rule: str, value: Any) -> None:
    if value is None or not is_literal(value):
        return
    test, words = _RULES[rule]
    array = np.asarray(value, dtype=float)
    if not test(array):
        raise ParameterError(
            f"{family}: `{pname}` must be {words}, got {_format_value(value)}. "
            f"Pass a valid `{pname}` (the default is {_default_text(family, pname)}).",
            argument=pname,
            value=value,
        )


def _default_text(family: str, pname: str) -> str:
    if family not in FAMILIES:
        return "required"
    for name, _, default in FAMILIES[family].params:
        if name == pname:
            return "required" if default is _REQUIRED else _format_value(default) if default is not None else "None"
    return "?"


def _make(family: str, args: tuple, kwargs: dict) -> Distribution:
    spec = FAMILIES[family]
    shape = kwargs.pop("shape", None)
    ordered = bool(kwargs.pop("ordered", False))
    if ordered and (spec.discrete or spec.multivariate or spec.support not in ("real", "positive")):
        raise ParameterError(
            f"{family}: `ordered=True` needs a continuous family on the real line or the positive half-line "
            f"(Stan's ordered / positive_ordered), got {family} (support {spec.support}).", argument="ordered")
    if ordered and (shape is None or np.ndim(shape) == 0 and int(shape) < 2 or np.ndim(shape) > 0
                    and int(np.asarray(shape).reshape(-1)[-1]) < 2):
        raise ParameterError(f"{family}: `ordered=True` needs shape= with at least 2 elements on the last axis, "
                             f"got shape={shape!r}.", argument="shape")
    names = [p[0] for p in spec.params]
    if len(args) > len(names):
        raise ParameterError(
            f"{family} takes at most {len(names)} positional parameters ({', '.join(names) or 'none'}), "
            f"got {len(args)}."
        )
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise ParameterError(
                f"{family}: unknown parameter `{key}`. Expected one of: {', '.join(names) or 'none'} (and shape)."
            )
        if key in values:
            raise ParameterError(f"{family}: `{key}` given twice (by position and by name).")
        values[key] = value
    params = {}
    for name, rule, default in spec.params:
        value = values.get(name, default)
        if value is _REQUIRED:
            raise ParameterError(f"{family}: `{name}` is required. Example: {family}({', '.join(names)}).")
        if isinstance(value, list):
            value = np.asarray(value, dtype=float)
        params[name] = value
    invalid = None
    for name, rule, _ in spec.params:
        try:
            _check(family, name, rule, params[name])
        except ParameterError as error:
            if not inside_model():
                raise
            invalid = invalid or error
    if family == "MvNormal" and (params["cov"] is None) == (params["chol"] is None):
        raise ParameterError("MvNormal: give exactly one of `cov` or `chol`.")
    if family == "Uniform" and is_literal(params["lower"]) and is_literal(params["upper"]):
        if np.any(np.asarray(params["lower"]) >= np.asarray(params["upper"])):
            raise ParameterError(
                f"Uniform: `lower` must be below `upper`, got lower={_format_value(params['lower'])}, "
                f"upper={_format_value(params['upper'])}."
            )
    if shape is not None:
        shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    return Distribution(family, MappingProxyType(params), shape, invalid, ordered)


def _constructor(family: str):
    spec = FAMILIES[family]
    signature = ", ".join(p[0] for p in spec.params)

    def make(*args, **kwargs) -> Distribution:
        return _make(family, args, kwargs)

    make.__name__ = make.__qualname__ = family
    make.__doc__ = (f"{family}({signature}{', ' if signature else ''}shape=None, ordered=False): a {family} "
                    "distribution record.")
    return make


Normal = _constructor("Normal")
HalfNormal = _constructor("HalfNormal")
StudentT = _constructor("StudentT")
HalfStudentT = _constructor("HalfStudentT")
Cauchy = _constructor("Cauchy")
HalfCauchy = _constructor("HalfCauchy")
Laplace = _constructor("Laplace")
Logistic = _constructor("Logistic")
LogNormal = _constructor("LogNormal")
Exponential = _constructor("Exponential")
Gamma = _constructor("Gamma")
InverseGamma = _constructor("InverseGamma")
Beta = _constructor("Beta")
Uniform = _constructor("Uniform")
Flat = _constructor("Flat")
HalfFlat = _constructor("HalfFlat")
Weibull = _constructor("Weibull")
Bernoulli = _constructor("Bernoulli")
Binomial = _constructor("Binomial")
Poisson = _constructor("Poisson")
NegativeBinomial = _constructor("NegativeBinomial")
Categorical = _constructor("Categorical")
Dirichlet = _constructor("Dirichlet")
MvNormal = _constructor("MvNormal")
LKJCholesky = _constructor("LKJCholesky")


def _components(value: Any) -> int | None:
    """The static size of the last axis (numpy, jax or PyTensor with a known shape), else None."""
    shape = np.shape(value) if is_literal(value) else getattr(getattr(value, "type", None), "shape", None) or (
        getattr(value, "shape", None))
    try:
        return int(shape[-1]) if shape else None
    except (TypeError, ValueError):
        return None


def NormalMixture(w: Any, mu: Any, sigma: Any, shape: Any = None) -> "Mixture":  # noqa: N802  (a family name)
    """``sum_k w[k] Normal(mu[k], sigma[k])``, as ``pm.NormalMixture``: a :class:`Mixture` of Normals."""
    sizes = {name: _components(value) for name, value in (("w", w), ("mu", mu), ("sigma", sigma))}
    known = {size for size in sizes.values() if size is not None}
    if len(known) != 1:
        raise ParameterError(
            "NormalMixture: `w`, `mu` and `sigma` need one entry per component on their last axis, got sizes "
            f"{sizes}" + (" (none known: give w as numbers or a vector of static length)" if not known else "") + ".",
            argument="w")
    count = known.pop()
    return Mixture(w, [Normal(mu[..., k], sigma[..., k]) for k in range(count)], shape)


@dataclass(frozen=True, eq=False)
class Mixture:
    """A finite mixture of continuous univariate ``components`` with weights ``w`` (last axis, summing to 1):
    ``p(x) = sum_k w[k] * component_k(x)``, as ``pm.Mixture`` and NumPyro's ``MixtureGeneral``."""

    w: Any
    components: tuple[Distribution, ...]
    shape: tuple[int, ...] | None = None

    family = "Mixture"
    ordered = False

    def __post_init__(self) -> None:
        components = tuple(self.components)
        object.__setattr__(self, "components", components)
        if len(components) < 2:
            raise ParameterError(f"Mixture: give at least 2 components, got {len(components)}.", argument="components")
        for index, component in enumerate(components):
            if not isinstance(component, Distribution) or component.discrete or component.spec.multivariate \
                    or component.family == "NormalMixture" or component.ordered:
                kind = component.family if isinstance(component, Distribution) else type(component).__name__
                raise ParameterError(
                    f"Mixture: component {index} must be a continuous univariate record such as Normal(0, 1), got "
                    f"{kind}. Discrete and multivariate components are not supported.", argument="components")
        if is_literal(self.w):
            _check("Mixture", "w", "simplex", self.w)
            if np.shape(self.w)[-1:] != (len(components),):
                raise ParameterError(f"Mixture: `w` needs one weight per component ({len(components)}) on its last "
                                     f"axis, got shape {np.shape(self.w)}.", argument="w", value=self.w)
        if self.shape is not None:
            shape = self.shape
            object.__setattr__(self, "shape", (int(shape),) if isinstance(shape, numbers.Integral)
                               else tuple(int(s) for s in shape))

    @property
    def discrete(self) -> bool:
        return False

    @property
    def invalid(self) -> ParameterError | None:
        return next((c.invalid for c in self.components if c.invalid is not None), None)

    @property
    def params(self) -> Mapping[str, Any]:
        """``w`` and each component's parameters as ``<k>.<name>`` (for dependency tracking and reports)."""
        values: dict[str, Any] = {"w": self.w}
        for index, component in enumerate(self.components):
            values.update({f"{index}.{k}": v for k, v in component.params.items()})
        return MappingProxyType(values)

    def describe(self, namer: Callable[[Any], str | None] | None = None) -> str:
        weights = (namer(self.w) if namer else None) or _format_value(self.w)
        inner = ", ".join(c.describe(namer) for c in self.components)
        shape = f", shape={self.shape}" if self.shape is not None else ""
        return f"Mixture({weights}, [{inner}]{shape})"

    def __repr__(self) -> str:
        return self.describe()
