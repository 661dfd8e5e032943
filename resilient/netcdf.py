"""The netCDF4 (HDF5) files Resilient writes and reads: results (``resilient sample --out``), each fit of
:func:`resilient.sample_many` and :func:`resilient.sbc` (``fits/*.nc``), and the checkpoint chunks classic
netCDF cannot hold.

They go through the netCDF4 package (Unidata's C library, xarray's first choice of engine): it writes a
result's DataTree in about 35 ms where h5netcdf took about 230 (a small model's seven groups; h5netcdf looks
up every dimension scale in the file for every variable) and reads it about 6 x faster, which was most of a
fast fit's time in ``sample_many`` and ``sbc``. Files written with h5netcdf before read the same.
Complex values are written and read as netCDF4's complex compound type (``auto_complex``).

Inside a Dask worker (each fit of ``sample_many`` and ``sbc``) xarray guards every write with a
``distributed.Lock``, a round trip to the scheduler for each variable: 0.4-0.6 s a fit, five times the fit's
sampling. A file only this process writes needs only this process's lock, so :func:`write` asks xarray for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

__all__ = ["ENGINE", "open_tree", "write"]

#: xarray's name of the engine (the netCDF4 package)
ENGINE = "netcdf4"


def write(data: Any, path: str | os.PathLike, *, engine: str = ENGINE) -> None:
    """``data`` (an xarray DataTree or Dataset) as a netCDF4 file at ``path`` (``engine="scipy"``: classic
    netCDF, for the checkpoint chunks it holds)."""
    with _local_lock():
        if engine == ENGINE:
            data.to_netcdf(path, engine=ENGINE, auto_complex=True)
        else:
            data.to_netcdf(path, engine=engine)


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

    with xr.open_datatree(path, engine=ENGINE, auto_complex=True) as tree:
        return tree.load()
