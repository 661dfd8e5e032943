"""Drivers of one NumPyro NUTS kernel, timed side by side in one process (issue 6 follow-up).

    python benchmarks/runner_gap.py [--model earnings-logearn_height] [--chains 4]

With 4 chains on a 2-core host (vectorised chains) Resilient's chunk runner took about twice
NumPyro's ``MCMC.run`` per leapfrog step on earnings, with the same potential function. This
prints ``MCMC.run`` on the model itself (the raw benchmark's call) and, for the adapter's potential
function and one set of initial points, ``MCMC.run``, ``numpyro.util.fori_collect`` over
``kernel.sample`` and the adapter's ``run_nuts``; each with its leapfrog-step total, run twice
(the second run shows the time once XLA's compile cache is warm).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import adapters.numpyro  # noqa: E402,F401  (host device count, before jax starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.util import fori_collect  # noqa: E402

from benchmarks.native_models import numpyro_models  # noqa: E402
from examples import reference_models  # noqa: E402
from resilient.backend import NUTSSettings, get_adapter  # noqa: E402
from resilient.model import NativeModel  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="earnings-logearn_height")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    options = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    _, data, _ = reference_models.load(options.model)
    chains, n = options.chains, options.draws
    with jax.enable_x64(True):
        compiled = get_adapter("numpyro").compile(NativeModel("numpyro", numpyro_models()[options.model], (), data))
        start = np.random.default_rng(0).uniform(-2, 2, (chains, compiled.dimension))
        keys = jax.random.split(jax.random.PRNGKey(1), chains)
        print(f"{options.model}: {chains} chains ({compiled.chain_method(chains)}), {n} warm-up + {n} draws")
        for repeat in range(2):
            tic = time.perf_counter()
            mcmc = MCMC(NUTS(numpyro_models()[options.model]), num_warmup=n, num_samples=n, num_chains=chains,
                        chain_method="vectorized", progress_bar=False)
            mcmc.run(jax.random.PRNGKey(1), extra_fields=("num_steps",), **data)
            steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
            print(f"  MCMC.run (model)  {time.perf_counter() - tic:6.1f} s  sampling steps {steps}", flush=True)

            tic = time.perf_counter()
            mcmc = MCMC(NUTS(potential_fn=compiled._potential), num_warmup=n, num_samples=n, num_chains=chains,
                        chain_method="vectorized", progress_bar=False)
            mcmc.run(jax.random.PRNGKey(1), init_params=jnp.asarray(start), extra_fields=("num_steps",))
            steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
            print(f"  MCMC.run (ours)   {time.perf_counter() - tic:6.1f} s  sampling steps {steps}", flush=True)

            tic = time.perf_counter()
            kernel = NUTS(potential_fn=compiled._potential)
            state = kernel.init(keys, n, init_params=jnp.asarray(start), model_args=(), model_kwargs={})
            counts = np.asarray(fori_collect(0, 2 * n, lambda s: kernel.sample(s, (), {}), state,
                                             transform=lambda s: s.num_steps, progbar=False))
            print(f"  fori_collect      {time.perf_counter() - tic:6.1f} s  sampling steps {int(counts[n:].sum())}",
                  flush=True)

        for repeat in range(2):
            steps = []
            tic = time.perf_counter()
            compiled.run_nuts(NUTSSettings(draws=n, tune=n, chains=chains, random_seed=1, initial_points=start),
                              lambda chunk: steps.append(0 if chunk.warmup else int(chunk.sample_stats["n_steps"].sum()))
                              or True)
            print(f"  adapter run_nuts  {time.perf_counter() - tic:6.1f} s  sampling steps {sum(steps)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
