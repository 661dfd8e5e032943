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
