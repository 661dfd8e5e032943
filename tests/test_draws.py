"""to_datatree: the backend's dimension names, coordinates and constant data reach the DataTree."""

import numpy as np

from resilient.draws import to_datatree


def test_layout_names_dims_coords_and_constant_data_like_the_backend():
    data = to_datatree({"alpha": np.zeros((2, 5, 3)), "mu": np.zeros((2, 5))}, {"diverging": np.zeros((2, 5), bool)},
                       {"y": np.ones(3)}, layout={
                           "coords": {"county": ["a", "b", "c"], "unused": [1]},
                           "dims": {"alpha": ["county"], "y": ["county"], "x": ["county"], "absent": ["unused"]},
                           "constant_data": {"x": np.arange(3.0)}})
    assert data.posterior["alpha"].dims == ("chain", "draw", "county")
    assert data.posterior["alpha"].sel(county="b").shape == (2, 5)
    assert list(data.observed_data["y"].coords["county"].values) == ["a", "b", "c"]
    assert data.constant_data["x"].dims == ("county",) and "unused" not in data.posterior.coords


def test_without_a_layout_dims_follow_arviz_conventions():
    data = to_datatree({"alpha": np.zeros((2, 5, 3))}, {"diverging": np.zeros((2, 5), bool)})
    assert data.posterior["alpha"].dims == ("chain", "draw", "alpha_dim_0")
    assert "constant_data" not in data.children
