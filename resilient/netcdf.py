"""The netCDF4 (HDF5) files Resilient writes and reads: results (``resilient sample --out``), each fit of
:func:`resilient.sample_many` and :func:`resilient.sbc` (``fits/*.nc``), and the checkpoint chunks classic
netCDF cannot hold.

They go through the netCDF4 package (Unidata's C library, xarray's first choice of engine): it writes a
result's DataTree in about 35 ms where h5netcdf took about 230 (a small model's seven groups; h5netcdf looks
up every dimension scale in the file for every variable) and reads it about 6 x faster, which was most of a
fast fit's time in ``sample_many`` and ``sbc``. Files written with h5netcdf before read the same, except
half-precision (float16) values, which netCDF-C does not read (Resilient's own variables are never float16;
it wrote them only where a model's data was). Complex values are written and read as netCDF4's complex
compound type (``auto_complex``); float16 values, which netCDF4 has no type for, are written as float32.

Inside a Dask worker (each fit of ``sample_many`` and ``sbc``) xarray guards every write with a
``distributed.Lock``, a round trip to the scheduler for each variable: 0.4-0.6 s a fit, five times the fit's
sampling. A file only this process writes needs only this process's lock, so :func:`write` asks xarray for it.
Dask's setting is the process's, not the thread's, and netCDF-C is not thread-safe (four threads writing at once
crashed the process, 2026-12-06; h5py, under h5netcdf, serialises itself): one read or write at a time in a
process (:data:`_ONE_AT_A_TIME`), so writes in several threads neither crash nor leave the setting changed, and
dask work in other threads sees it only during a write.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Iterator

import numpy as np

__all__ = ["ENGINE", "load_dataset", "open_tree", "write"]

#: xarray's name of the engine (the netCDF4 package)
ENGINE = "netcdf4"

#: held for every read and write through this module (see the module's docstring)
_ONE_AT_A_TIME = threading.RLock()


def write(data: Any, path: str | os.PathLike, *, engine: str = ENGINE) -> None:
    """``data`` (an xarray DataTree or Dataset) as a netCDF4 file at ``path`` (``engine="scipy"``: classic
    netCDF, for the checkpoint chunks it holds)."""
    with _ONE_AT_A_TIME, _local_lock():
        if engine == ENGINE:
            _widened(data).to_netcdf(path, engine=ENGINE, auto_complex=True)
        else:
            data.to_netcdf(path, engine=engine)


def _widened(data: Any) -> Any:
    """``data`` with its float16 variables as float32 (netCDF4 has no half-precision type); as it is where it
    has none."""
    def widen(dataset: Any) -> Any:
        halves = {name: variable.astype(np.float32) for name, variable in dataset.variables.items()
                  if variable.dtype == np.float16}
        return dataset.assign(halves) if halves else dataset

    if not hasattr(data, "subtree"):
        return widen(data)
    if not any(v.dtype == np.float16 for node in data.subtree for v in node.variables.values()):
        return data
    return data.map_over_datasets(widen)


@contextlib.contextmanager
def _local_lock() -> Iterator[None]:
    """xarray's write lock for a file this process alone writes: a thread lock, not a ``distributed.Lock``
    (xarray picks the lock from the dask scheduler in effect; the synchronous one gives a thread lock)."""
    dask = sys.modules.get("dask")
    if dask is None:  # not imported: xarray's lock is a thread lock already
        yield
        return
    with dask.config.set(scheduler="synchronous"):
        yield


def open_tree(path: str | os.PathLike) -> Any:
    """The DataTree in the netCDF4 file at ``path``, read whole (the file is closed after)."""
    import xarray as xr

    with _ONE_AT_A_TIME, xr.open_datatree(path, engine=ENGINE, auto_complex=True) as tree:
        return tree.load()


def load_dataset(path: str | os.PathLike) -> Any:
    """The Dataset in the netCDF4 file at ``path``, read whole (the file is closed after)."""
    import xarray as xr

    with _ONE_AT_A_TIME:
        return xr.load_dataset(path, engine=ENGINE, auto_complex=True)
