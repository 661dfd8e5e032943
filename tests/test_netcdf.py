"""The netCDF4 files Resilient writes (results, sample_many/sbc fits): every group, value, type and attribute
reads back as it was, and a file written with h5netcdf (Resilient's engine before 2026-12-06) reads the same."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from resilient import netcdf


def _tree() -> xr.DataTree:
    draws = np.arange(6.0).reshape(2, 3)
    tree = xr.DataTree.from_dict({
        "posterior": xr.Dataset({"β": (("chain", "draw"), draws), "z": (("chain", "draw"), draws * (1 + 2j)),
                                 "theta": (("chain", "draw", "school"), np.ones((2, 3, 4)))},
                                coords={"chain": [0, 1], "draw": [0, 1, 2], "school": list("abcd")}),
        "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), np.array([[True, False, False]] * 2)),
                                    "tree_depth": (("chain", "draw"), np.full((2, 3), 2**40, np.int64))}),
    })
    tree.attrs["resilient_attempts"] = "[" + ", ".join(['{"attempt": 1}'] * 20_000) + "]"  # past HDF5's 64 KiB
    return tree


def test_a_tree_reads_back_as_it_was_written(tmp_path):
    tree = _tree()
    netcdf.write(tree, tmp_path / "run.nc")
    back = netcdf.open_tree(tmp_path / "run.nc")
    assert back.identical(tree)
    assert back.posterior["z"].dtype == np.complex128 and back.sample_stats["diverging"].dtype == bool
    assert (tmp_path / "run.nc").read_bytes()[:4] == b"\x89HDF"
    (tmp_path / "run.nc").unlink()  # read whole: nothing still reads from the file
    assert back.posterior["β"].values.sum() == 15.0


def test_a_file_written_with_h5netcdf_reads_the_same(tmp_path):
    pytest.importorskip("h5netcdf", reason="h5netcdf (the test extra) writes the older files")
    tree = _tree()
    tree.to_netcdf(tmp_path / "old.nc", engine="h5netcdf")
    assert netcdf.open_tree(tmp_path / "old.nc").identical(tree)


def test_half_precision_values_are_written_as_float32(tmp_path):
    """netCDF4 has no float16 (h5netcdf wrote it); a model's float16 data is kept as float32, not refused."""
    tree = _tree()
    tree["observed_data"] = xr.DataTree(xr.Dataset({"y": ("y_dim_0", np.array([0.5, 1.5], np.float16))}))
    netcdf.write(tree, tmp_path / "half.nc")
    back = netcdf.open_tree(tmp_path / "half.nc")
    assert back.observed_data["y"].dtype == np.float32 and back.observed_data["y"].values.tolist() == [0.5, 1.5]
    assert back.attrs == tree.attrs and back.posterior.identical(tree.posterior)


def test_writes_from_several_threads_neither_crash_nor_leave_dask_s_scheduler_setting_changed(tmp_path):
    """Writes in several threads at once (a Dask worker with several threads): netCDF-C is not thread-safe
    (unserialised, these writes crashed the process, 2026-12-06), and write() sets dask's process-wide scheduler
    setting for its duration, which overlapping writes could leave set."""
    import threading

    dask = pytest.importorskip("dask")
    tree = _tree()
    before = dask.config.get("scheduler", None)

    def writes(thread: int) -> None:
        for index in range(8):
            netcdf.write(tree, tmp_path / f"{thread}-{index}.nc")

    threads = [threading.Thread(target=writes, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert dask.config.get("scheduler", None) == before and len(list(tmp_path.glob("*.nc"))) == 32
