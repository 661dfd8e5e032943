"""NUTS in chunks: the jitted chunk runner, resuming, progress, and JAX failures as SamplerError."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator
import numpy as np
import jax
from resilient.backend import NUTSSettings
from resilient.errors import SamplerError


CHAIN_METHODS = ("parallel", "vectorized")


@dataclass
class _Runner:
    """NUTS's compiled init and chunk functions, reused across runs. Both take the target
    acceptance as an argument, so the loop's ``target_accept`` ladder does not recompile, and with
    ``takes_data`` the model's data arrays, so a model on another data set of the same shapes
    (``with_data``) does not either."""

    init: Callable
    chunk: Callable
    length: int
    takes_data: bool = False

    def start(self, keys: Any, z: Any, target: Any, data: tuple) -> Any:
        return self.init(keys, z, target, data) if self.takes_data else self.init(keys, z, target)

    def step(self, state: Any, n: Any, target: Any, data: tuple) -> Any:
        return self.chunk(state, n, target, data) if self.takes_data else self.chunk(state, n, target)


def _resume_iteration(state: Any, chains: int, dimension: int) -> int:
    """The iteration a saved sampler state stopped at (the same for every chain)."""
    z = np.asarray(getattr(state, "z", None))
    if not hasattr(state, "i") or z.shape != (chains, dimension):
        raise ValueError(
            f"`resume_state` must be the state of a Chunk from a NumPyro run of this model with {chains} chains "
            f"(z of shape ({chains}, {dimension})), got {type(state).__name__} with z of shape {z.shape}."
        )
    return int(np.asarray(state.i).reshape(-1)[0])


@contextlib.contextmanager
def _jax_failure(where: str) -> Iterator[None]:
    """JAX failing while it runs NUTS (device out of memory, a host callback that raised) as a
    :class:`SamplerError`; the chunks before it have reached ``on_chunk``."""
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        text = lines[0].removesuffix(" Traceback (most recent call last):")
        if len(lines) > 1 and "Traceback" in lines[0]:  # a host callback raised: say what it raised
            text += f" {lines[-1].strip()}"
        memory = "RESOURCE_EXHAUSTED" in text
        raise SamplerError(f"JAX stopped the NumPyro run {where}: {text}"
                           + ("; the device ran out of memory" if memory else ""),
                           backend="numpyro", kind="resources" if memory else "crash") from error


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(settings: NUTSSettings, total: int) -> Any:
    """A per-chunk progress bar (draws per chain) when asked for, else nothing."""
    if not settings.progressbar:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc="NUTS (numpyro)", unit="draw")


def state_record(compiled: Any, state: Any, settings: NUTSSettings, seed: int, tune_done: int, draws_done: int) -> Any:
    """NumPyro's ``HMCState`` (all chains, on the host) as a :class:`~resilient.sampler_state.SamplerState`:
    positions, step sizes, inverse mass matrices and counts, and every leaf of the ``HMCState`` by its path
    (``native``), from which :func:`hmc_state` rebuilds it exactly: a resumed run continues bitwise."""
    from resilient.sampler_state import SamplerState, cached_fingerprint

    chains = int(settings.chains)
    native = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
    matrix = state.adapt_state.inverse_mass_matrix
    return SamplerState(
        engine="numpyro", chains=tuple(range(chains)), positions=np.asarray(state.z),
        step_size=np.asarray(state.adapt_state.step_size).reshape(chains),
        draws_done=np.full(chains, draws_done, np.int64), tune_done=np.full(chains, tune_done, np.int64),
        inverse_mass_matrix=np.asarray(matrix) if isinstance(matrix, (np.ndarray, jax.Array)) else None,
        mass_matrix=settings.mass_matrix, adaptation="whole",
        random_state={"seed": int(seed), "key": "native['.rng_key']"},
        settings=settings_record(settings), fingerprint=cached_fingerprint(compiled),
        latent_names=tuple(compiled.latent_names), native=native)


def settings_record(settings: NUTSSettings) -> dict[str, Any]:
    """The NUTS settings a state was made under, as the state files keep them."""
    return {"tune": int(settings.tune), "target_accept": float(settings.target_accept),
            "max_tree_depth": int(settings.max_tree_depth), "mass_matrix": settings.mass_matrix,
            "chains": int(settings.chains), "chunk_size": int(settings.chunk_size)}


def hmc_state(native: dict[str, np.ndarray]) -> Any:
    """The ``HMCState`` whose leaves :func:`state_record` kept by path (``.adapt_state.ss_state[0]`` ...)."""
    import re

    from numpyro.infer.hmc import HMCState
    from numpyro.infer.hmc_util import HMCAdaptState

    tree: dict = {}
    for path, value in native.items():
        node = tree
        keys = [int(k) if k.isdigit() else k for k in re.findall(r"\.(\w+)|\[(\d+)\]", path) for k in k if k]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    def build(node: Any, cls: Any = None) -> Any:
        if not isinstance(node, dict):
            return node
        if cls is not None:  # fields that held None (NUTS's ``r``, ``trajectory_length``) have no leaf
            return cls(**{name: build(node[name], HMCAdaptState if name == "adapt_state" else None)
                          if name in node else None for name in cls._fields})
        if all(isinstance(key, int) for key in node):
            return tuple(build(node[key]) for key in sorted(node))
        raise ValueError(f"unexpected fields {sorted(node)} in a saved NumPyro state")

    return build(tree, HMCState)


def warm_hmc_state(state: Any, warm: Any, settings: NUTSSettings, window: int, dtype: Any,
                   reestimate: bool = False) -> Any:
    """The chains' first ``HMCState`` (``state``, made at the saved positions) turned into a warm start's: the
    saved step sizes and inverse mass matrices (``warm``, a :class:`~resilient.sampler_state.SamplerState`), dual
    averaging restarted from the saved step size, and the iteration counter at ``tune - window`` in the schedule's
    last window, where NumPyro adapts the step size only. The program compiled for ``settings.tune`` then runs the
    ``window`` warm-up iterations left and samples: nothing is compiled for a warm call.

    ``reestimate``: the counter is put in the schedule's last slow window instead, which ends by estimating the
    mass matrix from the draws it collected (the caller empties the collection after the opening iterations:
    :func:`forget_mass_matrix_draws`) and is followed by the terminal step-size window."""
    from numpyro.infer.hmc_util import _initialize_mass_matrix, build_adaptation_schedule, dual_averaging

    from resilient.warm_start import WarmStartRefused

    if warm.inverse_mass_matrix is None:
        raise WarmStartRefused("the saved state has no mass matrix")
    chains, tune = int(settings.chains), int(settings.tune)
    dense = settings.mass_matrix == "full"
    matrices = np.asarray(warm.inverse_mass_matrix, np.float64)
    if (matrices.ndim == 3) != dense:
        raise WarmStartRefused(f"the saved mass matrix is {'dense' if matrices.ndim == 3 else 'diagonal'} and this "
                               f"run adapts a {'dense' if dense else 'diagonal'} one")
    steps = np.asarray(warm.step_size, np.float64).reshape(chains)
    adapt = state.adapt_state
    start_dual_averaging = dual_averaging()[0]
    rows = []
    with jax.default_device(jax.devices("cpu")[0]):
        for chain in range(chains):
            matrix = jax.numpy.asarray(matrices[chain].astype(dtype))
            inverse, root, root_inverse = _initialize_mass_matrix(np.zeros(matrices.shape[-1]), matrix, dense)
            rows.append((inverse, root, root_inverse,
                         start_dual_averaging(jax.numpy.log(10 * jax.numpy.asarray(steps[chain].astype(dtype))))))

    def stacked(index: int, like: Any) -> Any:
        return jax.tree_util.tree_map(lambda old, *new: np.stack([np.asarray(n) for n in new]).astype(
            np.asarray(old).dtype).reshape(np.shape(old)), like, *(row[index] for row in rows))

    last_window = len(build_adaptation_schedule(tune)) - 1
    if reestimate:
        if last_window < 2:
            raise WarmStartRefused(f"tune={tune} leaves NumPyro's schedule no window to estimate the mass matrix in")
        last_window -= 1
    adapt = adapt._replace(
        step_size=steps.astype(np.asarray(adapt.step_size).dtype).reshape(np.shape(adapt.step_size)),
        inverse_mass_matrix=stacked(0, adapt.inverse_mass_matrix),
        mass_matrix_sqrt=stacked(1, adapt.mass_matrix_sqrt),
        mass_matrix_sqrt_inv=stacked(2, adapt.mass_matrix_sqrt_inv),
        ss_state=stacked(3, adapt.ss_state),
        window_idx=np.full(np.shape(adapt.window_idx), last_window, np.asarray(adapt.window_idx).dtype))
    counter = np.full(np.shape(state.i), tune - int(window), np.asarray(state.i).dtype)
    return state._replace(i=counter, adapt_state=adapt)


def forget_mass_matrix_draws(state: Any) -> Any:
    """``state`` with the mass matrix's collected draws (NumPyro's Welford state) emptied: a warm start of other
    data leaves its opening iterations, the chains' way from the other posterior, out of the estimate."""
    adapt = state.adapt_state
    empty = jax.tree_util.tree_map(lambda leaf: np.zeros(np.shape(leaf), np.asarray(leaf).dtype), adapt.mm_state)
    return state._replace(adapt_state=adapt._replace(mm_state=empty))
