"""The loop's decisions (assess, choose_remedy, a crashed run) on synthetic draws: no backend needed."""

from dataclasses import replace

import numpy as np
import pytest

from resilient.backend import Chunk, NUTSRun, NUTSSettings
from resilient.checkpoint import Checkpoint, read_checkpoint
from resilient.distributions import HalfCauchy, Normal
from resilient.draws import DrawBuffer
from resilient.errors import ResilientError, ResilientWarning, SamplerError, SamplingFailed
from resilient.loop import LoopState, assess, choose_remedy, noncentering_candidates, run_loop
from resilient.record import read_attempts, read_run
from resilient.model import Model, NativeModel, Site
from resilient.policy import Policy

SETTINGS = NUTSSettings(draws=400, chains=4, max_tree_depth=10)


def buffer_from(values, diverging=None, tree_depth=None, lp=None):
    chains, draws = values.shape
    stats = {
        "diverging": np.zeros((chains, draws), bool) if diverging is None else diverging,
        "tree_depth": np.full((chains, draws), 3) if tree_depth is None else tree_depth,
        "lp": np.zeros((chains, draws)) if lp is None else lp,
    }
    buffer = DrawBuffer(chains)
    buffer.add(Chunk(tuple(range(chains)), 0, False, {"x": values}, stats))
    return buffer


def healthy(seed=0):
    return np.random.default_rng(seed).normal(size=(4, 400))


def test_healthy_draws_are_accepted():
    assert assess(buffer_from(healthy()), Policy(), SETTINGS) == (None, "")


def test_divergences_above_the_rate_are_a_failure_with_counts():
    diverging = np.zeros((4, 400), bool)
    diverging[0, :9] = True
    failure, message = assess(buffer_from(healthy(), diverging=diverging), Policy(), SETTINGS)
    assert failure == "divergences"
    assert message.startswith("9 of 1600 draws diverged (0.56%, limit 0.50%)")


def test_stuck_chain_is_named():
    values = healthy()
    values[2] = 0.3
    assert assess(buffer_from(values), Policy(), SETTINGS) == ("stuck", "chain(s) 2 never moved (no proposal accepted)")


def test_non_finite_log_density_and_saturated_tree_depth():
    lp = np.zeros((4, 400))
    lp[1, 5] = np.nan
    assert assess(buffer_from(healthy(), lp=lp), Policy(), SETTINGS)[0] == "non-finite"
    failure, message = assess(buffer_from(healthy(), tree_depth=np.full((4, 400), 10)), Policy(), SETTINGS)
    assert failure == "tree-depth" and "100% of draws hit the maximum tree depth 10" in message


def test_chains_that_disagree_fail_convergence():
    values = healthy() + np.array([[0.0], [0.0], [0.0], [5.0]])
    failure, message = assess(buffer_from(values), Policy(), SETTINGS)
    assert failure == "convergence" and message.startswith("x has R-hat")


def centred_sites():
    tau = object()  # stands for a tensor: not a literal
    return {
        "tau": Site("tau", "latent", HalfCauchy(5), HalfCauchy(5), family="HalfCauchy"),
        "theta": Site("theta", "latent", Normal(0.0, tau), Normal(0.0, tau), family="Normal",
                      parameter_inputs={"sigma": ("tau",)}, noncenterable=True),
    }


def test_candidates_come_from_the_sites_structured_facts_not_their_text():
    sites = centred_sites()
    assert noncentering_candidates(Model(lambda: None), sites) == ["theta"]
    # a native site the adapter cannot rewrite is no candidate, whatever its description says
    sites["theta"] = Site("theta", "latent", None, None, description="Normal(0, tau)", family="Normal",
                          parameter_inputs={"sigma": ("tau",)}, noncenterable=False)
    assert noncentering_candidates(Model(lambda: None), sites) == []


def test_divergences_lead_to_non_centring_then_the_target_accept_ladder():
    start = LoopState(Model(lambda: None), "numpyro", 0.8)
    policy = Policy()
    first = choose_remedy("divergences", start, policy, candidates=["theta"])
    assert first.remedy == "noncenter" and first.state.model.noncentered == frozenset({"theta"})
    assert first.note.startswith("non-centred theta")
    assert start.model.noncentered == frozenset() and start.used == frozenset(), "the decision is pure"
    second = choose_remedy("divergences", first.state, policy, candidates=["theta"])
    assert second.remedy == "target_accept" and second.state.target_accept == 0.9
    state = second.state
    for _ in range(2):
        state = choose_remedy("divergences", state, policy, candidates=["theta"]).state
    assert state.target_accept == 0.99


def test_float64_and_other_backend_are_remedies_only_where_they_change_something():
    state = LoopState(Model(lambda: None, float32=True), "pymc", 0.99)
    policy = Policy(remedies=("float64", "other_backend"))
    assert choose_remedy("divergences", state, policy, float32_in_effect=False).remedy is None
    decision = choose_remedy("divergences", state, policy, float32_in_effect=True, other_backends=["numpyro"])
    assert decision.remedy == "float64" and decision.state.model.float32 is False
    native = LoopState(NativeModel("pymc", object()), "pymc", 0.99)
    assert choose_remedy("divergences", native, policy, other_backends=["numpyro"]).remedy is None


def test_switched_off_remedies_are_not_used():
    state = LoopState(Model(lambda: None), "numpyro", 0.8)
    policy = Policy(remedies=("target_accept",))
    decision = choose_remedy("divergences", state, policy, candidates=["theta"])
    assert decision.remedy == "target_accept" and decision.state.model.noncentered == frozenset()
    state = LoopState(Model(lambda: None), "numpyro", 0.99)
    decision = choose_remedy("divergences", state, policy, candidates=["theta"])
    assert (decision.remedy, decision.note) == (None, "no remedy left that fits this failure")


def test_reinitialisation_tries_uniform_then_prior_points():
    state = LoopState(Model(lambda: None), "numpyro", 0.8)
    policy = Policy(remedies=("reinitialize",))
    first = choose_remedy("stuck", state, policy)
    assert first.note == "fresh initial points (uniform)"
    second = choose_remedy("stuck", first.state, policy)
    assert second.note == "fresh initial points (prior)"
    assert choose_remedy("stuck", second.state, policy).remedy is None


def test_policy_rejects_bad_caps_with_the_rule():
    with pytest.raises(ResilientError, match=r"`max_attempts` must be a positive integer, got 0"):
        Policy(max_attempts=0)
    with pytest.raises(ResilientError, match=r"`time_budget` must be a positive number of seconds or None, got -1"):
        Policy(time_budget=-1)
    with pytest.raises(ResilientError, match=r"Unknown remedies \['magic'\]"):
        Policy(remedies=("magic",))


class CrashingModel:
    """A compiled model whose sampler fails after one chunk on the first ``crashes`` runs."""

    sites: dict = {}

    def __init__(self, crashes, kind="numerical"):
        self.crashes = crashes
        self.kind = kind
        self.runs = 0

    def initial_point(self, strategy="default", random_seed=None):
        return np.zeros(1)

    def log_density_and_gradient(self, x):
        return 0.0, np.zeros(1)

    def observed_data(self):
        return {}

    def run_nuts(self, settings, on_chunk):
        self.runs += 1
        draws = settings.draws if self.runs > self.crashes else 10
        seed = np.random.default_rng(self.runs)
        stats = {"diverging": np.zeros((settings.chains, draws), bool), "lp": np.zeros((settings.chains, draws)),
                 "tree_depth": np.full((settings.chains, draws), 2)}
        on_chunk(Chunk(tuple(range(settings.chains)), 0, False, {"x": seed.normal(size=(settings.chains, draws))},
                       stats))
        if self.runs <= self.crashes:
            raise SamplerError("PyMC's NUTS stopped chain 1 at iteration 43 with SamplingError: Bad initial energy",
                               backend="pymc", kind=self.kind, chain=1)
        return NUTSRun(completed=True)


def run_crashing(crashes, policy, kind="numerical", checkpoint=None):
    model = Model(lambda: None)
    compiled = CrashingModel(crashes, kind)
    settings = NUTSSettings(draws=400, tune=0, chains=4, random_seed=1)
    return compiled, run_loop(model, "pymc", settings, policy, preflight=False, progressbar=False,
                              compile_cache={("pymc", model): compiled}, checkpoint=checkpoint)


def test_a_sampler_error_keeps_the_finished_draws_and_retries_with_fresh_initial_points(tmp_path):
    compiled, data = run_crashing(1, Policy(), checkpoint=Checkpoint(tmp_path, {}))
    attempts = read_attempts(data)
    assert [a["failure"] for a in attempts] == ["sampler-error", None]
    assert attempts[0]["outcome"] == "retry" and attempts[0]["draws"] == 10
    assert "Bad initial energy; 10 draws per chain were finished before it; next: fresh initial points" in (
        attempts[0]["message"])
    assert attempts[1]["remedy"] == "reinitialize" and data.posterior["x"].shape == (4, 400)
    assert read_checkpoint(tmp_path, attempt=1).posterior["x"].shape == (4, 10)


def test_a_crash_inside_the_sampler_is_not_retried_and_keeps_its_traceback():
    with pytest.raises(SamplingFailed, match="an error inside the sampler is not something a remedy fixes") as raised:
        run_crashing(5, Policy(max_attempts=4), kind="crash")
    assert [a.outcome for a in raised.value.attempts] == ["gave-up"]
    assert isinstance(raised.value.__cause__, SamplerError) and raised.value.partial.posterior["x"].shape == (4, 10)


def test_sampler_errors_up_to_the_attempt_cap_raise_with_the_partial_draws():
    with pytest.raises(SamplingFailed, match="attempt 2 failed: PyMC's NUTS stopped chain 1") as raised:
        run_crashing(5, Policy(max_attempts=2))
    failure = raised.value
    assert [a.failure for a in failure.attempts] == ["sampler-error", "sampler-error"]
    assert failure.attempts[-1].outcome == "gave-up"
    assert failure.partial.posterior["x"].shape == (4, 10) and isinstance(failure.__cause__, SamplerError)


class DivergingModel(CrashingModel):
    """Every run finishes, with ``rates[run]`` of its draws divergent (the last rate repeats)."""

    def __init__(self, rates):
        super().__init__(0)
        self.rates = rates

    def run_nuts(self, settings, on_chunk):
        rate = self.rates[min(self.runs, len(self.rates) - 1)]
        self.runs += 1
        rng = np.random.default_rng(self.runs)
        diverging = np.zeros((settings.chains, settings.draws), bool)
        diverging[:, : int(rate * settings.draws)] = True
        stats = {"diverging": diverging, "lp": np.zeros((settings.chains, settings.draws)),
                 "tree_depth": np.full((settings.chains, settings.draws), 2)}
        on_chunk(Chunk(tuple(range(settings.chains)), 0, False,
                       {"x": rng.normal(size=(settings.chains, settings.draws)) + self.runs}, stats))
        return NUTSRun(completed=True)


def run_diverging(rates, policy):
    model = Model(lambda: None)
    settings = NUTSSettings(draws=400, tune=0, chains=4, random_seed=1)
    return run_loop(model, "numpyro", settings, policy, preflight=False, progressbar=False,
                    compile_cache={("numpyro", model): DivergingModel(rates)})


def test_caps_exhausted_on_divergences_return_the_best_attempt_with_a_warning():
    policy = Policy(max_attempts=3, remedies=("target_accept",))
    with pytest.warns(ResilientWarning, match=r"attempt 3 failed: .* Returning attempt 2's draws") as said:
        data = run_diverging([0.05, 0.02, 0.04], policy)
    assert {w.filename for w in said if issubclass(w.category, ResilientWarning)} == {__file__}
    assert float(data.posterior["x"].mean()) > 1.5, "attempt 2's draws (centred at 2), not the last attempt's"
    assert int(data.sample_stats["diverging"].sum()) == 4 * 8
    assert [a["outcome"] for a in read_attempts(data)] == ["retry", "retry", "gave-up"]
    assert read_run(data)["status"] == "failed"


def test_on_exhausted_raise_keeps_the_error():
    with pytest.raises(SamplingFailed, match="attempt 2 failed") as raised:
        run_diverging([0.05], Policy(max_attempts=2, remedies=("target_accept",), on_exhausted="raise"))
    assert raised.value.partial.posterior["x"].shape == (4, 400)


# --- remedies that fit the cause, the best attempt by its diagnostics, nothing finished dropped (#20, #26) ---


def test_chains_in_separate_modes_are_called_multimodal_and_not_retried():
    rng = np.random.default_rng(3)
    values = rng.normal(scale=0.05, size=(4, 400)) + np.array([[2.0], [-2.0], [2.0], [-2.0]])
    failure, message = assess(buffer_from(values), Policy(), SETTINGS)
    assert failure == "multimodal"
    assert "chain(s) 1, 3 near -2" in message and "chain(s) 0, 2 near 2" in message
    decision = choose_remedy("multimodal", LoopState(Model(lambda: None), "pymc", 0.8), Policy(),
                             candidates=["theta"], mass_matrices=("diag", "full"), other_backends=["nutpie"])
    assert decision.remedy is None and "multimodal" in decision.note


def test_drifting_chains_are_slow_mixing_not_multimodal():
    rng = np.random.default_rng(4)
    walks = np.cumsum(rng.normal(size=(4, 400)), axis=1)  # random walks: each chain drifts
    failure, message = assess(buffer_from(walks), Policy(), SETTINGS)
    assert failure == "convergence" and "slow mixing" in message


def test_slow_mixing_gets_a_longer_warm_up_then_a_better_mass_matrix_never_fresh_points():
    state = LoopState(Model(lambda: None), "pymc", 0.8, tune=500, draws=500)
    policy = Policy()
    first = choose_remedy("convergence", state, policy, mass_matrices=("diag", "full", "diag_grad"), dimension=5)
    assert first.remedy == "longer_warmup" and (first.state.tune, first.state.draws) == (1000, 1000)
    second = choose_remedy("convergence", first.state, policy, mass_matrices=("diag", "full", "diag_grad"), dimension=5)
    assert second.remedy == "dense_mass" and second.state.mass_matrix == "full"
    on_nutpie = choose_remedy("convergence", replace(first.state, backend="nutpie"), policy,
                              mass_matrices=("diag", "low_rank"), dimension=5000)
    assert on_nutpie.remedy == "low_rank" and on_nutpie.state.mass_matrix == "low_rank"
    big = choose_remedy("convergence", first.state, policy, mass_matrices=("diag", "full"), dimension=5000)
    assert big.remedy != "dense_mass", "a dense metric is not estimated well in 5,000 dimensions"
    for failure in ("convergence", "tree-depth", "divergences", "multimodal"):
        remedies = set()
        current = state
        for _ in range(8):
            decision = choose_remedy(failure, current, policy, candidates=["theta"], other_backends=["nutpie"],
                                     mass_matrices=("diag", "full"))
            if decision.remedy is None:
                break
            remedies.add(decision.remedy)
            current = decision.state
        assert "reinitialize" not in remedies, f"{failure} does not point at the start"


def test_saturated_tree_depth_gets_the_mass_matrix_before_target_accept():
    state = LoopState(Model(lambda: None), "pymc", 0.8)
    decision = choose_remedy("tree-depth", state, Policy(), candidates=["theta"], mass_matrices=("diag", "full"))
    assert decision.remedy == "dense_mass"
    seen = []
    while decision.remedy is not None and len(seen) < 8:
        seen.append(decision.remedy)
        decision = choose_remedy("tree-depth", decision.state, Policy(), candidates=["theta"],
                                 mass_matrices=("diag", "full"))
    assert "target_accept" not in seen, "a higher target_accept makes the trees deeper still"


def test_a_remedy_that_needs_more_than_the_time_left_is_skipped_with_a_note():
    state = LoopState(Model(lambda: None), "pymc", 0.8)
    decision = choose_remedy("convergence", state, Policy(), mass_matrices=("diag", "full"), dimension=3,
                             seconds_left=30.0, last_seconds=20.0)
    assert decision.remedy == "dense_mass", "the longer warm-up (about 40 s) does not fit in 30 s"
    assert decision.skipped and "needs about 40 s and 30 s are left" in decision.skipped[0]
    none = choose_remedy("convergence", state, Policy(), mass_matrices=("diag", "full"), dimension=3,
                         seconds_left=5.0, last_seconds=20.0)
    assert none.remedy is None and "in the time left" in none.note


class SlowingModel(CrashingModel):
    """Run 1 finishes with 4% divergent draws; run 2, worse (20%), samples until the loop's deadline passes."""

    def __init__(self):
        super().__init__(0)

    def run_nuts(self, settings, on_chunk):
        import time

        self.runs += 1
        rng = np.random.default_rng(self.runs)
        done = 0
        while done < settings.draws:
            if self.runs > 1 and settings.deadline is not None and time.monotonic() > settings.deadline:
                return NUTSRun(completed=False, reason="deadline")
            size = min(50, settings.draws - done)
            diverging = np.zeros((settings.chains, size), bool)
            diverging[:, :2 if self.runs == 1 else 10] = True
            stats = {"diverging": diverging, "lp": np.zeros((settings.chains, size)),
                     "tree_depth": np.full((settings.chains, size), 2)}
            on_chunk(Chunk(tuple(range(settings.chains)), done, False,
                           {"x": rng.normal(size=(settings.chains, size)) + 10 * self.runs}, stats))
            done += size
            if self.runs > 1:  # 80 chunks of 0.2 s: far past any budget below
                time.sleep(0.2)
        return NUTSRun(completed=True)


def test_a_budget_that_runs_out_during_a_retry_returns_the_finished_attempt_not_the_partial_one():
    model = Model(lambda: None)
    settings = NUTSSettings(draws=4000, tune=0, chains=4, random_seed=1)
    with pytest.warns(ResilientWarning, match=r"ran out during attempt 2.*attempt 1's 4000 draws per chain"):
        # 3 s: attempt 1 finishes within it on a busy machine too (it has no sleeps); attempt 2 cannot
        data = run_loop(model, "numpyro", settings, Policy(time_budget=3.0, remedies=("target_accept",)),
                        preflight=False, progressbar=False, compile_cache={("numpyro", model): SlowingModel()})
    assert data.posterior["x"].shape == (4, 4000), "attempt 1 finished every draw: all of them come back"
    assert abs(float(data.posterior["x"].mean()) - 10) < 0.5, "attempt 1's draws (centred at 10)"
    run = read_run(data)
    assert run["status"] == "budget" and run["returned_attempt"] == 1
    assert [a["outcome"] for a in read_attempts(data)] == ["retry", "budget"]


def test_when_no_remedy_helps_the_first_attempt_comes_back_and_the_warning_says_so():
    policy = Policy(max_attempts=3, remedies=("target_accept",))
    with pytest.warns(ResilientWarning, match=r"The remedies did not help, so the first attempt's draws are returned"
                                              r": attempt 1 \(as asked\).*attempt 2 \(target accept\)"):
        data = run_diverging([0.02, 0.05, 0.04], policy)
    assert read_run(data)["returned_attempt"] == 1
    assert abs(float(data.posterior["x"].mean()) - 1) < 0.2, "attempt 1's draws (centred at 1)"
    assert all(a["rhat"] is not None and a["ess_bulk"] > 0 for a in read_attempts(data))


def test_infinite_draws_and_uncomputable_r_hat_are_failures_not_passes():
    values = healthy()
    values[1, 10:] = np.inf  # an improper direction: the chain ran off
    failure, message = assess(buffer_from(values), Policy(), SETTINGS)
    assert failure == "non-finite" and "draws of x are not finite" in message


def test_a_remedy_whose_model_does_not_compile_keeps_the_finished_draws():
    """The float64 variant of a model that only compiles in float32 (NumPyro's hmm_enum under x64): the loop goes
    back to the model before the remedy and returns the finished attempt instead of losing it."""
    def only_in_float32():
        raise RuntimeError("scan carry types differ under x64")

    model = Model(only_in_float32, float32=True)
    settings = NUTSSettings(draws=400, tune=0, chains=4, random_seed=1)
    with pytest.warns(ResilientWarning, match=r"did not compile .*Returning attempt 1's draws|did not compile"):
        data = run_loop(model, "numpyro", settings, Policy(max_attempts=3, remedies=("float64",)), preflight=False,
                        progressbar=False, compile_cache={("numpyro", model): DivergingModel([0.05])})
    attempts = read_attempts(data)
    assert [a["outcome"] for a in attempts] == ["retry", "gave-up"]
    assert "did not compile" in attempts[1]["message"] and read_run(data)["returned_attempt"] == 1
    assert data.posterior["x"].shape == (4, 400)


def test_the_best_attempt_is_ranked_on_validity_first_and_tree_depth_costs_only_time():
    """The horseshoe in the gallery: attempt 5 (target_accept 0.99: 0.7% divergent, R-hat 1.011, trees at their
    maximum) beats attempt 3 (1.6% divergent, R-hat 1.023) although its trees saturate."""
    from resilient.quality import Quality, badness

    limits = dict(rhat_limit=1.05, min_ess_per_chain=25.0, max_divergence_rate=0.005, depth_limit=0.5)
    third = Quality(draws=500, chains=2, rhat=1.023, ess_bulk=203, divergence_rate=0.016, depth_saturation=0.0)
    fifth = Quality(draws=500, chains=2, rhat=1.011, ess_bulk=275, divergence_rate=0.007, depth_saturation=0.9)
    assert badness(fifth, **limits) < badness(third, **limits)
    clean = Quality(draws=500, chains=2, rhat=1.004, ess_bulk=600, divergence_rate=0.0, depth_saturation=0.9)
    assert badness(clean, **limits)[0] == 0, "saturated trees alone break no limit on validity"


def test_chains_in_a_lower_mode_are_a_minor_mode_and_get_new_starts_not_a_verdict():
    """Modes of unequal height: two chains sit 16 nats lower (a mixture's swapped labels under an ordering
    prior); new starts are the remedy. Modes of equal height (a symmetry) stay multimodal, with no remedy."""
    rng = np.random.default_rng(5)
    values = rng.normal(scale=0.05, size=(4, 400)) + np.array([[2.0], [-2.0], [2.0], [-2.0]])
    lp = rng.normal(scale=1.0, size=(4, 400)) + np.array([[0.0], [-16.0], [0.0], [-16.0]])
    failure, message = assess(buffer_from(values, lp=lp), Policy(), SETTINGS)
    assert failure == "minor-mode" and "chain(s) 1, 3 sit 16" in message
    decision = choose_remedy("minor-mode", LoopState(Model(lambda: None), "numpyro", 0.8), Policy())
    assert decision.remedy == "reinitialize"
    level = rng.normal(scale=1.0, size=(4, 400))
    assert assess(buffer_from(values, lp=level), Policy(), SETTINGS)[0] == "multimodal"


def test_more_draws_is_sized_by_how_far_rhat_and_ess_are_from_their_lines():
    from resilient.loop import EXTEND_MAX_FACTOR, EXTEND_RHAT_MAX, extension
    from resilient.quality import Quality

    policy = Policy()
    near = Quality(draws=500, chains=2, rhat=1.012, ess_bulk=900.0)
    assert extension(near, policy) == 500, "just over the goal: the chains are doubled"
    far = Quality(draws=500, chains=2, rhat=1.04, ess_bulk=900.0)
    assert extension(far, policy) == 500 * EXTEND_MAX_FACTOR, "4x the goal's excess: the most it adds"
    few = Quality(draws=500, chains=2, rhat=1.005, ess_bulk=20.0)  # 10 per chain against 25
    assert extension(few, policy) == int(np.ceil(500 * 1.5))
    assert extension(Quality(draws=500, chains=2, rhat=EXTEND_RHAT_MAX + 0.01, ess_bulk=900.0), policy) is None
    assert extension(Quality(draws=500, chains=1), policy) is None


def test_slow_mixing_continues_the_chains_before_a_longer_warm_up():
    state = LoopState(Model(lambda: None), "pymc", 0.8, tune=500, draws=500)
    decision = choose_remedy("convergence", state, Policy(), mass_matrices=("diag", "full"), extend_by=500)
    assert decision.remedy == "more_draws" and decision.state.extend == 500
    assert "continued for 500 more draws" in decision.note and "no new warm-up" in decision.note
    after = choose_remedy("convergence", decision.state, Policy(), mass_matrices=("diag", "full"), extend_by=500)
    assert after.remedy == "longer_warmup" and after.state.extend == 0, "continued once; then a new run"
    cannot = choose_remedy("convergence", state, Policy(), mass_matrices=("diag", "full"), extend_by=None)
    assert cannot.remedy == "longer_warmup", "chains that cannot be continued get a longer warm-up"
    for failure in ("divergences", "tree-depth", "initialization", "multimodal"):
        other = choose_remedy(failure, state, Policy(), candidates=["theta"], mass_matrices=("diag", "full"),
                              other_backends=["nutpie"], extend_by=500)
        assert other.remedy != "more_draws", f"more draws do not fix {failure}"


def test_more_draws_is_skipped_when_its_draws_do_not_fit_in_the_time_left():
    state = LoopState(Model(lambda: None), "pymc", 0.8, tune=500, draws=500)
    # the last attempt ran 1,000 iterations in 10 s: 1,500 more need about 15 s, 18 s with the margin of 1.2
    decision = choose_remedy("convergence", state, Policy(remedies=("more_draws",)), extend_by=1500,
                             seconds_left=12.0, last_seconds=10.0)
    assert decision.remedy is None and "needs about 18 s and 12 s are left" in decision.note


def test_rhat_goal_must_lie_between_one_and_the_retry_line():
    with pytest.raises(ResilientError, match="rhat_goal"):
        Policy(rhat_goal=1.06)
    with pytest.raises(ResilientError, match="rhat_goal"):
        Policy(rhat_goal=1.0)
    assert Policy(rhat_goal=1.05).goal == 1.05 and Policy().goal == 1.01
    assert Policy(rhat_limit=1.005).goal == 1.005, "a stricter retry line than the default goal is the goal"


class ApartModel(DivergingModel):
    """Finished runs whose chains sit a little apart (worst R-hat between the goal 1.01 and the retry line 1.05)
    and that keep no sampler state, so they cannot be continued."""

    def __init__(self):
        super().__init__([0.0])

    def run_nuts(self, settings, on_chunk):
        self.runs += 1
        rng = np.random.default_rng(self.runs)
        offsets = np.array([[0.2], [-0.2], [0.2], [-0.2]])
        stats = {"diverging": np.zeros((4, settings.draws), bool), "lp": np.zeros((4, settings.draws)),
                 "tree_depth": np.full((4, settings.draws), 2)}
        on_chunk(Chunk((0, 1, 2, 3), 0, False, {"x": rng.normal(size=(4, settings.draws)) + offsets}, stats))
        return NUTSRun(completed=True)


def test_rhat_over_the_goal_is_accepted_with_the_reason_when_the_chains_cannot_be_continued():
    model = Model(lambda: None)
    settings = NUTSSettings(draws=400, tune=0, chains=4, random_seed=1)
    data = run_loop(model, "numpyro", settings, Policy(), preflight=False, progressbar=False,
                    compile_cache={("numpyro", model): ApartModel()})
    [attempt] = read_attempts(data)
    assert 1.01 < attempt["rhat"] <= 1.05
    assert attempt["outcome"] == "accepted" and attempt["failure"] == "convergence"
    assert "over the goal of 1.01 (under the retry line 1.05); accepted under the retry line: these chains cannot " \
           "be continued here (the engine keeps no sampler state to continue from)" in attempt["message"]
    assert read_run(data)["status"] == "ok" and "over the goal of 1.01" in read_run(data)["message"]


class ContinuableModel(ApartModel):
    """Chains a little apart (over the R-hat goal) that keep a sampler state; a continuation of them hands over
    ``continued`` draws and then stops at the deadline."""

    def __init__(self, continued):
        super().__init__()
        self.continued = continued
        self.settings = []

    def run_nuts(self, settings, on_chunk):
        from resilient.sampler_state import SamplerState

        self.settings.append(settings)
        self.runs += 1
        draws = self.continued if settings.resume_state is not None else settings.draws
        rng = np.random.default_rng(self.runs)
        offsets = np.array([[0.2], [-0.2], [0.2], [-0.2]])
        stats = {"diverging": np.zeros((4, draws), bool), "lp": np.zeros((4, draws)),
                 "tree_depth": np.full((4, draws), 2)}
        state = SamplerState("numpyro", (0, 1, 2, 3), np.zeros((4, 1)), np.full(4, 0.5), np.full(4, draws),
                             np.zeros(4, np.int64), np.ones((4, 1)), adaptation="reusable")
        on_chunk(Chunk((0, 1, 2, 3), 0, False, {"x": rng.normal(size=(4, draws)) + offsets}, stats, state))
        if settings.resume_state is not None:
            return NUTSRun(completed=False, reason="deadline")
        return NUTSRun(completed=True)


def _continued_run(tmp_path, compiled, policy=Policy()):
    model = Model(lambda: None)
    settings = NUTSSettings(draws=400, tune=0, chains=4, random_seed=1)
    return run_loop(model, "numpyro", settings, policy, preflight=False, progressbar=False,
                    compile_cache={("numpyro", model): compiled}, checkpoint=Checkpoint(tmp_path, {"draws": 400}))


def test_a_budget_that_runs_out_while_the_chains_run_longer_keeps_every_draw(tmp_path):
    from resilient.checkpoint import read_meta, read_state

    compiled = ContinuableModel(continued=150)
    data = _continued_run(tmp_path, compiled)  # acceptable before it ran longer: no warning, status ok
    first, second = read_attempts(data)
    assert first["outcome"] == "retry" and "next: the same chains continued for" in first["message"]
    extra = second["settings"]["continued"]["extra_draws"]
    assert compiled.settings[1].resume_state is not None and compiled.settings[1].tune == 0
    assert compiled.settings[1].initial_points is None, "the chains go on from where they stand"
    assert second["remedy"] == "more_draws" and second["outcome"] == "budget"
    assert f"(after 550 of {400 + extra} draws per chain)" in second["message"]
    run = read_run(data)
    assert run["status"] == "ok" and run["returned_attempt"] == 2 and run["message"].startswith("accepted:")
    # the first attempt's 400 draws and the continuation's 150: nothing finished is dropped, in memory or on disk
    assert data.posterior["x"].shape == (4, 550)
    assert read_checkpoint(tmp_path, attempt=2).posterior["x"].shape == (4, 550)
    assert np.array_equal(read_checkpoint(tmp_path, attempt=1).posterior["x"].values,
                          data.posterior["x"].values[:, :400])
    assert list(read_state(tmp_path).draws_done) == [550] * 4, "the state counts the whole chains"
    assert read_meta(tmp_path)["draws"] == 400 + extra, "a resume of the folder goes on to the continuation's total"


class CrashingContinuation(ContinuableModel):
    def run_nuts(self, settings, on_chunk):
        if settings.resume_state is not None:
            self.settings.append(settings)
            raise SamplerError("nutpie's sampler stopped: a worker died", backend="nutpie", kind="crash")
        return super().run_nuts(settings, on_chunk)


def test_a_crash_while_the_chains_run_longer_returns_the_acceptable_draws_they_had(tmp_path):
    data = _continued_run(tmp_path, CrashingContinuation(continued=150))
    first, second = read_attempts(data)
    assert second["remedy"] == "more_draws" and second["failure"] == "sampler-error"
    assert "a worker died; 0 draws per chain were finished before it" in second["message"]
    assert "attempt 1's draws were acceptable as they were: returned" in second["message"]
    assert read_run(data)["status"] == "ok" and read_run(data)["returned_attempt"] == 1
    assert data.posterior["x"].shape == (4, 400)


def test_a_continued_attempt_has_a_sampler_state_before_its_first_new_chunk(tmp_path):
    from resilient.checkpoint import read_state
    from resilient.sampler_state import SamplerState

    store = Checkpoint(tmp_path, {"draws": 400})
    store.start_attempt(1)
    state = SamplerState("numpyro", (0, 1), np.zeros((2, 1)), np.full(2, 0.5), np.full(2, 400), np.full(2, 300),
                         np.ones((2, 1)))
    store.write_chunk(Chunk((0, 1), 0, False, {"x": np.zeros((2, 400))}, {"diverging": np.zeros((2, 400), bool)},
                            state))
    store.start_attempt(2, carry_from=1, state=state, draws=800)
    saved = read_state(tmp_path)  # attempt-02's, killed before the continuation wrote anything
    assert saved.attempt == 2 and list(saved.draws_done) == [400, 400] and list(saved.tune_done) == [300, 300]
    assert read_checkpoint(tmp_path, attempt=2).posterior["x"].shape == (2, 400)


def test_a_few_divergences_get_one_higher_target_accept_and_the_better_attempt_is_returned():
    data = run_diverging([0.0025, 0.0], Policy())  # 4 of 1,600 divergent (under the 0.5% limit), then none
    first, second = read_attempts(data)
    assert first["failure"] == "divergences" and "4 divergent draws (under the limit)" in first["message"]
    assert "next: target_accept raised to 0.9" in first["message"]
    assert second["remedy"] == "target_accept" and second["outcome"] == "accepted"
    assert read_run(data)["returned_attempt"] == 2 and int(data.sample_stats["diverging"].sum()) == 0
    worse = run_diverging([0.0025, 0.005], Policy())  # the raise gave more (still under the limit): one raise only
    attempts = read_attempts(worse)
    assert len(attempts) == 2 and read_run(worse)["returned_attempt"] == 1
    assert "the higher target_accept did not do better" in read_run(worse)["message"]
    kept = run_diverging([0.0025, 0.0], Policy(retry_divergences=False))
    assert [a["outcome"] for a in read_attempts(kept)] == ["accepted"], "retry_divergences=False accepts them"


def test_an_attempt_within_the_limits_retried_to_do_better_is_returned_as_accepted_when_the_remedies_fail():
    """4 of 1,600 divergent (under the 0.5% limit): the loop raises target_accept to do better; when every later
    attempt is over the limit, attempt 1 comes back accepted (status ok, no warning that its diagnostics fail:
    they pass). Found on another CPU, where a regression's one divergence led to non-centring that made it worse."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any ResilientWarning fails the test
        data = run_diverging([0.0025, 0.05], Policy(max_attempts=3, remedies=("target_accept",)))
    run = read_run(data)
    assert run["status"] == "ok" and run["returned_attempt"] == 1
    assert run["message"].startswith("accepted attempt 1, within the policy's limits: the remedies after it did not")
    assert int(data.sample_stats["diverging"].sum()) == 4
    assert [a["outcome"] for a in read_attempts(data)] == ["retry", "retry", "gave-up"]


class StatefulDivergingModel(DivergingModel):
    """A :class:`DivergingModel` whose chunks carry each chain's sampler state, and which keeps the settings of
    every run (what the loop handed the engine)."""

    def __init__(self, rates):
        super().__init__(rates)
        self.given = []

    def run_nuts(self, settings, on_chunk):
        from resilient.sampler_state import SamplerState

        self.given.append(settings)
        chains = tuple(range(settings.chains))
        state = SamplerState("numpyro", chains, np.full((settings.chains, 1), float(self.runs + 1)),
                             np.full(settings.chains, 0.5), np.full(settings.chains, settings.draws),
                             np.full(settings.chains, settings.tune))
        rate = self.rates[min(self.runs, len(self.rates) - 1)]
        self.runs += 1
        diverging = np.zeros((settings.chains, settings.draws), bool)
        diverging[:, : int(rate * settings.draws)] = True
        stats = {"diverging": diverging, "lp": np.zeros((settings.chains, settings.draws)),
                 "tree_depth": np.full((settings.chains, settings.draws), 2)}
        on_chunk(Chunk(chains, 0, False, {"x": np.random.default_rng(self.runs).normal(
            size=(settings.chains, settings.draws))}, stats, state=state))
        return NUTSRun(completed=True)


def test_the_retry_for_a_few_divergences_starts_from_the_first_attempts_adaptation(tmp_path):
    model = Model(lambda: None)
    settings = NUTSSettings(draws=400, tune=1000, chains=4, random_seed=1)

    def run(**options):
        compiled = StatefulDivergingModel([0.0025, 0.0])
        data = run_loop(model, "numpyro", settings, Policy(), preflight=False, progressbar=False,
                        compile_cache={("numpyro", model): compiled}, **options)
        return compiled.given, data

    given, data = run()
    assert given[0].warm_state is None and given[1].target_accept > given[0].target_accept
    warm = given[1].warm_state  # attempt 1's positions, step size and mass matrix, for the raise's window
    assert warm is not None and np.all(warm.state.positions == 1.0) and warm.state.chains == (0, 1, 2, 3)
    assert warm.source.startswith("attempt 1's adaptation")
    given, _ = run(checkpoint=Checkpoint(tmp_path, {}))
    assert given[1].warm_state is None, "a checkpointed run warms up in full, so that a resume continues it as written"


def test_a_failure_after_preflight_warned_of_an_improper_posterior_names_the_site_and_the_fix():
    """Fuzz seed 3: a lone Flat's dense-mass remedy crashed PyMC's NUTS (inf in the adapted matrix) and the final
    error named only the sampler error; preflight had named the site. The error now repeats preflight's word."""
    from resilient.findings import Finding, PreflightReport
    from resilient.loop import _stop

    report = PreflightReport("m", "pymc", (Finding(
        "warning", "improper-posterior", "mu", "mu ~ Flat(): the posterior is improper: ...", parameter="mu",
        fix="give mu a proper prior (e.g. HalfNormal(10) or Normal(0, 10)), or make data depend on it"),))
    with pytest.raises(SamplingFailed, match=r"Preflight had warned: mu ~ Flat\(\): the posterior is improper.*Fix: "
                                             r"give mu a proper prior"):
        _stop(None, "attempt 2 failed: PyMC's NUTS stopped chain 0", [], report, Policy(), lambda text: None)
    with pytest.raises(SamplingFailed, match=r"^Sampling failed: attempt 1 failed \(0 attempt\(s\)\)\. The attempt log") as plain:
        _stop(None, "attempt 1 failed", [], PreflightReport("m", "pymc"), Policy(), lambda text: None)
    assert "Preflight had warned" not in str(plain.value)
