"""The one contract between Resilient's core and a backend adapter, and the adapter registry.

An adapter turns a model (a shared-API :class:`~resilient.model.Model`, or a native
NumPyro function / PyMC model) into a :class:`CompiledModel`: log density and gradient on
the unconstrained space (whole and per site, for attribution), initial points, and NUTS
run in bounded chunks. Adapters live in ``resilient.adapters`` (the repository's ``adapters/``
folder) and are imported lazily by name, so ``import resilient`` imports no backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from resilient.errors import BackendUnavailableError

__all__ = [
    "NUTSSettings", "Chunk", "NUTSRun", "CompiledModel", "Adapter", "ADAPTERS", "get_adapter", "Capabilities",
    "CAPABILITIES", "capabilities", "DEFAULT_BACKEND", "PRIOR_SIMULATORS", "simulate_prior", "HELPERS", "helper",
    "wraps_language",
    "LANGUAGES", "LANGUAGE_NAMES",
    "available_backends", "STAT_NAMES", "EXTRAS", "install_hint", "require",
]

#: sample_stats every adapter reports per draw, with ArviZ's names (an adapter may add its backend's others).
STAT_NAMES = ("diverging", "tree_depth", "n_steps", "energy", "lp", "acceptance_rate", "step_size")


@dataclass(frozen=True)
class NUTSSettings:
    """One NUTS run. ``deadline`` is a ``time.monotonic()`` value; the adapter stops at the
    first chunk boundary past it. ``initial_points`` are unconstrained, shape (chains, dimension)."""

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    target_accept: float = 0.8
    random_seed: int | None = None
    initial_points: np.ndarray | None = None
    max_tree_depth: int = 10
    chunk_size: int = 100  # draws a chunk, or whole multiples of it (an engine sampling in the background)
    deadline: float | None = None
    progressbar: bool = False
    resume_state: Any = None  # a SamplerState (resilient.sampler_state) of this engine: continue that run
    mass_matrix: str = "diag"  # also "low_rank", "full", "diag_grad": each adapter's Capabilities.mass_matrices
    cores: int | None = None  # chains at a time (PyMC: processes, nutpie: threads); None: the adapter's own
    #: a resilient.warm_start.WarmStart: start from a saved adaptation with a short, checked window (the engine's
    #: run_nuts hands the run to resilient.warm_start.run_warm, which falls back to the full warm-up)
    warm_state: Any = None


@dataclass
class Chunk:
    """Draws finished together: arrays are (len(chains), n_draws, *event_shape)."""

    chains: tuple[int, ...]
    start: int  # index of the first draw of this chunk within its phase
    warmup: bool
    posterior: dict[str, np.ndarray]  # constrained latents and deterministics
    sample_stats: dict[str, np.ndarray]  # STAT_NAMES, each (len(chains), n_draws)
    state: Any = None  # the SamplerState of the chunk's chains after it (None where the engine keeps none)

    @property
    def size(self) -> int:
        return next(iter(self.sample_stats.values())).shape[1] if self.sample_stats else 0


@dataclass
class NUTSRun:
    """How a run ended. Draws reached the caller through ``on_chunk``."""

    completed: bool
    reason: str = ""  # "deadline", "stopped", "interrupted", "" when completed
    warmup_seconds: float = 0.0
    sampling_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CompiledModel(Protocol):
    """A model ready to evaluate and sample on one backend. ``x`` is a flat float64 vector."""

    backend: str
    dimension: int
    latent_names: tuple[str, ...]  # free variables in the order of their blocks in x
    sites: Mapping[str, Any]  # name -> resilient.model.Site (native models: best effort)

    def blocks(self) -> dict[str, slice]:
        """Where each latent's unconstrained values sit in ``x``."""

    def log_density(self, x: np.ndarray) -> float:
        """Log density on the unconstrained space, Jacobian included."""

    def log_density_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """As :meth:`log_density`, with the gradient (NaN/inf passed through, never raised)."""

    def site_log_densities(self, x: np.ndarray) -> dict[str, float]:
        """Each site's summed log-density term (latent and observed)."""

    def site_gradients(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """For each site, the gradient of its term with respect to each latent's block of ``x``."""

    def constrain(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Constrained values of the latents and deterministics at ``x``."""

    def unconstrain(self, values: Mapping[str, Any]) -> np.ndarray:
        """The unconstrained vector for constrained values of every latent (inverse of constrain)."""

    def initial_point(self, strategy: str = "default", random_seed: int | None = None) -> np.ndarray:
        """``default``: the backend's own; ``uniform``: Stan's uniform(-2, 2); ``prior``: a prior draw."""

    def observed_data(self) -> dict[str, np.ndarray]:
        """Observed values by site name."""

    # Optional: ``datatree_layout() -> {"coords": ..., "dims": ..., "constant_data": ...}``, the names
    # the backend's own converter gives (pm.Model coords/dims, pm.Data); see resilient.draws.to_datatree.
    # Optional: ``log_likelihood(posterior) -> {observed site: (chain, draw, *observed_shape)}``, the pointwise
    # log density of every observed site at the draws of ``posterior`` ({name: (chain, draw, ...)}, as the
    # posterior group holds them), computed as the backend does (numpyro.infer.log_likelihood,
    # pm.compute_log_likelihood); resilient.sample adds it as the log_likelihood group az.loo reads.

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        """Warm up and sample in chunks; call ``on_chunk`` after each (return False to stop).

        When the backend's sampler fails part-way (PyMC's "Bad initial energy", a chain worker
        that died, JAX running out of device memory), it raises
        :class:`~resilient.errors.SamplerError` after delivering the draws finished before the
        failure; an error raised by ``on_chunk`` propagates as is.
        """


class Adapter(Protocol):
    """A backend: compiles models into :class:`CompiledModel`."""

    name: str

    def compile(self, model: Any) -> CompiledModel:
        """Compile a shared-API Model, or a native model object this backend understands."""


@dataclass(frozen=True)
class Capabilities:
    """What an adapter (an engine and the models it runs) can do. Declared here beside the registry, so core
    asks it without importing a backend; each adapter class carries its own as ``capabilities``, and the
    conformance test holds the two equal. Core reads these fields instead of comparing engine names."""

    language: str  #: the modelling language of the models it runs natively ("numpyro" or "pymc")
    mass_matrices: tuple[str, ...] = ("diag",)  #: adaptations it offers ("full", "diag_grad", "low_rank")
    resume: bool = False  #: continues a run from a checkpoint's sampler state
    with_data: bool = False  #: a compiled model takes another data set of the same shapes without compiling
    discrete_latents: bool = False  #: samples discrete latents (PyMC's compound step)
    enumeration: bool = False  #: marginalises discrete sites marked for enumeration
    float32: bool = False  #: runs a model in float32 when asked
    #: adds the pointwise log_likelihood group by default, as the backend's own converter does (az.from_numpyro)
    log_likelihood_by_default: bool = False
    #: auto weighs it against nutpie by timing the compiled gradient (a pm.Model can run on either)
    weighed_against_nutpie: bool = False
    #: draws a model's prior predictive with the backend's own forward sampler (SBC's simulations; see
    #: :func:`simulate_prior`)
    prior_simulation: bool = False
    #: how a reason names it ("NumPyro's NUTS")
    title: str = ""
    #: samples continuous latents only (no compound step, no enumeration)
    continuous_only: bool = False
    #: languages besides its own whose native models it runs (nutpie: NumPyro functions, through its function
    #: interface), so naming the engine does not imply the model's language
    foreign_native: tuple[str, ...] = ()
    #: pm.sample's compute backends (``backend="numba"``, ``"jax"``, ``"c"``) it is the engine for here
    compute_backends: tuple[str, ...] = ()
    #: its native models run in float32 unless the user says otherwise (jax without x64), the raw habit that
    #: ``float32=None`` keeps
    float32_by_default: bool = False
    #: its compilation has a one-off cost per process (Numba's first compile) that ``engine="auto"`` weighs by
    #: ski rental against the seconds the language's own engine has sampled
    one_off_compile: bool = False
    #: the engine whose NUTS it runs on its language's models, where that engine's own language is another:
    #: ``engine=<that name>`` (pm.sample's ``nuts_sampler=``) on a model of its language selects it
    #: (pymc_numpyro: ``nuts_sampler="numpyro"`` on a pm.Model, as pm.sample runs it)
    nuts_of: str = ""
    #: ``engine="auto"`` runs its language's default-size runs on it until the process has compiled for the
    #: language's ``one_off_compile`` engine (``resilient.engine.COLD_START_MIN_ITERATIONS``), its seconds counting
    #: as the ski rental's rent: measured the fastest cold start for a pm.Model (NumPyro's NUTS over PyMC's JAX
    #: translation; ``benchmarks/engines.py``)
    auto_cold: bool = False


#: backend name -> (module, attribute, package that must be installed)
ADAPTERS: dict[str, tuple[str, str, str]] = {
    "numpyro": ("resilient.adapters.numpyro", "NumPyroAdapter", "numpyro"),
    "pymc": ("resilient.adapters.pymc", "PyMCAdapter", "pymc"),
    "nutpie": ("resilient.adapters.nutpie", "NutpieAdapter", "nutpie"),
    "pymc_numpyro": ("resilient.adapters.pymc_numpyro", "PyMCNumPyroAdapter", "numpyro"),
}

#: backend name -> what it can do (see :class:`Capabilities`).
CAPABILITIES: dict[str, Capabilities] = {
    "numpyro": Capabilities("numpyro", ("diag", "full"), resume=True, with_data=True, enumeration=True, float32=True,
                            log_likelihood_by_default=True, prior_simulation=True, title="NumPyro's NUTS",
                            float32_by_default=True, foreign_native=("pymc",)),
    "pymc": Capabilities("pymc", ("diag", "full", "diag_grad"), resume=True, discrete_latents=True,
                         weighed_against_nutpie=True, prior_simulation=True, title="PyMC's NUTS", compute_backends=("c",)),
    "nutpie": Capabilities("pymc", ("diag", "low_rank"), resume=True, title="nutpie", continuous_only=True,
                           foreign_native=("numpyro",), compute_backends=("numba", "jax"), one_off_compile=True),
    "pymc_numpyro": Capabilities("pymc", ("diag", "full"), resume=True, title="NumPyro's NUTS over PyMC's JAX "
                                 "translation", continuous_only=True, nuts_of="numpyro", auto_cold=True),
}


#: the language a shared-API model is compiled in when nothing else decides it.
DEFAULT_BACKEND = "numpyro"

#: the modelling languages (a model's ``backend``), each the name of its own engine too.
LANGUAGES: tuple[str, ...] = tuple(dict.fromkeys(c.language for c in CAPABILITIES.values()))
#: how a message names each language.
LANGUAGE_NAMES: dict[str, str] = {"numpyro": "NumPyro", "pymc": "PyMC"}

#: language -> (module, function) that draws a model's prior predictive by the backend's own forward sampler
#: (NumPyro's effect handlers, ``pm.draw``): ``simulate_prior(function, kwargs, *, native, random_seed)``.
#: a language's helpers that core reaches through the registry, by topic (imported when first asked):
#: pm.to_inference_data's extra groups, Bambi's front end.
HELPERS: dict[tuple[str, str], tuple[str, str]] = {
    ("pymc", "idata"): ("resilient.adapters.pymc.idata", "pymc"),
    ("pymc", "bambi"): ("resilient.adapters.pymc.bambi", "bambi"),
}


def helper(language: str, topic: str) -> Any:
    """The module of ``language``'s helpers for ``topic`` (:data:`HELPERS`), imported now, so core never
    imports an adapter module; a missing package is named with the extra to install."""
    module_name, package = HELPERS[(language, topic)]
    require(package, f"{topic} for {LANGUAGE_NAMES.get(language, language)} models")
    return importlib.import_module(module_name)


PRIOR_SIMULATORS: dict[str, tuple[str, str]] = {
    "numpyro": ("resilient.adapters.numpyro.prior", "simulate_prior"),
    "pymc": ("resilient.adapters.pymc.prior", "simulate_prior"),
}


def wraps_language(engine: str) -> bool:
    """``engine`` samples another adapter's compiled model (its language's: nutpie samples PyMC's)."""
    return engine in CAPABILITIES and CAPABILITIES[engine].language != engine


def capabilities(name: str) -> Capabilities:
    """What the adapter registered as ``name`` can do (a :class:`Capabilities`); imports nothing."""
    try:
        return CAPABILITIES[name]
    except KeyError:
        raise BackendUnavailableError(f"Unknown backend {name!r}. Expected one of: {', '.join(CAPABILITIES)}.") from None


#: optional package -> the extra of pyproject.toml that installs it (``pip install "resilient[<extra>]"``).
#: The core (numpy, ArviZ, netCDF4, matplotlib, rich, jinja2) is always there; each backend and
#: Dask are extras, so a NumPyro user does not install PyMC, PyTensor, Numba and nutpie.
EXTRAS: dict[str, str] = {
    "numpyro": "numpyro", "jax": "numpyro", "funsor": "numpyro",
    "pymc": "pymc", "pytensor": "pymc", "nutpie": "pymc", "numba": "pymc",
    "dask": "dask", "distributed": "dask",
}


def _importable(package: str) -> bool:
    """``package`` can be imported, found without importing it. A module already in ``sys.modules`` is importable
    (``None`` there hides it): its ``__spec__``, which ``find_spec`` reads, would import a module that another
    package registered lazily (after PyMC and nutpie, ``numpyro`` is one: reading its spec imported NumPyro and
    JAX, 0.6-2.2 s, in every loop decision)."""
    if package in sys.modules:
        return sys.modules[package] is not None
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a sys.modules entry of None: hidden, as if not installed
        return False


def install_hint(package: str) -> str:
    """The command that installs ``package`` with Resilient: ``pip install "resilient[<extra>]"``."""
    extra = EXTRAS.get(package)
    return f'pip install "resilient[{extra}]"' if extra else f"pip install {package}"


def require(package: str, purpose: str) -> None:
    """Raise :class:`~resilient.errors.BackendUnavailableError` naming the extra to install when
    ``package`` cannot be imported; ``purpose`` says what needs it (``"sample_many and sbc"``).

    Call it before any work starts (no output folder written, no cluster started), so the user
    sees the fix, not a ``ModuleNotFoundError`` from deep inside a run."""
    if not _importable(package):
        raise BackendUnavailableError(
            f"{purpose} needs the `{package}` package, which is not installed. Install it with "
            f"`{install_hint(package)}` (or `pip install \"resilient[all]\"` for every backend)."
        )


def available_backends() -> list[str]:
    return [name for name, (_, _, package) in ADAPTERS.items() if _importable(package)]


def simulate_prior(name: str, function: Any, kwargs: Mapping[str, Any], *, native: bool,
                   random_seed: int) -> dict[str, np.ndarray]:
    """One joint draw of every unobserved site of ``function(**kwargs)`` (latents, deterministics and the sites
    whose data arguments are None) by the forward sampler of ``name``'s language (an engine's name gives its
    language's: nutpie's models are PyMC's). ``native``: ``function`` is written for that backend (a NumPyro
    function, a builder of a ``pm.Model``); else it is a shared-API model, translated. The adapter's module is
    imported now, through this registry, so core never imports it."""
    language = capabilities(name).language
    if not capabilities(language).prior_simulation or language not in PRIOR_SIMULATORS:
        raise BackendUnavailableError(f"Backend {name!r} cannot simulate from a model's prior; "
                                      f"{', '.join(repr(n) for n in PRIOR_SIMULATORS)} can.")
    require(ADAPTERS[language][2], f"Simulating from the prior on {language!r}")
    module_name, attribute = PRIOR_SIMULATORS[language]
    return getattr(importlib.import_module(module_name), attribute)(function, kwargs, native=native,
                                                                     random_seed=random_seed)


def get_adapter(name: str, **options: Any) -> Adapter:
    """The adapter registered as ``name``, imported now."""
    if name not in ADAPTERS:
        raise BackendUnavailableError(
            f"`backend` must be one of {', '.join(repr(n) for n in ADAPTERS)}, got {name!r}."
        )
    module_name, attribute, package = ADAPTERS[name]
    require(package, f"Backend {name!r}")
    return getattr(importlib.import_module(module_name), attribute)(**options)
