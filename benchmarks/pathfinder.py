"""Pathfinder starts and a shorter warm-up against NumPyro's default, in one process (issue #24, item 4).

    python benchmarks/pathfinder.py [--models ...] [--sides default,pf-400,pf-200,pf-400-imm,pf-200-imm]
                                    [--repeats 3]

On the reference posteriors of ``benchmarks/engines.py`` (its loaders and NumPyro models, imported; not
``motivating``, on which raw NumPyro finds no initial point), each side runs NumPyro's NUTS (``MCMC``, 4 chains,
seed 12345, 1000 draws, float64, chains in parallel when there is an XLA device per chain, else vectorised):

* ``default``: NumPyro's initial points (``init_to_uniform``) and 1000 warm-up iterations;
* ``pf-<tune>``: the chains start from Pathfinder draws (:func:`pathfinder_inits` below: 4
  independent single-path BlackJAX Pathfinder runs from jittered ``init_to_uniform`` points, pooled draws picked by
  importance weight, one per chain) and warm up for ``<tune>`` iterations (NumPyro's windowed adaptation scaled to
  that length);
* ``pf-<tune>-imm``: the same, and NUTS's initial diagonal inverse mass matrix is Pathfinder's marginal variances
  (NumPyro still adapts it in its windows).

The figure is the whole time (``initialize_model`` and Pathfinder, compilation included; NUTS's compilation,
warm-up and draws) x 1000 / min ESS-bulk over the free (sampled) sites: seconds to 1,000 effective draws. Each row
also keeps the split (Pathfinder's seconds, NUTS's seconds, JAX's compilation seconds of each from
``jax.monitoring``), the divergences, and the posterior against posteriordb's reference in MCSE units
(``z_mean = (mean - ref mean) / mcse_mean``, ``z_sd`` likewise, over every reference parameter; the README band of
``tests/posteriors`` too). Sides alternate (their order reversed every other repeat); the table gives medians over
``--repeats``. Each row records the 1-minute load average before it. Results go to
``benchmarks/results/pathfinder-<date>.json``; a Markdown table is printed. With one seed every repeat samples the
same trajectories (only the times vary); ``--vary-seed`` gives repeat r the seed 12345 + r, so the ESS and z
medians are over several trajectories (``pathfinder-<date>-seeds.json``).

Finding of 2026-12-06 (2 cores shared, load 2-5.1): Pathfinder does not pay on these posteriors, so Resilient does
not use it. Its compilation alone (6-8 s, as much as NUTS's own) exceeds what the shorter warm-up saves (NUTS's
2000 iterations run in 0.5-5.7 s): every Pathfinder side is 1.35-4.1x the default's seconds per 1,000 ESS (25x for
a 200-iteration warm-up with Pathfinder's mass matrix on the centred eight schools). Without JAX's compilation (a
warm cache) the best setting wins on 2-3 of 7 models and loses on the rest; Pathfinder's diagonal mass matrix
multiplies divergences on the centred funnel (up to 531 against 113). No clear bias: every mean is within the
reference band; the largest |z| of a mean is 3.8 (the default's 3.1), of an sd 4.2 (the default's 2.5), over
three seeds and 3-10 parameters a model.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.engines import (  # noqa: E402
    CHAINS, DRAWS, MODELS as ENGINE_MODELS, SEED, TUNE, _data, _min_ess, _numpyro_latents)

INSTALL_HINT = "Install it with `pip install blackjax` (BlackJAX 1.7 or later)."


class PathfinderInits(NamedTuple):
    """Pathfinder's starting points and mass-matrix estimate.

    ``positions``: the unconstrained initial values, shaped like the initial position with a leading axis of
    length ``chains`` (NumPyro's ``init_params`` for ``num_chains=chains``). ``inverse_mass_matrix``: a flat
    diagonal (NumPyro's ``NUTS(inverse_mass_matrix=...)``), or None where no path gave a finite, positive one.
    ``elbo``: each path's best ELBO (``-inf`` for a path that found no finite one). ``finite_draws``: the pooled
    draws with a finite log density and weight, out of ``paths * draws_per_path``.
    """

    positions: Any
    inverse_mass_matrix: np.ndarray | None
    elbo: np.ndarray
    finite_draws: int


def _blackjax_pathfinder():
    try:
        from blackjax.vi import pathfinder
    except ImportError as error:
        raise ImportError(f"Pathfinder initialisation needs BlackJAX, which is not installed. {INSTALL_HINT}"
                          ) from error
    return pathfinder


def pathfinder_inits(potential_fn: Callable[[Any], Any], initial_position: Any, chains: int, seed: int, *,
                     paths: int | None = None, draws_per_path: int = 100, radius: float = 2.0,
                     maxiter: int = 1000, maxcor: int = 10, elbo_draws: int = 25,
                     ftol: float = 2.2e-12, gtol: float = 1e-8) -> PathfinderInits:
    """Initial positions for ``chains`` NUTS chains (and a diagonal inverse mass matrix) from Pathfinder.

    ``potential_fn``: NumPyro's potential (minus the log density) of a pytree of unconstrained values, as
    ``numpyro.infer.util.initialize_model`` returns it; ``initial_position``: one such pytree. Each of ``paths``
    (default ``chains``) single-path Pathfinder runs starts at ``initial_position`` plus a uniform jitter in
    ``(-radius, radius)`` per coordinate (Stan's random inits have radius 2; ``radius=0`` starts all paths at
    the point), runs at most ``maxiter`` L-BFGS iterations (history ``maxcor``; ELBO estimated with
    ``elbo_draws`` draws at each iterate), and draws ``draws_per_path`` times from its best-ELBO normal
    approximation. The stopping rules are Stan's Pathfinder defaults (1000 iterations, relative objective change
    1e4 x machine epsilon, gradient norm 1e-8); BlackJAX's own (30 iterations, relative change 1e-5) stop far
    from the mode on badly scaled posteriors (kidiq, earnings). Runs in the caller's precision (wrap it in ``jax.enable_x64(True)`` for float64 models).

    Raises ValueError for ``chains`` or ``paths`` below 1, ImportError when BlackJAX is missing, and
    RuntimeError when fewer than ``chains`` pooled draws have a finite log density (the caller should fall back
    to its ordinary initial points).
    """
    if not isinstance(chains, (int, np.integer)) or chains < 1:
        raise ValueError(f"`chains` must be a positive integer, got {chains!r}.")
    paths = chains if paths is None else paths
    if not isinstance(paths, (int, np.integer)) or paths < 1:
        raise ValueError(f"`paths` must be a positive integer, got {paths!r}.")
    pathfinder = _blackjax_pathfinder()
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(initial_position)
    size = flat.shape[0]

    def logdensity(x):
        value = -potential_fn(unravel(x))
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    def one_path(key, start):
        fit_key, draw_key = jax.random.split(key)
        state, _ = pathfinder.approximate(fit_key, logdensity, start, num_samples=elbo_draws, maxiter=maxiter,
                                          maxcor=maxcor, ftol=ftol, gtol=gtol)
        draws, logq = pathfinder.sample(draw_key, state, draws_per_path)
        logp = jax.vmap(logdensity)(draws)
        # diag(alpha + beta gamma beta^T): the approximation's marginal variances
        variance = state.alpha + jnp.einsum("ij,jk,ik->i", state.beta, state.gamma, state.beta)
        return state.elbo, draws, logp - logq, variance

    @jax.jit
    def run(key):
        start_key, path_key, pick_key = jax.random.split(key, 3)
        starts = flat + jax.random.uniform(start_key, (paths, size), flat.dtype, -radius, radius)
        keys = jax.random.split(path_key, paths)
        # one path after another (lax.map): the same result as vmap, less to trace, and paths are cheap
        elbo, draws, logw, variance = jax.lax.map(lambda pair: one_path(*pair), (keys, starts))
        draws = draws.reshape(paths * draws_per_path, size)
        logw = logw.reshape(-1)
        finite = jnp.isfinite(logw) & jnp.all(jnp.isfinite(draws), axis=1)
        logw = jnp.where(finite, logw, -jnp.inf)
        # Gumbel top-k: `chains` draws without replacement, each with probability proportional to its weight
        gumbel = jax.random.gumbel(pick_key, logw.shape, logw.dtype)
        picked = jnp.argsort(-(logw + gumbel))[:chains]
        return elbo, draws[picked], finite[picked], jnp.sum(finite), variance

    elbo, picked, picked_finite, finite_draws, variance = run(jax.random.PRNGKey(seed))
    elbo, picked_finite, variance = np.asarray(elbo), np.asarray(picked_finite), np.asarray(variance)
    if not picked_finite.all():
        raise RuntimeError(
            f"Pathfinder found {int(finite_draws)} draws with a finite log density out of "
            f"{paths * draws_per_path} ({paths} paths), fewer than the {chains} chains need. Start the chains "
            "from the model's ordinary initial points instead.")
    good = np.isfinite(elbo)
    inverse_mass = variance[good].mean(axis=0) if good.any() else None
    if inverse_mass is not None and not (np.all(np.isfinite(inverse_mass)) and np.all(inverse_mass > 0)):
        inverse_mass = None
    positions = jax.vmap(unravel)(picked)
    return PathfinderInits(positions, inverse_mass, elbo, int(finite_draws))


MODELS = tuple(m for m in ENGINE_MODELS if m != "motivating")
SIDES = ("default", "pf-400", "pf-200", "pf-400-imm", "pf-200-imm")
#: JAX's compilation events (seconds): tracing, lowering, XLA's compile
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_durations: collections.Counter = collections.Counter()


def _listen() -> None:
    import jax

    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: _durations.__setitem__(event, _durations[event] + duration))


def _compile_seconds() -> float:
    return sum(_durations[e] for e in COMPILE_EVENTS)


def _reference(name: str) -> dict:
    from examples import reference_models

    folder = "eight_schools-eight_schools_noncentered" if name == "eight_schools_centered" else name
    return json.loads((reference_models.posteriors_dir() / folder / "reference.json").read_text())["parameters"]


def against_reference(samples: dict[str, np.ndarray], reference: dict) -> dict:
    """Each reference parameter's mean and sd in MCSE units of this run (z), and the README band's failures."""
    from arviz_stats.base import array_stats

    from examples.reference_models import reference_name

    z_mean, z_sd, outside = {}, {}, []
    for variable, values in samples.items():
        values = np.asarray(values, float)
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        shape = values.shape[2:]
        for position in range(flat.shape[2]):
            index = np.unravel_index(position, shape) if shape else ()
            key = reference_name(variable, tuple(int(i) for i in index))
            if key not in reference:
                continue
            draws, ref = flat[:, :, position], reference[key]
            mean, sd = float(draws.mean()), float(draws.std(ddof=1))
            mcse_mean = float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="mean"))
            mcse_sd = float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="sd"))
            z_mean[key] = (mean - ref["mean"]) / mcse_mean
            z_sd[key] = (sd - ref["sd"]) / mcse_sd
            if abs(mean - ref["mean"]) > 0.15 * ref["sd"] + 4 * mcse_mean:
                outside.append(key)
    return {"max_abs_z_mean": max(map(abs, z_mean.values())), "max_abs_z_sd": max(map(abs, z_sd.values())),
            "z_mean": z_mean, "z_sd": z_sd, "outside_band": outside, "checked": len(z_mean)}


def run_side(side: str, name: str, seed: int = SEED) -> dict:
    """One NUTS run of ``side`` on model ``name``: seconds (and their split), min ESS-bulk, divergences, check."""
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_uniform
    from numpyro.infer.util import initialize_model

    from benchmarks.native_models import numpyro_models

    data = _data(name)
    model = numpyro_models()[name]  # a new function each run: nothing compiled for it yet in this process
    tune = TUNE if side == "default" else int(side.split("-")[1])
    row: dict = {"tune": tune, "seed": seed}
    _durations.clear()
    with warnings.catch_warnings(), jax.enable_x64(True):
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        init_params, kernel_options = None, {}
        if side != "default":
            info = initialize_model(jax.random.PRNGKey(seed), model, init_strategy=init_to_uniform,
                                    model_kwargs=data)
            found = pathfinder_inits(info.potential_fn, info.param_info.z, CHAINS, seed)
            init_params = found.positions
            if side.endswith("-imm") and found.inverse_mass_matrix is not None:
                kernel_options["inverse_mass_matrix"] = found.inverse_mass_matrix
            row.update(pathfinder_elbo=found.elbo.tolist(), pathfinder_finite_draws=found.finite_draws,
                       imm_used="inverse_mass_matrix" in kernel_options)
        row["pathfinder_seconds"] = time.perf_counter() - started
        row["pathfinder_compile_seconds"] = _compile_seconds()
        nuts_started = time.perf_counter()
        method = "parallel" if jax.local_device_count() >= CHAINS else "vectorized"
        mcmc = MCMC(NUTS(model, **kernel_options), num_warmup=tune, num_samples=DRAWS, num_chains=CHAINS,
                    chain_method=method, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), init_params=init_params, extra_fields=("diverging",), **data)
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        divergent = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
        seconds = time.perf_counter() - started
        row["nuts_seconds"] = time.perf_counter() - nuts_started
        row["nuts_compile_seconds"] = _compile_seconds() - row["pathfinder_compile_seconds"]
    free = sorted(_numpyro_latents(model, data))
    ess = _min_ess({k: samples[k] for k in free}, free)
    # what a process whose compilations are already cached (or a model whose sampling outweighs them) would pay
    run_seconds = seconds - row["pathfinder_compile_seconds"] - row["nuts_compile_seconds"]
    row.update(seconds=seconds, min_ess_bulk=ess, seconds_per_1000_ess=seconds * 1000 / ess, divergences=divergent,
               seconds_without_compile=run_seconds, seconds_per_1000_ess_without_compile=run_seconds * 1000 / ess,
               chain_method=method, **against_reference(samples, _reference(name)))
    return row


def summarise(rows: list[dict]) -> dict:
    """Per (model, side): medians over repeats of each figure, and the ratio of the medians to ``default``'s."""
    keys = ("seconds_per_1000_ess", "seconds_per_1000_ess_without_compile", "seconds", "seconds_without_compile", "pathfinder_seconds", "nuts_seconds", "pathfinder_compile_seconds",
            "nuts_compile_seconds", "min_ess_bulk", "divergences", "max_abs_z_mean", "max_abs_z_sd")
    cells: dict = {}
    for row in rows:
        if "error" in row:
            continue
        cell = cells.setdefault(row["model"], {}).setdefault(row["side"], {k: [] for k in (*keys, "outside_band")})
        for k in keys:
            cell[k].append(row[k])
        cell["outside_band"].append(len(row["outside_band"]))
    out: dict = {}
    for model, sides in cells.items():
        for side, values in sides.items():
            out.setdefault(model, {})[side] = {k: statistics.median(v) for k, v in values.items() if v}
            out[model][side]["n"] = len(values["seconds"])
            out[model][side]["max_divergences"] = max(values["divergences"])
            out[model][side]["max_outside_band"] = max(values["outside_band"])
        base = out[model].get("default", {})
        for side, cell in out[model].items():
            for key, ratio in (("seconds_per_1000_ess", "ratio_to_default"),
                               ("seconds_per_1000_ess_without_compile", "ratio_to_default_without_compile")):
                if base.get(key):
                    cell[ratio] = cell[key] / base[key]
    return out


def markdown(rows: list[dict]) -> str:
    """One line per (model, side): medians over the repeats."""
    summary = summarise(rows)
    lines = ["| model | side | s / 1000 ESS | x default | without compile | x default | Pathfinder s | NUTS s | "
             "compile s | min ESS-bulk | divergences (most) | max abs z mean | max abs z sd | outside band (most) |",
             "|---|---|" + "---:|" * 12]
    for model in dict.fromkeys(r["model"] for r in rows):
        for side in dict.fromkeys(r["side"] for r in rows):
            c = summary.get(model, {}).get(side)
            if not c:
                lines.append(f"| {model} | {side} | err |" + " |" * 11)
                continue
            compile_seconds = c["pathfinder_compile_seconds"] + c["nuts_compile_seconds"]
            lines.append(
                f"| {model} | {side} | {c['seconds_per_1000_ess']:.1f} | {c.get('ratio_to_default', float('nan')):.2f} | "
                f"{c['seconds_per_1000_ess_without_compile']:.2f} | "
                f"{c.get('ratio_to_default_without_compile', float('nan')):.2f} | {c['pathfinder_seconds']:.1f} | "
                f"{c['nuts_seconds']:.1f} | {compile_seconds:.1f} | {c['min_ess_bulk']:.0f} | "
                f"{c['divergences']:.0f} ({c['max_divergences']}) | {c['max_abs_z_mean']:.1f} | {c['max_abs_z_sd']:.1f} | "
                f"{c['outside_band']:.0f} ({c['max_outside_band']}) |")
    lines.append("")
    lines.append("Medians over repeats. s / 1000 ESS: whole seconds (Pathfinder and compilation included) x 1000 / min "
                 "ESS-bulk; without compile: the same less JAX's compilation seconds (jax.monitoring). z: (run - "
                 "reference) / run's MCSE, the largest over the reference parameters; outside band: parameters whose "
                 "mean misses |mean - ref| < 0.15 ref sd + 4 MCSE.")
    return "\n".join(lines)


def _write(path: Path, rows: list[dict], repeats: int, vary_seed: bool = False) -> None:
    import blackjax
    import jax
    import numpyro

    out = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "jax": jax.__version__,
           "numpyro": numpyro.__version__, "blackjax": blackjax.__version__, "draws": DRAWS, "default_tune": TUNE,
           "chains": CHAINS, "seed": SEED, "seed_varies_with_repeat": vary_seed, "repeats": repeats,
           "jax_compilation_cache_dir": jax.config.jax_compilation_cache_dir,
           "pathfinder": "4 single-path BlackJAX Pathfinder runs (maxiter 1000, ftol 2.2e-12, gtol 1e-8, history 10, "
                         "25 ELBO draws), 100 draws each, one chain start per pooled draw picked by importance weight "
                         "without replacement (pathfinder_inits here)",
           "medians": summarise(rows), "rows": rows}
    path.write_text(json.dumps(out, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="runs per (model, side); the table gives medians")
    parser.add_argument("--vary-seed", action="store_true",
                        help="repeat r runs with seed 12345 + r (ESS over several trajectories, not one), written to "
                             "pathfinder-<date>-seeds.json")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import resilient.adapters.numpyro  # noqa: F401  (one XLA device per core, as Resilient sets it)

    _listen()
    path = Path(args.out) / f"pathfinder-{datetime.date.today().isoformat()}{'-seeds' if args.vary_seed else ''}.json"
    sides = args.sides.split(",")
    rows: list[dict] = []
    for repeat in range(args.repeats):
        for name in args.models.split(","):  # each model's sides back to back, so they share the machine's load
            for side in sides if repeat % 2 == 0 else sides[::-1]:
                load = os.getloadavg()[0]
                try:
                    row = run_side(side, name, SEED + repeat if args.vary_seed else SEED)
                except Exception as error:  # noqa: BLE001 - a side that fails is a measurement
                    row = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                row = {"model": name, "side": side, "repeat": repeat, "load_average_before": load, **row}
                rows.append(row)
                brief = {k: row[k] for k in ("model", "side", "repeat", "seconds", "pathfinder_seconds", "min_ess_bulk",
                                             "seconds_per_1000_ess", "divergences", "max_abs_z_mean",
                                             "max_abs_z_sd", "load_average_before", "error") if k in row}
                print(json.dumps(brief), flush=True)
                _write(path, rows, args.repeats, args.vary_seed)
    print(markdown(rows))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
