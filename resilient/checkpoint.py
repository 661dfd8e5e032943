"""Draws on disk as they finish: one netCDF (classic format) file per chunk, written atomically.

Layout of a checkpoint folder::

    run/                      meta.json (settings, model name, backend)
    run/attempt-01/           chunk-000001.nc, chunk-000002.nc, ... (post-warm-up draws)
                              state.pkl (NumPyro: the sampler state after the last chunk)
                              observed.nc, record.json (attempt log and preflight, at the end)

A file is written to a temporary name and renamed, so a run killed with SIGKILL leaves only
whole chunk files; :func:`read_checkpoint` assembles them into a DataTree.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resilient.backend import Chunk
from resilient.errors import ResilientError

__all__ = ["Checkpoint", "read_checkpoint", "latest_attempt"]


_SEPARATOR = "__"  # group__variable: netCDF names cannot hold "/"

#: netCDF3 through SciPy: about 6 ms a chunk file where netCDF4/HDF5 (h5netcdf) takes about 80,
#: which on a fast model doubled the run's time. xarray stores booleans as int8 and restores
#: them; integers are stored by :func:`_classic` and read back as int64.
CHUNK_ENGINE = "scipy"


def _atomic_write(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _classic(array: np.ndarray) -> np.ndarray:
    """``array`` in a type netCDF3 holds: integers as int32 where they fit, else float64 (exact
    to 2**53); float16 as float32."""
    if array.dtype.kind in "iu" and array.dtype != np.int32:
        info = np.iinfo(np.int32)
        fits = array.size == 0 or (int(array.min()) >= info.min and int(array.max()) <= info.max)
        return array.astype(np.int32 if fits else np.float64)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


class Checkpoint:
    """Writes the chunks of one call of :func:`resilient.sample` under ``root``."""

    def __init__(self, root: str | os.PathLike, meta: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.root / "meta.json", lambda p: p.write_text(json.dumps(dict(meta), default=str, indent=2)))
        self.folder: Path | None = None
        self._count = 0

    def start_attempt(self, number: int) -> None:
        self.folder = self.root / f"attempt-{number:02d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count = len(list(self.folder.glob("chunk-*.nc")))

    def write_chunk(self, chunk: Chunk) -> None:
        if chunk.warmup or self.folder is None:
            if chunk.state is not None and self.folder is not None:
                self.write_state(chunk.state)
            return
        import xarray as xr

        self._count += 1
        variables = {}
        for group, values in (("posterior", chunk.posterior), ("sample_stats", chunk.sample_stats)):
            for name, array in values.items():
                array = _classic(np.asarray(array))
                dims = ["chain", "draw"] + [f"{name}_dim_{i}" for i in range(array.ndim - 2)]
                variables[f"{group}{_SEPARATOR}{name}"] = (dims, array)
        dataset = xr.Dataset(variables, coords={
            "chain": np.asarray(chunk.chains), "draw": chunk.start + np.arange(chunk.size)})
        _atomic_write(self.folder / f"chunk-{self._count:06d}.nc",
                      lambda p: dataset.to_netcdf(p, engine=CHUNK_ENGINE))
        if chunk.state is not None:
            self.write_state(chunk.state)

    def write_state(self, state: Any) -> None:
        assert self.folder is not None
        _atomic_write(self.folder / "state.pkl", lambda p: p.write_bytes(pickle.dumps(state)))

    def write_record(self, observed: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
        if self.folder is None:
            return
        _atomic_write(self.folder / "record.json", lambda p: p.write_text(json.dumps(
            {"observed": {k: np.asarray(v).tolist() for k, v in observed.items()}, "attrs": dict(attrs)},
            default=str)))


def latest_attempt(root: str | os.PathLike) -> Path:
    folders = sorted(Path(root).glob("attempt-*"))
    if not folders:
        raise ResilientError(f"No checkpoint found in {root}: it holds no attempt-* folder.")
    return folders[-1]


def read_state(root: str | os.PathLike) -> Any:
    path = latest_attempt(root) / "state.pkl"
    if not path.exists():
        raise ResilientError(
            f"The checkpoint in {root} has no sampler state to resume from (state.pkl): only NumPyro runs "
            "that finished warm-up save one. Start a new run instead."
        )
    return pickle.loads(path.read_bytes())


def read_checkpoint(root: str | os.PathLike, attempt: int | None = None) -> Any:
    """Every finished chunk of the last (or the given) attempt, as a DataTree."""
    import xarray as xr

    from resilient.draws import to_datatree

    folder = Path(root) / f"attempt-{attempt:02d}" if attempt else latest_attempt(root)
    files = sorted(folder.glob("chunk-*.nc"))
    if not files:
        raise ResilientError(f"The checkpoint {folder} holds no finished chunk yet.")
    per_chain: dict[int, dict[str, list[np.ndarray]]] = {}
    for file in files:
        with xr.open_dataset(file) as dataset:  # netCDF3, or netCDF4 from checkpoints before 2026-11-27
            for row, chain in enumerate(dataset["chain"].values.tolist()):
                store = per_chain.setdefault(int(chain), {})
                for name, variable in dataset.data_vars.items():
                    values = np.asarray(variable.values[row])
                    store.setdefault(name, []).append(values.astype(np.int64) if values.dtype.kind == "i" else values)
    length = min(len(np.concatenate(v)) for chain in per_chain.values() for v in chain.values())
    chains = sorted(per_chain)
    groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}, "sample_stats": {}}
    for key in per_chain[chains[0]]:
        group, name = key.split(_SEPARATOR, 1)
        groups[group][name] = np.stack([np.concatenate(per_chain[c][key])[:length] for c in chains])
    record_path = folder / "record.json"
    observed, attrs = {}, {"resilient_checkpoint": str(folder)}
    if record_path.exists():
        record = json.loads(record_path.read_text())
        observed, attrs = record["observed"], {**attrs, **record["attrs"]}
    return to_datatree(groups["posterior"], groups["sample_stats"], observed, attrs)
