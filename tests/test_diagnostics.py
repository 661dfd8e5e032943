"""resilient.diagnostics on synthetic DataTrees with fixed seeds: verdicts, exact counts, edge cases.

No backend is imported: the data are built with arviz_base.from_dict (or xarray directly for
shapes from_dict warns about).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from resilient import record
from resilient.backend import STAT_NAMES
from resilient.diagnostics import DEFAULT_MAX_TREE_DEPTH, VERDICTS, Check, Diagnostics, diagnose

CHECK_NAMES = ("finite_draws", "rhat", "ess_bulk", "ess_tail", "mcse", "bfmi", "divergences", "tree_depth")
HEALTHY_LABELS = ("mu", "theta[0]", "theta[1]", "theta[2]")


def healthy_tree(seed: int = 0, chains: int = 4, draws: int = 500):
    """Independent standard normals with every Resilient stat; nothing should trip."""
    from arviz_base import from_dict

    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    depth = rng.integers(2, 5, size=shape)  # 2, 3 or 4
    stats = {
        "diverging": np.zeros(shape, dtype=bool),
        "tree_depth": depth,
        "n_steps": 2 ** depth - 1,
        "energy": rng.normal(size=shape),
        "lp": rng.normal(size=shape),
        "acceptance_rate": rng.uniform(0.6, 1.0, size=shape),
        "step_size": np.full(shape, 0.5),
    }
    assert set(stats) == set(STAT_NAMES)
    posterior = {"mu": rng.normal(size=shape), "theta": rng.normal(size=(*shape, 3))}
    return from_dict({"posterior": posterior, "sample_stats": stats}, dims={"theta": ["school"]})


def bad_tree(seed: int = 1, draws: int = 500):
    """Chains with different means, a sticky AR(1) variable, 40 divergences in chain 0,
    chain 3 at the maximum tree depth throughout, and random-walk energy in chains 2 and 3."""
    from arviz_base import from_dict

    rng = np.random.default_rng(seed)
    chains = 4
    shape = (chains, draws)
    mu = rng.normal(size=shape) + np.array([0.0, 0.0, 2.0, 2.0])[:, None]
    sticky = np.zeros(shape)
    for t in range(1, draws):
        sticky[:, t] = 0.995 * sticky[:, t - 1] + rng.normal(scale=0.1, size=chains)
    diverging = np.zeros(shape, dtype=bool)
    diverging[0, :40] = True
    depth = np.full(shape, 3)
    depth[3, :] = DEFAULT_MAX_TREE_DEPTH
    energy = rng.normal(size=shape)
    energy[2:] = np.cumsum(rng.normal(scale=0.05, size=(2, draws)), axis=1)
    stats = {
        "diverging": diverging, "tree_depth": depth, "n_steps": 2 ** depth - 1, "energy": energy,
        "lp": rng.normal(size=shape), "acceptance_rate": rng.uniform(0.3, 1.0, size=shape),
        "step_size": np.full(shape, 0.1),
    }
    return from_dict({"posterior": {"mu": mu, "sticky": sticky}, "sample_stats": stats})


def plain_tree(posterior: dict[str, np.ndarray], stats: dict[str, np.ndarray] | None = None):
    """A DataTree built by xarray alone (any shape, no ArviZ shape warnings)."""
    def dataset(values: dict[str, np.ndarray]) -> xr.Dataset:
        return xr.Dataset({k: (("chain", "draw", *[f"{k}_dim_{i}" for i in range(v.ndim - 2)]), v)
                           for k, v in values.items()})

    groups = {"posterior": dataset(posterior)}
    if stats is not None:
        groups["sample_stats"] = dataset(stats)
    return xr.DataTree.from_dict(groups)


@pytest.fixture(scope="module")
def healthy():
    return healthy_tree()


@pytest.fixture(scope="module")
def bad():
    return bad_tree()


# ----------------------------------------------------------------------------------------------
# healthy data pass everything


def test_healthy_run_passes_every_check(healthy):
    result = diagnose(healthy)
    assert isinstance(result, Diagnostics)
    assert tuple(c.name for c in result.checks) == CHECK_NAMES
    assert {c.name: c.verdict for c in result.checks} == dict.fromkeys(CHECK_NAMES, "ok")
    assert result.verdict == "ok" and result.passed
    assert (result.chains, result.draws) == (4, 500)
    assert result.failed() == ()
    assert all(c.variables == () and c.action == "" for c in result.checks)
    assert result.notes == ()


def test_summary_is_arviz_summary(healthy):
    from arviz_stats import summary

    result = diagnose(healthy)
    expected = summary(healthy, round_to="none")
    assert list(result.summary.index) == list(HEALTHY_LABELS)
    assert list(result.summary.columns) == list(expected.columns)
    np.testing.assert_allclose(result.summary.to_numpy(dtype=float), expected.to_numpy(dtype=float))
    rows = result.summary_rows()
    assert [r["variable"] for r in rows] == list(HEALTHY_LABELS)
    assert set(rows[0]) == {"variable", "mean", "sd", "ci_lower", "ci_upper", "ess_bulk", "ess_tail", "r_hat",
                            "mcse_mean", "mcse_sd"}
    assert result.ci_kind == "eti" and result.ci_prob == pytest.approx(0.89)


def test_check_values_are_arviz_numbers(healthy):
    from arviz_stats import bfmi, ess, rhat

    result = diagnose(healthy)
    max_rhat = max(float(np.max(v.values)) for v in rhat(healthy).data_vars.values())
    min_bulk = min(float(np.min(v.values)) for v in ess(healthy, method="bulk").data_vars.values())
    min_tail = min(float(np.min(v.values)) for v in ess(healthy, method="tail").data_vars.values())
    assert result.check("rhat").value == pytest.approx(max_rhat)
    assert result.check("ess_bulk").value == pytest.approx(min_bulk)
    assert result.check("ess_tail").value == pytest.approx(min_tail)
    assert result.check("bfmi").value == pytest.approx(float(bfmi(healthy)["energy"].values.min()))


def test_sampler_checks_are_arviz_diagnose_numbers(bad):
    from arviz_stats import diagnose as arviz_diagnose

    _, expected = arviz_diagnose(bad, show_diagnostics=False, return_diagnostics=True)
    result = diagnose(bad)
    divergences = result.check("divergences")
    assert divergences.value == expected["divergent"]["n_divergent"] == 40
    assert divergences.details["transitions"] == expected["divergent"]["total_samples"]
    assert divergences.details["rate"] == pytest.approx(expected["divergent"]["pct"] / 100)
    bfmi = result.check("bfmi")
    np.testing.assert_allclose(bfmi.details["per_chain"], expected["bfmi"]["bfmi_values"])
    assert bfmi.details["chains_below"] == expected["bfmi"]["failed_chains"] == [2, 3]


def test_reached_max_treedepth_count_is_arviz_diagnose_number():
    from arviz_base import from_dict
    from arviz_stats import diagnose as arviz_diagnose

    rng = np.random.default_rng(12)
    reached = rng.uniform(size=(4, 200)) < 0.1
    data = from_dict({"posterior": {"x": rng.normal(size=(4, 200))},
                      "sample_stats": {"reached_max_treedepth": reached, "energy": rng.normal(size=(4, 200))}})
    _, expected = arviz_diagnose(data, show_diagnostics=False, return_diagnostics=True)
    check = diagnose(data).check("tree_depth")
    assert check.value == expected["treedepth"]["n_max"] == int(reached.sum())
    assert check.details["per_chain"] == [int(v) for v in reached.sum(axis=1)]


def test_chains_below_bfmi_are_positions_whatever_the_chain_coordinate(bad):
    relabelled = xr.DataTree.from_dict({name: bad[name].to_dataset().assign_coords(chain=[10, 11, 12, 13])
                                        for name in bad.children})
    assert diagnose(relabelled).check("bfmi").details["chains_below"] == [2, 3]


def test_a_failing_arviz_diagnose_leaves_the_sampler_checks_not_applicable(bad, monkeypatch):
    import arviz_stats

    def broken(*args, **kwargs):
        raise RuntimeError("simulated arviz_stats.diagnose failure")

    monkeypatch.setattr(arviz_stats, "diagnose", broken)
    result = diagnose(bad)
    for name in ("bfmi", "divergences"):
        check = result.check(name)
        assert check.verdict == "n/a", name
        assert check.explanation == ("Skipped: arviz_stats.diagnose failed "
                                     "(RuntimeError: simulated arviz_stats.diagnose failure)."), name
    assert result.check("tree_depth").verdict == "warn"  # tree_depth is compared with the cap here
    assert result.check("rhat").verdict == "fail" and result.verdict == "fail"


def test_hdi_interval_is_passed_to_arviz(healthy):
    result = diagnose(healthy, ci_kind="hdi", ci_prob=0.9)
    assert [c for c in result.summary.columns if c.startswith("hdi")] == ["hdi90_lb", "hdi90_ub"]
    assert result.summary_rows()[0]["ci_lower"] == pytest.approx(float(result.summary["hdi90_lb"].iloc[0]))


# ----------------------------------------------------------------------------------------------
# forced thresholds: every flag trips, exact counts


def test_forced_warning_thresholds_trip_every_flag():
    data = healthy_tree()
    data["sample_stats"]["diverging"].values[[0, 2, 3], [10, 20, 30]] = True
    depth = data["sample_stats"]["tree_depth"].values
    saturated_per_chain = [int(v) for v in (depth >= 4).sum(axis=1)]
    result = diagnose(data, rhat_max=0.5, ess_min_per_chain=1e6, mcse_max_ratio=1e-6, bfmi_min=100,
                      max_divergences=0, max_tree_depth=4)

    verdicts = {c.name: c.verdict for c in result.checks}
    assert verdicts == {"finite_draws": "ok", "rhat": "warn", "ess_bulk": "warn", "ess_tail": "warn",
                        "mcse": "warn", "bfmi": "warn", "divergences": "warn", "tree_depth": "warn"}
    assert result.verdict == "warn" and result.passed
    for name in ("rhat", "ess_bulk", "ess_tail", "mcse"):
        assert result.check(name).variables == HEALTHY_LABELS, name
    assert result.check("bfmi").details["chains_below"] == [0, 1, 2, 3]
    divergences = result.check("divergences")
    assert divergences.value == 3
    assert divergences.details["per_chain"] == [1, 0, 1, 1]
    assert divergences.details["transitions"] == 2000
    tree_depth = result.check("tree_depth")
    assert tree_depth.value == sum(saturated_per_chain)
    assert tree_depth.details["per_chain"] == saturated_per_chain
    assert tree_depth.details["max_tree_depth_source"] == "argument"
    assert [c.name for c in result.failed()] == ["rhat", "ess_bulk", "ess_tail", "mcse", "bfmi", "divergences",
                                                "tree_depth"]
    assert all(c.action for c in result.failed())


def test_forced_fail_thresholds_turn_warnings_into_failures():
    data = healthy_tree()
    data["sample_stats"]["diverging"].values[[0, 2, 3], [10, 20, 30]] = True
    result = diagnose(data, rhat_max=0.5, rhat_fail=0.6, ess_min_per_chain=1e6, ess_fail_per_chain=1e5,
                      max_tree_depth=4, divergence_fail_rate=0.001, tree_depth_fail_rate=0.1)
    verdicts = {c.name: c.verdict for c in result.checks}
    assert verdicts == {"finite_draws": "ok", "rhat": "fail", "ess_bulk": "fail", "ess_tail": "fail",
                        "mcse": "ok", "bfmi": "ok", "divergences": "fail", "tree_depth": "fail"}
    assert result.verdict == "fail" and not result.passed
    assert result.check("rhat").details["above_fail"] == list(HEALTHY_LABELS)
    assert result.check("ess_bulk").details["below_fail"] == list(HEALTHY_LABELS)
    assert result.check("divergences").fail_threshold == 0.001
    assert result.thresholds["ess_fail_total"] == 4e5


def test_fail_thresholds_milder_than_warnings_are_moved_up(healthy):
    result = diagnose(healthy, rhat_max=1.2, rhat_fail=1.05, ess_min_per_chain=10, ess_fail_per_chain=25)
    assert result.thresholds["rhat_fail"] == 1.2
    assert result.thresholds["ess_fail_per_chain"] == 10


# ----------------------------------------------------------------------------------------------
# bad data at the published thresholds


def test_bad_run_fails_with_exact_counts(bad):
    result = diagnose(bad)
    verdicts = {c.name: c.verdict for c in result.checks}
    assert verdicts == {"finite_draws": "ok", "rhat": "fail", "ess_bulk": "fail", "ess_tail": "fail",
                        "mcse": "warn", "bfmi": "warn", "divergences": "fail", "tree_depth": "warn"}
    assert result.verdict == "fail"

    rhat = result.check("rhat")
    assert rhat.variables == ("mu", "sticky")
    assert rhat.value > 1.05 and rhat.threshold == 1.01 and rhat.fail_threshold == 1.05

    divergences = result.check("divergences")
    assert (divergences.value, divergences.details["per_chain"]) == (40, [40, 0, 0, 0])
    assert divergences.details["rate"] == pytest.approx(0.02)
    assert "Increase target_accept" in divergences.action and "reparameterise" in divergences.action

    tree_depth = result.check("tree_depth")
    assert (tree_depth.value, tree_depth.details["per_chain"]) == (500, [0, 0, 0, 500])
    assert tree_depth.details["max_tree_depth"] == DEFAULT_MAX_TREE_DEPTH
    assert tree_depth.details["max_tree_depth_source"] == "default"

    bfmi = result.check("bfmi")
    assert bfmi.details["chains_below"] == [2, 3]
    assert bfmi.value < 0.3

    assert len(result.notes) == 1 and "improper or unidentified" in result.notes[0]


def test_summary_rows_and_to_dict_are_strict_json(bad):
    result = diagnose(bad)
    payload = result.to_dict()
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text) == payload
    assert [c["name"] for c in payload["checks"]] == list(CHECK_NAMES)
    assert payload["verdict"] == "fail"
    assert set(payload["checks"][0]) == {"name", "verdict", "value", "threshold", "fail_threshold", "rule",
                                         "variables", "explanation", "action", "details"}


def test_str_lists_every_check_and_the_actions(bad):
    text = str(diagnose(bad))
    assert text.startswith("Verdict: FAIL (4 chains x 500 draws)")
    assert all(f"] {name}:" in text for name in CHECK_NAMES)
    assert text.count("-> ") == 7


# ----------------------------------------------------------------------------------------------
# where the tree-depth cap and the stats come from


def test_max_tree_depth_is_read_from_the_attempt_log():
    data = healthy_tree()
    record.attach(data, attempts=[{"attempt": 1, "backend": "numpyro", "settings": {"max_tree_depth": 4},
                                   "outcome": "accepted"}])
    depth = data["sample_stats"]["tree_depth"].values
    check = diagnose(data).check("tree_depth")
    assert check.threshold == 4
    assert check.details["max_tree_depth_source"] == "attempt log"
    assert check.value == int((depth >= 4).sum())


def test_max_tree_depth_is_read_from_the_run_record():
    data = healthy_tree()
    record.attach(data, run={"backend": "pymc", "max_tree_depth": 3})
    check = diagnose(data).check("tree_depth")
    assert (check.threshold, check.details["max_tree_depth_source"]) == (3, "run record")


def test_pymc_reached_max_treedepth_is_used_when_present():
    rng = np.random.default_rng(3)
    reached = np.zeros((2, 100), dtype=bool)
    reached[1, :7] = True
    data = plain_tree({"x": rng.normal(size=(2, 100))},
                      {"reached_max_treedepth": reached, "tree_depth": np.full((2, 100), 3)})
    check = diagnose(data).check("tree_depth")
    assert (check.verdict, check.value, check.details["per_chain"]) == ("warn", 7, [0, 7])
    assert check.details["max_tree_depth_source"] == "reached_max_treedepth"


def test_plain_posterior_without_sample_stats_skips_sampler_checks():
    data = plain_tree({"x": np.random.default_rng(4).normal(size=(4, 200))})
    result = diagnose(data)
    skipped = {c.name: c.explanation for c in result.checks if c.verdict == "n/a"}
    assert set(skipped) == {"bfmi", "divergences", "tree_depth"}
    assert skipped["divergences"] == "Skipped: sample_stats has no `diverging`."
    assert result.verdict == "ok"


def test_a_dataset_is_converted():
    data = plain_tree({"x": np.random.default_rng(5).normal(size=(4, 200))})
    result = diagnose(data["posterior"].to_dataset())
    assert result.verdict == "ok" and result.chains == 4


def test_var_names_limits_the_convergence_checks(bad):
    result = diagnose(bad, var_names="sticky")
    assert list(result.summary.index) == ["sticky"]
    assert result.check("rhat").variables == ("sticky",)


# ----------------------------------------------------------------------------------------------
# degenerate input: a clear verdict, never a crash


def test_one_chain_warns_that_rhat_cannot_be_computed():
    from arviz_base import from_dict

    rng = np.random.default_rng(6)
    data = from_dict({"posterior": {"x": rng.normal(size=(1, 500))},
                      "sample_stats": {"energy": rng.normal(size=(1, 500)),
                                       "diverging": np.zeros((1, 500), dtype=bool)}})
    result = diagnose(data)
    rhat = result.check("rhat")
    assert (rhat.verdict, rhat.value) == ("warn", None)
    assert rhat.explanation.startswith("R-hat needs at least 2 chains, got 1")
    assert rhat.action == "Run at least 4 chains (chains=4)."
    assert result.check("ess_bulk").threshold == 100
    assert result.verdict == "warn"


def test_few_draws_fail_with_a_reason():
    rng = np.random.default_rng(7)
    data = plain_tree({"x": rng.normal(size=(4, 3))},
                      {"energy": rng.normal(size=(4, 3)), "diverging": np.zeros((4, 3), dtype=bool)})
    result = diagnose(data)
    for name in ("rhat", "ess_bulk", "ess_tail", "mcse"):
        check = result.check(name)
        assert check.verdict == "fail" and "Only 3 draws per chain" in check.explanation, name
    assert result.verdict == "fail"


def test_nan_draws_fail_and_name_the_variable():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(4, 200))
    x[1, [5, 6, 7]] = np.nan
    x[2, 9] = np.inf
    data = plain_tree({"x": x, "y": rng.normal(size=(4, 200))})
    result = diagnose(data)
    finite = result.check("finite_draws")
    assert (finite.verdict, finite.value, finite.variables) == ("fail", 4, ("x",))
    assert finite.details == {"nonfinite_by_variable": {"x": 4}}
    assert result.check("rhat").variables == ("x",)
    assert result.check("rhat").verdict == "fail"
    assert result.verdict == "fail"


def test_constant_variable_warns_without_runtime_warnings():
    rng = np.random.default_rng(9)
    data = plain_tree({"fixed": np.full((4, 200), 2.5), "x": rng.normal(size=(4, 200))},
                      {"energy": rng.normal(size=(4, 200))})
    result = diagnose(data)  # filterwarnings=error: numpy's 0/0 warnings must not escape
    rhat = result.check("rhat")
    assert (rhat.verdict, rhat.variables) == ("warn", ("fixed",))
    assert rhat.details["constant"] == ["fixed"]
    assert "Constant across all draws" in rhat.explanation
    assert result.check("mcse").verdict == "ok"
    assert result.verdict == "warn"


def test_constant_energy_leaves_bfmi_not_applicable():
    rng = np.random.default_rng(10)
    data = plain_tree({"x": rng.normal(size=(4, 200))}, {"energy": np.ones((4, 200))})
    bfmi = diagnose(data).check("bfmi")
    assert bfmi.verdict == "n/a" and "undefined" in bfmi.explanation


def test_zero_draws_fail_with_a_note():
    data = plain_tree({"x": np.zeros((4, 0))}, {"diverging": np.zeros((4, 0), dtype=bool)})
    result = diagnose(data)
    assert result.verdict == "fail" and result.draws == 0
    assert result.check("finite_draws").explanation == "No draws finished, so there is nothing to check."
    assert "no finished draws" in result.notes[-1]
    assert result.summary_rows() == []


def test_warmup_divergences_are_noted_not_counted():
    data = healthy_tree()
    warm = np.zeros((4, 50), dtype=bool)
    warm[0, :5] = True
    data["warmup_sample_stats"] = xr.DataTree(xr.Dataset({"diverging": (("chain", "draw"), warm)}))
    result = diagnose(data)
    assert result.check("divergences").value == 0
    assert result.notes == ("5 divergent transitions during warm-up (not counted; normal while step size adapts).",)


# ----------------------------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("rhat_max", 0, r"`rhat_max` must be a positive number, got 0\."),
    ("ess_min_per_chain", -1, r"`ess_min_per_chain` must be a non-negative number, got -1\."),
    ("bfmi_min", float("nan"), r"`bfmi_min` must be a non-negative number, got nan\."),
    ("max_divergences", 1.5, r"`max_divergences` must be a non-negative integer, got 1\.5\."),
    ("max_tree_depth", 0, r"`max_tree_depth` must be a positive integer or None, got 0\."),
    ("divergence_fail_rate", 2, r"`divergence_fail_rate` must be a fraction in \[0, 1\], got 2\."),
])
def test_bad_arguments_say_what_is_wrong(healthy, argument, value, message):
    with pytest.raises(ValueError, match=message):
        diagnose(healthy, **{argument: value})


def test_data_without_posterior_is_refused():
    data = xr.DataTree.from_dict({"sample_stats": xr.Dataset({"energy": (("chain", "draw"), np.zeros((2, 5)))})})
    with pytest.raises(ValueError, match=r"`data` must have a 'posterior' group, got groups 'sample_stats'\."):
        diagnose(data)


def test_unknown_var_names_are_refused(healthy):
    message = r"`var_names` must name posterior variables \(mu, theta\), got unknown 'nu'\."
    with pytest.raises(ValueError, match=message):
        diagnose(healthy, var_names=["nu"])


def test_check_lookup_and_records():
    result = diagnose(healthy_tree(seed=2, draws=200))
    with pytest.raises(KeyError, match=r"`name` must be one of 'finite_draws'.*got 'ess'\."):
        result.check("ess")
    check = result.check("rhat")
    assert isinstance(check, Check) and check.passed
    assert set(VERDICTS) == {"ok", "n/a", "warn", "fail"}
    with pytest.raises(AttributeError, match="cannot assign"):
        check.verdict = "fail"  # frozen


def test_rich_tables_show_checks_and_summary(bad):
    from rich.console import Console

    result = diagnose(bad)
    console = Console(record=True, width=200)
    console.print(result.table())
    console.print(result.summary_table(max_rows=1))
    text = console.export_text()
    assert "Diagnostics: FAIL (4 chains x 500 draws)" in text
    assert all(name in text for name in CHECK_NAMES)
    assert "Increase target_accept closer to 1" in text
    assert "Posterior summary (1 of 2, highest R-hat)" in text
    assert "eti 89% lower" in text
