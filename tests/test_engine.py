"""The nutpie engine behind the adapter contract, and how an engine is chosen (issue #14).

One small PyMC model is compiled for nutpie once (Numba, a few seconds) and shared by the tests.
"""

from __future__ import annotations

import os
import time
import warnings

from pathlib import Path

import numpy as np
import pytest

from resilient.backend import STAT_NAMES, NUTSSettings, get_adapter
from resilient.engine import resolve_engine
from resilient.errors import ResilientError
from resilient.loop import LoopState, choose_remedy
from resilient.model import Model, NativeModel
from resilient.policy import Policy

pytestmark = pytest.mark.pymc
nutpie = pytest.importorskip("nutpie", reason="nutpie is a dependency; this checkout's venv lacks it")

SEED = 20261128
Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])

#: the loop's message when a time budget stops the first attempt (the finished draws are returned)
BUDGET_MESSAGE = r"time budget of 20 s ran out during attempt 1 \(after \d+ of \d+ draws per chain\).* are returned"



def resilient_sample(*args, **kwargs):
    import resilient

    return resilient.sample(*args, **kwargs)


def _schools():
    import pymc as pm

    with pm.Model(coords={"school": list("ABCDEFGH")}) as model:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        z = pm.Normal("z", 0, 1, dims="school")
        theta = pm.Deterministic("theta", mu + tau * z, dims="school")
        pm.Normal("y", theta, SIGMA, observed=Y, dims="school")
    return model


@pytest.fixture(scope="module")
def pair():
    """The same pm.Model compiled by the PyMC adapter and by the nutpie adapter."""
    model = _schools()
    return get_adapter("pymc").compile(model), get_adapter("nutpie").compile(model)


def _run(compiled, settings, on_chunk=None):
    chunks = []

    def collect(chunk):
        chunks.append(chunk)
        return True if on_chunk is None else on_chunk(chunk)

    return compiled.run_nuts(settings, collect), chunks


def test_preflight_sees_the_log_density_nutpie_samples_and_it_is_pymcs(pair):
    pymc, nutpie_model = pair
    assert nutpie_model.backend == "nutpie" and nutpie_model.latent_names == pymc.latent_names
    rng = np.random.default_rng(SEED)
    for _ in range(5):
        x = rng.normal(size=pymc.dimension)
        value, gradient = nutpie_model.log_density_and_gradient(x)
        expected_value, expected_gradient = pymc.log_density_and_gradient(x)
        np.testing.assert_allclose(value, expected_value, rtol=1e-12)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-12)
    start = nutpie_model.initial_point("default", 3)
    assert start.shape == (pymc.dimension,) and np.isfinite(nutpie_model.log_density(start))


def test_draws_reach_on_chunk_per_chain_warm_up_first_in_whole_chunk_size_pieces(pair):
    """At each look nutpie's finished draws go over as one chunk of whole chunk_size pieces; the rest at the end."""
    outcome, chunks = _run(pair[1], NUTSSettings(draws=250, tune=120, chains=2, random_seed=SEED, chunk_size=100))
    assert outcome.completed and outcome.reason == ""
    for chain in (0, 1):
        mine = [c for c in chunks if c.chains == (chain,)]
        phases = [c.warmup for c in mine]
        assert phases == sorted(phases, reverse=True), "warm-up first"
        for warmup, total in ((True, 120), (False, 250)):
            pieces = [c for c in mine if c.warmup == warmup]
            assert [c.start for c in pieces] == list(np.cumsum([0] + [c.size for c in pieces[:-1]]))
            assert sum(c.size for c in pieces) == total and all(c.size % 100 == 0 for c in pieces[:-1])
    last = chunks[-1]
    assert set(STAT_NAMES) <= set(last.sample_stats) and last.sample_stats["diverging"].dtype == bool
    assert set(last.posterior) == {"mu", "tau", "z", "theta"} and last.posterior["z"].shape == (1, last.size, 8)
    assert np.all(np.isfinite(last.sample_stats["lp"])) and np.all(last.posterior["tau"] > 0)


def test_chains_start_at_the_points_the_loop_chose(pair):
    pymc, nutpie_model = pair
    values = pymc.constrain(pymc.initial_point("default", 0))
    x = pymc.unconstrain({**{k: values[k] for k in pymc.latent_names}, "mu": np.array(40.0)})
    # One warm-up draw and one draw, trees of depth 1: two leapfrog steps from the start.
    outcome, chunks = _run(nutpie_model, NUTSSettings(draws=1, tune=1, chains=2, random_seed=SEED, max_tree_depth=1,
                                                      initial_points=np.stack([x, x])))
    mus = [float(c.posterior["mu"][0, 0]) for c in chunks if not c.warmup]
    assert len(mus) == 2 and all(abs(mu - 40.0) < 5.0 for mu in mus), mus


def test_a_deadline_aborts_nutpie_and_keeps_the_finished_draws(pair):
    _run(pair[1], NUTSSettings(draws=5, tune=5, chains=1, random_seed=SEED))  # Numba compiles before the clock starts
    started = time.monotonic()
    arrivals = []
    # 4 s and chunks of 100: on a busy machine too, the first draws arrive well before the deadline
    outcome, chunks = _run(pair[1], NUTSSettings(draws=10**6, tune=100, chains=2, random_seed=SEED, chunk_size=100,
                                                 deadline=started + 4.0),
                           on_chunk=lambda chunk: arrivals.append((chunk.warmup, time.monotonic())) or True)
    assert any(not warmup and at < started + 4.0 for warmup, at in arrivals), "draws reach the loop while it samples"
    assert time.monotonic() - started < 4.0 + 10.0  # the bound: aborted at the deadline, not after 10^6 draws
    before = os.times()
    time.sleep(0.5)
    after = os.times()
    assert (after.user + after.system) - (before.user + before.system) < 0.25, "nutpie's chains still run"
    assert not outcome.completed and outcome.reason == "deadline"
    for chain in (0, 1):
        drawn = sum(c.size for c in chunks if c.chains == (chain,) and not c.warmup)
        assert drawn == outcome.extra["draws_delivered"][chain] > 0


def test_on_chunk_returning_false_stops_it_and_nothing_follows(pair):
    outcome, chunks = _run(pair[1], NUTSSettings(draws=10**6, tune=50, chains=1, random_seed=SEED, chunk_size=25),
                           on_chunk=lambda chunk: False)
    assert outcome.reason == "stopped" and len(chunks) == 1


_CTRL_C_SCRIPT = """
import json, signal, sys, threading, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
from test_engine import _schools, SEED
from resilient.backend import NUTSSettings, get_adapter
from resilient.model import NativeModel

# An interactive user's Ctrl-C: a process started in the background by a shell (`make test &`) inherits
# SIGINT ignored, which Resilient respects; the user's terminal process has Python's default handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
compiled = get_adapter("nutpie").compile(NativeModel("pymc", _schools()))
compiled.nutpie_model  # compiled first: Ctrl-C while Numba compiles is a plain KeyboardInterrupt
main = threading.main_thread().ident
for delay in {delays!r}:
    chunks = []
    timer = threading.Timer(delay, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    try:
        outcome = compiled.run_nuts(NUTSSettings(draws=10**6, tune=50, chains=1, random_seed=SEED, chunk_size=200),
                                    lambda chunk: chunks.append(chunk) or True)
    finally:
        timer.cancel()
    kept = sum(c.size for c in chunks if not c.warmup)
    print(json.dumps({{"delay": delay, "reason": outcome.reason, "kept": kept,
                      "delivered": outcome.extra["draws_delivered"][0],
                      "handler_restored": signal.getsignal(signal.SIGINT) is signal.default_int_handler}}))
"""


def _ctrl_c_runs(tmp_path, delays):
    """Ctrl-C (SIGINT to the main thread) at each delay into a nutpie run, in a fresh interpreter as a user's
    would be, with Python's default SIGINT handler (a suite started in the background by a non-interactive
    shell inherits SIGINT ignored, and Resilient leaves an ignored SIGINT ignored)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_SCRIPT.format(tests=str(Path(__file__).parent), delays=list(delays)))
    process = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                             cwd=str(Path(__file__).parents[1]))
    assert process.returncode == 0, process.stderr[-3000:]
    return [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow  # 14 s: child interpreters interrupted at timed moments (CI runs it)
def test_ctrl_c_is_reported_as_interrupted_with_the_draws_kept(tmp_path):
    (run,) = _ctrl_c_runs(tmp_path, [1.5])
    assert run["reason"] == "interrupted" and run["kept"] == run["delivered"] > 0 and run["handler_restored"]


@pytest.mark.slow  # six runs of about a second
def test_ctrl_c_at_any_moment_keeps_the_draws_and_never_escapes(tmp_path):
    """Ctrl-C landing just after nutpie's wait took the finished trace lost it and escaped as "no results to
    take". Six moments across the run: each ends "interrupted" with its draws, and nothing escapes."""
    runs = _ctrl_c_runs(tmp_path, [0.3, 0.55, 0.8, 1.05, 1.3, 1.55])
    assert [r["reason"] for r in runs] == ["interrupted"] * 6
    assert all(r["kept"] == r["delivered"] and r["handler_restored"] for r in runs)


def test_low_rank_mass_matrix_is_passed_to_nutpie(pair):
    outcome, chunks = _run(pair[1], NUTSSettings(draws=50, tune=60, chains=1, random_seed=SEED, mass_matrix="low_rank"))
    assert outcome.completed and outcome.extra["mass_matrix"] == "low_rank"
    with pytest.raises(ValueError, match="low_rank"):
        _run(pair[1], NUTSSettings(draws=5, tune=5, chains=1, mass_matrix="dense"))
    with pytest.raises(ValueError, match="tune >= 1"):
        _run(pair[1], NUTSSettings(draws=5, tune=0, chains=1))


def test_resilient_sample_on_nutpie_looks_like_pm_sample_and_records_the_engine():
    import resilient
    from resilient import record

    result = resilient.sample(_schools(), nuts_sampler="nutpie", draws=300, tune=300, chains=2, random_seed=SEED,
                              progressbar=False)
    run = record.read_run(result)
    assert run["backend"] == "nutpie" and run["engine_reason"] == "asked for (nutpie)"
    assert record.read_attempts(result)[0]["settings"]["mass_matrix"] == "diag"
    assert result.posterior["theta"].dims == ("chain", "draw", "school")
    assert result.posterior.sizes["draw"] == _draws_returned(result, 300) and set(STAT_NAMES) <= set(result.sample_stats.data_vars)


def test_auto_picks_by_expected_time_and_says_why():
    import resilient

    import resilient.engine as engine

    sampler = resilient.compile(_schools())
    assert sampler.choose_engine(draws=100, tune=100, chains=2).engine == "pymc"  # a short run: PyMC starts sooner
    cold = sampler.choose_engine()  # a default-size run, nothing sampled or compiled in this process
    assert cold.engine == "pymc_numpyro" and "the fastest cold start measured" in cold.reason
    engine.HISTORY.note_run("pymc_numpyro", 5.0)  # its seconds are the ski rental's rent
    assert "already prepared for it" in sampler.choose_engine(draws=100, tune=100, chains=2).reason
    sampler = resilient.compile(_schools())  # another model: the ski rental decides
    short = sampler.choose_engine(draws=100, tune=100, chains=2)
    long = sampler.choose_engine(draws=10**6, tune=1000, chains=4)
    assert short.engine == "pymc" and long.engine == "nutpie"
    for choice in (short, long):
        assert choice.reason.startswith("auto: ") and "expected" in choice.reason and "gradient" in choice.reason


def test_auto_pays_nutpies_first_compilation_once_pymc_has_sampled_as_long(monkeypatch):
    """Ski rental: nutpie's first Numba compilation (3 s) is charged to a call until PyMC's NUTS has
    sampled that long in the process; then a call nutpie wins once compiled goes to nutpie."""
    import types

    import resilient.engine as engine

    history = engine.EngineHistory()  # the ski rental's state, explicit: the process's HISTORY is left alone
    monkeypatch.setattr(engine, "_gradient_seconds", lambda compiled: 20e-6)
    model = types.SimpleNamespace(discrete_latents=())

    def choose():  # the cold-start engine left out (test_auto_starts_a_process_on_numpyros_nuts covers it)
        return engine.choose_engine("auto", "pymc", native=True, compiled_pymc=model, draws=1000, tune=1000,
                                    chains=1, cores=1, history=history, cold=False)

    assert choose().engine == "pymc" and "the first in this process" in choose().reason
    history.note_run("nutpie", 60.0)  # only PyMC's NUTS pays rent
    history.note_run("pymc", 2.0)
    assert choose().engine == "pymc"
    history.note_run("pymc", 1.5)
    bought = choose()
    assert bought.engine == "nutpie" and "PyMC's NUTS has already sampled 3.5 s" in bought.reason
    assert "ski rental" in bought.reason
    history.reset_session()
    assert choose().engine == "pymc"
    history.note_compile("nutpie")  # once nutpie has compiled here, later compilations are charged
    assert "later compilations in this process" in choose().reason
    assert engine.HISTORY.rent_seconds == 0 and engine.HISTORY is not history


def test_auto_starts_a_process_on_numpyros_nuts_until_the_ski_rental_buys_nutpie(monkeypatch):
    """#24.3: a pm.Model's default-size runs go to NumPyro's NUTS over PyMC's JAX translation (measured the fastest
    cold start: benchmarks/engines.py) unless the model or the run rules it out or the process has compiled for
    nutpie; its seconds are the rent, and a model already compiled for it stays on it."""
    import types

    import resilient.engine as engine

    monkeypatch.setattr(engine, "_gradient_seconds", lambda compiled: 20e-6)
    model = types.SimpleNamespace(discrete_latents=(), processes=lambda chains, cores=None: 1)

    def choose(history, **kwargs):
        return engine.choose_engine("auto", "pymc", native=True, **{"compiled_pymc": model, "chains": 4,
                                                                    "history": history, **kwargs})

    fresh = engine.EngineHistory()
    first = choose(fresh)
    assert first.engine == "pymc_numpyro" and "fastest cold start" in first.reason and "8000 iterations" in first.reason
    assert choose(fresh, mass_matrix="full").engine == "pymc_numpyro"
    assert choose(fresh, draws=10**5).engine != "pymc_numpyro"  # a long run: nutpie samples faster once compiled
    assert choose(fresh, draws=100, tune=100).engine == "pymc"  # a short one: PyMC's NUTS starts sooner than XLA
    assert choose(fresh, draws=100, tune=100, cold_compiled=True).engine == "pymc_numpyro"  # unless it is compiled
    assert choose(fresh, mass_matrix="low_rank").engine == "nutpie"
    assert choose(fresh, mass_matrix="diag_grad").engine == "pymc"
    assert choose(fresh, compiled_pymc=types.SimpleNamespace(discrete_latents=("k",))).engine == "pymc"
    assert choose(fresh, rival_compiled=True).engine == "nutpie"
    assert choose(fresh, cold=False).engine != "pymc_numpyro"
    paid = engine.EngineHistory()
    paid.note_run("pymc_numpyro", 3.5)  # rent, for the ski rental of runs outside the band
    assert paid.rent_seconds == 3.5 and choose(paid).engine == "pymc_numpyro"  # JAX is warm, nutpie not compiled
    kept = choose(paid, cold_compiled=True)
    assert kept.engine == "pymc_numpyro" and "already prepared for it" in kept.reason
    bought = engine.EngineHistory()
    bought.note_compile("nutpie")
    assert choose(bought).engine == "nutpie"
    monkeypatch.setattr(engine, "installed", lambda package: package != "numpyro")
    assert choose(fresh).engine == "nutpie"


def test_auto_leaves_numpyros_nuts_where_pymcs_jax_translation_fails(monkeypatch):
    """A model PyMC cannot translate to JAX (an Op without a JAX implementation), or whose translation is not finite
    at PyMC's initial point, is not sampled on NumPyro's NUTS by auto: the choice falls back to the ski rental and
    its reason says why."""
    import resilient
    from resilient.adapters.pymc_numpyro.compiled import PyMCNumPyroCompiledModel

    prepare = PyMCNumPyroCompiledModel.prepare

    def untranslatable(self):
        raise NotImplementedError("No JAX conversion for the given `Op`: CustomOp")

    monkeypatch.setattr(PyMCNumPyroCompiledModel, "prepare", untranslatable)
    choice = resilient.compile(_schools()).choose_engine()
    assert choice.engine in ("pymc", "nutpie")
    assert "NumPyro's NUTS over PyMC's JAX translation was not taken: NotImplementedError: No JAX" \
        in choice.reason
    # translated, but its gradient is not finite where PyMC's own is (JAX's autodiff through a switch, say)
    monkeypatch.setattr(PyMCNumPyroCompiledModel, "prepare", prepare)
    monkeypatch.setattr(PyMCNumPyroCompiledModel, "log_density_and_gradient",
                        lambda self, x: (-1.0, np.full(np.shape(x), np.nan)))
    choice = resilient.compile(_schools()).choose_engine()
    assert choice.engine in ("pymc", "nutpie")
    assert "was not taken: ValueError: its gradient is not finite at PyMC's initial point" in choice.reason


def test_the_engine_reason_counts_the_cores_the_user_gave(monkeypatch):
    """#26.5: auto's estimate runs min(chains, cores) chains at once, with cores as passed to resilient.sample
    (it said "on 2 core(s)" on a 2-core machine when cores=1 was given)."""
    import types

    import resilient
    import resilient.engine as engine
    from resilient.sampling import CompiledSampler

    from resilient.adapters.pymc.compiled import default_cores

    monkeypatch.setattr(engine, "_gradient_seconds", lambda compiled: 20e-6)
    compiled = types.SimpleNamespace(discrete_latents=(),
                                     processes=lambda chains, cores=None: min(chains, cores or default_cores()))
    for cores, parallel, processes in ((1, 1, 1), (3, 3, 3), (8, 4, 4),
                                       (None, min(4, os.cpu_count() or 1), min(4, default_cores()))):
        choice = engine.choose_engine("auto", "pymc", native=True, compiled_pymc=compiled, chains=4, cores=cores,
                                      cold=False)
        assert f"PyMC's NUTS {processes} chain(s) at a time, nutpie {parallel};" in choice.reason, choice.reason
    model = NativeModel("pymc", _schools())
    sampler = CompiledSampler(model, "pymc")
    sampler.cache[("pymc", model)] = compiled  # the gradient is timed by the stub above: nothing compiles

    class Chosen(Exception):
        pass

    real = engine.choose_engine

    def stop(*args, **kwargs):  # the choice CompiledSampler.run made, before anything samples
        raise Chosen(real(*args, **{**kwargs, "cold": False}).reason)

    monkeypatch.setattr(engine, "choose_engine", stop)
    with pytest.raises(Chosen, match=r"1 chain\(s\) at a time, nutpie 1;"):
        resilient.sample(sampler, chains=4, cores=1, progressbar=False)
    with pytest.raises(Chosen, match=r"2 chain\(s\) at a time, nutpie 2;"):
        sampler.sample(chains=2, cores=7, progressbar=False)


def test_the_loop_records_pymc_sampling_time_for_auto():
    import pymc as pm

    import resilient
    import resilient.engine as engine

    with pm.Model() as model:
        pm.Normal("x", 0, 1)
    resilient.sample(model, engine="pymc", draws=200, tune=200, chains=2, random_seed=1, progressbar=False)
    assert engine.HISTORY.rent_seconds > 0


def test_without_nutpie_installed_resilient_samples_on_pymc_and_says_which_engine(tmp_path):
    """A user without nutpie (nor NumPyro, auto's cold start): sys.modules["nutpie"] = None makes `import nutpie`
    fail as if absent."""
    import json
    import subprocess
    import sys

    script = tmp_path / "without_nutpie.py"
    script.write_text(
        "import sys, json\n"
        "sys.modules['nutpie'] = sys.modules['numpyro'] = None\n"
        "import numpy as np, pymc as pm, resilient\n"
        "from resilient import record\n"
        "with pm.Model() as m:\n"
        "    x = pm.Normal('x', 0, 1)\n"
        "data = resilient.sample(m, draws=50, tune=50, chains=2, random_seed=1, progressbar=False)\n"
        "run = record.read_run(data)\n"
        "print(json.dumps({'engine': run['backend'], 'reason': run['engine_reason'], 'draws': data.posterior.sizes['draw']}))\n"
        "try:\n"
        "    resilient.sample(m, engine='nutpie', draws=5, tune=5, chains=1, progressbar=False)\n"
        "except resilient.ResilientError as error:\n"
        "    print(json.dumps({'error': str(error)}))\n")
    process = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    assert process.returncode == 0, process.stderr[-2000:]
    assert lines[0]["engine"] == "pymc" and "nutpie is not installed" in lines[0]["reason"] and lines[0]["draws"] >= 50
    assert "engine='nutpie' needs the `nutpie` package, which is not installed" in lines[1]["error"]


def test_auto_without_nutpie_uses_pymc_and_says_why(monkeypatch):
    import resilient.engine as engine

    monkeypatch.setattr(engine, "installed", lambda name: name != "nutpie")
    choice = engine.choose_engine("auto", "pymc", native=True)
    assert choice.engine == "pymc" and "nutpie is not installed" in choice.reason
    assert engine.choose_engine("auto", "numpyro", native=True).engine == "numpyro"


@pytest.mark.parametrize("kwargs, message", [
    ({"engine": "auto", "nuts_sampler": "blackjax", "backend": None}, "nuts_sampler='blackjax' is not an engine"),
    ({"engine": "pymc", "nuts_sampler": "nutpie", "backend": None}, "disagree"),
    ({"engine": "stan", "nuts_sampler": None, "backend": None}, "`engine` must be one of"),
])
def test_engine_arguments_that_disagree_are_refused_by_name(kwargs, message):
    with pytest.raises(ResilientError, match=message.replace("(", r"\(")):
        resolve_engine(kwargs["engine"], kwargs["nuts_sampler"], kwargs["backend"])


def test_compute_backends_as_pm_sample_takes_them():
    from resilient.arguments import compile_options
    from resilient.engine import engine_for_compute_backend

    assert compile_options("jax", {}) == (None, "jax", None)
    assert compile_options(None, {"compile_kwargs": {"mode": "JAX", "gradient_backend": "jax"}}) == (None, "jax", "jax")
    assert compile_options("pymc", {"compile_kwargs": {"mode": "FAST_RUN"}}) == ("pymc", "c", None)
    assert engine_for_compute_backend("auto", "jax") == "nutpie" and engine_for_compute_backend("auto", "c") == "pymc"
    for backend, kwargs, message in [
        ("jax", {"compile_kwargs": {"mode": "NUMBA"}}, "disagree"),
        (None, {"compile_kwargs": {"gradient_backend": "jax"}}, "needs the JAX backend"),
        (None, {"compile_kwargs": {"linker": "cvm"}}, r"keys \['linker'\]"),
    ]:
        with pytest.raises(ResilientError, match=message):
            compile_options(backend, kwargs)
    with pytest.raises(ResilientError, match="engine='pymc' disagrees"):
        engine_for_compute_backend("pymc", "jax")


def test_nutpie_with_a_shared_api_model_on_numpyro_is_refused_by_name():
    from resilient.model import sample as site
    from resilient.distributions import Normal

    def tiny():
        site("x", Normal(0, 1))

    with pytest.raises(ResilientError, match="engine='nutpie' and backend='numpyro' disagree for a shared-API model"):
        resilient_sample(tiny, engine="nutpie", backend="numpyro")


def test_engine_arguments_resolve_to_engine_and_backend():
    assert resolve_engine("auto", None, None) == ("auto", None)
    assert resolve_engine("auto", "nutpie", None) == ("nutpie", None)
    assert resolve_engine("auto", None, "nutpie") == ("nutpie", None)
    # the language is the model's: NumPyro's NUTS runs a pm.Model too, through PyMC's JAX translation (pymc_numpyro)
    assert resolve_engine("numpyro", None, None) == ("numpyro", None)


def test_a_low_rank_mass_matrix_on_an_engine_without_one_is_refused():
    import resilient

    with pytest.raises(ResilientError, match="mass_matrix='low_rank' is not adapted by 'pymc'.*engine='nutpie' adapts it"):
        resilient.sample(_schools(), engine="pymc", mass_matrix="low_rank", draws=10, tune=10, chains=1,
                         progressbar=False)


def test_the_low_rank_rung_and_engine_switches_only_where_they_change_something():
    policy = Policy(remedies=("low_rank", "other_backend"))
    on_nutpie = LoopState(NativeModel("pymc", object()), "nutpie", 0.8)
    decision = choose_remedy("tree-depth", on_nutpie, policy, mass_matrices=("diag", "low_rank"))
    assert decision.remedy == "low_rank" and decision.state.mass_matrix == "low_rank"
    assert choose_remedy("tree-depth", on_nutpie, policy, mass_matrices=("diag",),
                         other_backends=["numpyro"]).remedy is None  # a pm.Model cannot move to NumPyro
    on_pymc = LoopState(NativeModel("pymc", object()), "pymc", 0.8)
    moved = choose_remedy("tree-depth", on_pymc, policy, other_backends=["numpyro", "nutpie"])
    assert moved.remedy == "other_backend" and moved.state.backend == "nutpie"
    shared = LoopState(Model(lambda: None), "numpyro", 0.8)
    assert choose_remedy("tree-depth", shared, policy, other_backends=["pymc"]).state.backend == "pymc"


def test_cores_is_how_many_chains_run_at_once(pair):
    import resilient

    outcome, chunks = _run(pair[1], NUTSSettings(draws=20, tune=20, chains=2, random_seed=SEED, cores=1))
    assert outcome.completed and outcome.extra["cores"] == 1
    outcome, chunks = _run(pair[0], NUTSSettings(draws=20, tune=20, chains=2, random_seed=SEED, cores=1))
    assert outcome.completed and outcome.extra["cores"] == 1
    with pytest.raises(ResilientError, match=r"`cores` must be an integer >= 1, got 0"):
        resilient.sample(_schools(), cores=0, draws=10, tune=10, chains=1, progressbar=False)


@pytest.mark.slow  # a wall-clock budget of 20 s
def test_a_time_budget_on_nutpie_returns_the_finished_draws_and_keeps_them_on_disk(tmp_path):
    """The loop's budget on nutpie: a logistic regression of 5,000 rows is slow enough per draw that
    300,000 draws cannot finish in 20 s (blr finished 2,000,000), and its trace stays small."""
    import pymc as pm

    import resilient
    from resilient import record
    from resilient.checkpoint import read_checkpoint
    from resilient.errors import ResilientWarning

    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(5000, 20))
    y = (rng.uniform(size=5000) < 1 / (1 + np.exp(-X @ rng.normal(0, 0.5, 20)))).astype(int)
    with pm.Model() as model:
        beta = pm.Normal("beta", 0, 1, shape=20)
        pm.Bernoulli("y", logit_p=pm.math.dot(X, beta), observed=y)
    budget = 20
    start = time.monotonic()
    with pytest.warns(ResilientWarning, match=BUDGET_MESSAGE):
        data = resilient.sample(model, engine="nutpie", draws=300_000, tune=200, chains=2, random_seed=SEED,
                                progressbar=False, time_budget=budget, checkpoint=str(tmp_path / "run"))
    assert time.monotonic() - start < budget + 30
    finished = data.posterior.sizes["draw"]
    assert 0 < finished < 300_000
    assert record.read_attempts(data)[-1]["outcome"] == "budget"
    assert read_checkpoint(tmp_path / "run").posterior.sizes["draw"] >= finished


def _numpyro_schools(sigma, y=None):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("school", len(sigma)):
        z = numpyro.sample("z", dist.Normal(0, 1))
        theta = numpyro.deterministic("theta", mu + tau * z)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


@pytest.mark.slow  # 8 s: nutpie compiles the model with JAX (an edge of the engines; CI runs it)
def test_nutpies_jax_backend_where_asked_keeps_the_users_jax_precision():
    """pm.sample(backend="jax") and compile_kwargs: nutpie's JAX backend, its own log density equal to
    PyMC's, and JAX's global x64 switch left as the user had it (PyTensor's JAX linker turns it on)."""
    import jax

    import resilient
    from resilient import record

    before = bool(jax.config.jax_enable_x64)
    model = _schools()
    for kwargs, gradient in (({"backend": "jax"}, "pytensor"),
                             ({"nuts_sampler": "nutpie", "compile_kwargs": {"mode": "JAX", "gradient_backend": "jax"}},
                              "jax")):
        data = resilient.sample(model, draws=100, tune=100, chains=2, random_seed=SEED, progressbar=False,
                                **kwargs)
        run = record.read_run(data)
        assert run["backend"] == "nutpie" and f"JAX backend (gradient by {gradient})" in run["engine_reason"]
        returned = next(a for a in record.read_attempts(data) if a["attempt"] == run["returned_attempt"])
        assert data.posterior["theta"].dims == ("chain", "draw", "school")
        assert data.posterior.sizes["draw"] == returned["settings"]["draws"] >= 100, "the draws asked (or more)"
        assert bool(jax.config.jax_enable_x64) == before
    compiled = get_adapter("nutpie").compile(NativeModel("pymc", model, compile_backend="jax"))
    x = np.linspace(-1, 1, compiled.dimension)
    value, gradient = compiled.log_density_and_gradient(x)
    reference, reference_gradient = compiled.inner.log_density_and_gradient(x)
    assert value == pytest.approx(reference, rel=1e-10)
    np.testing.assert_allclose(gradient, reference_gradient, rtol=1e-8, atol=1e-12)
    assert bool(jax.config.jax_enable_x64) == before


@pytest.mark.numpyro
@pytest.mark.slow  # 8 s: nutpie over NumPyro's log density (the default suite's 4-minute budget)
def test_a_numpyro_function_runs_on_nutpie_through_its_function_interface():
    """engine="nutpie" with a NumPyro model: nutpie's NUTS over NumPyro's jitted log density. The result
    has the NumPyro engine's groups, variables and dims, and the reason says how it ran."""
    import resilient
    from resilient import record

    data = resilient.sample(_numpyro_schools, SIGMA, y=Y, engine="nutpie", draws=200, tune=200, chains=2,
                            random_seed=SEED, progressbar=False)
    run = record.read_run(data)
    assert run["backend"] == "nutpie" and "function interface" in run["engine_reason"]
    with warnings.catch_warnings():  # a short run only for its structure: its diagnostics do not matter
        warnings.simplefilter("ignore")
        own = resilient.sample(_numpyro_schools, SIGMA, y=Y, engine="numpyro", draws=100, tune=100, chains=2,
                               random_seed=SEED, progressbar=False, max_attempts=1)
    for group in ("posterior", "observed_data", "log_likelihood"):
        mine, theirs = data[group].to_dataset(), own[group].to_dataset()
        assert {n: v.dims for n, v in mine.data_vars.items()} == {n: v.dims for n, v in theirs.data_vars.items()}
    assert data.posterior.sizes["draw"] == _draws_returned(data, 200)
    compiled = get_adapter("nutpie").compile(NativeModel("numpyro", _numpyro_schools, (SIGMA,), {"y": Y}))
    x = np.linspace(-1, 1, compiled.dimension)
    assert compiled.log_density_and_gradient(x)[0] == compiled.inner.log_density_and_gradient(x)[0]


@pytest.mark.slow  # a wall-clock budget of 6 s
@pytest.mark.numpyro
def test_a_time_budget_stops_nutpie_over_a_numpyro_function_with_its_draws_kept():
    import resilient
    from resilient.errors import ResilientWarning

    start = time.monotonic()
    with pytest.warns(ResilientWarning, match=r"time budget of 6 s ran out"):
        data = resilient.sample(_numpyro_schools, SIGMA, y=Y, engine="nutpie", draws=10**6, tune=200, chains=2,
                                random_seed=SEED, progressbar=False, time_budget=6)
    assert time.monotonic() - start < 6 + 20
    assert 0 < data.posterior.sizes["draw"] < 10**6


def test_init_asks_pymcs_nuts_for_its_mass_matrix_and_advi_is_refused(monkeypatch):
    """pm.sample's init="adapt_full": auto takes NumPyro's NUTS for a default-size run in a fresh process and, for
    a short one, PyMC's NUTS (nutpie adapts no dense matrix), PyMC's own init_nuts called with it (wrapped, not
    replaced), and the attempt records mass_matrix="full"."""
    import pymc as pm
    import pymc.sampling.mcmc as mcmc

    import resilient
    from resilient import record

    seen = []
    real = mcmc.init_nuts

    def spy(*args, **kwargs):
        seen.append(kwargs.get("init"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mcmc, "init_nuts", spy)
    with pm.Model() as model:
        pm.MvNormal("x", mu=np.zeros(2), cov=np.array([[1.0, 0.9], [0.9, 1.0]]))
    assert resilient.compile(model).choose_engine(mass_matrix="full").engine == "pymc_numpyro"
    with pytest.warns(UserWarning, match="QuadPotentialFullAdapt is an experimental feature"):  # PyMC's own
        data = resilient.sample(model, init="adapt_full", draws=200, tune=300, chains=2, random_seed=SEED,
                                progressbar=False)
    run, first = record.read_run(data), record.read_attempts(data)[0]
    assert run["backend"] == "pymc" and "mass_matrix='full'" in run["engine_reason"]
    assert first["settings"]["mass_matrix"] == "full" and seen and set(seen) == {"adapt_full"}
    with pytest.raises(ResilientError, match="init='advi' is not supported: Resilient runs no ADVI or MAP"):
        resilient.sample(model, init="advi")
    with pytest.raises(ResilientError, match=r"mass_matrix='full' is not adapted by 'nutpie'.*engine='pymc' adapts it"):
        resilient.sample(model, init="jitter+adapt_full", engine="nutpie")
    with pytest.raises(ResilientError, match=r"`mass_matrix` and pm.sample's init='adapt_full' are one option, given twice"):
        resilient.sample(model, init="adapt_full", mass_matrix="low_rank")


def _draws_returned(result, asked: int) -> int:
    """The draws per chain a result holds: those asked for, or more where the returned attempt ran the chains
    longer (read from the returned attempt, which need not be the last)."""
    from tests.loop_paths import draws_returned

    return draws_returned(result, asked)


def test_auto_does_not_time_the_gradient_where_nutpie_wins_whatever_it_costs(monkeypatch):
    """PyMC's NUTS running its chains one at a time (pm.sample's default on 2 CPUs) against nutpie's two threads:
    PyMC's per-step overhead alone outweighs nutpie's compilation, so auto picks nutpie without compiling PyMC's
    log density to time it; with as many processes as threads the gradient decides, and is timed."""
    import types

    import resilient.engine as engine

    timed = []
    monkeypatch.setattr(engine, "_gradient_seconds", lambda compiled: timed.append(compiled) or 20e-6)
    monkeypatch.setattr(engine, "installed", lambda package: True)
    one_at_a_time = types.SimpleNamespace(discrete_latents=(), processes=lambda chains, cores=None: 1)
    choice = engine.choose_engine("auto", "pymc", native=True, compiled_pymc=one_at_a_time, chains=4, cores=2,
                                  history=engine.EngineHistory(), cold=False)
    assert choice.engine == "nutpie" and "the gradient was not timed" in choice.reason and not timed
    alike = types.SimpleNamespace(discrete_latents=(), processes=lambda chains, cores=None: min(chains, cores))
    choice = engine.choose_engine("auto", "pymc", native=True, compiled_pymc=alike, chains=4, cores=2,
                                  history=engine.EngineHistory(), cold=False)
    assert timed == [alike] and "gradient 20 us" in choice.reason


def test_a_latent_the_log_density_ignores_keeps_auto_on_pymc_and_engine_nutpie_says_why(monkeypatch):
    """P7 (a lone Flat): nutpie's compilation raises DisconnectedInputError; auto runs PyMC's NUTS, which samples it
    and lets the loop name the improper posterior, and engine='nutpie' is refused naming the variable."""
    import types

    import resilient
    import resilient.engine as engine
    from examples import pathologies
    from resilient.errors import ResilientError

    monkeypatch.setattr(engine, "installed", lambda package: True)
    stub = types.SimpleNamespace(discrete_latents=(), disconnected_latents=("x",), processes=lambda chains, cores=None: 1)
    choice = engine.choose_engine("auto", "pymc", native=True, compiled_pymc=stub, chains=4, cores=2,
                                  history=engine.EngineHistory())
    assert choice.engine == "pymc" and "does not depend on x" in choice.reason
    with pytest.raises(ResilientError, match=r"nutpie cannot sample this model: its log density does not depend on x"):
        resilient.sample(pathologies.improper, backend="pymc", engine="nutpie", draws=20, tune=20, chains=1,
                         progressbar=False)


@pytest.mark.pymc
@pytest.mark.slow  # a nutpie compilation (up to 20 s cold); the engine's own tests run the feeder on every nutpie run
def test_nutpies_raw_trace_reads_as_the_datatree_nutpie_builds_from_it():
    """The nutpie engine reads nutpie's raw Arrow trace (runner._ArrowTrace) instead of the DataTree nutpie converts
    it to: the same draws and statistics under the same names, and nothing nutpie's own conversion leaves out."""
    import nutpie
    import pymc as pm

    from resilient.adapters.nutpie.runner import _ArrowTrace, _raw_traces

    assert _raw_traces(), "this nutpie has the helper the engine fills its arrays with"
    with pm.Model() as model:
        beta = pm.Normal("beta", 0, 1, shape=3)
        pm.Normal("y", beta.sum(), pm.HalfNormal("sigma", 1), observed=np.ones(10))
    compiled = nutpie.compile_pymc_model(model)
    options = dict(draws=30, tune=40, chains=2, seed=3, save_warmup=True, progress_bar=False, blocking=False,
                   store_mass_matrix=True)
    raw = _ArrowTrace(nutpie.sample(compiled, return_raw_trace=True, **options).wait())
    built = nutpie.sample(compiled, **options).wait()
    for group in ("posterior", "sample_stats", "warmup_posterior", "warmup_sample_stats"):
        ours, theirs = raw[group], built[group].to_dataset()
        names = set(theirs.data_vars)
        assert names <= set(ours.data_vars), group
        if group.endswith("sample_stats"):
            assert set(ours.data_vars) == names, f"{group}: only what nutpie's conversion keeps"
        for name in names:  # per-draw text (divergence_message, which the engine does not pass on) is None in one
            if ours[name].values.dtype.kind in "biuf":  # and NaN in the other
                np.testing.assert_array_equal(ours[name].values, theirs[name].values, err_msg=f"{group}/{name}")
