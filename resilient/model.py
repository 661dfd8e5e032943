"""The shared model API: ``sample``, ``deterministic`` and the trace that runs a model.

A model is a plain function that calls :func:`sample` and :func:`deterministic` with
records from :mod:`resilient.distributions`. It runs only inside a :class:`Trace`, which a
backend adapter opens with its own :class:`SiteHandler`; the trace applies rewrites and
reparameterisations, records every site, and passes the backend's tensors through.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

from resilient.context import CURRENT as _CURRENT
from resilient.context import inside_model
from resilient.distributions import IMPROPER_FAMILIES, Distribution, Mixture, Truncated
import numpy as np

from resilient.errors import ModelError, ParameterError
from resilient.rewrites import NONCENTERABLE, can_noncenter, noncentered, stabilize

__all__ = ["sample", "deterministic", "factor", "Model", "NativeModel", "Site", "SiteHandler", "Trace", "inside_model", "current_trace"]


class SiteHandler(Protocol):
    """What a backend does at each site; implemented once per adapter."""

    math: Any  # the backend's array namespace (jax.numpy, pytensor.tensor)

    def sample_site(self, name: str, dist: Distribution | Truncated, observed: Any) -> Any: ...

    def deterministic_site(self, name: str, value: Any) -> Any: ...

    def factor_site(self, name: str, log_density: Any) -> None:
        """Add ``log_density`` (summed) to the model's log density as its own term."""


@dataclass(frozen=True)
class Site:
    """One site as the model declared it and as it was sent to the backend."""

    name: str
    kind: str  # "latent", "observed", "deterministic", "factor"
    declared: Distribution | Truncated | None  # what the user wrote
    used: Distribution | Truncated | None  # after rewrites (same object when none applied)
    rewrites: tuple[Any, ...] = ()  # resilient.rewrites.Rewrite records: applied if Model.fix, else suggested
    noncentered: bool = False
    description: str = ""  # the declared record, with tensors named by their sites (for people only)
    inputs: tuple[str, ...] = ()  # sites whose values are parameters of this one
    family: str | None = None  # the shared-API family name ("Normal"), native sites too where known
    #: shared-API parameter name ("mu", "sigma") -> the latent sites it depends on (directly or through
    #: an expression); what the loop reads to find centred hierarchical sites, never ``description``.
    parameter_inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: the adapter can sample this site non-centred (shared API: always for NONCENTERABLE families;
    #: native models: only where the adapter really rewrites the site).
    noncenterable: bool = False

    @property
    def improper_prior(self) -> bool:
        """A latent with an improper prior (Flat, HalfFlat), in any dialect (native sites by their ``family``);
        a truncated one is not improper."""
        return self.kind == "latent" and self.family in IMPROPER_FAMILIES and not isinstance(self.declared, Truncated)


@dataclass(frozen=True, eq=False)
class Model:
    """A shared-API model function with its data, plus how to transform it.

    ``fix`` applies the stabilising rewrites of :mod:`resilient.rewrites`;
    ``noncentered`` lists latent Normal sites to sample as ``loc + scale * <name>_raw``.
    """

    function: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    fix: bool = True
    noncentered: frozenset[str] = frozenset()
    float32: bool = False
    compile_backend: str | None = None  # nutpie's: "numba" or "jax" (pm.sample's backend=)
    gradient_backend: str | None = None  # nutpie's JAX backend: "pytensor" or "jax"

    @property
    def name(self) -> str:
        return getattr(self.function, "__name__", "model")

    def with_options(self, **changes: Any) -> "Model":
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class NativeModel:
    """A model written for one backend: a NumPyro model function (with its arguments) or a
    ``pm.Model``. ``fix`` and ``noncentered`` mean the same as for :class:`Model`, applied
    with the backend's own tools (NumPyro effect handlers, ``LocScaleReparam``)."""

    backend: str  # "numpyro" or "pymc"
    model: Any
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    fix: bool = True
    noncentered: frozenset[str] = frozenset()
    float32: bool = False
    compile_backend: str | None = None  # nutpie's: "numba" or "jax" (pm.sample's backend=)
    gradient_backend: str | None = None  # nutpie's JAX backend: "pytensor" or "jax"

    @property
    def name(self) -> str:
        return getattr(self.model, "__name__", None) or getattr(self.model, "name", None) or "model"

    def with_options(self, **changes: Any) -> "NativeModel":
        return replace(self, **changes)


#: a model's options, compared by value by :func:`same_model` (the rest, the function and its data, by identity)
_OPTIONS = frozenset({"backend", "fix", "noncentered", "float32", "compile_backend", "gradient_backend"})


def same_model(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are one model with the same options: the same function (or ``pm.Model``) and data objects,
    equal options. Models compare by identity (they hold functions and arrays), so a variant made again
    (``with_options``) is another key of a compile cache; this finds the one compiled before."""
    from dataclasses import fields

    if a is b:
        return True
    if type(a) is not type(b) or not isinstance(a, (Model, NativeModel)):
        return False
    return all(getattr(a, f.name) == getattr(b, f.name) if f.name in _OPTIONS else getattr(a, f.name) is getattr(b, f.name)
               for f in fields(a))


def cached_model(cache: Mapping[tuple, Any], engine: str, model: Any) -> Any:
    """The model object under which ``cache`` (keyed ``(engine, model)``) already holds ``model``'s compiled form,
    else ``model`` itself."""
    return next((m for (name, m) in cache if name == engine and same_model(m, model)), model)


class Trace:
    """Runs a model once under a backend handler, recording sites in order."""

    def __init__(self, model: Model, handler: SiteHandler) -> None:
        self.model = model
        self.handler = handler
        self.sites: dict[str, Site] = {}
        self._names: dict[int, str] = {}

    def run(self) -> dict[str, Site]:
        token = _CURRENT.set(self)
        try:
            self.model.function(*self.model.args, **dict(self.model.kwargs))
        finally:
            _CURRENT.reset(token)
        return self.sites

    def name_of(self, value: Any) -> str | None:
        """The site that produced this tensor, for readable messages."""
        return self._names.get(id(value))

    def _remember(self, name: str, value: Any) -> None:
        self._names[id(value)] = name

    def _claim(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ModelError(f"Site names must be non-empty strings, got {name!r}.")
        if name in self.sites:
            raise ModelError(
                f"Site `{name}` is declared twice. Give each sample/deterministic call its own name.",
                site=name,
            )

    def sample(self, name: str, dist: Any, observed: Any) -> Any:
        self._claim(name)
        if not isinstance(dist, (Distribution, Truncated, Mixture)):
            kind = f"{type(dist).__module__}.{type(dist).__name__}"
            raise ModelError(
                f"sample({name!r}, ...): the distribution must be a resilient record such as "
                f"resilient.distributions.Normal(0, 1), got {kind}. "
                "Native NumPyro or PyMC models can be passed to resilient.sample as they are.",
                site=name,
            )
        invalid = (dist.invalid or dist.base.invalid) if isinstance(dist, Truncated) else dist.invalid
        if invalid is not None:
            raise ParameterError(
                f"{name} ~ {dist.describe(self.name_of)}: {invalid}",
                site=name, argument=invalid.argument, value=invalid.value,
            )
        description = dist.describe(self.name_of)
        kind = "observed" if observed is not None else "latent"
        if observed is not None:
            _check_observed(name, dist, description, observed)
        stable, rewrites = stabilize(dist, observed=observed is not None, namer=self.name_of)
        used = stable if self.model.fix else dist
        inputs = self._inputs(dist)
        base = dist.base if isinstance(dist, Truncated) else dist
        facts = dict(description=description, inputs=inputs, family=base.family,
                     parameter_inputs=self._parameter_inputs(base),
                     noncenterable=kind == "latent" and can_noncenter(used))
        if kind == "latent" and name in self.model.noncentered:
            value = self._sample_noncentered(name, used)
            self.sites[name] = Site(name, kind, dist, used, rewrites, True, **facts)
        else:
            self.sites[name] = Site(name, kind, dist, used, rewrites, False, **facts)
            value = self.handler.sample_site(name, used, observed)
        self._remember(name, value)
        return value

    def _inputs(self, dist: Any) -> tuple[str, ...]:
        values = list(dist.base.params.values()) + [dist.lower, dist.upper] if isinstance(dist, Truncated) else list(
            dist.params.values())
        names = [self.name_of(v) for v in values if v is not None]
        return tuple(dict.fromkeys(n for n in names if n))

    def _parameter_inputs(self, dist: Distribution) -> dict[str, tuple[str, ...]]:
        named = {key: self.name_of(value) for key, value in dist.params.items() if value is not None}
        return {key: (name,) for key, name in named.items() if name}

    def _sample_noncentered(self, name: str, dist: Any) -> Any:
        if not (isinstance(dist, Distribution) and dist.family in NONCENTERABLE):
            raise ModelError(
                f"Site `{name}` cannot be non-centred: it is {dist.describe(self.name_of)}; only location-scale "
                f"families can ({', '.join(NONCENTERABLE)}).",
                site=name,
            )
        raw_name = f"{name}_raw"
        self._claim(raw_name)
        shape = dist.shape if dist.shape is not None else _broadcast_shape(self.handler.math, dist)
        standard, back = noncentered(dist, shape)
        raw = self.handler.sample_site(raw_name, standard, None)
        self.sites[raw_name] = Site(raw_name, "latent", standard, standard, (), False, standard.describe())
        return self.handler.deterministic_site(name, back(raw, self.handler.math))

    def factor(self, name: str, log_density: Any) -> None:
        self._claim(name)
        self.sites[name] = Site(name, "factor", None, None, description="factor")
        self.handler.factor_site(name, log_density)

    def deterministic(self, name: str, value: Any) -> Any:
        self._claim(name)
        self.sites[name] = Site(name, "deterministic", None, None)
        value = self.handler.deterministic_site(name, value)
        self._remember(name, value)
        return value


def _check_observed(name: str, dist: Any, description: str, observed: Any) -> None:
    """Observed data (numbers, lists, numpy arrays) outside the family's support, named before a backend sees
    them: PyMC casts 2.5 to the integer 2 for a count family, NumPyro's Poisson density is finite at 2.5."""
    from resilient.distributions import is_literal, outside_support

    if not is_literal(observed):
        return
    base = dist.base if isinstance(dist, Truncated) else dist
    found = outside_support(getattr(base, "family", None), observed)
    if found is None:
        return
    where, value, count, words = found
    raise ModelError(
        f"{name} ~ {description}: observed value {name}{where} = {value:g} is outside the support ({count} of "
        f"{np.size(observed)} values); every observed value must be {words} for {base.family}.",
        site=name, value=value, fix=f"correct or drop the data of {name}, or give it a family whose support holds them")


def _broadcast_shape(math: Any, dist: Distribution) -> tuple[int, ...]:
    shapes = []
    for value in dist.params.values():
        shape = getattr(value, "shape", ())
        try:
            shapes.append(tuple(int(s) for s in shape))
        except TypeError as error:  # symbolic shapes (PyTensor): ask for static ones
            raise ModelError(
                f"Cannot infer the shape of {dist.describe()} for non-centring; pass shape= to it."
            ) from error
    import numpy as np

    return tuple(np.broadcast_shapes(*shapes)) if shapes else ()


def current_trace() -> Trace:
    trace = _CURRENT.get()
    if trace is None:
        raise ModelError(
            "sample() and deterministic() only work inside a model run by Resilient. "
            "Define a function that calls them and pass it to resilient.sample(model, ...)."
        )
    return trace


def sample(name: str, dist: Distribution | Truncated, obs: Any = None, *, observed: Any = None) -> Any:
    """Declare a random variable; ``obs``/``observed`` makes it a likelihood term.

    Returns the backend's value (a jax array or a PyTensor variable), so arithmetic on it
    builds the model as it would in NumPyro or PyMC.
    """
    if obs is not None and observed is not None:
        raise ModelError(f"sample({name!r}, ...): give `obs` or `observed`, not both.", site=name)
    return current_trace().sample(name, dist, obs if obs is not None else observed)


def deterministic(name: str, value: Any) -> Any:
    """Record a derived quantity in the posterior under ``name``."""
    return current_trace().deterministic(name, value)


def factor(name: str, log_density: Any) -> None:
    """Add a term to the log density (Stan's ``target +=``, ``numpyro.factor``, ``pm.Potential``).

    ``log_density`` is summed; it is reported and attributed by preflight like any site.
    """
    current_trace().factor(name, log_density)


def data_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[tuple, dict]:
    """Data arguments with lists turned into numpy arrays (backends want arrays)."""
    import numpy as np

    def convert(value: Any) -> Any:
        return np.asarray(value) if isinstance(value, list) else value

    return tuple(convert(a) for a in args), {k: convert(v) for k, v in kwargs.items()}
