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
