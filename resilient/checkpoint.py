"""Draws on disk as they finish: one netCDF file per chunk, written atomically.

Layout of a checkpoint folder::

    run/                      meta.json (settings, model name, backend)
    run/attempt-01/           chunk-000001.nc, chunk-000002.nc, ... (post-warm-up draws)
                              warmup-000.nc, ... (each chain's warm-up statistics, once its warm-up is over)
                              state.json + state-<digest>.npz (the sampler state after the last chunk: see
                              :mod:`resilient.sampler_state`; no pickle)
                              record.json (observed data, attempt log and preflight, at the end)

A file is written to a temporary name and renamed, so a run killed with SIGKILL leaves only
whole chunk files; :func:`read_checkpoint` assembles them into a DataTree, skipping (with a warning
naming it) a chunk file it cannot read, e.g. one truncated by a copy or a failing disk.

The rule for a checkpoint write that fails (a full disk, a quota, a folder that became read-only): the
run goes on without checkpoints, with one warning that names the folder and the error, and its draws
are returned in memory as usual; the chunks written before stay readable. The run record says so
(``checkpoint_error``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resilient import netcdf
from resilient.backend import Chunk
from resilient.errors import ResilientError
from resilient.jsonio import dumps

__all__ = ["Checkpoint", "read_checkpoint", "latest_attempt", "read_state", "read_meta"]


_SEPARATOR = "__"  # group__variable: netCDF names cannot hold "/"

#: Classic netCDF through SciPy: about 7 ms a chunk file where netCDF4/HDF5 through h5netcdf took
#: about 80, which on a fast model doubled the run's time. A chunk classic netCDF cannot hold
#: (see :func:`_engine_for`) is a netCDF4 file (:mod:`resilient.netcdf`); :func:`read_checkpoint` reads both.
CHUNK_ENGINE = "scipy"

#: names classic netCDF allows, kept to ASCII (SciPy writes names as Latin-1, and "β" fails).
_CLASSIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.@+-]*\Z")


def _atomic_write(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _engine_for(variables: Mapping[str, tuple[list[str], np.ndarray]]) -> str:
    """:data:`CHUNK_ENGINE` when classic netCDF holds every variable as is, else netCDF4's (:mod:`resilient.netcdf`):
    a name outside :data:`_CLASSIC_NAME`, a zero-length dimension (classic netCDF reads it as
    the unlimited one), complex values, or integers past int32."""
    info = np.iinfo(np.int32)
    for name, (dims, array) in variables.items():
        if not all(_CLASSIC_NAME.match(n) for n in (name, *dims)) or 0 in array.shape or array.dtype.kind == "c":
            return netcdf.ENGINE
        if array.dtype.kind in "iu" and (int(array.min()) < info.min or int(array.max()) > info.max):
            return netcdf.ENGINE
    return CHUNK_ENGINE


def _classic(array: np.ndarray) -> np.ndarray:
    """``array`` in a type classic netCDF holds (checked by :func:`_engine_for`): integers as
    int32, float16 as float32; booleans xarray stores as int8 and restores itself."""
    if array.dtype.kind in "iu":
        return array.astype(np.int32)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


class Checkpoint:
    """Writes the chunks of one call of :func:`resilient.sample` under ``root``.

    ``fresh``: a new run, not a resumed one. If ``root`` holds an earlier run, its attempts
    move to ``previous-N/`` (kept, with a warning) so that the two runs' chunks are not read
    back as one.
    """

    def __init__(self, root: str | os.PathLike, meta: Mapping[str, Any], fresh: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if fresh:
            self._set_aside_earlier_run()
        _atomic_write(self.root / "meta.json", lambda p: p.write_text(dumps(dict(meta), indent=2)))
        self.folder: Path | None = None
        #: the attempt being written (None before the first)
        self.attempt: int | None = None
        self._count = 0
        #: the sampler state of each chain after its last chunk, this attempt (see :meth:`write_state`)
        self._states: dict[int, Any] = {}
        #: the state last written (all chains), or None
        self.state: Any = None
        #: why checkpoint writes stopped (None while they work): see the module's rule
        self.error: str | None = None

    def _set_aside_earlier_run(self) -> None:
        earlier = sorted(self.root.glob("attempt-*"))
        if not earlier:
            return
        numbers = [int(p.name[len("previous-"):]) for p in self.root.glob("previous-*")
                   if p.name[len("previous-"):].isdigit()]
        target = self.root / f"previous-{max(numbers, default=0) + 1}"
        target.mkdir()
        for path in [*earlier, self.root / "meta.json"]:
            if path.exists():
                os.replace(path, target / path.name)
        from resilient.errors import warn

        warn(f"Resilient: the checkpoint folder {self.root} held an earlier run; it was moved to {target} so the "
             "two runs are not mixed. To continue a run, use resilient.resume(folder, model, ...).")

    def start_attempt(self, number: int, carry_from: int | None = None, state: Any = None,
                      draws: int | None = None) -> None:
        """Write the next chunks into ``attempt-<number>/``. ``carry_from``: an attempt whose chains this one
        continues (``more_draws``): its chunk and warm-up files are linked in first, so the folder holds the whole
        chains; ``state`` (their sampler state) is written at once, as this attempt's until the chains write newer
        ones; ``draws``: the chains' total, which ``meta.json`` then gives (a resume goes on to it)."""
        self._states, self.state = {}, None
        self.attempt = number
        self._warmup: dict[int, dict[str, list[np.ndarray]]] = {}  # warm-up statistics per chain, not yet written
        if self.error is not None:  # checkpointing stopped: no empty attempt folder that a reader would pick
            self._count = 0
            return
        folder = self.root / f"attempt-{number:02d}"
        self.folder = None  # a failure here names the root, not the attempt before
        self._guarded(f"the folder {folder.name}", lambda: folder.mkdir(parents=True, exist_ok=True))
        if self.error is not None:
            self._count = 0
            return
        self.folder = folder
        if carry_from is not None:
            self._guarded("the continued attempt's chunks", lambda: self._carry(carry_from, draws))
            if state is not None:
                self.write_state(state)
        self._count = len(list(self.folder.glob("chunk-*.nc")))

    def _carry(self, number: int, draws: int | None) -> None:
        import shutil

        source = self.root / f"attempt-{number:02d}"
        for path in sorted([*source.glob("chunk-*.nc"), *source.glob("warmup-*.nc")]):
            target = self.folder / path.name
            if not target.exists():
                try:
                    os.link(path, target)
                except OSError:  # a file system without hard links
                    shutil.copy2(path, target)
        if draws is not None:
            meta = read_meta(self.root)
            _atomic_write(self.root / "meta.json", lambda p: p.write_text(dumps({**meta, "draws": int(draws)},
                                                                                  indent=2)))

    def continue_from(self, state: Any) -> None:
        """Continue the attempt ``state`` was saved in (a resumed run): its chunks are added after the
        ones there, and each chain's state stays in the file until that chain writes a newer one."""
        from resilient.sampler_state import select

        self.start_attempt(state.attempt or int(latest_attempt(self.root).name.split("-")[1]))
        self._states = {chain: select(state, [row]) for row, chain in enumerate(state.chains)}
        self.state = state

    def _guarded(self, what: str, write: Any) -> None:
        """Run ``write``; an OSError stops checkpointing for the rest of the run with one warning."""
        if self.error is not None:
            return
        try:
            write()
        except OSError as error:
            from resilient.errors import warn

            for stale in (self.folder or self.root).glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
            self.error = f"writing {what} in {self.folder or self.root} failed: {error}"
            warn(f"Resilient: {self.error}. The run goes on without checkpoints; its draws are returned in memory "
                 "and the chunks written before stay readable.")

    def write_chunk(self, chunk: Chunk) -> None:
        self._guarded("a chunk", lambda: self._write_chunk(chunk))

    def _write_chunk(self, chunk: Chunk) -> None:
        if chunk.warmup or self.folder is None:
            if chunk.warmup and self.folder is not None:  # kept until the chain's warm-up is over (_write_warmup)
                for row, chain in enumerate(chunk.chains):
                    pending = self._warmup.setdefault(chain, {"draw": []})
                    pending["draw"].append(chunk.start + np.arange(chunk.size))
                    for name, values in chunk.sample_stats.items():
                        pending.setdefault(name, []).append(np.array(values[row]))
            if chunk.state is not None and self.folder is not None:
                self.write_state(chunk.state)
            return
        for chain in [c for c in chunk.chains if c in self._warmup]:
            self._write_warmup(chain)
        self._count += 1
        _write_dataset(self.folder / f"chunk-{self._count:06d}.nc",
                       {"posterior": chunk.posterior, "sample_stats": chunk.sample_stats},
                       chunk.chains, chunk.start + np.arange(chunk.size))
        if chunk.state is not None:
            self.write_state(chunk.state)

    def _write_warmup(self, chain: int) -> None:
        """A chain's warm-up statistics (no draws), once, when its first draw after warm-up is written:
        ``warmup-<chain>.nc``. One file per chain and attempt, so warm-up costs no checkpoint writes."""
        pending = self._warmup.pop(chain)
        draws = np.concatenate(pending.pop("draw"))
        stats = {name: np.concatenate(parts)[None] for name, parts in pending.items()}
        if stats and draws.size:
            _write_dataset(self.folder / f"warmup-{chain:03d}.nc", {"sample_stats": stats}, (chain,), draws)

    def write_state(self, state: Any) -> None:
        """Merge ``state`` (a :class:`~resilient.sampler_state.SamplerState` for the chunk's chains) into
        the attempt's state and write it (``state.json`` and the arrays it names)."""
        from dataclasses import replace

        from resilient.sampler_state import SamplerState, merge_states, stack

        assert self.folder is not None
        if not isinstance(state, SamplerState):
            return
        self._states = merge_states(self._states, state)
        whole = replace(stack(list(self._states.values())), attempt=getattr(self, "attempt", None))
        self.state = whole
        self._guarded("the sampler state", lambda: whole.save(self.folder))

    def write_record(self, observed: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
        if self.folder is None:
            return
        self._guarded("the run record", lambda: _atomic_write(self.folder / "record.json", lambda p: p.write_text(
            dumps({"observed": {k: np.asarray(v).tolist() for k, v in observed.items()}, "attrs": dict(attrs)}))))


def _with_nan(values: Any) -> np.ndarray:
    """A data array read from strict JSON: its nulls (NaN and infinities when written) as NaN."""
    array = np.asarray(values)
    if array.dtype == object:
        array = np.asarray(np.where(array == None, np.nan, array), dtype=float)  # noqa: E711 - elementwise
    return array


def _write_dataset(path: Path, groups: Mapping[str, Mapping[str, Any]], chains: Any, draws: np.ndarray) -> None:
    """``groups`` ({group: {name: (chain, draw, ...) array}}) as one netCDF file, written atomically."""
    import xarray as xr

    variables = {}
    for group, values in groups.items():
        for name, array in values.items():
            array = np.asarray(array)
            dims = ["chain", "draw"] + [f"{name}_dim_{i}" for i in range(array.ndim - 2)]
            variables[f"{group}{_SEPARATOR}{name}"] = (dims, array)
    engine = _engine_for(variables)
    if engine == "scipy":
        variables = {name: (dims, _classic(array)) for name, (dims, array) in variables.items()}
    dataset = xr.Dataset(variables, coords={"chain": np.asarray(chains), "draw": np.asarray(draws)})
    _atomic_write(path, lambda p: netcdf.write(dataset, p, engine=engine))


def latest_attempt(root: str | os.PathLike) -> Path:
    folders = sorted(Path(root).glob("attempt-*"))
    if not folders:
        raise ResilientError(f"No checkpoint found in {root}: it holds no attempt-* folder.")
    return folders[-1]


def read_state(root: str | os.PathLike) -> Any:
    """The :class:`~resilient.sampler_state.SamplerState` of the last attempt in the checkpoint ``root``."""
    from resilient.sampler_state import SamplerState

    folder = latest_attempt(root)
    if not (folder / "state.json").exists():
        if (folder / "state.pkl").exists():
            raise ResilientError(
                f"The checkpoint {folder} holds a sampler state written by an older Resilient (state.pkl, a pickle), "
                "which this version does not read: it keeps states as JSON and .npz. Its draws still read with "
                "resilient.read_checkpoint; start a new run to sample more.")
        raise ResilientError(
            f"The checkpoint {folder} has no sampler state to resume from (state.json): the run stopped before its "
            "first chunk after warm-up (NumPyro: its first chunk). Start a new run instead.")
    try:
        return SamplerState.load(folder)
    except (OSError, ValueError, KeyError) as error:
        raise ResilientError(f"The sampler state in {folder} cannot be read ({type(error).__name__}: {error}); "
                             "start a new run instead.") from error


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """The settings a checkpoint's run was started with (``meta.json``), or {} where there is none."""
    path = Path(root) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _read_chunk(file: Path) -> dict[int, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """One chunk file's draw indices and arrays per chain, read whole (a file that fails anywhere is not used)."""
    import xarray as xr

    rows: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    with file.open("rb") as head:  # classic netCDF (SciPy's, the usual chunk) or netCDF4
        hdf5 = head.read(4) == b"\x89HDF"
    dataset = netcdf.load_dataset(file) if hdf5 else xr.load_dataset(file, engine="scipy")
    draws = np.asarray(dataset["draw"].values, np.int64)
    for row, chain in enumerate(dataset["chain"].values.tolist()):
        store = rows.setdefault(int(chain), (draws, {}))[1]
        for name, variable in dataset.data_vars.items():
            values = np.asarray(variable.values[row])
            store[name] = values.astype(np.int64) if values.dtype.kind == "i" else values
    return rows


def read_chains(folder: Path, with_draws: bool = False, prefix: str = "chunk") -> dict[int, dict[str, np.ndarray]]:
    """Every readable chunk of one attempt folder, per chain: ``group__name`` -> the chain's draws in draw
    order, each chain as long as it got (chains of PyMC's NUTS and nutpie finish at their own pace). A draw
    written twice (a resumed run redoing the chunk a kill cut off from its state) is read from the later
    file. An unreadable chunk file is skipped with a warning naming it. ``with_draws``: each chain's draw
    indices too, as ``"draw"``."""
    files = sorted(folder.glob(f"{prefix}-*.nc"))
    if not files:
        raise ResilientError(f"The checkpoint {folder} holds no finished chunk yet.")
    per_chain: dict[int, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {}
    skipped = []
    for file in files:
        try:
            rows = _read_chunk(file)
        except Exception as error:  # noqa: BLE001 - any unreadable file: skipped and named, never read as data
            skipped.append(f"{file.name} ({type(error).__name__}: {error})")
            continue
        for chain, piece in rows.items():
            per_chain.setdefault(chain, []).append(piece)
    if skipped:
        from resilient.errors import warn

        warn(f"Resilient: read_checkpoint skipped {len(skipped)} unreadable chunk file(s) in {folder}: "
             f"{'; '.join(skipped)}. The other chunks are returned.")
    if not per_chain:
        raise ResilientError(f"The checkpoint {folder} holds no readable chunk.")
    result = {}
    for chain, pieces in per_chain.items():
        draws = np.concatenate([d for d, _ in pieces])
        _, last = np.unique(draws[::-1], return_index=True)  # the last copy of each draw, in draw order
        keep = len(draws) - 1 - last
        names = set.intersection(*(set(v) for _, v in pieces))
        result[chain] = {name: np.concatenate([v[name] for _, v in pieces])[keep] for name in sorted(names)}
        if with_draws:
            result[chain]["draw"] = draws[keep]
    return result


def read_warmup_stats(folder: Path, chains: Any, lengths: Mapping[int, int] | None = None) -> dict[str, np.ndarray]:
    """The warm-up statistics of ``chains`` (``warmup-*.nc``), stacked, or {} where a chain has none or (with
    ``lengths``) not as many iterations as it says."""
    if not list(folder.glob("warmup-*.nc")):
        return {}
    try:
        per_chain = read_chains(folder, prefix="warmup")
    except ResilientError:
        return {}
    chains = list(chains)
    if any(c not in per_chain for c in chains):
        return {}
    length = min(len(v) for c in chains for v in per_chain[c].values())
    if lengths is not None and any(len(next(iter(per_chain[c].values()))) != lengths[c] for c in chains):
        return {}
    names = set.intersection(*(set(per_chain[c]) for c in chains))
    return {key.split(_SEPARATOR, 1)[1]: np.stack([per_chain[c][key][:length] for c in chains])
            for key in sorted(names) if key.startswith(f"sample_stats{_SEPARATOR}")}


def read_checkpoint(root: str | os.PathLike, attempt: int | None = None) -> Any:
    """Every finished chunk of the last (or the given) attempt, as a DataTree."""
    from resilient.draws import to_datatree

    folder = Path(root) / f"attempt-{attempt:02d}" if attempt else latest_attempt(root)
    per_chain = read_chains(folder)
    length = min(len(v) for chain in per_chain.values() for v in chain.values())
    chains = sorted(per_chain)
    groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}, "sample_stats": {}}
    for key in per_chain[chains[0]]:
        group, name = key.split(_SEPARATOR, 1)
        groups[group][name] = np.stack([per_chain[c][key][:length] for c in chains])
    record_path = folder / "record.json"
    observed, attrs = {}, {"resilient_checkpoint": str(folder)}
    if record_path.exists():
        record = json.loads(record_path.read_text())
        # strict JSON wrote a NaN in the data as null: read it back as NaN
        observed = {name: _with_nan(values) for name, values in record["observed"].items()}
        attrs = {**attrs, **record["attrs"]}
    data = to_datatree(groups["posterior"], groups["sample_stats"], observed, attrs,
                       warmup_stats=read_warmup_stats(folder, chains))
    if (folder / "state.json").exists():
        from resilient.sampler_state import SamplerState

        try:
            data["sampler_state"] = SamplerState.load(folder).to_dataset()
        except (OSError, ValueError, KeyError):  # the draws are worth more than the state
            pass
    return data
